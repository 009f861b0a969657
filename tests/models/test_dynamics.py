"""Dynamics models through the public checker: E(3) equivariance of predicted positions and
permutation equivariance over particles, float32 and float64, with negative controls; a
short training run."""

import numpy as np
import pytest
import torch
from dynamics_test_helpers import E3_IN, E3_OUT, PERM_IN, PERM_OUT, small_batch
from dynamics_test_helpers import as_function as _f
from dynamics_test_helpers import inputs as _inputs

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, collate_nbody, generate_charged_nbody
from equikit.groups import E, NodePermutation, PointCloud
from equikit.models import EGNN, GNN, EGNNLayer, LinearDynamics

MODELS = {
    "egnn": lambda: EGNN(hidden=16, n_layers=2),
    "gnn": lambda: GNN(hidden=16, n_layers=2),
    "linear": lambda: LinearDynamics(),
}
KEYS = ("pos", "vel", "charges", "edge_index", "edge_attr")


@pytest.fixture(scope="module")
def batch():
    return small_batch()


def _model(name, dtype):
    torch.manual_seed(0)
    model = MODELS[name]().to(dtype)
    if name == "egnn":  # make the coordinate messages matter (they start ~1e-3 small)
        for layer in model.layers:
            torch.nn.init.normal_(layer.coord_mlp[-1].weight, std=0.3)
    return model


@pytest.mark.parametrize("name", ["egnn", "linear"])
def test_e3_equivariance_of_predicted_positions(name, dtype, batch):
    model = _model(name, dtype)
    x = _inputs(batch, dtype)
    report = assert_equivariant(_f(model), x, E3_IN, E3_OUT, n_samples=16, generator=1)
    assert report.n_elements == 16


@pytest.mark.parametrize("name", ["egnn", "gnn", "linear"])
def test_permutation_equivariance_over_particles(name, dtype, batch):
    model = _model(name, dtype)
    assert_equivariant(_f(model), _inputs(batch, dtype), PERM_IN, PERM_OUT, n_samples=8, generator=2)


def test_e3_samples_contain_reflections():
    g = E(3).sample(64, generator=1)
    A, _ = E(3).as_affine(g)
    dets = torch.linalg.det(A.double())
    assert (dets < 0).any() and (dets > 0).any()


def test_negative_control_gnn_on_coordinates_is_not_e3_equivariant(dtype, batch):
    model = _model("gnn", dtype)
    report = equivariance_error(_f(model), _inputs(batch, dtype), E3_IN, E3_OUT, n_samples=16, generator=1)
    assert not report.passed()
    assert report.rel_max > 1e-2


def test_negative_control_node_index_features_break_permutation(dtype, batch):
    """The same EGNN, fed the particle index as an extra node scalar, stays E(3)-equivariant
    but is no longer equivariant to relabelling particles."""
    torch.manual_seed(0)
    model = EGNN(hidden=16, n_layers=2, node_features=2).to(dtype)

    def f(d):
        idx = torch.arange(d["pos"].shape[0], dtype=dtype).unsqueeze(-1)
        h = torch.cat([d["vel"].norm(dim=-1, keepdim=True), idx], dim=-1)
        return model(d["pos"], d["vel"], d["edge_index"], d["edge_attr"], h=h)

    x = _inputs(batch, dtype)
    assert_equivariant(f, x, E3_IN, E3_OUT, n_samples=8, generator=1)
    report = equivariance_error(f, x, PERM_IN, PERM_OUT, n_samples=8, generator=2)
    assert not report.passed()
    assert report.rel_max > 1e-4


