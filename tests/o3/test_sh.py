import math

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.o3 import Irreps, IrrepsRep, _sh_native, sphere_grid, spherical_harmonics, sphericart_available

e3nn_o3 = pytest.importorskip("e3nn.o3")
BACKENDS = (
    ["torch"] + (["sphericart"] if sphericart_available() else []) + (["native"] if _sh_native.available() else [])
)
NORMS = ["integral", "component", "norm"]
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_e3nn_same_basis(dtype, backend, normalization, normalize):
    """The change of basis to e3nn is the identity (documented in docs/o3.md)."""
    x = torch.randn(200, 3, dtype=torch.float64)
    ref = e3nn_o3.spherical_harmonics(list(range(13)), x, normalize, normalization=normalization)
    y = spherical_harmonics(12, x.to(dtype), normalize, normalization, backend=backend)
    assert y.dtype == dtype and y.shape == (200, 169)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scale = 10 if not normalize else 1  # r^12 solid harmonics: float32 rounding of |x|^12
    assert rel(y.double(), ref) < tol * scale


def test_backends_agree_and_ls_subset(dtype):
    if not sphericart_available():
        pytest.skip("sphericart-torch not installed")
    x = torch.randn(7, 5, 3, dtype=dtype)
    a = spherical_harmonics([3, 1], x, backend="torch")
    b = spherical_harmonics([3, 1], x, backend="sphericart")
    assert a.shape == (7, 5, 10)
    assert rel(a, b) < RTOL[dtype] * 10
    full = spherical_harmonics(3, x, backend="torch")
    assert torch.equal(a, torch.cat([full[..., 9:16], full[..., 1:4]], -1))


def test_normalizations(dtype):
    x = torch.randn(100, 3, dtype=dtype)
    for l in [0, 1, 5, 12]:
        yc = spherical_harmonics([l], x, normalization="component")
        yn = spherical_harmonics([l], x, normalization="norm")
        assert rel((yc**2).sum(-1), torch.full((100,), 2.0 * l + 1, dtype=dtype)) < RTOL[dtype] * 10
        assert rel((yn**2).sum(-1), torch.ones(100, dtype=dtype)) < RTOL[dtype] * 10
    # integral: orthonormal on the sphere (exact quadrature of degree 2 * 12)
    g = sphere_grid(12, dtype=dtype)
    y = spherical_harmonics(12, g.points, normalization="integral").reshape(-1, 169)
    gram = y.T @ (y * g.weights.reshape(-1, 1))
    assert (gram - torch.eye(169, dtype=dtype)).abs().max() < RTOL[dtype] * 10


def test_l1_is_the_vector():
    x = torch.randn(10, 3, dtype=torch.float64)
    y = spherical_harmonics([1], x, normalize=False, normalization="component")
    assert rel(y, math.sqrt(3) * x) < 1e-14


@pytest.mark.parametrize("backend", BACKENDS)
def test_addition_theorem(dtype, backend):
    """sum_m Y_lm(x) Y_lm(y) = (2l + 1) / (4 pi) P_l(x . y) for unit x, y (integral norm)."""
    x = torch.nn.functional.normalize(torch.randn(40, 3, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(40, 3, dtype=torch.float64), dim=-1)
    t = (x * y).sum(-1)
    p = [torch.ones_like(t), t]  # Legendre by Bonnet's recursion, independent of our code
    for n in range(1, 12):
        p.append(((2 * n + 1) * t * p[n] - n * p[n - 1]) / (n + 1))
    yx = spherical_harmonics(12, x.to(dtype), normalization="integral", backend=backend)
    yy = spherical_harmonics(12, y.to(dtype), normalization="integral", backend=backend)
    for l in range(13):
        s = slice(l * l, (l + 1) ** 2)
        lhs = (yx[:, s] * yy[:, s]).sum(-1).double()
        rhs = (2 * l + 1) / (4 * math.pi) * p[l]
        assert (lhs - rhs).abs().max() < RTOL[dtype] * 10 * (2 * l + 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariant_under_O3_with_parity(dtype, backend):
    """Y(g x) = D(g) Y(x) for g in O(3), with irreps 0e + 1o + 2e + ... (parity (-1)^l)."""
    x = torch.randn(32, 3, dtype=dtype)
    irreps = Irreps.spherical_harmonics(8)
    f = lambda v: spherical_harmonics(8, v, backend=backend)  # noqa: E731
    from equikit.groups import O
    from equikit.groups.actions import MatrixRep

    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_equivariant(f, x, MatrixRep(O(3)), IrrepsRep(irreps), rtol=rtol)
    # negative control: declaring all-even parity must fail under reflections
    bad = equivariance_error(f, x, MatrixRep(O(3)), IrrepsRep(Irreps.spherical_harmonics(8, p=1)))
    assert not bad.passed()


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward(backend):
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    f = lambda v: spherical_harmonics(3, v, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_rescale_keeps_gradients(backend):
    """The normalisation is multiplied in place (one pass); its gradient must still be right."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    for norm in ("norm", "component"):
        f = lambda v, n=norm: spherical_harmonics(2, v, normalization=n, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,))
    w = torch.randn(25, dtype=torch.float64)
    y = spherical_harmonics(4, x, normalization="norm", backend=backend)
    ref = e3nn_o3.spherical_harmonics(list(range(5)), x, True, normalization="norm")
    (g,) = torch.autograd.grad((y @ w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref @ w).sum(), x)
    assert rel(g, g_ref) < 1e-12


def test_backends_agree_on_second_derivatives(dtype):
    if len(BACKENDS) < 2:
        pytest.skip("only the torch backend is available")
    x = torch.randn(20, 3, dtype=dtype, requires_grad=True)
    w = torch.randn(81, dtype=dtype)
    out = []
    for b in BACKENDS:
        e = (spherical_harmonics(8, x, backend=b) @ w).sum()
        (g,) = torch.autograd.grad(e, x, create_graph=True)
        (h,) = torch.autograd.grad((g**2).sum(), x)
        out.append((g.detach(), h))
    for g, h in out[1:]:
        assert rel(g, out[0][0]) < RTOL[dtype] * 10
        assert rel(h, out[0][1]) < RTOL[dtype] * 10


def test_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"spherical_harmonics: `l` \(lmax\) must be >= 0, got -1"):
        spherical_harmonics(-1, x)
    with pytest.raises(ValueError, match=r"spherical_harmonics: `x` must be .* \(\.\.\., 3\), got .*\(4, 2\)"):
        spherical_harmonics(2, torch.randn(4, 2))
    with pytest.raises(ValueError, match="normalization"):
        spherical_harmonics(2, x, normalization="unit")
    with pytest.raises(ValueError, match="backend"):
        spherical_harmonics(2, x, backend="cuda")
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        spherical_harmonics(2, [1.0, 2.0, 3.0])
