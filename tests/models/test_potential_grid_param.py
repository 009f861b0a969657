"""``PotentialConfig.grid_param="fan_in"``: the grid MLP's hidden ``nn.Linear`` weights and the conditioning
map stored as ``W_raw = W sqrt(fan_in)`` (``equikit.models.potential.scale_by_fan_in``): the same function and
initial values as ``"torch"``, Adam's steps on ``W`` ``sqrt(fan_in)`` times smaller (docs/potentials.md,
session 8). Tests: E(3) invariance / equivariance through the public checker (reflections included) in
float32 and float64, atom permutations, a negative control, equality with the default at initialisation,
the size of one Adam step, finite-difference forces, save / load, config validation and YAML."""

import math

import pytest
import torch
from potential_test_helpers import (
    RTOL,
    check_e3,
    check_forces_against_finite_differences,
    check_permutations,
    cluster,
    energy_forces,
)
from potential_test_helpers import cluster_batch as _batch

from equikit.check import equivariance_error
from equikit.groups import E, PointCloud
from equikit.models.calculator import load_potential, save_potential
from equikit.models.potential import Potential, PotentialConfig, scale_by_fan_in

E3_OUT = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))
# facet_gain_el of the benchmarks (spline radial, Gaunt edge product, conditioned grid MLP, gain, per-element output)
FACET = dict(radial="spline", tp_backend="sparse_cg", tp_product="gaunt", product="grid_mlp",
             grid_condition="scalars", grid_gain=5.0, grid_output="element")


def _config(**kw):
    base = dict(atomic_numbers=(1, 8), e0=(-0.5, -2.0), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=3,
                cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4, grid_hidden=8,
                grid_param="fan_in", **FACET)
    base.update(kw)
    return PotentialConfig(**base)


def _model(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    model = Potential(_config(dtype=str(dtype).split(".")[-1], **kw))
    with torch.no_grad():
        for layer in model.interactions:
            if hasattr(layer.product, "out_weight"):
                layer.product.out_weight.normal_()  # per-element output weights: distinct per element
    return model


@pytest.mark.parametrize("variant", [{}, {"grid_condition": "element", "grid_gain": 1.0, "grid_output": "shared"}],
                         ids=["facet_gain_el", "element_bias"])
def test_energy_invariant_forces_equivariant_under_e3(dtype, variant):
    model = _model(dtype, **variant)
    check_e3(model, dtype)


def test_atom_permutation_equivariance(dtype):
    model = _model(dtype)
    check_permutations(model, dtype)


def test_negative_control_conditioning_on_vector_features(dtype):
    """A bug that feeds the (fan-in scaled) conditioning map the first vector components as well as the
    scalars is not invariant: the checker must fail."""
    model = _model(dtype)
    layer = model.interactions[1]
    c = layer.grid_bias.in_features
    torch.manual_seed(1)
    layer.grid_bias = scale_by_fan_in(torch.nn.Linear(c + 3, layer.grid_bias.out_features, bias=False).to(dtype))
    report = equivariance_error(energy_forces(model), cluster(dtype), PointCloud(E(3), scalars=("numbers",)),
                                E3_OUT, n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])
    assert report.rel_max > 1e-3


def test_same_model_as_the_default_at_initialisation():
    """Same seed: the same weights, energies and forces as ``grid_param="torch"``; the parameters are
    ``W sqrt(fan_in)`` of the grid MLP's hidden layers and of the conditioning map."""
    b = _batch(cluster(torch.float64))
    ours = _model()
    plain = _model(grid_param="torch")
    a, o = plain(b), ours(b)
    torch.testing.assert_close(o["energy"], a["energy"], rtol=0, atol=0)
    torch.testing.assert_close(o["forces"], a["forces"], rtol=0, atol=0)
    for lp, lo in zip(plain.interactions, ours.interactions):
        for mp, mo in [*zip(lp.product.layers, lo.product.layers), (lp.grid_bias, lo.grid_bias)]:
            raw = mo.parametrizations.weight.original
            torch.testing.assert_close(raw, mp.weight * math.sqrt(mp.in_features), rtol=1e-15, atol=0)
    names = {n for n, _ in ours.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert names and all(n.endswith("parametrizations.weight.original") for n in names)


def test_one_adam_step_moves_the_weights_sqrt_fan_in_times_less():
    """Adam's first step is ``lr * g / (|g| + eps)`` per parameter: ``lr`` on ``W`` with ``"torch"``, ``lr`` on
    ``W_raw`` (so ``lr / sqrt(fan_in)`` on ``W``) with ``"fan_in"``."""
    b = _batch(cluster(torch.float64))
    moved = {}
    for param in ("torch", "fan_in"):
        model = _model(grid_param=param)
        lin = model.interactions[0].product.layers[0]
        w0 = lin.weight.detach().clone()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        out = model(b, training=True)
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        opt.step()
        moved[param] = (lin.weight.detach() - w0).abs()
    fan_in = model.interactions[0].product.layers[0].in_features
    big = moved["torch"] > 0.9e-3  # entries whose gradient is far above Adam's eps
    assert big.float().mean() > 0.9
    torch.testing.assert_close(moved["fan_in"][big], moved["torch"][big] / math.sqrt(fan_in), rtol=1e-4, atol=0)


def test_forces_are_minus_finite_differences_of_energy():
    model = _model()
    check_forces_against_finite_differences(model)


def test_save_load_roundtrip(tmp_path):
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # trained-like weights, not the seed's
    save_potential(model, tmp_path / "m.pt")
    back = load_potential(tmp_path / "m.pt")
    assert back.config.grid_param == "fan_in"
    b = _batch(cluster(torch.float64))
    torch.testing.assert_close(back(b)["forces"], model(b)["forces"], rtol=0, atol=0)


def test_scale_by_fan_in_rejects_other_modules():
    with pytest.raises(TypeError, match=r"scale_by_fan_in: `layer` must be a torch\.nn\.Linear"):
        scale_by_fan_in(torch.nn.Conv1d(2, 2, 1))


@pytest.mark.parametrize("kw, match", [
    ({"grid_param": "e3nn"}, "grid_param` must be 'torch' or 'fan_in'"),
    ({"grid_param": 1}, "grid_param` must be 'torch' or 'fan_in'"),
    ({"grid_param": "fan_in", "product": "symmetric_contraction", "grid_condition": "none", "grid_gain": 1.0,
      "grid_output": "shared"}, "needs product='grid_mlp'"),
])
def test_invalid_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


def test_yaml_roundtrip(tmp_path):
    cfg = _config()
    cfg.to_yaml(tmp_path / "p.yaml")
    back = PotentialConfig.from_yaml(tmp_path / "p.yaml")
    assert back == cfg and back.grid_param == "fan_in"
    assert PotentialConfig().grid_param == "torch"  # the default keeps earlier models and checkpoints
