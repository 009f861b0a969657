"""PONITA-style, EqMotion-style and FA-GNN models through the public checker: E(3) (with
reflections) and translations of positions/velocities, particle permutations, float32 and
float64, negative controls; PONITA's approximate rotation equivariance measured against a
stated tolerance and shown to shrink as the orientation grid is refined."""

import pytest
import torch
from dynamics_test_helpers import E3_IN, E3_OUT, PERM_IN, PERM_OUT, small_batch
from dynamics_test_helpers import as_function as _f
from dynamics_test_helpers import inputs as _inputs

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.nbody import complete_edge_index
from equikit.groups import E, NodePermutation, PointCloud, Translation
from equikit.models import FAGNN, EqMotion, Ponita
from equikit.models.ponita import fibonacci_sphere, pair_invariants

T_IN = PointCloud(Translation(3), vectors=("vel",), scalars=("charges", "edge_attr", "edge_index"))
T_OUT = PointCloud(Translation(3))


@pytest.fixture(scope="module")
def batch():
    return small_batch()


def _eqmotion(dtype):
    torch.manual_seed(0)
    model = EqMotion(hidden=16, channels=4, n_layers=2).to(dtype)
    for layer in model.layers:  # make the neighbour term matter (it starts ~1e-3 small)
        torch.nn.init.normal_(layer.factor_mlp[-1].weight, std=0.5)
    return model


def _ponita(dtype, n_orientations=20):
    torch.manual_seed(0)
    return Ponita(hidden=16, n_layers=2, basis=16, n_orientations=n_orientations, grid="fixed").to(dtype).eval()


# --------------------------------------------------------------------------- EqMotion
def test_eqmotion_is_e3_equivariant(dtype, batch):
    report = assert_equivariant(_f(_eqmotion(dtype)), _inputs(batch, dtype), E3_IN, E3_OUT, n_samples=16, generator=1)
    assert report.n_elements == 16


def test_eqmotion_is_permutation_equivariant(dtype, batch):
    assert_equivariant(_f(_eqmotion(dtype)), _inputs(batch, dtype), PERM_IN, PERM_OUT, n_samples=8, generator=2)


def test_eqmotion_interaction_types_are_invariant_distributions(batch):
    model = _eqmotion(torch.float64)
    x = _inputs(batch, torch.float64)

    def cats(d):
        return model(d["pos"], d["vel"], d["edge_index"], d["edge_attr"], return_categories=True)[1]

    c = cats(x)
    assert c.shape == (40, 2) and torch.allclose(c.sum(-1), torch.ones(40, dtype=torch.float64))
    assert_equivariant(cats, x, E3_IN, None, n_samples=8, generator=3)  # invariant


def test_negative_control_eqmotion_with_coordinatewise_relu_fails(dtype, batch, monkeypatch):
    """Replacing the equivariant non-linearity by a ReLU on xyz components breaks E(3)."""
    model = _eqmotion(dtype)
    monkeypatch.setattr("equikit.models.eqmotion.equivariant_relu", lambda q, k: torch.relu(q))
    report = equivariance_error(_f(model), _inputs(batch, dtype), E3_IN, E3_OUT, n_samples=8, generator=1)
    assert not report.passed() and report.rel_max > 1e-3


# --------------------------------------------------------------------------- FA-GNN
def _fagnn(dtype):
    torch.manual_seed(0)
    return FAGNN(hidden=16, n_layers=2).to(dtype).eval()


def test_fagnn_is_e3_equivariant_in_eval_mode(dtype, batch):
    assert_equivariant(_f(_fagnn(dtype)), _inputs(batch, dtype), E3_IN, E3_OUT, n_samples=16, generator=1)


def test_fagnn_is_permutation_equivariant(dtype, batch):
    """Relabel particles inside one system; the complete graph is rebuilt from the charges
    (FA-GNN needs the collated edge order)."""
    model = _fagnn(dtype)
    ei = complete_edge_index(5)
    x = {"pos": batch.pos[:5].to(dtype), "vel": batch.vel[:5].to(dtype), "charges": batch.charges[:5].to(dtype)}

    def f(d):
        q = d["charges"]
        return model(d["pos"], d["vel"], ei, q[ei[0]] * q[ei[1]])

    act = NodePermutation(5, nodes={"pos": -2, "vel": -2, "charges": -2})
    assert_equivariant(f, x, act, NodePermutation(5, node_dim=-2), n_samples=8, generator=2)


def test_negative_control_fagnn_sampling_one_frame_element_is_not_exact(batch):
    model = _fagnn(torch.float64).train()  # training mode: one sampled frame element per system
    report = equivariance_error(_f(model), _inputs(batch, torch.float64), E3_IN, E3_OUT, n_samples=8, generator=1)
    assert not report.passed() and report.rel_max > 1e-2


