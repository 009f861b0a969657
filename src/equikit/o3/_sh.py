"""Real spherical harmonics.

Basis (the same as e3nn's, so features move between the libraries unchanged):
``Y_l^m(x, y, z) = S_l^m(z, x, y)``, where ``S_l^m`` are the textbook real spherical harmonics
with polar axis ``z`` and no Condon-Shortley phase (Wikipedia, sphericart):
``S_l^m ~ P_l^|m|(cos t) cos(m f)`` for ``m > 0``, ``~ P_l^|m|(cos t) sin(|m| f)`` for ``m < 0``,
ordered ``m = -l, ..., l``. The cyclic relabelling ``(x, y, z) -> (z, x, y)`` makes the ``l = 1``
block equal ``(x, y, z)`` up to a constant, so a vector *is* a ``1o`` feature and
``D_1(R) = R``. The polar axis of ``Y`` is ``y``.

Normalisations (``|Y_l(x)|`` for a unit ``x``):

- ``"integral"``: orthonormal on the sphere, ``int Y_l^m Y_l'^m' dx = delta``;
- ``"component"``: ``|Y_l(x)|^2 = 2l + 1`` (each component has unit mean square), the e3nn
  default; ``= sqrt(4 pi) * integral``;
- ``"norm"``: ``|Y_l(x)| = 1``; ``= sqrt(4 pi / (2l + 1)) * integral``.

Backends: ``"native"`` (our C++ kernel, ``_sh_kernel.cpp``, compiled on first use: one pass
straight into this basis and normalisation, OpenMP over rows, a fused backward; second
derivatives through the torch recursion; see :mod:`equikit.o3._sh_native`), ``"sphericart"``
(sphericart-torch, C++ kernels with first and second derivatives; we feed it
``x[..., [2, 0, 1]]``, which is the whole basis conversion, then scale) and ``"torch"``, our own
recursion on the solid harmonics (pure PyTorch, differentiable to any order, any device).
``"auto"`` picks ``native`` for CPU float32/float64 tensors when the kernel builds, else
sphericart when it is installed (CPU/CUDA), else ``torch``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from equikit.o3 import _sh_native

_NORMALIZATIONS = ("integral", "component", "norm")
_BACKENDS = ("auto", "native", "sphericart", "torch")


# --------------------------------------------------------------------------- constants
@functools.cache
def _legendre_coefficients(l: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients of ``Q_l^m = a_m z Q_{l-1}^m - b_m r^2 Q_{l-2}^m`` for ``m <= l - 2``."""
    a = tuple((2 * l - 1) / (l - m) for m in range(l - 1))
    b = tuple((l + m - 1) / (l - m) for m in range(l - 1))
    return a, b


@functools.cache
def _sh_norm(l: int) -> tuple[float, ...]:
    """``N_lm`` (with the ``sqrt 2`` of ``m != 0``) for the orthonormal real harmonics."""
    out = []
    for m in range(l + 1):
        c = (2 * l + 1) / (4 * math.pi) * math.exp(math.lgamma(l - m + 1) - math.lgamma(l + m + 1))
        out.append(math.sqrt(c) * (math.sqrt(2) if m else 1.0))
    return tuple(out)


def normalization_factors(lmax: int, normalization: str) -> list[float]:
    """Per-``l`` factor that turns integral-normalised harmonics into ``normalization``."""
    if normalization == "integral":
        return [1.0] * (lmax + 1)
    if normalization == "component":
        return [math.sqrt(4 * math.pi)] * (lmax + 1)
    return [math.sqrt(4 * math.pi / (2 * l + 1)) for l in range(lmax + 1)]


