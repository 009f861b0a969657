"""PONITA-style model with the orientation grid in each system's equivariant frame
(``grid="frame"``, the default): exact E(3) equivariance (reflections included) of the
predicted positions and of the displacement through the public checker in float64 and
float32, translations, particle permutations, the frame itself, degenerate inputs, and the
fixed-grid variant as the negative control (it must fail the exact tolerance)."""

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.nbody import (
    ChargedNBodyConfig,
    NBodyDataset,
    collate_nbody,
    complete_edge_index,
    generate_charged_nbody,
)
from equikit.groups import E, NodePermutation, O, PointCloud, Translation
from equikit.models import Ponita
from equikit.models.ponita import graph_components, system_frames

E3_IN = PointCloud(E(3), vectors=("vel",), scalars=("charges", "edge_attr", "edge_index"))
E3_OUT = PointCloud(E(3))
# the displacement output - pos: positions alone would hide a rotation error (docs/dynamics.md)
DISPLACEMENT = PointCloud(E(3), pos=None, vectors=("d",))
T_IN = PointCloud(Translation(3), vectors=("vel",), scalars=("charges", "edge_attr", "edge_index"))
T_OUT = PointCloud(Translation(3))
N = 15  # three systems of five particles
PERM_IN = NodePermutation(N, nodes={"pos": -2, "vel": -2, "charges": -2}, edge_index="edge_index",
                          invariant=("edge_attr",))
PERM_OUT = NodePermutation(N, node_dim=-2)


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param


@pytest.fixture(scope="module")
def batch():
    cfg = ChargedNBodyConfig(n_train=3, n_val=0, n_test=0, steps=600, sample_every=50)
    ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9,
                      dtype=torch.float64)
    return collate_nbody([ds[0], ds[1], ds[2]])


def _inputs(batch, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.inputs().items()}


def _model(dtype, grid="frame", **kw):
    torch.manual_seed(0)
    return Ponita(hidden=16, n_layers=2, basis=16, n_orientations=20, grid=grid, **kw).to(dtype).eval()


def _f(model):
    return lambda d: model(d["pos"], d["vel"], d["edge_index"], d["edge_attr"])


def _displacement(model):
    return lambda d: {"d": model(d["pos"], d["vel"], d["edge_index"], d["edge_attr"]) - d["pos"]}


def test_frame_grid_is_e3_equivariant_exactly(dtype, batch):
    """Positions and displacement, 16 random E(3) elements (about half are reflections),
    default tolerances (float64 1e-10, float32 1e-5 relative). Measured: float64 2e-16 /
    8e-15, float32 7e-8 / 4e-6 (positions / displacement); the float32 displacement error is
    mostly the rounding of ``output - pos`` (|pos| ~ 1, |displacement| ~ 0.05)."""
    model, x = _model(dtype), _inputs(batch, dtype)
    report = assert_equivariant(_f(model), x, E3_IN, E3_OUT, n_samples=16, generator=1)
    assert report.n_elements == 16
    assert_equivariant(_displacement(model), x, E3_IN, DISPLACEMENT, n_samples=16, generator=1)


def test_frame_grid_is_equivariant_to_reflections_alone(batch):
    """The sign-fixed principal axes transform as ``R -> Q R`` for det Q = -1 too: O(3)."""
    model, x = _model(torch.float64), _inputs(batch, torch.float64)
    y = model(x["pos"], x["vel"], x["edge_index"], x["edge_attr"]) - x["pos"]
    for q in (torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)), -torch.eye(3, dtype=torch.float64)):
        yq = model(x["pos"] @ q.T, x["vel"] @ q.T, x["edge_index"], x["edge_attr"]) - x["pos"] @ q.T
        assert torch.allclose(yq, y @ q.T, rtol=0, atol=1e-10 * float(y.detach().abs().max()))
        assert (y @ q.T - y).abs().max() > 0.1 * y.abs().max()  # the reflection does change the output


def test_frame_grid_translation_and_permutation_exact(dtype, batch):
    model, x = _model(dtype), _inputs(batch, dtype)
    assert_equivariant(_f(model), x, T_IN, T_OUT, n_samples=8, generator=1)
    assert_equivariant(_displacement(model), x, PERM_IN, NodePermutation(N, nodes={"d": -2}), n_samples=8,
                       generator=2)


def test_frame_grid_with_random_rotation_in_training_is_exact_per_draw(batch):
    """``random_grid`` rotates the grid inside the frame: each draw is exactly equivariant."""
    model = _model(torch.float64, random_grid=True)
    x = _inputs(batch, torch.float64)
    model.train()
    _f(model)(x)  # calibration pass
    q = O(3).sample(1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)[0]
    torch.manual_seed(7)
    y = _f(model)(x) - x["pos"]
    torch.manual_seed(7)
    yq = model(x["pos"] @ q.T, x["vel"] @ q.T, x["edge_index"], x["edge_attr"]) - x["pos"] @ q.T
    torch.manual_seed(8)
    y_other = _f(model)(x) - x["pos"]
    assert torch.allclose(yq, y @ q.T, rtol=0, atol=1e-10 * float(y.detach().abs().max()))
    assert (y_other - y).abs().max() > 1e-3 * y.abs().max()  # the draw matters


