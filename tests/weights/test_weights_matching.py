"""Weight matching, activation matching and the STE recover a planted permutation exactly;
merging permuted copies gives back the model; interpolation and barrier behave as defined;
the SVD analysis sees that permutations keep singular values and move singular vectors."""

import copy

import pytest
import torch
from weights_helpers import RTOL, build, rel_err

from equikit.groups import FeaturePermutation
from equikit.weights import (
    MLP,
    MatchingConfig,
    MergeConfig,
    STEConfig,
    activation_matching,
    average,
    barrier,
    collect_activations,
    interpolate,
    interpolation_curve,
    inverse,
    l2_distance,
    layer_alignment,
    merge_models,
    mlp_spec,
    permute,
    random_perms,
    ste_matching,
    svd_alignment,
    weight_matching,
)


def _assert_same(a, b):
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("arch", ["mlp", "mlp_tanh", "cnn", "resnet", "transformer"])
def test_weight_matching_recovers_a_planted_permutation(arch, dtype):
    net, spec_of, _ = build(arch, dtype, seed=3)
    spec = spec_of(net)
    a = net.state_dict()
    planted = random_perms(spec, 5)
    b = permute(spec, a, planted)
    m = weight_matching(spec, a, b, MatchingConfig(restarts=3 if "transformer" in arch else 1))
    for k in planted:
        assert torch.equal(m.perms[k], inverse(planted[k])), k
    _assert_same(permute(spec, b, m.perms), a)
    assert m.sweeps < 100 and m.objective == sorted(m.objective)


def test_weight_matching_recovers_the_permutation_under_noise():
    net, spec_of, _ = build("mlp", torch.float64, seed=1)
    spec = spec_of(net)
    a = net.state_dict()
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.02 * v.std() * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in a.items()}
    planted = random_perms(spec, 6)
    m = weight_matching(spec, a, permute(spec, noisy, planted))
    for k in planted:
        assert torch.equal(m.perms[k], inverse(planted[k])), k


def test_weight_matching_beats_the_identity_on_independent_models():
    net_a, spec_of, _ = build("mlp", torch.float64, seed=1)
    net_b, _, _ = build("mlp", torch.float64, seed=2)
    spec = spec_of(net_a)
    a, b = net_a.state_dict(), net_b.state_dict()
    m = weight_matching(spec, a, b)
    assert l2_distance(a, permute(spec, b, m.perms)) < l2_distance(a, b)


def test_weight_matching_refuses_models_of_different_shapes():
    spec = mlp_spec(MLP(3, (4,), 2))
    with pytest.raises(ValueError, match=r"weight_matching: `params_b\['layers.0.weight'\]` has size 5"):
        weight_matching(spec, MLP(3, (4,), 2).state_dict(), MLP(3, (5,), 2).state_dict())
    with pytest.raises(ValueError, match=r"config\.perms` names the unknown group 'z'"):
        weight_matching(spec, MLP(3, (4,), 2).state_dict(), MLP(3, (4,), 2).state_dict(),
                        MatchingConfig(perms=("z",)))


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "transformer_relu"])
def test_activation_matching_recovers_a_planted_permutation(arch):
    net, spec_of, x = build(arch, torch.float64, seed=2)
    spec = spec_of(net)
    x = torch.randn(64, *x.shape[1:], dtype=x.dtype)  # enough inputs that no unit is always off
    planted = {k: p for k, p in random_perms(spec, 7).items() if k in spec.sites}
    other = copy.deepcopy(net)
    other.load_state_dict(permute(spec, net.state_dict(), planted))
    acts_a, acts_b = collect_activations(net, spec, x), collect_activations(other, spec, x)
    perms = activation_matching(spec, acts_a, acts_b)
    for k in planted:
        # B's activations moved by the found permutation are A's; units that never fire are
        # interchangeable, every other one must land where it came from
        moved = FeaturePermutation(spec.units[k].size)(perms[k], acts_b[k])
        assert torch.allclose(moved, acts_a[k], rtol=0, atol=1e-12), k
        alive = acts_b[k].std(0) > 0
        assert torch.equal(perms[k][alive], inverse(planted[k])[alive]), k


