import pytest
import torch

from equikit.check import equivariance_error
from equikit.groups import SE, SO, E, O, PointCloud
from equikit.symmetrize import MDSCanonicalizer, PCAFrame, Symmetrize, classical_mds, principal_axes

from ._helpers import HalfSigns, Reshape, mlp

N = 6
GROUPS = [O(3), SO(3), E(3), SE(3), O(2), E(2)]
# every check samples from the full group with reflections (and translations where the
# wrapped group has them), so invariance under SO/SE is only claimed for SO/SE
CHECK = {O(3): O(3), SO(3): SO(3), E(3): E(3), SE(3): SE(3), O(2): O(2), E(2): E(2)}


def _points(dtype, b=8, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([3.0, 2.0, 1.0][:d], dtype=torch.float64)
    return (torch.randn(b, N, d, generator=g, dtype=torch.float64) * scales).to(dtype)


@pytest.mark.parametrize("group", GROUPS, ids=repr)
@pytest.mark.parametrize("mode", ["average", "canonicalize"])
def test_invariant(group, mode, dtype):
    d = group.d
    net = Symmetrize(mlp(N * d, 4, dtype), PCAFrame(group), PointCloud(group), mode=mode)
    rep = equivariance_error(net, _points(dtype, d=d), PointCloud(CHECK[group]), n_samples=8)
    assert rep.passed(), rep
    assert not bool(net.last_degenerate.any())


@pytest.mark.parametrize("group", [O(3), E(3), SE(3)], ids=repr)
def test_equivariant_points(group, dtype):
    d = group.d
    backbone = Reshape(mlp(N * d, N * d, dtype), (N, d))
    net = Symmetrize(backbone, PCAFrame(group), PointCloud(group), PointCloud(group), chunk_size=3)
    rep = equivariance_error(net, _points(dtype), PointCloud(group), PointCloud(group), n_samples=8)
    assert rep.passed(), rep


def test_negative_controls(dtype):
    x = _points(dtype)
    bare = mlp(N * 3, 4, dtype)
    assert not equivariance_error(bare, x, PointCloud(O(3)), n_samples=4).passed()
    dropped = Symmetrize(mlp(N * 3, 4, dtype), HalfSigns(O(3)), PointCloud(O(3)))
    assert not equivariance_error(dropped, x, PointCloud(O(3)), n_samples=8).passed()
    # an SO(3) frame does not make a model reflection-invariant
    so3 = Symmetrize(mlp(N * 3, 4, dtype), PCAFrame(SO(3)), PointCloud(SO(3)))
    refl = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))[None]
    rep = equivariance_error(so3, x, PointCloud(O(3)), elements=refl)
    assert not rep.passed()


def test_frame_sizes_and_elements():
    x = _points(torch.float64)
    for group, k in [(O(3), 8), (SO(3), 4), (E(3), 8), (SE(3), 4), (O(2), 4)]:
        fr = PCAFrame(group)(_points(torch.float64, d=group.d))
        assert fr.weights.shape == (k, 8)
        rot = fr.elements if isinstance(group, (O, SO)) else group.as_affine(fr.elements)[0]
        eye = torch.eye(group.d, dtype=torch.float64)
        assert torch.allclose(rot @ rot.transpose(-1, -2), eye.expand_as(rot), atol=1e-12)
        if isinstance(group, (SO, SE)):
            assert torch.allclose(torch.linalg.det(rot), torch.ones(k, 8, dtype=torch.float64))
        # the frame elements are distinct
        flat = rot.reshape(k, 8, -1).transpose(0, 1)
        assert (torch.cdist(flat, flat) + torch.eye(k) > 1e-6).all()
    # E(3) frames translate by the centroid
    _a, t = E(3).as_affine(PCAFrame(E(3))(x).elements)
    assert torch.allclose(t, x.mean(1).expand(8, -1, -1))


def test_degenerate_inputs_are_flagged():
    cube = torch.tensor([[i, j, k] for i in (-1.0, 1.0) for j in (-1.0, 1.0) for k in (-1.0, 1.0)], dtype=torch.float64)
    x = torch.stack([cube[:6] * 0 + _points(torch.float64, b=1)[0], cube[:6]])  # second: tied spectrum
    x[1] = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    _c, _v, _lam, deg = principal_axes(x)
    assert deg.tolist() == [False, True]
    net = Symmetrize(mlp(18, 2, torch.float64), PCAFrame(O(3)), PointCloud(O(3)))
    net(x)
    assert net.last_degenerate.tolist() == [False, True]
    with pytest.raises(ValueError, match=r"PCAFrame.*tied covariance eigenvalues"):
        PCAFrame(O(3), on_degenerate="raise")(x)


def test_mds_canonicalizer(dtype):
    x = _points(dtype)
    mds = MDSCanonicalizer(E(3))
    net = Symmetrize(mlp(N * 3, 3, dtype), mds, PointCloud(E(3)))
    assert equivariance_error(net, x, PointCloud(E(3)), n_samples=8).passed()
    coords = lambda p: mds.coordinates(p)  # noqa: E731
    rep = equivariance_error(coords, x, PointCloud(E(3)), n_samples=8)
    assert rep.passed(), rep
    # distances are preserved
    y = mds.coordinates(x)
    assert torch.allclose(torch.cdist(y, y), torch.cdist(x, x), atol=1e-5 if dtype == torch.float32 else 1e-10)
    # scale invariance with scale=True
    s = mds.coordinates(x * 2.5, scale=True)
    assert torch.allclose(s, mds.coordinates(x, scale=True), atol=1e-5 if dtype == torch.float32 else 1e-10)


def test_mds_mirror_symmetric_input_flagged():
    x = torch.tensor([[[2.0, 1.0, 0.5], [-2.0, 1.0, 0.5], [0.0, -1.0, -0.5], [0.0, 3.0, 0.1], [0.0, -2.0, 0.2]]],
                     dtype=torch.float64)
    fr = MDSCanonicalizer(O(3))(x)  # mirror symmetric in x -> zero third moment on one axis
    assert fr.degenerate.tolist() == [True]


def test_classical_mds_matches_and_is_invariant():
    x = _points(torch.float64)
    y, deg = classical_mds(torch.cdist(x, x), 3)
    assert not deg.any()
    assert torch.allclose(torch.cdist(y, y), torch.cdist(x, x), atol=1e-10)
    g = E(3).sample(1, generator=3, dtype=torch.float64)[0]
    gx = PointCloud(E(3))(g, x)
    y2, _ = classical_mds(torch.cdist(gx, gx), 3)
    assert torch.allclose(y, y2, atol=1e-9)
    # the coordinates agree with the MDS canonicaliser up to nothing (same sign rule)
    assert torch.allclose(y, MDSCanonicalizer(E(3)).coordinates(x), atol=1e-9)
