"""The native spherical-harmonics kernel (``_sh_kernel.cpp`` via ``equikit.o3._sh_native``):
values, gradients, edge cases, dispatch and the pure-PyTorch fallback."""

import math

import pytest
import torch

from equikit.o3 import Irreps, _sh_native, spherical_harmonics
from equikit.o3._sh import _resolve_backend

e3nn_o3 = pytest.importorskip("e3nn.o3")
needs_native = pytest.mark.skipif(not _sh_native.available(), reason="no C++ compiler: the native kernel did not build")
pytestmark = needs_native

NORMS = ["integral", "component", "norm"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def native(l, x, normalize=True, normalization="component"):
    return spherical_harmonics(l, x, normalize, normalization, backend="native")


def torch_sh(l, x, normalize=True, normalization="component"):
    return spherical_harmonics(l, x, normalize, normalization, backend="torch")


@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_torch_recursion_and_e3nn(dtype, normalization, normalize):
    """Every l <= 12: same values as our recursion and as e3nn (the basis change is the identity)."""
    x = torch.randn(301, 3, dtype=torch.float64)  # 301: not a multiple of the chunk size
    y = native(12, x.to(dtype), normalize, normalization)
    assert y.dtype == dtype and y.shape == (301, 169)
    ref = e3nn_o3.spherical_harmonics(list(range(13)), x, normalize, normalization=normalization)
    # solid harmonics (normalize=False) of float32 inputs: r^12 carries the input rounding x12
    tol = TOL[dtype] * (10 if (dtype == torch.float32 and not normalize) else 1)
    assert rel(y, ref) < tol
    assert rel(y, torch_sh(12, x.to(dtype), normalize, normalization)) < tol
    for l in range(13):  # each degree on its own too (per-l relative error)
        s = slice(l * l, (l + 1) ** 2)
        assert rel(y[:, s], ref[:, s]) < tol * 10


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 5, 8, 9, 13])
def test_every_specialisation(lmax):
    """lmax 1..8 are compiled for a fixed lmax, the others run the generic loop."""
    x = torch.randn(40, 3, dtype=torch.float64)
    assert rel(native(lmax, x), torch_sh(lmax, x)) < 1e-12


def test_degree_subsets_irreps_and_duplicates(dtype):
    x = torch.randn(7, 5, 3, dtype=dtype)
    for ls in ([3, 1], [2, 0, 2], [12], Irreps("2x1o+0e+4e")):
        y = native(ls, x)
        assert rel(y, torch_sh(ls, x)) < TOL[dtype] * 10
    full = native(3, x)
    assert torch.equal(native([3, 1], x), torch.cat([full[..., 9:16], full[..., 1:4]], -1))


def test_leading_dims_noncontiguous_and_empty(dtype):
    base = torch.randn(6, 3, 9, dtype=dtype)
    x = base.transpose(1, 2)  # (6, 9, 3), not contiguous
    assert not x.is_contiguous()
    y = native(4, x)
    assert y.shape == (6, 9, 25)
    assert torch.equal(y, native(4, x.contiguous()))
    assert rel(y, torch_sh(4, x)) < TOL[dtype] * 10
    assert native(4, torch.empty(0, 3, dtype=dtype)).shape == (0, 25)
    assert native(2, torch.empty(2, 0, 3, dtype=dtype)).shape == (2, 0, 9)


def test_axes(dtype):
    """Vectors on the axes (the pole of the recursion is y): values and gradients are finite and
    equal to e3nn's."""
    e = torch.cat([torch.eye(3), -torch.eye(3), 2.5 * torch.eye(3)]).to(torch.float64)
    for normalize in (True, False):
        y = native(12, e.to(dtype), normalize)
        ref = e3nn_o3.spherical_harmonics(list(range(13)), e, normalize, normalization="component")
        assert rel(y, ref) < TOL[dtype] * 10
        w = torch.randn(169, dtype=torch.float64)
        xe = e.to(dtype).requires_grad_(True)
        (g,) = torch.autograd.grad((native(12, xe, normalize) @ w.to(dtype)).sum(), xe)
        xr = e.clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(
            (e3nn_o3.spherical_harmonics(list(range(13)), xr, normalize, normalization="component") @ w).sum(), xr
        )
        assert torch.isfinite(g).all()
        assert rel(g, g_ref) < TOL[dtype] * 100  # gradients of degree-12 terms: larger constants


def test_zero_vector_same_as_other_backends(dtype):
    """normalize=True: the direction of 0 is undefined; like the torch and sphericart backends
    (documented), Y_0 is the constant and l >= 1 is NaN. normalize=False: Y = 0 for l >= 1."""
    x = torch.zeros(3, 3, dtype=dtype)
    y = native(2, x)
    assert rel(y[:, 0], torch.ones(3, dtype=dtype)) < TOL[dtype]
    assert torch.isnan(y[:, 1:]).all()
    assert torch.equal(torch.isnan(y), torch.isnan(torch_sh(2, x)))
    solid = native(2, x, normalize=False, normalization="integral")
    assert torch.equal(solid[:, 1:], torch.zeros(3, 8, dtype=dtype))
    assert solid[0, 0].item() == pytest.approx(1 / math.sqrt(4 * math.pi))