def test_negative_control_fixed_grid_fails_the_exact_tolerance(dtype, batch):
    """The previous model (one fixed grid) is approximate: it fails the exact tolerance by
    orders of magnitude (relative displacement error ~0.2 at O = 20, docs/dynamics.md)."""
    model, x = _model(dtype, grid="fixed"), _inputs(batch, dtype)
    report = equivariance_error(_displacement(model), x, E3_IN, DISPLACEMENT, n_samples=8, generator=1)
    assert not report.passed() and report.rel_max > 1e-2
    # but it is exact for translations and permutations (invariant pair attributes)
    assert_equivariant(_f(model), x, T_IN, T_OUT, n_samples=4, generator=1)


def test_negative_control_non_equivariant_frame_fails(batch, monkeypatch):
    """Replacing the frame by the identity for every system (i.e. the fixed grid) through
    the frame function breaks exactness: the frame is what carries the equivariance."""
    model, x = _model(torch.float64), _inputs(batch, torch.float64)

    def identity_frames(pos, vel, system, n_systems, tol=1e-6):
        eye = torch.eye(3, dtype=pos.dtype).expand(n_systems, 3, 3)
        return eye, torch.zeros(n_systems, dtype=torch.bool)

    monkeypatch.setattr("equikit.models.ponita.system_frames", identity_frames)
    report = equivariance_error(_displacement(model), x, E3_IN, DISPLACEMENT, n_samples=8, generator=1)
    assert not report.passed() and report.rel_max > 1e-2


def test_system_frames_are_orthonormal_and_equivariant():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(12, 3, generator=g, dtype=torch.float64)
    vel = torch.randn(12, 3, generator=g, dtype=torch.float64)
    system = torch.arange(3).repeat_interleave(4)
    r, bad = system_frames(pos, vel, system, 3)
    assert not bad.any()
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r.transpose(1, 2) @ r, eye.expand(3, 3, 3), atol=1e-12)
    for k in range(4):
        q = O(3).sample(1, generator=torch.Generator().manual_seed(k), dtype=torch.float64)[0]
        rq, _ = system_frames(pos @ q.T + torch.randn(3, generator=g, dtype=torch.float64), vel @ q.T, system, 3)
        assert torch.allclose(rq, q @ r, atol=1e-12)
    # each system's frame depends on that system only
    r2, _ = system_frames(torch.cat([pos[:4], 5 * pos[4:]]), vel, system, 3)
    assert torch.allclose(r2[0], r[0], atol=1e-14) and not torch.allclose(r2[1], r[1], atol=1e-3)


def test_graph_components_of_collated_systems(batch):
    labels, n = graph_components(batch.edge_index, 15)
    assert n == 3 and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    # a path needs several sweeps; isolated nodes are their own systems
    labels, n = graph_components(torch.tensor([[3, 2, 1], [4, 3, 2]]), 6)
    assert n == 3 and labels.tolist() == [0, 1, 1, 1, 1, 2]


def test_degenerate_collinear_inputs_are_flagged_and_finite():
    """Collinear positions with velocities on the same line: two equal (zero) eigenvalues,
    the frame is not unique. Flagged; output and parameter gradients stay finite."""
    t = torch.tensor([-2.0, -0.5, 0.0, 1.0, 1.5], dtype=torch.float64)[:, None]
    axis = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    pos, vel = t * axis, 0.3 * t.flip(0) * axis
    _, bad = system_frames(pos, vel, torch.zeros(5, dtype=torch.long), 1)
    assert bad.tolist() == [True]
    torch.manual_seed(0)
    model = Ponita(hidden=8, n_layers=2, basis=8, n_orientations=6).double()
    ei, ea = complete_edge_index(5), torch.ones(20, 1, dtype=torch.float64)
    out = model(pos, vel, ei, ea)  # training mode: calibrates
    assert torch.isfinite(out).all()
    ((out - pos) ** 2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # a single particle (one-point system) and all-zero velocities are finite too
    model.eval()
    assert torch.isfinite(model(pos[:1], torch.zeros(1, 3, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.long),
                                torch.zeros(0, 1, dtype=torch.float64))).all()


def test_frame_grid_gradients_wrt_inputs_are_finite_for_generic_inputs(batch):
    """The frame is differentiable where it is unique (the eigenvalues are distinct)."""
    model, x = _model(torch.float64), _inputs(batch, torch.float64)
    pos = x["pos"].clone().requires_grad_(True)
    model(pos, x["vel"], x["edge_index"], x["edge_attr"]).sum().backward()
    assert torch.isfinite(pos.grad).all()


def test_fixed_grid_matches_frame_grid_when_frames_are_identity(batch, monkeypatch):
    """With identity frames the two modes compute the same function (shared weights)."""
    x = _inputs(batch, torch.float64)
    fixed, frame = _model(torch.float64, grid="fixed"), _model(torch.float64)
    frame.load_state_dict(fixed.state_dict())
    monkeypatch.setattr("equikit.models.ponita.system_frames",
                        lambda pos, vel, system, n, tol=1e-6: (torch.eye(3, dtype=pos.dtype).expand(n, 3, 3), None))
    assert torch.allclose(_f(frame)(x), _f(fixed)(x), rtol=0, atol=1e-13)


def test_bad_grid_arguments():
    with pytest.raises(ValueError, match="Ponita: `grid` must be one of"):
        Ponita(grid="random")
    with pytest.raises(TypeError, match="Ponita: `random_grid`"):
        Ponita(random_grid="yes")
    assert Ponita(hidden=4, basis=4, n_layers=1).random_grid is False
    assert Ponita(hidden=4, basis=4, n_layers=1, grid="fixed").random_grid is True
