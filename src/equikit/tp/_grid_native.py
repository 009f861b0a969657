r"""The fused C++ route of the ``sphere_grid`` backend (``_grid_kernel.cpp``).

The Gaunt product is ``z = Ana_C(Syn_A(x1) * Syn_B(x2))``: two separable syntheses onto the
grid (:mod:`equikit.tp._grid_transform`), a pointwise product, one quadrature analysis. Each
of the three *sides* is the same kind of data, a :class:`GridSide`: a COO gather/scatter
between feature columns and the per-``q`` slots ``(q, l, u)`` with its scales, the Legendre
factors ``P (Q, L+1, n_theta)``, the trigonometric factors ``T (Q, n_phi)`` and a width
(the channels, or 1 for the summed ``x2`` of ``uvu``). Synthesis and analysis of one side are
exact transposes, so the op is its own adjoint:

    d/dx1 <g, op(A, B, C)(x1, x2)> = op(C, B, A)(g, x2)
    d/dx2 <g, op(A, B, C)(x1, x2)> = op(C, A, B)(g, x1)

The op is the ``torch.library`` custom op ``equikit::grid_bilinear`` (a fake implementation
for tracing and a registered autograd formula that calls the op again), so every derivative
order works and ``torch.compile(fullgraph=True)`` traces it as one node. Its arguments are
tensors and ints only: the sides of every product live in a module registry
(:func:`register`: one entry per product, keyed by an int) and a derivative names the order of
the three sides it needs by a permutation index. The
kernel runs one row at a time with all its grid values in cache (rows over OpenMP threads,
``torch.get_num_threads()``), channels innermost. Built on first use by
:func:`equikit._utils.native.load_library`; ``library()`` is ``None`` without a compiler or
with ``EQUIKIT_NO_NATIVE=1``, and the backend then runs its PyTorch route.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from equikit._utils.native import CXX_FLAGS, load_library
from equikit.tp._descriptor import Mode
from equikit.tp._function_product import ProductPlan
from equikit.tp._grid_transform import coefficient_layout, ring_factors

_SOURCE = Path(__file__).with_name("_grid_kernel.cpp")
_FLAGS = (*CXX_FLAGS, "-ffp-contract=fast")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, or ``None`` (no compiler, build failure, ``EQUIKIT_NO_NATIVE``)."""
    lib = load_library(_SOURCE, "tp_grid", _FLAGS)
    if lib is None:
        return None
    p = ctypes.c_void_p
    for name in ("eq_grid_bilinear_f32", "eq_grid_bilinear_f64"):
        getattr(lib, name).argtypes = [p, p, p, p, p, ctypes.c_int]
        getattr(lib, name).restype = None
    return lib