def test_fagnn_rejects_graphs_that_are_not_collated_complete_graphs(batch):
    model = _fagnn(torch.float64)
    x = _inputs(batch, torch.float64)
    with pytest.raises(ValueError, match="collated complete graphs"):
        model(x["pos"], x["vel"], x["edge_index"][:, :-1], x["edge_attr"][:-1])
    with pytest.raises(ValueError, match="collated complete graphs"):
        model(x["pos"], x["vel"], x["edge_index"].flip(1), x["edge_attr"])


# --------------------------------------------------------------------------- PONITA
def test_ponita_is_translation_and_permutation_equivariant_exactly(dtype, batch):
    model = _ponita(dtype)
    x = _inputs(batch, dtype)
    assert_equivariant(_f(model), x, T_IN, T_OUT, n_samples=8, generator=1)
    assert_equivariant(_f(model), x, PERM_IN, PERM_OUT, n_samples=8, generator=2)


# On a fixed grid of O orientations a rotation is not a permutation of the grid, so PONITA
# is only approximately rotation-equivariant. We measure the error of the predicted
# displacement (output - pos; the positions themselves would hide it): with this model (16
# channels, 2 layers, untrained, E(3) elements incl. reflections) the max relative error over
# 16 elements is 0.20 at O = 20 (the published grid size), 0.021 at O = 50, 0.0048 at
# O = 200; over the 8 elements used here 0.19 at O = 20 and 0.027 at O = 80; the same in
# float32 and float64 (it is the grid, not rounding). The test bounds O = 20 by 0.3 (1.5x the
# measurement), asserts a 4x reduction at O = 80 (measured 7x; Fibonacci grids do not
# improve monotonically), and the negative control (raw positions fed as node scalars) is at
# 0.94 on the O = 80 grid.
DISPLACEMENT = PointCloud(E(3), pos=None, vectors=("d",))


def _displacement(model, h=None):
    return lambda d: {"d": model(d["pos"], d["vel"], d["edge_index"], d["edge_attr"],
                                 h=None if h is None else d[h]) - d["pos"]}


def test_ponita_rotation_error_is_bounded_and_shrinks_with_the_grid(dtype, batch):
    x = _inputs(batch, dtype)
    err = {o: equivariance_error(_displacement(_ponita(dtype, o)), x, E3_IN, DISPLACEMENT, n_samples=8,
                                 generator=1).rel_max for o in (20, 80)}
    assert err[20] < 0.3
    assert err[80] < err[20] / 4
    assert err[80] > 1e-4  # still approximate: a fixed grid is not rotated with the input


def test_negative_control_ponita_fed_raw_positions_is_far_from_equivariant(dtype, batch):
    torch.manual_seed(0)
    model = Ponita(hidden=16, n_layers=2, basis=16, node_features=3, n_orientations=80).to(dtype).eval()
    report = equivariance_error(_displacement(model, h="pos"), _inputs(batch, dtype), E3_IN, DISPLACEMENT,
                                n_samples=8, generator=1)
    assert report.rel_max > 0.3


def test_ponita_calibrates_once_and_has_finite_gradients_on_self_loops(batch):
    torch.manual_seed(0)
    model = Ponita(hidden=8, n_layers=2, basis=8, n_orientations=6)
    x = _inputs(batch, torch.float32)
    assert not bool(model.blocks[0].conv.calibrated)
    out = _f(model)(x)
    w = model.blocks[0].conv.kernel_spatial.weight.clone()
    assert bool(model.blocks[0].conv.calibrated)
    out = _f(model)(x)
    assert torch.equal(w, model.blocks[0].conv.kernel_spatial.weight)
    ((out - x["pos"]) ** 2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ponita_random_grid_only_in_training(batch):
    torch.manual_seed(0)
    model = Ponita(hidden=8, n_layers=1, basis=8, n_orientations=6, grid="fixed")
    x = _inputs(batch, torch.float32)
    _f(model)(x)  # calibration pass
    a, b = _f(model)(x), _f(model)(x)
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(_f(model)(x), _f(model)(x))


def test_pair_invariants_and_grid():
    g = fibonacci_sphere(50)
    assert torch.allclose(g.norm(dim=-1), torch.ones(50, dtype=torch.float64))
    assert g.mean(0).abs().max() < 0.05  # spread over the sphere
    rel = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    o = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    a = pair_invariants(rel, o)
    assert torch.allclose(a, torch.tensor([[[3.0, 4.0], [0.0, 5.0]]], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("cls,kw,match", [
    (Ponita, {"hidden": 0}, "hidden"), (Ponita, {"n_orientations": 1.5}, "n_orientations"),
    (EqMotion, {"channels": 0}, "channels"), (EqMotion, {"tau": 0.0}, "tau"),
])
def test_bad_arguments(cls, kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        cls(**kw)


def test_wrong_inputs_are_rejected(batch):
    x = _inputs(batch, torch.float64)
    for model in (_ponita(torch.float64), _eqmotion(torch.float64)):
        with pytest.raises(ValueError, match="edge_features"):
            model(x["pos"], x["vel"], x["edge_index"], None)
        with pytest.raises(ValueError, match="`h`"):
            model(x["pos"], x["vel"], x["edge_index"], x["edge_attr"], h=x["pos"])
