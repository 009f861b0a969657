"""Encrypted models compute the same function on encrypted inputs and outputs, their hidden
representations are the secret transformation of the plain ones, keys survive storage,
keys for another architecture are refused, and the activation-statistics attack works on
what it should."""

import os

import pytest
import torch
from weights_helpers import ARCHS, RTOL, build, input_dim, rel_err

from equikit.check import equivariance_error
from equikit.weights import (
    MLP,
    WeightSpaceAction,
    activation_statistics_attack,
    collect_activations,
    encrypt,
    generate_key,
    load_key,
    mlp_spec,
    save_key,
)


@pytest.mark.parametrize("arch", ARCHS)
def test_encrypted_model_computes_the_same_function(arch, dtype):
    net, spec_of, x = build(arch, dtype)
    key = generate_key(spec_of(net, io=True), generator=0)
    enc = encrypt(net, key)
    d = input_dim(x)
    x_enc = key.encrypt_input(x, dim=d)
    y_enc = enc(x_enc)
    assert not torch.allclose(x_enc, x) and not torch.allclose(y_enc, net(x))  # really hidden
    assert rel_err(key.decrypt_output(y_enc), net(x)) < RTOL[dtype]
    assert rel_err(key.transform("output", net(x)), y_enc) < RTOL[dtype]


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "transformer_relu"])
def test_encrypted_hidden_representations_are_the_secret_transform(arch, dtype):
    net, spec_of, x = build(arch, dtype)
    spec = spec_of(net, io=True)
    key = generate_key(spec, generator=1)
    enc = encrypt(net, key)
    plain = collect_activations(net, spec, x)
    hidden = collect_activations(enc, spec, key.encrypt_input(x, dim=input_dim(x)))
    for name, h in plain.items():
        expect = key.transform(name, h, dim=-1)
        assert not torch.allclose(expect, h)
        assert rel_err(hidden[name], expect) < RTOL[dtype], name
        assert rel_err(key.untransform(name, hidden[name]), h) < RTOL[dtype], name
    assert any(k in key.scales for k in plain) == (arch in ("mlp", "transformer_relu"))


@pytest.mark.parametrize("arch", ["mlp", "resnet", "transformer"])
def test_checker_confirms_the_secret_permutations_are_exact_symmetries(arch, dtype):
    net, spec_of, x = build(arch, dtype)
    spec = spec_of(net)  # hidden groups only: the encrypted model is the same function
    key = generate_key(spec, generator=2, scale_range=None)
    sd = dict(net.state_dict())
    for name, sigma in key.perms.items():
        report = equivariance_error(lambda p: torch.func.functional_call(net, p, (x,)), sd,
                                    WeightSpaceAction(spec, name), elements=sigma[None], batched=False)
        assert report.passed(rtol=RTOL[dtype]), (name, report.rel_max)
    assert rel_err(encrypt(net, key)(x), net(x)) < RTOL[dtype]


def test_key_generation_is_seeded_and_scales_stay_in_range():
    spec = mlp_spec(MLP(4, (8, 6), 3), io=True)
    k1, k2, k3 = generate_key(spec, 5), generate_key(spec, 5), generate_key(spec, 6)
    assert all(torch.equal(k1.perms[n], k2.perms[n]) for n in spec.units)
    assert any(not torch.equal(k1.perms[n], k3.perms[n]) for n in spec.units)
    for s in k1.scales.values():
        assert bool((s >= 0.5).all() and (s <= 2.0).all())
    assert set(generate_key(spec, 5, scale_range=None).scales) == set()
    with pytest.raises(ValueError, match="generate_key: `scale_range` must satisfy"):
        generate_key(spec, 5, scale_range=(2.0, 1.0))


def test_key_round_trips_through_a_file(tmp_path):
    net, spec_of, x = build("transformer_relu", torch.float64)
    key = generate_key(spec_of(net, io=True), generator=3)
    path = save_key(key, tmp_path / "secret.key")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    again = load_key(path)
    assert again.spec == key.spec
    assert all(torch.equal(again.perms[k], key.perms[k]) for k in key.perms)
    assert all(torch.equal(again.scales[k], key.scales[k]) for k in key.scales)
    assert torch.equal(encrypt(net, again)(x), encrypt(net, key)(x))
    (tmp_path / "junk").write_bytes(b"")
    torch.save({"hello": 1}, tmp_path / "junk")
    with pytest.raises(ValueError, match=r"load_key: .* is not an equikit encryption key file"):
        load_key(tmp_path / "junk")


def test_refuses_a_key_for_another_architecture():
    key = generate_key(mlp_spec(MLP(4, (8,), 3), io=True), generator=0)
    msg = r"encrypt: `model\.state_dict\(\) \(for this key\)\['layers\.0\.weight'\]` has size 9"
    with pytest.raises(ValueError, match=msg):
        encrypt(MLP(4, (9,), 3), key)
    with pytest.raises(ValueError, match=r"encrypt: .*missing keys"):
        encrypt(MLP(4, (8, 8), 3), key)
    with pytest.raises(TypeError, match="encrypt: `key` must be an EncryptionKey"):
        encrypt(MLP(4, (8,), 3), {"h0": torch.arange(8)})


def test_refuses_a_key_whose_permutation_is_not_a_bijection():
    spec = mlp_spec(MLP(4, (8,), 3))
    key = generate_key(spec, 0)
    with pytest.raises(ValueError, match=r"EncryptionKey: `perms\['h0'\]` is not a bijection"):
        type(key)(spec, {"h0": torch.zeros(8, dtype=torch.int64)}, {})


# --------------------------------------------------------------------------- attack
def _relu_mlp_acts(n: int, seed: int):
    torch.manual_seed(0)
    net = MLP(16, (32,), 4).double()
    spec = mlp_spec(net)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 2, 16, dtype=torch.float64)
    return net, spec, x


def test_attack_recovers_the_permutation_exactly_from_the_same_inputs():
    net, spec, x = _relu_mlp_acts(400, 0)
    key = generate_key(spec, generator=4)
    plain = collect_activations(net, spec, x)["h0"]
    seen = collect_activations(encrypt(net, key), spec, x)["h0"]
    guess = activation_statistics_attack(plain, seen)
    alive = plain.std(0) > 0
    assert torch.equal(guess[alive], key.perms["h0"][alive])


def test_attack_recovers_most_units_from_independent_queries_and_fails_on_noise():
    """Public data and the victim's queries are disjoint halves of sklearn's digits."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data / 16.0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = MLP(64, (32,), 10).double()
    spec = mlp_spec(net)
    key = generate_key(spec, generator=5)
    plain = collect_activations(net, spec, x[order[:900]])["h0"]
    seen = collect_activations(encrypt(net, key), spec, x[order[900:]])["h0"]
    hit = (activation_statistics_attack(plain, seen) == key.perms["h0"]).double().mean()
    assert hit > 0.5  # statistical (seeded): same distribution, different samples
    noise = torch.randn(900, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chance = (activation_statistics_attack(plain, noise) == key.perms["h0"]).double().mean()
    assert chance < 0.25  # control: statistics carrying no information give about 1/32
