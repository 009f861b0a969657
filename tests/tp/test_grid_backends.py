"""The Gaunt backends (gaunt_fourier, sphere_grid) against the naive oracle on the Gaunt
descriptor, against the product of functions itself, through the equivariance checker,
gradcheck and double backward; what they refuse and why."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups.actions import OnKeys
from equikit.o3 import Irrep, Irreps, IrrepsRep, spherical_harmonics
from equikit.tp import (
    Path,
    TensorProductDescriptor,
    channelwise,
    elementwise,
    fully_connected,
    gaunt_product,
    make_executor,
    product_resolution,
)
from equikit.tp._sphere_grid import grid_matrices

GAUNT = ["gaunt_fourier", "sphere_grid"]


@st.composite
def function_irreps(draw, lmax=6, mul=None):
    """Blocks of distinct l <= lmax, one multiplicity, one parity twist p (-1)^l."""
    ls = sorted(draw(st.sets(st.integers(0, lmax), min_size=1, max_size=4)))
    twist = draw(st.sampled_from([1, -1]))
    m = mul if mul is not None else draw(st.integers(1, 2))
    return Irreps([(m, Irrep(l, twist * (-1) ** l)) for l in ls])


def _inputs(d, batch=4, dtype=torch.float64):
    return torch.randn(batch, d.irreps1.dim, dtype=dtype), torch.randn(batch, d.irreps2.dim, dtype=dtype)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@settings(max_examples=6)
@given(data=st.data(), mode=st.sampled_from(["uuu", "uvu"]), lmax=st.sampled_from([None, 2, 6]))
def test_gaunt_backends_match_naive_float64(data, mode, lmax):
    i1 = data.draw(function_irreps())
    i2 = data.draw(function_irreps(mul=i1[0].mul if mode == "uuu" else None))
    d = gaunt_product(i1, i2, mode=mode, lmax=lmax)
    if not d.paths:
        return
    x1, x2 = _inputs(d)
    ref = make_executor(d, "naive")(x1, x2)
    for backend in GAUNT:
        out = make_executor(d, backend)(x1, x2)
        assert out.shape == ref.shape
        assert _rel(out, ref) <= 1e-10, backend
    assert _rel(make_executor(d, "sparse_cg")(x1, x2), ref) <= 1e-10


@pytest.mark.parametrize("mode", ["uuu", "uvu"])
@pytest.mark.parametrize("norms", [("none", "component"), ("element", "norm"), ("path", "none")])
def test_every_mode_and_normalisation_at_l6(mode, norms):
    i1 = Irreps("2x0e+2x1o+2x2e+2x3o+2x4e+2x5o+2x6e")
    i2 = i1 if mode == "uuu" else Irreps("1x0e+3x1o+1x2e+2x3o+1x4e+1x5o+1x6e")
    d = gaunt_product(i1, i2, mode=mode, lmax=6, path_normalization=norms[0], irrep_normalization=norms[1])
    x1, x2 = torch.randn(2, 1, i1.dim, dtype=torch.float64), torch.randn(1, 3, i2.dim, dtype=torch.float64)
    ref = make_executor(d, "naive")(x1, x2)
    for backend in GAUNT:
        out = make_executor(d, backend)(x1, x2)
        assert out.shape == (2, 3, d.irreps_out.dim) and _rel(out, ref) <= 1e-10, backend


def test_gaunt_descriptor_is_the_product_of_functions():
    """Independent oracle: f1(x) f2(x) at random points equals sum_l3 z . Y_l3(x) when no
    degree is cut (lmax = L1 + L2)."""
    i1, i2 = Irreps("0e + 1o + 2e + 3o"), Irreps("0e + 1o + 2e")
    d = gaunt_product(i1, i2)
    assert d.irreps_out.lmax == 5 and "1x1e" not in str(d.irreps_out)  # the cross product is not there
    x1, x2 = _inputs(d, batch=1)
    pts = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    sh = lambda l: spherical_harmonics(l, pts, backend="torch")  # noqa: E731
    want = (sh(3) @ x1[0]) * (sh(2) @ x2[0])
    for backend in ["naive", *GAUNT]:
        z = make_executor(d, backend)(x1, x2)[0]
        assert torch.allclose(sh(d.irreps_out) @ z, want, rtol=1e-10, atol=1e-12), backend


def test_float32_matches_float64():
    d = gaunt_product("4x0e+4x1o+4x2e+4x3o+4x4e", "0e+1o+2e+3o+4e", mode="uvu", lmax=4)
    x1, x2 = _inputs(d)
    ref = make_executor(d, "naive")(x1, x2)
    for backend in GAUNT:
        out = make_executor(d, backend)(x1.float(), x2.float())
        assert out.dtype == torch.float32 and _rel(out.double(), ref) <= 1e-5, backend


def test_resolution_is_minimal_and_exact():
    """The chosen grid is exact; one Gauss-Legendre node fewer is not."""
    assert product_resolution(6, 6, 6) == (10, 19) and product_resolution(1, 0, 1) == (2, 3)
    L = 4
    y1, _, _ = grid_matrices(L, L, L)
    G = y1.shape[1]
    assert G == math.prod(product_resolution(L, L, L))
    d = gaunt_product(Irreps.spherical_harmonics(L), Irreps.spherical_harmonics(L), lmax=L)
    x1, x2 = _inputs(d, batch=3)
    ref = make_executor(d, "naive")(x1, x2)
    assert _rel(make_executor(d, "sphere_grid")(x1, x2), ref) <= 1e-10
    from equikit.o3 import sphere_grid

    n_theta, n_phi = product_resolution(L, L, L)
    g = sphere_grid(0, (n_theta - 1, n_phi), dtype=torch.float64)
    pts, w = g.points.reshape(-1, 3), g.weights.reshape(-1)
    y = spherical_harmonics(L, pts, backend="torch")
    coarse = ((x1 @ y.T) * (x2 @ y.T) * w) @ y / (4 * math.pi)
    assert _rel(coarse, ref) > 1e-6


@pytest.mark.parametrize("backend", GAUNT)
@pytest.mark.parametrize("mode", ["uuu", "uvu"])
def test_equivariant_o3_with_negative_control(dtype, backend, mode):
    i1 = Irreps("2x0o + 2x1e + 2x2o")  # twist -1: pseudo-scalars, axial vectors, ...
    i2 = Irreps("2x0e + 2x1o + 2x2e") if mode == "uuu" else Irreps("0e + 1o + 2e")
    d = gaunt_product(i1, i2, mode=mode)
    m = make_executor(d, backend).to(dtype)
    x = {"x1": torch.randn(6, i1.dim, dtype=dtype), "x2": torch.randn(6, i2.dim, dtype=dtype)}
    act = OnKeys({"x1": IrrepsRep(i1), "x2": IrrepsRep(i2)})
    f = lambda t: m(t["x1"], t["x2"])  # noqa: E731
    assert all(ir.p == -((-1) ** ir.l) for _, ir in d.irreps_out)
    assert_equivariant(f, x, act, IrrepsRep(d.irreps_out))
    # negative control: the output read with the natural parity (0e + 1o + ...) fails under reflections
    wrong = Irreps([(mul, Irrep(ir.l, -ir.p)) for mul, ir in d.irreps_out])
    assert not equivariance_error(f, x, act, IrrepsRep(wrong)).passed()


@pytest.mark.parametrize("backend", GAUNT)
def test_gradcheck_and_double_backward(backend):
    d = gaunt_product("1x0e+1x1o+1x2e", "1x0e+1x1o+1x2e", lmax=3)
    x1, x2 = _inputs(d, batch=2)
    x1.requires_grad_(True)
    x2.requires_grad_(True)
    m = make_executor(d, backend)
    assert torch.autograd.gradcheck(m, (x1, x2))
    assert torch.autograd.gradgradcheck(m, (x1, x2))
    # double backward equals the naive one (forces-style: d/dx2 of the x1 gradient norm)
    ref = make_executor(d, "naive")
    grads = []
    for ex in (m, ref):
        (g1,) = torch.autograd.grad(ex(x1, x2).pow(2).sum(), x1, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), x2)
        grads.append(g2)
    assert _rel(grads[0], grads[1]) <= 1e-10


@pytest.mark.parametrize("backend", GAUNT)
def test_refusals_name_the_reason(backend):
    with pytest.raises(ValueError, match=r"coefficients=.gaunt."):
        make_executor(channelwise("2x1o", "0e + 1o"), backend)
    with pytest.raises(ValueError, match=r"weighted path.*independent path weights"):
        make_executor(channelwise("2x1o", "0e + 1o", coefficients="gaunt"), backend)
    with pytest.raises(ValueError, match="mode 'uvw' mixes channels"):
        make_executor(TensorProductDescriptor("1o", "1o", "0e", (Path(0, 0, 0, "uvw", False),),
                                              coefficients="gaunt"), backend)
    with pytest.raises(ValueError, match="a tensor square"):
        make_executor(TensorProductDescriptor("1o", "1o", "0e", (Path(0, 0, 0, "uuu", False),), square=True,
                                              coefficients="gaunt"), backend)
    # an elementwise Gaunt product pairs block i with block i only: not every pair of the product
    with pytest.raises(ValueError, match=r"receives the pairs \[\(0, 0\)\] .*missing \[\(1, 1\)\]"):
        make_executor(elementwise("1x0e + 1x1o", "1x0e + 1x1o", coefficients="gaunt"), backend)
    # two l = 1 blocks would be summed into one degree
    with pytest.raises(ValueError, match="same l"):
        make_executor(gaunt_product("1x1o + 1x1e", "1x0e"), backend)
    # mixed twists: 0e x 1o -> 1o and 1e x 0e -> 1e split the pairs of l = 1
    with pytest.raises(ValueError, match="missing"):
        make_executor(gaunt_product("1x0e + 1x1e", "1x0e + 1x1o"), backend)


def test_descriptor_refuses_parity_odd_gaunt_paths():
    d = fully_connected("1o", "1o", "1e")
    with pytest.raises(ValueError, match=r"parity-odd path .* Gaunt coefficients vanish"):
        d.__class__(d.irreps1, d.irreps2, d.irreps_out, d.paths, coefficients="gaunt")
    assert fully_connected("1o", "1o", "1e", coefficients="gaunt").paths == ()
    with pytest.raises(ValueError, match="`coefficients` must be one of"):
        d.__class__(d.irreps1, d.irreps2, d.irreps_out, d.paths, coefficients="cg")
    with pytest.raises(ValueError, match="gaunt_product: `mode` must be 'uuu' or 'uvu'"):
        gaunt_product("1o", "1o", mode="uvw")
    with pytest.raises(ValueError, match="one multiplicity"):
        gaunt_product("2x0e + 1x1o", "2x0e + 2x1o")


def test_gaunt_coefficients_are_cg_times_gaunt_factor():
    """The descriptor's constant is the CG one times g(l1, l2, l3) (sqrt(4 pi) o3.gaunt = g C)."""
    cg = channelwise("2x1o + 2x2e", "0e + 1o + 2e")
    ga = channelwise("2x1o + 2x2e", "0e + 1o + 2e", coefficients="gaunt")
    from equikit.o3 import clebsch_gordan, gaunt
    from equikit.tp import gaunt_factor

    even = [p for p in cg.paths if sum(ir.l for ir in cg.irreps_of(p)) % 2 == 0]
    assert len(ga.paths) == len(even) < len(cg.paths)
    for l1, l2, l3 in [(1, 1, 2), (2, 2, 2), (2, 1, 3), (0, 2, 2)]:
        G = gaunt(l1, l2, l3, dtype=torch.float64) * math.sqrt(4 * math.pi)
        assert torch.allclose(G, gaunt_factor(l1, l2, l3) * clebsch_gordan(l1, l2, l3, dtype=torch.float64),
                              atol=1e-13)
