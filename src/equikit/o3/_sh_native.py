"""The native spherical-harmonics kernel (``_sh_kernel.cpp``): loader, coefficients, custom ops.

The C++ kernel evaluates the harmonics of :mod:`equikit.o3._sh` in one pass, directly in our
basis, component order and normalisation: the normalisation constants ``K_lm`` are folded into
the coefficients of the Legendre recursion (:func:`coefficients`), so no scaling pass follows.
Its backward recomputes the harmonics with forward-mode derivatives of the recursion and
contracts them with the output gradient (no Jacobian is stored). Both are registered as
``torch.library`` custom ops (``equikit::spherical_harmonics`` and its backward), so autograd
and ``torch.compile`` see one opaque op with a fake (meta) implementation. Second derivatives
go through the pure-PyTorch recursion (recomputed under autograd), so double backward (forces
in a loss) is exact too; third derivatives raise (``backend="torch"`` has every order).

The library is compiled on first use by :func:`equikit._utils.native.load_library`;
:func:`library` returns ``None`` when no compiler exists or ``EQUIKIT_NO_NATIVE=1``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from equikit._utils.native import CXX_FLAGS, load_library

__all__ = ["available", "coefficients", "library"]

_SOURCE = Path(__file__).with_name("_sh_kernel.cpp")
# vectorised sqrt needs -fno-math-errno; fused multiply-adds are allowed (ISO C++ forbids them);
# -Wno-psabi: the 64-byte vector types only pass between inlined internal functions
_FLAGS = (*CXX_FLAGS, "-fno-math-errno", "-ffp-contract=fast", "-Wno-psabi")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel with its argument types declared, or ``None`` (no compiler, build
    failure, ``EQUIKIT_NO_NATIVE``). Cached per process."""
    lib = load_library(_SOURCE, "o3", _FLAGS)
    if lib is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name in ("eq_sh_forward_f32", "eq_sh_forward_f64"):
        getattr(lib, name).argtypes = [p, p, i64, i32, p, p, i32, i32, i32]
        getattr(lib, name).restype = None
    for name in ("eq_sh_backward_f32", "eq_sh_backward_f64"):
        getattr(lib, name).argtypes = [p, p, p, i64, i32, p, p, i32, i32, i32]
        getattr(lib, name).restype = None
    return lib


@torch.compiler.assume_constant_result  # torch.compile: a constant, not traced into
def available() -> bool:
    """True when the native kernel compiled (or was cached) and loads."""
    return library() is not None


@functools.cache
def _coefficients64(lmax: int, normalization: str) -> tuple[float, ...]:
    from equikit.o3._sh import _sh_norm, normalization_factors

    f = normalization_factors(lmax, normalization)
    K = [[_sh_norm(l)[m] * f[l] for m in range(l + 1)] for l in range(lmax + 1)]
    s = lmax + 1
    diag, off = [0.0] * s, [0.0] * s
    a, b = [0.0] * (s * s), [0.0] * (s * s)
    diag[0] = K[0][0]
    for l in range(1, s):
        diag[l] = (2 * l - 1) * K[l][l] / K[l - 1][l - 1]  # Q_l^l = (2l - 1) Q_{l-1}^{l-1}
        off[l] = (2 * l - 1) * K[l][l - 1] / K[l - 1][l - 1]  # Q_l^{l-1} = (2l - 1) z Q_{l-1}^{l-1}
        for m in range(l - 1):  # Q_l^m = ((2l - 1) z Q_{l-1}^m - (l + m - 1) r^2 Q_{l-2}^m) / (l - m)
            a[l * s + m] = (2 * l - 1) / (l - m) * K[l][m] / K[l - 1][m]
            b[l * s + m] = (l + m - 1) / (l - m) * K[l][m] / K[l - 2][m]
    return tuple(diag + off + a + b)


@functools.cache
def coefficients(lmax: int, normalization: str, dtype: torch.dtype) -> torch.Tensor:
    """The kernel's recursion coefficients with ``K_lm`` folded in: ``diag (lmax+1)``,
    ``off (lmax+1)``, ``A (lmax+1)^2``, ``B (lmax+1)^2`` concatenated (computed in float64).

    >>> c = coefficients(1, "integral", torch.float64)  # diag, off, A, B for lmax 1
    >>> expected = [(4 * torch.pi) ** -0.5, 3**0.5, 0.0, 3**0.5]  # K_00; Y_1 = sqrt(3) K_00 (x, y, z)
    >>> torch.allclose(c[:4], torch.tensor(expected, dtype=torch.float64))
    True
    """
    return torch.tensor(_coefficients64(lmax, normalization), dtype=dtype)


