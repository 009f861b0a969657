"""LearnedFrame: learned canonicalisation for O(d), SO(d), E(d), SE(d) (Kaba et al. 2023)."""

import pytest
import torch

from equikit.check import equivariance_error
from equikit.groups import SE, SO, E, O, PointCloud
from equikit.symmetrize import LearnedFrame, Symmetrize
from equikit.symmetrize._learned_frame import EquivariantVectors, gram_schmidt

from ._helpers import Reshape, mlp

N = 6
REFLECTION = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))[None]


def _points(dtype, b=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, N, d, generator=g, dtype=torch.float64).to(dtype)


def _frame(group, dtype, seed=0, **kw):
    torch.manual_seed(seed)
    return LearnedFrame(group, hidden=16, **kw).to(dtype)


@pytest.mark.parametrize("group", [O(3), E(3)], ids=repr)
def test_invariant_with_reflections(group, dtype):
    net = Symmetrize(mlp(N * 3, 4, dtype), _frame(group, dtype), PointCloud(group), mode="canonicalize")
    x = _points(dtype)
    rep = equivariance_error(net, x, PointCloud(group), n_samples=8)
    assert rep.passed(), rep
    # the sampled elements include reflections; also check one explicitly
    refl = REFLECTION if isinstance(group, O) else E(3).from_affine(REFLECTION, torch.ones(1, 3, dtype=torch.float64))
    assert equivariance_error(net, x, PointCloud(group), elements=refl).passed()
    assert not bool(net.last_degenerate.any())


@pytest.mark.parametrize("group", [O(3), E(3)], ids=repr)
def test_equivariant_positions(group, dtype):
    backbone = Reshape(mlp(N * 3, N * 3, dtype), (N, 3))
    net = Symmetrize(backbone, _frame(group, dtype), PointCloud(group), PointCloud(group), mode="canonicalize")
    rep = equivariance_error(net, _points(dtype), PointCloud(group), PointCloud(group), n_samples=8)
    assert rep.passed(), rep


@pytest.mark.parametrize("group", [SO(3), SE(3)], ids=repr)
def test_special_groups_rotations_exact_reflections_not(group, dtype):
    net = Symmetrize(mlp(N * 3, 4, dtype), _frame(group, dtype), PointCloud(group))
    x = _points(dtype)
    assert equivariance_error(net, x, PointCloud(group), n_samples=8).passed()
    rot = LearnedFrame(group).to(dtype).rotation(x)[0]
    assert torch.allclose(torch.linalg.det(rot.double()), torch.ones(x.shape[0], dtype=torch.float64), atol=1e-5)
    # negative control: a det +1 frame does not canonicalise reflections
    full = O(3) if isinstance(group, SO) else E(3)
    refl = REFLECTION if isinstance(group, SO) else E(3).from_affine(REFLECTION, torch.zeros(1, 3, dtype=torch.float64))
    assert not equivariance_error(net, x, PointCloud(full), elements=refl).passed()


def test_bare_backbone_fails(dtype):
    assert not equivariance_error(mlp(N * 3, 4, dtype), _points(dtype), PointCloud(E(3)), n_samples=4).passed()


def test_frame_is_orthogonal_and_equivariant():
    x = _points(torch.float64)
    frame = _frame(E(3), torch.float64)
    rot, c, deg = frame.rotation(x)
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye, atol=1e-12)
    assert torch.allclose(c, x.mean(1)) and not deg.any()
    g = E(3).sample(1, generator=2, dtype=torch.float64)[0]
    q, t = E(3).as_affine(g)
    rot2, c2, _ = frame.rotation(x @ q.T + t)
    assert torch.allclose(rot2, q @ rot, atol=1e-10) and torch.allclose(c2, c @ q.T + t, atol=1e-10)
    # the vector network is permutation-invariant
    perm = torch.randperm(N)
    assert torch.allclose(frame.rotation(x[:, perm])[0], rot, atol=1e-10)
    # sizes of frames and other modes
    fr = frame(x)
    assert fr.size == 1 and fr.elements.shape == (1, 6, 4, 4)
    assert frame.sample(x, 3).elements.shape == (3, 6, 4, 4)
    r2, _ = gram_schmidt(torch.randn(5, 1, 2, dtype=torch.float64), special=True)
    assert torch.allclose(torch.linalg.det(r2), torch.ones(5, dtype=torch.float64))


