"""The separable O(L^3) grid transforms of the sphere_grid backend (tp/_grid_transform.py) and
its two routes, the fused C++ kernel (tp/_grid_kernel.cpp via _grid_native) and the PyTorch
fallback: against the dense harmonics, the naive oracle, gradcheck, double backward, the
equivariance checker, with the fallback forced by a loader without a compiler."""

import math

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups.actions import OnKeys
from equikit.o3 import Irrep, Irreps, IrrepsRep, from_grid, spherical_harmonics, to_grid
from equikit.tp import _grid_native, gaunt_product, make_executor
from equikit.tp._grid_transform import from_grid as sep_from_grid
from equikit.tp._grid_transform import ring_factors, trig_basis
from equikit.tp._grid_transform import to_grid as sep_to_grid
from equikit.tp._sphere_grid import grid_matrices, product_resolution

ROUTES = ["native", "torch"]


@pytest.fixture
def route(request, monkeypatch):
    if request.param == "torch":  # a loader that finds no compiler: the PyTorch route
        monkeypatch.setattr(_grid_native, "library", lambda: None)
    elif _grid_native.library() is None:  # as tests/tp/test_native.py: no compiler, no kernel to test
        pytest.skip("no C++ compiler (or EQUIKIT_NO_NATIVE): the grid kernel cannot be built")
    return request.param


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize(("lmax", "res"), [(0, (1, 1)), (3, (4, 7)), (6, (10, 19)), (5, (9, 14))])
def test_factors_reproduce_the_harmonics(lmax, res):
    """Y_lm(theta_j, phi_k) == P[q, l, j] T[q, k], and P vanishes for l < m(q)."""
    from equikit.o3 import sphere_grid

    f = ring_factors(lmax, *res)
    g = sphere_grid(0, res, dtype=torch.float64)
    y = spherical_harmonics(lmax, g.points.reshape(-1, 3), backend="torch").reshape(*res, -1)
    for l in range(lmax + 1):
        for k in range(2 * l + 1):
            q = int(f.q_of[l * l + k])
            assert (q + 1) // 2 == abs(k - l)  # frequency of the longitude factor is |m|
            recon = f.legendre[q, l][:, None] * f.trig[q][None, :]
            assert _rel(recon, y[:, :, l * l + k]) <= 1e-12
    for q in range(2 * lmax + 1):
        assert not f.legendre[q, : (q + 1) // 2].any()
    assert math.isclose(float(f.weights.sum()) * res[1], 4 * math.pi, rel_tol=1e-12)
    assert torch.equal(f.trig, trig_basis(lmax, res[1]))


@pytest.mark.parametrize(("lmax", "res"), [(2, (3, 5)), (4, (7, 12)), (6, (10, 19))])
def test_separable_transforms_equal_the_dense_ones(lmax, res):
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(3, 2, (lmax + 1) ** 2, dtype=torch.float64, generator=gen)
    v = sep_to_grid(c, lmax, res)
    assert v.shape == (3, 2, *res)
    assert _rel(v, to_grid(c, lmax, res)) <= 1e-12
    w = torch.randn(4, *res, dtype=torch.float64, generator=gen)
    assert _rel(sep_from_grid(w, lmax), from_grid(w, lmax)) <= 1e-12
    assert _rel(sep_from_grid(v, lmax), c) <= 1e-12  # round trip (band limit <= lmax)


def test_separable_product_equals_the_dense_grid_matrices():
    """The executor's product equals the dense formula with grid_matrices (Y1, Y2, P)."""
    L = 4
    d = gaunt_product(Irreps.spherical_harmonics(L), Irreps.spherical_harmonics(L), lmax=L)
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(5, d.irreps1.dim, dtype=torch.float64, generator=gen)
    x2 = torch.randn(5, d.irreps2.dim, dtype=torch.float64, generator=gen)
    y1, y2, proj = grid_matrices(L, L, L)
    dense = ((x1 @ y1) * (x2 @ y2)) @ proj  # spherical_harmonics(L) has c = 1 per block
    assert _rel(make_executor(d, "sphere_grid")(x1, x2), dense) <= 1e-12
    assert y1.shape[1] == math.prod(product_resolution(L, L, L))


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize(("i1", "i2", "mode", "lmax"), [
    ("1x0e + 1x1o", "1x0e + 1x1o", "uuu", None),  # one channel (narrower than a register block)
    ("11x0e + 11x1o + 11x2e + 11x3o", "11x0e + 11x2e", "uuu", None),  # register-block tail
    ("19x1e + 19x2o + 19x4o", "0e + 1o + 2e + 3o", "uvu", 5),  # pseudo operands, lmax cut
    ("3x0e + 3x2e + 3x6e", "2x1o + 2x4e", "uvu", None),  # x2 channels summed, gaps in l
])
def test_routes_match_naive(route, i1, i2, mode, lmax):
    d = gaunt_product(i1, i2, mode=mode, lmax=lmax)
    gen = torch.Generator().manual_seed(2)
    x1 = torch.randn(2, 3, d.irreps1.dim, dtype=torch.float64, generator=gen)
    x2 = torch.randn(3, d.irreps2.dim, dtype=torch.float64, generator=gen)  # broadcast batch
    ex = make_executor(d, "sphere_grid")
    assert ex.native == (route == "native")
    ref = make_executor(d, "naive")(x1, x2)
    out = ex(x1, x2)
    assert out.shape == ref.shape == (2, 3, d.irreps_out.dim)
    assert _rel(out, ref) <= 1e-12
    out32 = ex(x1.float(), x2.float())
    assert out32.dtype == torch.float32 and _rel(out32.double(), ref) <= 1e-5
    assert ex(x1[:, :0], x2[:0]).shape == (2, 0, d.irreps_out.dim)  # empty batch


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("mode", ["uuu", "uvu"])
def test_gradcheck_gradgradcheck_and_forces(route, mode):
    i1 = Irreps("3x0e + 3x1o + 3x2e")
    i2 = i1 if mode == "uuu" else Irreps("2x0e + 2x1o + 2x2e")
    d = gaunt_product(i1, i2, mode=mode, lmax=3)
    gen = torch.Generator().manual_seed(3)
    x1 = torch.randn(2, i1.dim, dtype=torch.float64, generator=gen, requires_grad=True)
    x2 = torch.randn(2, i2.dim, dtype=torch.float64, generator=gen, requires_grad=True)
    m = make_executor(d, "sphere_grid")
    assert torch.autograd.gradcheck(m, (x1, x2))
    assert torch.autograd.gradgradcheck(m, (x1, x2))
    ref = make_executor(d, "naive")
    third = []
    for ex in (m, ref):  # a third derivative: d/dx1 of |d/dx2 |d/dx1 |z|^2||^2
        (g1,) = torch.autograd.grad(ex(x1, x2).pow(2).sum(), x1, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), x2, create_graph=True)
        (g3,) = torch.autograd.grad(g2.pow(2).sum(), x1)
        third.append(g3)
    assert _rel(third[0], third[1]) <= 1e-10