# --------------------------------------------------------------------------- own recursion
def _solid_harmonics_std(xyz: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Orthonormal real solid harmonics ``r^l S_l(x/r)`` with polar axis z, one ``(..., 2l+1)``
    block per ``l``. Polynomial recursions only, so autograd differentiates them to any order.
    """
    x, y, z = xyz.unbind(-1)
    r2 = x * x + y * y + z * z
    ones = torch.ones_like(x)
    # C_m + i S_m = (x + i y)^m
    cos_m, sin_m = [ones], [torch.zeros_like(x)]
    for _ in range(lmax):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(x * c - y * s)
        sin_m.append(x * s + y * c)
    cos_t = torch.stack(cos_m, -1)
    sin_t = torch.stack(sin_m, -1)
    zc, r2c = z.unsqueeze(-1), r2.unsqueeze(-1)
    blocks = []
    q_prev2 = q_prev = None  # Q_{l-2}^{0..l-2}, Q_{l-1}^{0..l-1}
    for l in range(lmax + 1):
        if l == 0:
            q = ones.unsqueeze(-1)
        else:
            diag = q_prev[..., -1:] * (2 * l - 1)  # Q_l^l = (2l-1) Q_{l-1}^{l-1}
            parts = []
            if l >= 2:
                a, b = _legendre_coefficients(l)
                a_t = torch.tensor(a, dtype=xyz.dtype, device=xyz.device)
                b_t = torch.tensor(b, dtype=xyz.dtype, device=xyz.device)
                parts.append(a_t * zc * q_prev[..., : l - 1] - b_t * r2c * q_prev2)
            parts += [diag * zc, diag]
            q = torch.cat(parts, -1)
        norm = torch.tensor(_sh_norm(l), dtype=xyz.dtype, device=xyz.device)
        qn = q * norm
        pos = qn[..., 1:] * cos_t[..., 1 : l + 1]
        neg = (qn[..., 1:] * sin_t[..., 1 : l + 1]).flip(-1)
        blocks.append(torch.cat([neg, qn[..., :1], pos], -1))
        q_prev2, q_prev = q_prev, q
    return blocks


# --------------------------------------------------------------------------- sphericart
@functools.cache
def _sphericart_calculator(lmax: int, solid: bool):
    import sphericart.torch as sct

    return sct.SolidHarmonics(lmax) if solid else sct.SphericalHarmonics(lmax)


@functools.cache
def sphericart_available() -> bool:
    """Whether ``sphericart-torch`` can be imported."""
    try:
        import sphericart.torch  # noqa: F401
    except Exception:
        return False
    return True


def _native_ok(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _resolve_backend(backend: str, x: torch.Tensor) -> str:
    if backend == "auto":
        if _native_ok(x) and _sh_native.available():
            return "native"
        ok = sphericart_available() and x.device.type in ("cpu", "cuda")
        ok = ok and x.dtype in (torch.float32, torch.float64)
        return "sphericart" if ok else "torch"
    if backend == "native":
        if not _native_ok(x):
            raise ValueError(
                "spherical_harmonics: backend='native' needs a CPU float32/float64 tensor, got "
                f"{x.dtype} on {x.device}; use backend='auto' or 'torch'"
            )
        if not _sh_native.available():
            raise RuntimeError(
                "spherical_harmonics: backend='native' is unavailable (no C++ compiler, a failed "
                "build, or EQUIKIT_NO_NATIVE=1; `equikit._utils.native.build_error` says why); "
                "use backend='auto' or 'torch'"
            )
    if backend == "sphericart" and not sphericart_available():
        raise ImportError(
            "spherical_harmonics: backend='sphericart' needs sphericart-torch; run "
            "`pip install sphericart-torch` or use backend='torch'"
        )
    return backend


# --------------------------------------------------------------------------- public
def _parse_ls(ls, where: str) -> list[int]:
    if isinstance(ls, bool):
        raise TypeError(f"{where}: `l` must be an int or a sequence of ints, got {ls!r}")
    if isinstance(ls, int):
        if ls < 0:
            raise ValueError(f"{where}: `l` (lmax) must be >= 0, got {ls}; pass e.g. l=4")
        return list(range(ls + 1))
    if hasattr(ls, "ls") and hasattr(ls, "num_irreps"):  # Irreps
        ls = [m.ir.l for m in ls for _ in range(m.mul)]
    if isinstance(ls, Sequence) and ls and all(isinstance(v, int) and not isinstance(v, bool) for v in ls):
        if min(ls) < 0:
            raise ValueError(f"{where}: every degree must be >= 0, got {list(ls)}")
        return list(ls)
    raise TypeError(f"{where}: `l` must be lmax (an int), a non-empty list of degrees or Irreps, got {ls!r}")


def spherical_harmonics(
    l: int | Sequence[int],
    x: torch.Tensor,
    normalize: bool = True,
    normalization: str = "component",
    *,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Real spherical harmonics of the vectors ``x``, in the equikit (= e3nn) basis.

    .. math:: Y_l(R x) = D_l(R)\, Y_l(x), \qquad Y_l(-x) = (-1)^l Y_l(x)

    With ``normalize=False`` the result is the solid harmonic ``|x|^l Y_l(x / |x|)``, a
    polynomial in ``x`` (smooth at the origin).

    Args:
        l: ``lmax`` (int: all degrees ``0..lmax``), or a list of degrees, or ``Irreps``.
        x: vectors ``(..., 3)``, float32 or float64.
        normalize: project ``x`` onto the unit sphere first.
        normalization: ``"component"`` (default), ``"norm"`` or ``"integral"``, see module doc.
        backend: ``"auto"``, ``"native"``, ``"sphericart"`` or ``"torch"``; all give the same
            values (see the module doc).

    Returns:
        ``(..., sum(2l + 1))``, the degrees concatenated in the order given.

    >>> x = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
    >>> spherical_harmonics(1, x, normalization="component")  # (1, x, y, z) * sqrt(3)
    tensor([[1.0000, 0.0000, 0.0000, 1.7321]], dtype=torch.float64)
    """
    where = "spherical_harmonics"
    ls = _parse_ls(l, where)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: `x` must be a torch.Tensor (..., 3), got {type(x).__name__}")
    if not x.is_floating_point() or x.ndim == 0 or x.shape[-1] != 3:
        raise ValueError(f"{where}: `x` must be a floating tensor of shape (..., 3), got {x.dtype} {tuple(x.shape)}")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"{where}: `normalization` must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"{where}: `backend` must be one of {_BACKENDS}, got {backend!r}")
    backend = _resolve_backend(backend, x)
    if backend == "native":
        return _spherical_harmonics_native(x, ls, normalize, normalization)
    if backend == "sphericart":
        lmax = max(ls)
        y = _sphericart_calculator(lmax, not normalize)(_permute(x).reshape(-1, 3)).reshape(*x.shape[:-1], -1)
        return _rescale(y, lmax, normalization, ls)
    return _spherical_harmonics_torch(x, ls, normalize, normalization)


def _spherical_harmonics_native(x: torch.Tensor, ls: list[int], normalize: bool, normalization: str) -> torch.Tensor:
    """The C++ kernel; through the custom op (autograd, torch.compile) unless a plain call
    suffices (no graph to record), which skips the dispatcher's overhead."""
    if torch.compiler.is_compiling() or (x.requires_grad and torch.is_grad_enabled()):
        return _sh_native.sh_op(x, ls, normalize, normalization)
    return _sh_native.forward(x, ls, normalize, normalization)


def _spherical_harmonics_torch(x: torch.Tensor, ls: list[int], normalize: bool, normalization: str) -> torch.Tensor:
    """The pure-PyTorch recursion (any device and dtype, differentiable to any order)."""
    lmax = max(ls)
    xp = _permute(x)
    if normalize:
        xp = xp / torch.linalg.norm(xp, dim=-1, keepdim=True)
    y = torch.cat(_solid_harmonics_std(xp, lmax), -1)
    return _rescale(y, lmax, normalization, ls)


_SQRT_4PI = math.sqrt(4 * math.pi)


def _permute(x: torch.Tensor) -> torch.Tensor:
    """``(x, y, z) -> (z, x, y)``: our basis is ``S(z, x, y)``. One gather over ``(..., 3)``; it
    cannot move to the output, where the relabelling is a rotation (a dense ``D_l`` per ``l``,
    not an index map)."""
    return torch.stack([x[..., 2], x[..., 0], x[..., 1]], -1)


@functools.cache
def _scale_vector(lmax: int, normalization: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``(dim,)`` factor integral -> ``normalization`` (``norm``: one value per ``l``), cached."""
    f = normalization_factors(lmax, normalization)
    return torch.tensor([f[k] for k in range(lmax + 1) for _ in range(2 * k + 1)], dtype=dtype, device=device)


def _rescale(y: torch.Tensor, lmax: int, normalization: str, ls: list[int]) -> torch.Tensor:
    """Integral -> ``normalization`` in one in-place pass over ``y``, then pick the requested
    degrees.

    In place is safe under autograd too: neither sphericart's backward nor ``cat``'s saves its
    output, and the multiply's own backward needs only the constant factor.
    """
    if normalization == "component":
        y = y.mul_(_SQRT_4PI)  # one scalar for every l: the cheapest pass
    elif normalization == "norm":
        y = y.mul_(_scale_vector(lmax, normalization, y.dtype, y.device))
    if ls != list(range(lmax + 1)):
        y = torch.cat([y[..., k * k : (k + 1) ** 2] for k in ls], -1)
    return y