@dataclass(frozen=True, eq=False)
class GridSide:
    """One side of the grid op (see the module docs); float64 masters, cast per dtype."""

    slot: torch.Tensor  # (nnz,) int64: q * (L+1) + l
    chan: torch.Tensor  # (nnz,) int64: channel u (0 for width 1), sorted ascending
    col: torch.Tensor  # (nnz,) int64 feature column
    scale: torch.Tensor  # (nnz,) float64
    legendre: torch.Tensor  # (Q, L+1, n_theta), zero rows for empty or unused slots
    trig: torch.Tensor  # (Q, n_phi)
    width: int
    dim: int  # feature dim of this side
    _cast: dict = field(default_factory=dict, repr=False)

    def tensors(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``(slot, chan, col, scale, legendre, trig)`` contiguous in ``dtype`` (cached)."""
        if dtype not in self._cast:
            self._cast[dtype] = (self.slot.contiguous(), self.chan.contiguous(), self.col.contiguous(),
                                 *(t.to(dtype).contiguous() for t in (self.scale, self.legendre, self.trig)))
        return self._cast[dtype]


def _side(lmax, res, width, dim, entries, legendre_scale=None) -> GridSide:
    """``entries``: (slot_index (q, l) flat, u, col, scale) lists; unused slots are zeroed."""
    f = ring_factors(lmax, *res)
    order = np.argsort(np.asarray(entries[1], dtype=np.int64), kind="stable")  # the kernel needs them by channel
    s, u, c = (np.asarray(e, dtype=np.int64)[order] for e in entries[:3])
    v = np.asarray(entries[3], dtype=np.float64)[order]
    leg = f.legendre.clone()
    used = np.zeros(leg.shape[0] * leg.shape[1], dtype=bool)
    used[s] = True
    leg.reshape(-1, leg.shape[2])[torch.from_numpy(~used)] = 0
    if legendre_scale is not None:
        leg = leg * legendre_scale
    # the kernel's order of q: 1, cos phi .. cos L phi, then sin phi .. sin L phi
    order = torch.from_numpy(np.r_[0, np.arange(1, 2 * lmax + 1, 2), np.arange(2, 2 * lmax + 1, 2)])
    lp = lmax + 1
    s = np.argsort(order.numpy())[s // lp] * lp + s % lp
    return GridSide(torch.from_numpy(s), torch.from_numpy(u), torch.from_numpy(c), torch.from_numpy(v),
                    leg[order].contiguous(), f.trig[order].contiguous(), width, dim)


def _input_side(lmax, res, mul, dim, idx, scale, width) -> GridSide:
    """A gathered operand: slot ``(q, l)`` channel ``u`` reads column ``idx[u n_lm + lm]``."""
    slots = coefficient_layout(lmax, ring_factors(lmax, *res).q_of)
    n_lm = (lmax + 1) ** 2
    ent: list[list] = [[], [], [], []]
    for s, lm in enumerate(slots):
        if lm < 0 or scale[lm] == 0:
            continue
        for u in range(mul):
            for e, val in zip(ent, (s, u, int(idx[u * n_lm + lm]), scale[lm])):
                e.append(val)
    return _side(lmax, res, width, dim, ent)


def grid_sides(plan: ProductPlan, res: tuple[int, int], dims: tuple[int, int, int]) -> tuple[GridSide, ...]:
    """The three sides ``(x1, x2, out)`` of a :class:`ProductPlan` on the grid ``res``."""
    a = _input_side(plan.lmax1, res, plan.mul, dims[0], plan.idx1, plan.scale1, plan.mul)
    if plan.mode == Mode.UUU:
        b = _input_side(plan.lmax2, res, plan.mul, dims[1], plan.mat2, plan.scale2, plan.mul)
    else:  # uvu: every channel of x2 adds into the one function of its row (mat2 has the scales)
        slots = coefficient_layout(plan.lmax2, ring_factors(plan.lmax2, *res).q_of)
        ent: list[list] = [[], [], [], []]
        for s, lm in enumerate(slots):
            for c in (np.nonzero(plan.mat2[:, lm])[0] if lm >= 0 else ()):
                for e, val in zip(ent, (s, 0, int(c), plan.mat2[c, lm])):
                    e.append(val)
        b = _side(plan.lmax2, res, 1, dims[1], ent)
    f3 = ring_factors(plan.lmax_out, *res)
    slots = coefficient_layout(plan.lmax_out, f3.q_of)
    n3 = (plan.lmax_out + 1) ** 2
    slot_of = {int(lm): s for s, lm in enumerate(slots) if lm >= 0}
    ent = [[], [], [], []]
    for col, (i, sc) in enumerate(zip(plan.idx_out, plan.scale_out)):
        if i < plan.mul * n3 and sc != 0:
            u, lm = divmod(int(i), n3)
            for e, val in zip(ent, (slot_of[lm], u, col, sc)):
                e.append(val)
    c = _side(plan.lmax_out, res, plan.mul, dims[2], ent, legendre_scale=f3.weights / (4 * math.pi))
    return a, b, c


def _run(xa: torch.Tensor, xb: torch.Tensor, sides: tuple[GridSide, GridSide, GridSide]) -> torch.Tensor:
    lib = library()
    a, b, c = sides
    xa, xb = xa.contiguous(), xb.contiguous()
    rows = xa.shape[0]
    out = torch.empty(rows, c.dim, dtype=xa.dtype)
    ts = [t for s in sides for t in s.tensors(xa.dtype)]
    n_theta, n_phi = c.legendre.shape[2], c.trig.shape[1]
    ptrs = (ctypes.c_void_p * 18)(*(t.data_ptr() for t in ts))
    ints = [v for s in sides for v in (s.slot.numel(), s.legendre.shape[0], s.legendre.shape[1], s.width)]
    ints += [n_theta, n_phi, rows, a.dim, b.dim, c.dim]
    arr = (ctypes.c_int64 * len(ints))(*ints)
    fn = lib.eq_grid_bilinear_f32 if xa.dtype == torch.float32 else lib.eq_grid_bilinear_f64
    fn(xa.data_ptr(), xb.data_ptr(), out.data_ptr(), ptrs, arr, torch.get_num_threads())
    return out


# ----------------------------------------------------------------- the op, for autograd and tracing
_SIDES: list[tuple[GridSide, GridSide, GridSide]] = []
#: every order of the sides (A, B, C) that a derivative can ask for: the gradients of op(A, B, C)
#: are op(C, B, A) and op(C, A, B), theirs op(A, B, C), op(A, C, B), op(B, A, C), op(B, C, A)
_PERMS = ((0, 1, 2), (2, 1, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2), (1, 2, 0))
_PERM_INDEX = {p: i for i, p in enumerate(_PERMS)}


def register(sides: tuple[GridSide, GridSide, GridSide]) -> int:
    """Keep ``sides`` (``x1``, ``x2``, output) for the op and return their key. The caller
    registers each product once (the sphere-grid backend caches the key per descriptor)."""
    _SIDES.append(tuple(sides))
    return len(_SIDES) - 1


def _permuted(key: int, perm: int) -> tuple[GridSide, GridSide, GridSide]:
    base = _SIDES[key]
    return tuple(base[i] for i in _PERMS[perm])


@torch.library.custom_op("equikit::grid_bilinear", mutates_args=())
def grid_bilinear(xa: torch.Tensor, xb: torch.Tensor, key: int, perm: int) -> torch.Tensor:
    """``op(A, B, C)(xa, xb)`` on ``(rows, dim)`` CPU tensors, ``(A, B, C)`` the sides of product
    ``key`` in the order ``_PERMS[perm]`` (0: ``x1``, ``x2`` -> output); differentiable to every
    order (its backward is the same op with the sides permuted, module docs)."""
    return _run(xa, xb, _permuted(key, perm))


@grid_bilinear.register_fake
def _(xa, xb, key, perm):
    return xa.new_empty(xa.shape[0], _permuted(key, perm)[2].dim)


def _setup(ctx, inputs, output):
    xa, xb, key, perm = inputs
    ctx.save_for_backward(xa, xb)
    ctx.key, ctx.perm = key, perm


def _backward(ctx, grad):
    xa, xb = ctx.saved_tensors
    a, b, c = _PERMS[ctx.perm]  # positions in the registered (x1, x2, output) sides
    ga = grid_bilinear(grad, xb, ctx.key, _PERM_INDEX[(c, b, a)]) if ctx.needs_input_grad[0] else None
    gb = grid_bilinear(grad, xa, ctx.key, _PERM_INDEX[(c, a, b)]) if ctx.needs_input_grad[1] else None
    return ga, gb, None, None


grid_bilinear.register_autograd(_backward, setup_context=_setup)
