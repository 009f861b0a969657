"""Applying a spec's permutations (and scalings) leaves every architecture's function
unchanged; the action is a homomorphism; hidden units move as FeaturePermutation says;
a spec that forgets an axis is caught; bad inputs are refused with clear messages."""

import copy

import pytest
import torch
from torch import nn
from weights_helpers import ARCHS, RTOL, build, rel_err

from equikit.check import equivariance_error
from equikit.groups import FeaturePermutation
from equikit.weights import (
    MLP,
    PermAxis,
    PermutationSpec,
    Units,
    WeightSpaceAction,
    collect_activations,
    in_axis,
    mlp_spec,
    out_axis,
    permute,
    random_perms,
)
from equikit.weights.permute import identity_perms


def _call(net, params, x):
    return torch.func.functional_call(net, dict(params), (x,))


def _random_scales(spec, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.rand(u.size, generator=gen, dtype=torch.float64) * 3 + 0.2
            for k, u in spec.units.items() if u.scalable}


@pytest.mark.parametrize("arch", ARCHS)
def test_permuted_model_computes_the_same_function(arch, dtype):
    net, spec_of, x = build(arch, dtype)
    spec = spec_of(net)
    sd = net.state_dict()
    perms, scales = random_perms(spec, 1), _random_scales(spec)
    new = permute(spec, sd, perms, scales)
    changed = [k for k in sd if sd[k].is_floating_point() and not torch.equal(sd[k], new[k])]
    assert len(changed) > len(sd) // 2  # the weights really moved
    assert rel_err(_call(net, new, x), net(x)) < RTOL[dtype]


@pytest.mark.parametrize("arch", ARCHS)
def test_checker_sees_invariance_under_every_group(arch, dtype):
    net, spec_of, x = build(arch, dtype)
    spec = spec_of(net)
    sd = dict(net.state_dict())
    for name in spec.units:
        report = equivariance_error(lambda p: _call(net, p, x), sd, WeightSpaceAction(spec, name),
                                    n_samples=3, batched=False, generator=1)
        assert report.passed(rtol=RTOL[dtype]), (name, report.rel_max)


@pytest.mark.parametrize("arch", ["mlp", "cnn", "transformer"])
def test_negative_control_forgotten_input_axis_breaks_the_function(arch):
    net, spec_of, x = build(arch, torch.float64)
    spec = spec_of(net)
    # forget to permute the *inputs* of the layer that reads the first hidden group
    group = next(iter(k for k in spec.units if k not in ("res",)))
    reader = next((k, d) for k, d, _ in spec.occurrences(group) if k.endswith("weight") and d == 1)
    axes = dict(spec.axes)
    key, d = reader
    axes[key] = tuple(None if i == d else a for i, a in enumerate(axes[key]))
    bad = PermutationSpec(spec.units, axes, spec.sites)
    report = equivariance_error(lambda p: _call(net, p, x), dict(net.state_dict()),
                                WeightSpaceAction(bad, group), n_samples=3, batched=False)
    assert not report.passed(rtol=1e-3)
    assert report.rel_max > 1e-3


def test_negative_control_scaling_through_tanh_breaks_the_function():
    net, _, x = build("mlp_tanh", torch.float64)
    spec = mlp_spec(net)
    assert not any(u.scalable for u in spec.units.values())
    lying = PermutationSpec({k: Units(u.size, scalable=True) for k, u in spec.units.items()},
                            spec.axes, spec.sites)
    new = permute(lying, net.state_dict(), {}, _random_scales(lying))
    assert rel_err(_call(net, new, x), net(x)) > 1e-3


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "transformer_relu"])
def test_hidden_units_move_as_feature_permutation_says(arch):
    net, spec_of, x = build(arch, torch.float64)
    spec = spec_of(net)
    perms = random_perms(spec, 2)
    moved = copy.deepcopy(net)
    moved.load_state_dict(permute(spec, net.state_dict(), perms))
    plain, perm = collect_activations(net, spec, x), collect_activations(moved, spec, x)
    for name, h in plain.items():
        expect = FeaturePermutation(spec.units[name].size)(perms[name], h)
        assert not torch.equal(expect, h)
        assert rel_err(perm[name], expect) < 1e-10, name


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_permute_is_a_group_action(arch):
    """permute(permute(W, h), g) == permute(W, g o h), and the identity does nothing."""
    net, spec_of, _ = build(arch, torch.float64)
    spec = spec_of(net)
    sd = net.state_dict()
    g, h = random_perms(spec, 3), random_perms(spec, 4)
    gh = {k: g[k][h[k]] for k in g}  # (g o h)(i) = g(h(i))
    twice = permute(spec, permute(spec, sd, h), g)
    once = permute(spec, sd, gh)
    assert all(torch.equal(twice[k], once[k]) for k in sd)
    ident = permute(spec, sd, identity_perms(spec))
    assert all(torch.equal(ident[k], sd[k]) for k in sd)


