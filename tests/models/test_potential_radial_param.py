"""``PotentialConfig.radial_param="e3nn"``: the Bessel radial MLP in e3nn's parametrisation (MACE's
``FullyConnectedNet``: weights ``N(0, 1)`` divided by ``sqrt(fan_in)`` in the forward, SiLU scaled to unit
second moment). The same function class as the PyTorch parametrisation (a weight conversion gives the same
model), with other initial values and other Adam dynamics (docs/potentials.md, session 8). Tests: E(3)
invariance / equivariance through the public checker (reflections included) in float32 and float64, atom
permutations, a negative control, the MLP against an independent computation, the unit second moment of the
scaled SiLU, the conversion from the PyTorch parametrisation, finite-difference forces, save / load, config
validation and YAML."""

import math

import numpy as np
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
from equikit.models.potential import Potential, PotentialConfig, RadialWeights

E3_OUT = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))
GAUNT = dict(tp_product="gaunt")  # the Gaunt edge product reads the radial map through features() / head()


def _config(**kw):
    base = dict(atomic_numbers=(1, 8), e0=(-0.5, -2.0), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=3,
                cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4, radial_mlp=(8, 8),
                radial_param="e3nn")
    base.update(kw)
    return PotentialConfig(**base)


def _model(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return Potential(_config(dtype=str(dtype).split(".")[-1], **kw))


@pytest.mark.parametrize("variant", [{}, GAUNT], ids=["clebsch_gordan", "gaunt"])
def test_energy_invariant_forces_equivariant_under_e3(dtype, variant):
    model = _model(dtype, **variant)
    check_e3(model, dtype)


def test_atom_permutation_equivariance(dtype):
    model = _model(dtype)
    check_permutations(model, dtype)


def test_negative_control_radial_input_from_direction(dtype):
    """A bug that feeds the radial MLP the edge length stretched along x (a direction-dependent input)
    is not rotation invariant: the checker must fail."""
    model = _model(dtype)
    inner = model.edge_features

    def broken(vec):
        r, sh = inner(vec)
        return r * (1.0 + 0.2 * vec[:, 0] / r), sh

    model.edge_features = broken
    report = equivariance_error(energy_forces(model), cluster(dtype), PointCloud(E(3), scalars=("numbers",)),
                                E3_OUT, n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])
    assert report.rel_max > 1e-3


def test_e3nn_mlp_against_an_independent_computation():
    """``W_k = raw_k / sqrt(fan_in)``, SiLU times ``1 / sqrt(E[silu(z)^2])`` (computed here by numpy
    quadrature), no biases; the enveloped Bessel basis as input."""
    model = _model()
    radial = model.interactions[1].radial
    raws = [p for name, p in radial.named_parameters() if name.startswith("mlp.")]
    assert [tuple(p.shape) for p in raws] == [(8, 8), (8, 8), (radial.head().shape[1], 8)]
    z = np.linspace(-12, 12, 400001)
    silu2 = (z / (1 + np.exp(-z))) ** 2 * np.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    c = 1.0 / math.sqrt(np.trapezoid(silu2, z))
    r = torch.linspace(0.3, 2.9, 11, dtype=torch.float64)
    h = radial.embedding(r)
    for k, w in enumerate(raws):
        h = h @ (w.detach() / math.sqrt(w.shape[1])).T
        if k < len(raws) - 1:
            h = torch.nn.functional.silu(h) * c
    torch.testing.assert_close(radial(r), h, rtol=1e-12, atol=1e-14)
    cols = torch.tensor([3, 0, 0, 7])
    torch.testing.assert_close(radial(r, cols), h[:, cols], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(radial.features(r) @ radial.head(), h, rtol=1e-12, atol=1e-14)


def test_scaled_silu_has_unit_second_moment():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2_000_000, generator=g, dtype=torch.float64)
    from equikit.models.potential import SILU_2MOM

    m2 = float((torch.nn.functional.silu(z) * SILU_2MOM).square().mean())
    assert abs(m2 - 1.0) < 3e-3  # Monte Carlo: std of the estimate ~ 1.5e-3 / sqrt(2)