def test_egnn_layer_alone_is_equivariant_with_random_hidden_scalars(dtype):
    torch.manual_seed(0)
    layer = EGNNLayer(8, edge_features=1).to(dtype)
    torch.nn.init.normal_(layer.coord_mlp[-1].weight, std=0.5)
    n = 6
    src, dst = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2]), torch.tensor([1, 2, 3, 4, 5, 0, 3, 5])
    x = {"pos": torch.randn(n, 3, dtype=dtype), "vel": torch.randn(n, 3, dtype=dtype),
         "h": torch.randn(n, 8, dtype=dtype), "edge_index": torch.stack([src, dst]),
         "edge_attr": torch.randn(8, 1, dtype=dtype)}

    def f(d):
        h, pos = layer(d["h"], d["pos"], d["vel"], d["edge_index"], d["edge_attr"])
        return {"h": h, "pos": pos}

    act = PointCloud(E(3), vectors=("vel",), scalars=("h", "edge_attr", "edge_index"))
    assert_equivariant(f, x, act, PointCloud(E(3), scalars=("h",)), n_samples=8, generator=3)
    perm_in = NodePermutation(n, nodes={"pos": -2, "vel": -2, "h": -2}, edge_index="edge_index",
                              invariant=("edge_attr",))
    perm_out = NodePermutation(n, nodes={"pos": -2, "h": -2})
    assert_equivariant(f, x, perm_in, perm_out, n_samples=8, generator=4)


def test_aggregation_is_vectorised_and_matches_a_loop():
    """Messages are aggregated with index_add (no per-edge Python loop): compare with a loop."""
    from equikit.models.dynamics import _mean_at, _sum_at

    vals = torch.randn(7, 4, dtype=torch.float64)
    idx = torch.tensor([0, 2, 2, 1, 0, 2, 4])
    s, m = _sum_at(vals, idx, 5), _mean_at(vals, idx, 5)
    for i in range(5):
        sel = vals[idx == i]
        torch.testing.assert_close(s[i], sel.sum(0))
        torch.testing.assert_close(m[i], sel.mean(0) if len(sel) else torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("name", ["egnn", "gnn", "linear"])
def test_short_training_reduces_loss(name):
    cfg = ChargedNBodyConfig(n_train=32, n_val=0, n_test=0, steps=600, sample_every=50)
    ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9)
    b = collate_nbody([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    model = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3 if name != "linear" else 5e-2)

    def loss():
        return torch.nn.functional.mse_loss(model(b.pos, b.vel, b.edge_index, b.edge_attr), b.target)

    with torch.no_grad():
        before = float(loss())
    for _ in range(30):
        opt.zero_grad()
        ell = loss()
        ell.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert np.isfinite(after) and after < 0.7 * before


def test_linear_learns_the_time_of_free_flight():
    """No forces: pos(t) = pos(0) + t vel, so the learned time converges to t."""
    torch.manual_seed(0)
    pos, vel = torch.randn(50, 3), torch.randn(50, 3)
    target = pos + 0.25 * vel
    model = LinearDynamics()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ei = torch.zeros(2, 0, dtype=torch.long)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(pos, vel, ei), target).backward()
        opt.step()
    assert abs(model.time.item() - 0.25) < 1e-3


@pytest.mark.parametrize(
    ("args", "exc", "words"),
    [
        ((torch.randn(5, 2), torch.randn(5, 2), torch.zeros(2, 0, dtype=torch.long)), ValueError, "`pos`"),
        ((torch.randn(5, 3), torch.randn(4, 3), torch.zeros(2, 0, dtype=torch.long)), ValueError, "`vel`"),
        ((torch.randn(5, 3), torch.randn(5, 3), torch.zeros(2, 3)), TypeError, "`edge_index`"),
        ((torch.randn(5, 3), torch.randn(5, 3), torch.zeros(3, 2, dtype=torch.long)), ValueError,
         "`edge_index`"),
        ((torch.randn(5, 3), torch.randn(5, 3), torch.zeros(2, 4, dtype=torch.long), torch.ones(3, 1)),
         ValueError, "`edge_attr`"),
    ],
)
@pytest.mark.parametrize("name", ["egnn", "gnn", "linear"])
def test_bad_input_names_model_and_argument(name, args, exc, words):
    with pytest.raises(exc, match=f"{type(MODELS[name]()).__name__}: {words}"):
        MODELS[name]()(*args)


def test_bad_constructor_and_h():
    with pytest.raises(ValueError, match="EGNN: `n_layers` must be >= 1"):
        EGNN(n_layers=0)
    with pytest.raises(ValueError, match=r"EGNN: `h` must have shape"):
        EGNN(hidden=4, n_layers=1)(torch.randn(3, 3), torch.randn(3, 3), torch.zeros(2, 0, dtype=torch.long),
                                   None, h=torch.randn(3, 2))