# --------------------------------------------------------------------------- validation
@pytest.fixture
def small():
    net = MLP(3, (4,), 2)
    return mlp_spec(net), net.state_dict()


def test_refuses_a_permutation_that_is_not_a_bijection(small):
    spec, sd = small
    with pytest.raises(ValueError, match=r"permute: `perms\['h0'\]` is not a bijection"):
        permute(spec, sd, {"h0": torch.tensor([0, 1, 1, 3])})
    with pytest.raises(ValueError, match=r"permute: `perms\['h0'\]` is not a bijection"):
        permute(spec, sd, {"h0": torch.tensor([0, 1, 2, 4])})


def test_refuses_wrong_shape_dtype_and_unknown_group(small):
    spec, sd = small
    with pytest.raises(ValueError, match=r"must have shape \(4,\), got \(3,\)"):
        permute(spec, sd, {"h0": torch.tensor([0, 1, 2])})
    with pytest.raises(TypeError, match=r"must be an int64 tensor, got torch.float32"):
        permute(spec, sd, {"h0": torch.tensor([0.0, 1, 2, 3])})
    with pytest.raises(ValueError, match=r"unknown group 'h9'"):
        permute(spec, sd, {"h9": torch.arange(4)})


def test_refuses_params_that_do_not_fit_the_spec(small):
    spec, sd = small
    other = MLP(3, (5,), 2).state_dict()
    with pytest.raises(ValueError, match=r"permute: `params\['layers.0.weight'\]` has size 5 along dim 0"):
        permute(spec, other, {})
    with pytest.raises(ValueError, match=r"missing keys \['layers.1.bias'\]"):
        permute(spec, {k: v for k, v in sd.items() if k != "layers.1.bias"}, {})
    with pytest.raises(TypeError, match="must be a state_dict"):
        permute(spec, [1, 2], {})


def test_refuses_scales_for_a_group_that_cannot_scale():
    net = MLP(3, (4,), 2, activation=nn.Tanh)
    spec = mlp_spec(net)
    with pytest.raises(ValueError, match="group 'h0' is not scalable"):
        permute(spec, net.state_dict(), {}, {"h0": torch.ones(4)})
    spec = mlp_spec(MLP(3, (4,), 2))
    with pytest.raises(ValueError, match="must be positive"):
        permute(spec, MLP(3, (4,), 2).state_dict(), {}, {"h0": -torch.ones(4)})


def test_spec_refuses_inconsistent_declarations():
    with pytest.raises(ValueError, match=r"PermutationSpec: `axes\['w'\]\[0\]` names the unknown group 'q'"):
        PermutationSpec({"p": Units(2)}, {"w": (out_axis("q"),)})
    with pytest.raises(ValueError, match="is scalable but the axis"):
        PermutationSpec({"p": Units(2, scalable=True)}, {"w": (PermAxis(("p",)),)})
    with pytest.raises(TypeError, match="must be a tuple"):
        PermutationSpec({"p": Units(2)}, {"w": [in_axis("p")]})
    with pytest.raises(ValueError, match="only a single-factor axis may scale"):
        PermAxis(("p", "q"), 1)
    with pytest.raises(TypeError, match=r"mlp_spec: `model` must be an equikit\.weights\.MLP"):
        mlp_spec(nn.Linear(2, 2))


def test_spec_round_trips_through_plain_data():
    net, spec_of, _ = build("transformer_relu", torch.float64)
    spec = spec_of(net, io=True)
    again = PermutationSpec.from_dict(spec.to_dict())
    assert again == spec and again.fingerprint() == spec.fingerprint()
    assert spec_of(net).fingerprint() != spec.fingerprint()