def test_same_function_class_as_the_pytorch_parametrisation():
    """Converting a PyTorch-parametrised model's radial weights (``raw_1 = W_1 sqrt(fan_in)``, later
    layers also divided by the SiLU scale) gives the same energies and forces: only the
    parametrisation (initial values, Adam's steps) differs."""
    from equikit.models.potential import SILU_2MOM

    torch.manual_seed(0)
    plain = Potential(_config(radial_param="torch", dtype="float64"))
    ours = _model()
    state = {k: v for k, v in plain.state_dict().items() if ".radial.mlp." not in k}
    for t, layer in enumerate(plain.interactions):
        linears = [m for m in layer.radial.mlp if isinstance(m, torch.nn.Linear)]
        for k, lin in enumerate(linears):
            w = lin.weight.detach() * math.sqrt(lin.in_features) / (SILU_2MOM if k else 1.0)
            state[f"interactions.{t}.radial.mlp.{2 * k}.raw"] = w
    ours.load_state_dict(state)
    b = _batch(cluster(torch.float64))
    a, o = plain(b), ours(b)
    torch.testing.assert_close(o["energy"], a["energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(o["forces"], a["forces"], rtol=1e-10, atol=1e-12)


def test_initial_radial_weights_are_larger_than_pytorch_ones():
    """The motivating difference (docs/potentials.md, session 8): at initialisation the e3nn
    parametrisation's radial weights are ~40x larger (MACE's scale) than those of PyTorch's
    ``nn.Linear`` init."""
    r = torch.linspace(0.5, 2.9, 200, dtype=torch.float64)
    torch.manual_seed(0)
    plain = Potential(_config(radial_param="torch", radial_mlp=(64, 64, 64), dtype="float64"))
    ours = _model(radial_mlp=(64, 64, 64))
    with torch.no_grad():
        s_plain, s_ours = plain.interactions[0].radial(r).std(), ours.interactions[0].radial(r).std()
    assert float(s_ours / s_plain) > 10.0


def test_forces_are_minus_finite_differences_of_energy():
    model = _model()
    check_forces_against_finite_differences(model)


def test_radial_weights_train():
    model = _model()
    out = model(_batch(cluster(torch.float64)), training=True)
    (out["forces"] ** 2).sum().backward()
    for layer in model.interactions:
        for p in layer.radial.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_save_load_roundtrip(tmp_path):
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # trained-like weights, not the seed's
    save_potential(model, tmp_path / "m.pt")
    back = load_potential(tmp_path / "m.pt")
    assert back.config.radial_param == "e3nn"
    b = _batch(cluster(torch.float64))
    torch.testing.assert_close(back(b)["forces"], model(b)["forces"], rtol=0, atol=0)


def test_radial_weights_doctest_layout():
    """RadialWeights with the e3nn parametrisation exposes the same interface (columns, features, head)."""
    f = RadialWeights(_config(), 6).double()
    r = torch.tensor([1.0, 2.5], dtype=torch.float64)
    assert f(r).shape == (2, 6) and f.head().shape == (8, 6)
    assert torch.equal(f(torch.tensor([3.0], dtype=torch.float64)), torch.zeros(1, 6, dtype=torch.float64))


@pytest.mark.parametrize("kw, match", [
    ({"radial_param": "mace"}, "radial_param` must be 'torch' or 'e3nn'"),
    ({"radial_param": None}, "radial_param` must be 'torch' or 'e3nn'"),
    ({"radial_param": "e3nn", "radial": "spline"}, "needs radial='bessel'"),
])
def test_invalid_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


def test_yaml_roundtrip(tmp_path):
    cfg = _config()
    cfg.to_yaml(tmp_path / "p.yaml")
    back = PotentialConfig.from_yaml(tmp_path / "p.yaml")
    assert back == cfg and back.radial_param == "e3nn"
    assert PotentialConfig().radial_param == "torch"  # the default keeps earlier models and checkpoints