@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_matches_torch_recursion(dtype, normalization, normalize):
    x = torch.randn(53, 3, dtype=dtype, requires_grad=True)
    w = torch.randn(169, dtype=dtype)
    grads = []
    for fn in (native, torch_sh):
        (g,) = torch.autograd.grad((fn(12, x, normalize, normalization) @ w).sum(), x)
        grads.append(g)
    assert rel(grads[0], grads[1]) < TOL[dtype] * 10


@pytest.mark.parametrize(
    ("ls", "normalize", "normalization"),
    [(3, True, "component"), ([2, 0, 2], True, "norm"), (3, False, "integral"), ([1, 3], False, "norm")],
)
def test_gradcheck_and_gradgradcheck(ls, normalize, normalization):
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    f = lambda v: native(ls, v, normalize, normalization)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_force_training_second_derivatives(dtype):
    """Forces = -dE/dx with create_graph, then a loss on them: the native backward is itself
    differentiated (through the torch recursion) and must equal the all-torch result."""
    x = torch.randn(30, 3, dtype=dtype, requires_grad=True)
    w = torch.randn(2, 81, dtype=dtype, requires_grad=True)
    out = []
    for fn in (native, torch_sh):
        energy = (fn(8, x) @ w[0]).sum()
        (forces,) = torch.autograd.grad(-energy, x, create_graph=True)
        loss = (forces**2).sum() + (fn(8, x) @ w[1]).pow(2).sum()
        out.append(torch.autograd.grad(loss, (x, w)))
    for a, b in zip(*out):
        assert rel(a, b) < TOL[dtype] * 10


def test_third_derivative_refused():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(native(3, x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="backend='torch'"):
        torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)


def test_threads_give_identical_results():
    x = torch.randn(1000, 3)
    torch.set_num_threads(2)  # the autouse fixture restores the thread count
    two = native(6, x)
    torch.set_num_threads(1)
    assert torch.equal(two, native(6, x))


def test_custom_op_registration():
    """Schema, fake (meta) implementation and autograd registration of the custom op."""
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(_sh_native.sh_op, (x, [0, 1, 2], True, "component"), test_utils=tests)
    g = torch.randn(5, 9, dtype=torch.float64)
    torch.library.opcheck(_sh_native.sh_backward_op, (x.detach(), g, [0, 1, 2], True, "component"), test_utils=tests)


@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(compile_backend):
    def f(v):
        return spherical_harmonics(3, v).sum(-1) * 2

    compiled = torch.compile(f, fullgraph=True, backend=compile_backend)
    x = torch.randn(10, 3, requires_grad=True)
    y = compiled(x)
    assert torch.allclose(y, f(x), rtol=1e-6, atol=1e-6)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(f(x).sum(), x)
    assert torch.allclose(g, g_ref, rtol=1e-5, atol=1e-6)


def test_auto_picks_native_on_cpu():
    assert _resolve_backend("auto", torch.randn(2, 3)) == "native"
    assert _resolve_backend("auto", torch.randn(2, 3, dtype=torch.float64)) == "native"
    assert _resolve_backend("auto", torch.randn(2, 3, dtype=torch.bfloat16)) != "native"


@pytest.mark.parametrize("how", ["loader", "env"])
def test_fallback_without_the_kernel(monkeypatch, how):
    """No compiler (loader returns None) or EQUIKIT_NO_NATIVE=1: auto falls back to a Python
    backend with the same values; asking for backend='native' explains what to do."""
    x = torch.randn(11, 3, dtype=torch.float64)
    expected = native(5, x, normalization="norm")
    if how == "loader":
        monkeypatch.setattr(_sh_native, "load_library", lambda *a, **k: None)
    else:
        monkeypatch.setenv("EQUIKIT_NO_NATIVE", "1")
    _sh_native.library.cache_clear()
    try:
        assert not _sh_native.available()
        assert _resolve_backend("auto", x) in ("sphericart", "torch")
        assert rel(spherical_harmonics(5, x, normalization="norm"), expected) < 1e-12
        with pytest.raises(RuntimeError, match=r"backend='native' is unavailable.*backend='auto' or 'torch'"):
            spherical_harmonics(5, x, backend="native")
    finally:
        monkeypatch.undo()
        _sh_native.library.cache_clear()
    assert _sh_native.available()


def test_bad_input():
    with pytest.raises(ValueError, match=r"backend='native' needs a CPU float32/float64 tensor, got torch.float16"):
        spherical_harmonics(2, torch.randn(4, 3).half(), backend="native")