def test_training_updates_canonicaliser():
    dtype = torch.float64
    frame = _frame(E(3), dtype)
    net = Symmetrize(mlp(N * 3, 1, dtype), frame, PointCloud(E(3)), mode="canonicalize")
    x = _points(dtype)
    before = [p.detach().clone() for p in frame.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net(x).pow(2).mean() + 0.1 * frame.prior_loss(x)
    loss.backward()
    grads = [p.grad for p in frame.parameters()]
    assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, frame.parameters()))


def test_prior_loss_pulls_frame_to_identity():
    dtype = torch.float64
    frame = _frame(SO(3), dtype)
    # in-distribution data in a common pose: anisotropic clouds, long axis along x
    x = _points(dtype, b=16) * torch.tensor([3.0, 1.5, 0.5], dtype=dtype)
    opt = torch.optim.Adam(frame.parameters(), lr=1e-2)
    first = float(frame.prior_loss(x).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = frame.prior_loss(x)
        loss.backward()
        opt.step()
    assert float(frame.prior_loss(x).detach()) < 0.8 * first


def test_degenerate_inputs_flagged():
    dtype = torch.float64
    x = _points(dtype, b=3)
    x[1] = torch.linspace(-1, 1, N, dtype=dtype)[:, None] * torch.tensor([1.0, 2.0, 0.5], dtype=dtype)  # collinear
    x[2] = 0.0  # all points at the origin
    net = Symmetrize(mlp(N * 3, 2, dtype), _frame(O(3), dtype), PointCloud(O(3)))
    out = net(x)
    assert torch.isfinite(out).all()
    assert net.last_degenerate.tolist() == [False, True, True]
    with pytest.raises(ValueError, match=r"LearnedFrame.*linearly dependent"):
        LearnedFrame(O(3), on_degenerate="raise").double()(x)


def test_custom_network_and_errors():
    frame = LearnedFrame(SO(3), network=EquivariantVectors(2, hidden=8, layers=1)).double()
    assert frame(_points(torch.float64)).elements.shape == (1, 6, 3, 3)
    with pytest.raises(ValueError, match=r"LearnedFrame.*\(B=6, 3, 3\)"):
        LearnedFrame(O(3), network=EquivariantVectors(2)).double()(_points(torch.float64))
    with pytest.raises(ValueError, match=r"positions must be a floating tensor \(B, N, 3\)"):
        LearnedFrame(O(3))(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match=r"positions must be a floating tensor"):
        LearnedFrame(O(3))(torch.ones(2, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"LearnedFrame.*expected a dict input with key 'pos'"):
        LearnedFrame(O(3), key="pos")({"x": torch.randn(2, 5, 3)})
    with pytest.raises(ValueError, match=r"non-finite|NaN|nan"):
        LearnedFrame(O(3))(torch.full((2, 5, 3), float("nan")))
    with pytest.raises(ValueError, match="on_degenerate"):
        LearnedFrame(O(3), on_degenerate="ignore")
    with pytest.raises(ValueError, match="at least 2"):
        LearnedFrame(O(1))
    with pytest.raises(TypeError, match="O\\(d\\), SO\\(d\\), E\\(d\\) or SE\\(d\\)"):
        LearnedFrame("O3")
    with pytest.raises(ValueError, match="tol"):
        LearnedFrame(O(3), tol=0.0)
    # dict inputs with a key
    x = {"pos": _points(torch.float64), "h": torch.randn(6, N, 2, dtype=torch.float64)}
    assert LearnedFrame(E(3), key="pos").double()(x).weights.shape == (1, 6)


def test_2d():
    dtype = torch.float64
    for group in (O(2), SE(2)):
        net = Symmetrize(mlp(N * 2, 3, dtype), _frame(group, dtype), PointCloud(group))
        assert equivariance_error(net, _points(dtype, d=2), PointCloud(group), n_samples=8).passed()