def test_ste_recovers_a_planted_permutation():
    net, spec_of, x = build("mlp", torch.float64, seed=4)
    spec = spec_of(net)
    a = net.state_dict()
    planted = random_perms(spec, 8)
    b = permute(spec, a, planted)
    y = torch.randint(0, 4, (x.shape[0],), generator=torch.Generator().manual_seed(0))

    def loss_fn(module, step):
        return torch.nn.functional.cross_entropy(module(x), y)

    m = ste_matching(spec, net, a, b, loss_fn, STEConfig(steps=3))
    for k in planted:
        assert torch.equal(m.perms[k], inverse(planted[k])), k


@pytest.mark.parametrize("n_models", [2, 3])
def test_merging_permuted_copies_gives_back_the_function(n_models, dtype):
    net, spec_of, x = build("mlp", dtype, seed=5)
    spec = spec_of(net)
    a = net.state_dict()
    models = [a] + [permute(spec, a, random_perms(spec, 10 + i)) for i in range(n_models - 1)]
    naive = average(models)
    merged, perms = merge_models(spec, models, MergeConfig())
    assert len(perms) == n_models
    y = torch.func.functional_call(net, merged, (x,))
    assert rel_err(y, net(x)) < RTOL[dtype]
    assert rel_err(torch.func.functional_call(net, naive, (x,)), net(x)) > 1e-2  # control


def test_merge_refuses_a_single_model():
    spec = mlp_spec(MLP(3, (4,), 2))
    with pytest.raises(ValueError, match="merge_models: `params` needs >= 2"):
        merge_models(spec, [MLP(3, (4,), 2).state_dict()])


# --------------------------------------------------------------------------- interpolation
def test_interpolate_and_barrier_follow_their_definitions():
    a, b = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}, {"w": torch.tensor([4.0, 2.0]), "n": torch.tensor(9)}
    mid = interpolate(a, b, 0.25)
    assert torch.equal(mid["w"], torch.tensor([1.0, 2.0])) and int(mid["n"]) == 3
    ts = [i / 24 for i in range(25)]
    line = [2.0 + 3.0 * t for t in ts]
    assert abs(barrier(line, ts)) < 1e-12
    bump = [v + 0.5 * 4 * t * (1 - t) for v, t in zip(line, ts)]
    assert abs(barrier(bump, ts) - 0.5) < 1e-12
    assert abs(barrier([0.9, 0.5, 0.9], [0, 0.5, 1], higher_is_better=True) - 0.4) < 1e-12
    with pytest.raises(ValueError, match="barrier: `ts` must run from 0 to 1"):
        barrier([1.0, 2.0], [0.0, 0.5])
    with pytest.raises(ValueError, match="interpolate: `params_a` and `params_b` must have the same keys"):
        interpolate({"w": torch.zeros(1)}, {"v": torch.zeros(1)}, 0.5)


def test_interpolation_curve_has_the_end_points_and_restores_the_model():
    net_a, _, x = build("mlp", torch.float64, seed=1)
    net_b, _, _ = build("mlp", torch.float64, seed=2)
    before = copy.deepcopy(net_a.state_dict())
    curve = interpolation_curve(net_a, net_a.state_dict(), net_b.state_dict(),
                                lambda m: {"out": float(m(x).detach().sum())}, n_points=25)
    assert len(curve.ts) == 25 and curve.ts[0] == 0.0 and curve.ts[-1] == 1.0
    assert abs(curve.metrics["out"][0] - float(net_a(x).detach().sum())) < 1e-9
    assert abs(curve.metrics["out"][-1] - float(net_b(x).detach().sum())) < 1e-9
    _assert_same(net_a.state_dict(), before)


# --------------------------------------------------------------------------- analysis
def test_permutation_keeps_singular_values_and_analysis_sees_alignment():
    net, spec_of, _ = build("mlp", torch.float64, seed=1)
    spec = spec_of(net)
    a = net.state_dict()
    b = permute(spec, a, random_perms(spec, 3))
    for la in layer_alignment(spec, a, b):
        assert torch.allclose(la.sv_a, la.sv_b, rtol=1e-12)
    # moved units: singular vectors no longer line up ...
    assert min(la.weighted() for la in layer_alignment(spec, a, b)) < 0.9
    # ... and after matching they line up exactly again
    m = weight_matching(spec, a, b)
    for la in layer_alignment(spec, a, permute(spec, b, m.perms)):
        assert la.align.min() > 1 - 1e-9
    with pytest.raises(ValueError, match="svd_alignment: matrices must have equal shapes"):
        svd_alignment(torch.zeros(2, 3), torch.zeros(3, 2))