@functools.cache
def _columns(ls: tuple[int, ...]) -> torch.Tensor | None:
    """Flat indices ``l*l .. l*l + 2l`` of the requested degrees; ``None`` for ``0..lmax``."""
    if ls == tuple(range(max(ls) + 1)):
        return None
    return torch.tensor([k for l in ls for k in range(l * l, (l + 1) ** 2)], dtype=torch.int32)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _run(kind: str, xc: torch.Tensor, io: list[int], ls: list[int], normalize: bool, normalization: str) -> None:
    """Call ``eq_sh_<kind>_f32/f64`` on the ``(N, 3)`` points ``xc`` with the data pointers
    ``io`` (the arrays between the points and the row count); nothing for ``N = 0``."""
    if not xc.shape[0]:
        return
    lmax = max(ls)
    cols = _columns(tuple(ls))
    coef = coefficients(lmax, normalization, xc.dtype)
    suffix = "f32" if xc.dtype == torch.float32 else "f64"
    fn = getattr(library(), f"eq_sh_{kind}_{suffix}")
    fn(
        xc.data_ptr(),
        *io,
        xc.shape[0],
        lmax,
        coef.data_ptr(),
        _ptr(cols),
        sum(2 * l + 1 for l in ls),
        int(normalize),
        torch.get_num_threads(),
    )


def forward(x: torch.Tensor, ls: list[int], normalize: bool, normalization: str) -> torch.Tensor:
    """Run the kernel on ``x (..., 3)`` (CPU, float32/float64); no autograd."""
    xc = x.detach().reshape(-1, 3).contiguous()
    dim = sum(2 * l + 1 for l in ls)
    out = torch.empty(xc.shape[0], dim, dtype=x.dtype)
    _run("forward", xc, [out.data_ptr()], ls, normalize, normalization)
    return out.reshape(*x.shape[:-1], dim)


def backward(x: torch.Tensor, grad: torch.Tensor, ls: list[int], normalize: bool, normalization: str) -> torch.Tensor:
    """``grad_x = sum_k grad[..., k] dY_k / dx`` by the kernel; no autograd."""
    xc = x.detach().reshape(-1, 3).contiguous()
    dim = sum(2 * l + 1 for l in ls)
    gc = grad.detach().reshape(-1, dim).contiguous()
    out = torch.empty(xc.shape[0], 3, dtype=x.dtype)
    _run("backward", xc, [gc.data_ptr(), out.data_ptr()], ls, normalize, normalization)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- custom ops
@torch.library.custom_op("equikit::spherical_harmonics", mutates_args=(), device_types="cpu")
def sh_op(x: torch.Tensor, ls: list[int], normalize: bool, normalization: str) -> torch.Tensor:
    """Custom op over :func:`forward` (autograd and torch.compile see one op)."""
    return forward(x, ls, normalize, normalization)


@sh_op.register_fake
def _(x, ls, normalize, normalization):
    return x.new_empty(*x.shape[:-1], sum(2 * l + 1 for l in ls))


@torch.library.custom_op("equikit::spherical_harmonics_backward", mutates_args=(), device_types="cpu")
def sh_backward_op(
    x: torch.Tensor, grad: torch.Tensor, ls: list[int], normalize: bool, normalization: str
) -> torch.Tensor:
    """Custom op over :func:`backward`."""
    return backward(x, grad, ls, normalize, normalization)


@sh_backward_op.register_fake
def _(x, grad, ls, normalize, normalization):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, ls, normalize, normalization = inputs
    ctx.save_for_backward(x)
    ctx.args = (ls, normalize, normalization)


def _sh_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return sh_backward_op(x, grad.contiguous(), *ctx.args), None, None, None


def _setup_backward(ctx, inputs, output):
    x, grad, ls, normalize, normalization = inputs
    ctx.save_for_backward(x, grad)
    ctx.args = (ls, normalize, normalization)


def _sh_double_backward(ctx, ggx):
    """Second derivatives by the pure-PyTorch recursion under autograd: with ``h(x) = <g, Y(x)>``
    the backward op is ``grad h``; its vector-Jacobian products are ``H ggx`` (for x) and
    ``J ggx`` (for g). Third and higher derivatives are refused (use ``backend="torch"``)."""
    from equikit.o3._sh import _spherical_harmonics_torch

    x, g = ctx.saved_tensors
    ls, normalize, normalization = ctx.args
    if torch.is_grad_enabled() and (x.requires_grad or g.requires_grad or ggx.requires_grad):
        raise RuntimeError(
            "spherical_harmonics: backend='native' gives first and second derivatives; a graph of "
            "the second derivative (create_graph=True, third order) needs backend='torch'"
        )
    with torch.enable_grad():
        xs = x.detach().requires_grad_(True)
        gs = g.detach().requires_grad_(True)
        y = _spherical_harmonics_torch(xs, ls, normalize, normalization)
        (gx,) = torch.autograd.grad(y, xs, gs, create_graph=True)
        dx, dg = torch.autograd.grad(gx, (xs, gs), ggx)
    return dx, dg, None, None, None


sh_op.register_autograd(_sh_backward, setup_context=_setup)
sh_backward_op.register_autograd(_sh_double_backward, setup_context=_setup_backward)