@pytest.mark.parametrize("route", ROUTES, indirect=True)
def test_equivariant_with_negative_control(route, dtype):
    i1, i2 = Irreps("17x0o + 17x1e + 17x2o"), Irreps("0e + 1o + 2e")
    d = gaunt_product(i1, i2, mode="uvu")
    m = make_executor(d, "sphere_grid")
    gen = torch.Generator().manual_seed(4)
    x = {"x1": torch.randn(5, i1.dim, dtype=dtype, generator=gen),
         "x2": torch.randn(5, i2.dim, dtype=dtype, generator=gen)}
    act = OnKeys({"x1": IrrepsRep(i1), "x2": IrrepsRep(i2)})
    f = lambda t: m(t["x1"], t["x2"])  # noqa: E731
    assert_equivariant(f, x, act, IrrepsRep(d.irreps_out))
    wrong = Irreps([(mul, Irrep(ir.l, -ir.p)) for mul, ir in d.irreps_out])  # parity read wrongly
    assert not equivariance_error(f, x, act, IrrepsRep(wrong)).passed()


def test_native_threads_agree():
    if _grid_native.library() is None:
        pytest.skip("no C++ compiler (or EQUIKIT_NO_NATIVE): the grid kernel cannot be built")
    d = gaunt_product("8x0e + 8x1o + 8x2e", "8x0e + 8x1o + 8x2e")
    gen = torch.Generator().manual_seed(5)
    x1, x2 = (torch.randn(37, d.irreps1.dim, generator=gen, dtype=torch.float64) for _ in range(2))
    ex = make_executor(d, "sphere_grid")
    one = ex(x1, x2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = ex(x1, x2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)  # rows are independent: bitwise equal


@pytest.mark.parametrize("mode", ["uuu", "uvu"])
def test_compile_fullgraph_traces_the_grid_op(mode):
    """The C++ route is the custom op ``equikit::grid_bilinear``: torch.compile(fullgraph=True)
    traces it as one node (no graph break), and forces plus a loss on them (double backward,
    the registered autograd calling the op with permuted sides) match the naive oracle."""
    if _grid_native.library() is None:
        pytest.skip("no C++ compiler (or EQUIKIT_NO_NATIVE): the grid kernel cannot be built")
    i1 = Irreps("3x0e + 3x1o + 3x2e")
    i2 = i1 if mode == "uuu" else Irreps("0e + 1o + 2e")
    d = gaunt_product(i1, i2, mode=mode, lmax=2)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes)
        return gm

    ex, ref = make_executor(d, "sphere_grid"), make_executor(d, "naive")
    compiled = torch.compile(ex, fullgraph=True, backend=backend)
    gen = torch.Generator().manual_seed(6)
    x1 = torch.randn(4, i1.dim, dtype=torch.float64, generator=gen, requires_grad=True)
    x2 = torch.randn(4, i2.dim, dtype=torch.float64, generator=gen, requires_grad=True)
    out = compiled(x1, x2)
    assert any("grid_bilinear" in s for s in seen)
    assert _rel(out.detach(), ref(x1, x2).detach()) <= 1e-12
    grads = []
    for f in (compiled, ref):
        (force,) = torch.autograd.grad(f(x1, x2).pow(2).sum(), x2, create_graph=True)
        grads.append(torch.autograd.grad(force.pow(2).sum(), (x1, x2)))
    for g, r in zip(*grads):
        assert _rel(g, r) <= 1e-10


def test_grid_op_checks_like_an_op():
    """torch.library.opcheck: schema, fake (meta) implementation and autograd registration of
    ``equikit::grid_bilinear`` are consistent with its CPU implementation."""
    if _grid_native.library() is None:
        pytest.skip("no C++ compiler (or EQUIKIT_NO_NATIVE): the grid kernel cannot be built")
    d = gaunt_product("2x0e + 2x1o", "0e + 1o", mode="uvu", lmax=2)
    ex = make_executor(d, "sphere_grid")
    gen = torch.Generator().manual_seed(7)
    x1 = torch.randn(3, d.irreps1.dim, dtype=torch.float64, generator=gen, requires_grad=True)
    x2 = torch.randn(3, d.irreps2.dim, dtype=torch.float64, generator=gen, requires_grad=True)
    torch.library.opcheck(torch.ops.equikit.grid_bilinear.default, (x1, x2, ex._key, 0))
