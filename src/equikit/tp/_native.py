"""The native CPU kernels of ``sparse_cg`` (``_kernels.cpp``) as a differentiable torch op.

A descriptor becomes a :class:`Plan`: flat arrays of its paths (mode, multiplicities, offsets)
and of the nonzero Clebsch-Gordan entries ``(i, j, k, c)`` of every path (``c`` times the
path's normalisation), sorted by ``(k, i, j)``. The kernel evaluates one slot of the 4-linear
form

.. math:: \\Phi(x_1, x_2, z, w) = \\sum_{\\text{rows}} \\sum_p \\sum_{(i, j, k, c) \\in p}
          c\\, W\\, x_1[u, i]\\, x_2[v, j]\\, z[\\cdot, k]

from the other three: slot 0 is the product itself (``z``), slots 1, 2, 3 are the gradients
for ``x1``, ``x2`` and the weights. The derivative of slot ``s`` with respect to operand ``r``,
contracted with an incoming gradient ``h``, is slot ``r`` with operand ``s`` replaced by ``h``,
so the op ``equikit::tp_contract`` is its own backward: gradients of any order (double
backward for forces) go through the same kernels. One kernel call can compute several slots
(a bit mask): the backward asks for all the gradients it needs at once
(``equikit::tp_contract_multi``), so the operands are read and transposed once and the fully
connected paths share one ``W^T`` product for both input gradients; the derivative of that op
is the sum of the one-slot rule over its outputs. Both are ``torch.library.custom_op`` with
fake implementations, so ``torch.compile(fullgraph=True)`` traces each as one node.

Modes (all in the kernel, weights shared or per row): channelwise ``uvu``, elementwise ``uuu``
and fully connected ``uvw``; for ``uvw`` the kernel either first forms the sparse bilinear part
``T[k, u, v] = sum c x1[u, i] x2[v, j]`` of the row (only the nonzeros), then ``z[w, k] += sum_uv
T[k, u, v] W[u, v, w]`` ("output first"), or first ``Y[i, v, w] = sum_u x1[u, i] W[u, v, w]``,
then the sparse sum with ``x2`` ("x1 first"); with shared weights the weight step is one
register-blocked GEMM over 32 rows at a time (no ``(rows, k, u, v)`` intermediate in memory).
Each path takes the order with fewer multiply-adds, for the forward and separately for each set
of wanted gradients (:func:`uvw_order`, chosen when the plan is built; docs/tp.md has the math).
In training (grad mode, shared weights, ``x2`` requiring grad) the x1-first paths where it pays
keep their forward ``Y`` for the ``x2`` gradient (``equikit::tp_forward_keep_y``; ``rows *
Plan.y_row`` numbers held until the backward).
Outputs of 32 MiB and more get transparent-huge-page advice before the first write (fresh large
allocations otherwise fault once per 4 KiB page, which dominated the 10k-row timings).

The library is compiled on first use by :func:`equikit._utils.native.load_library`; when that
fails (no compiler) or ``EQUIKIT_NO_NATIVE=1``, :func:`available` is False and ``sparse_cg``
runs its pure-PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path as FilePath

import numpy as np
import torch

from equikit._utils.native import load_library
from equikit.o3 import clebsch_gordan
from equikit.tp._descriptor import Mode, TensorProductDescriptor

__all__ = ["Plan", "UvwOrder", "available", "contract", "flops_per_row", "plan", "uvw_order"]

_SOURCE = FilePath(__file__).with_name("_kernels.cpp")
_MODE_CODE = {Mode.UVW: 0, Mode.UVU: 1, Mode.UUU: 2}


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = load_library(_SOURCE, "tp")
    if lib is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    args = [i32, i64, p, i64, p, p, p, i64, i64, p, i64, i64, p, i64, i64, i64, i32, i64, p, p, p, p, p, p, p, p, i32,
            p, i32]
    for name in ("eq_tp_contract_f32", "eq_tp_contract_f64"):
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = None
    return lib


def available() -> bool:
    """True when the kernel library compiled (or was cached) and loaded."""
    return _library() is not None


@dataclass(frozen=True, eq=False)
class Plan:
    """Flat arrays the kernel reads: per path a row of ``paths`` (mode, U, V, K, d1, d2, d3,
    off1, off2, off_out, weight offset or -1, first entry, end entry, contraction-order code of
    :func:`uvw_order`, first and end entry of the path's entries with ``i`` and ``j`` exchanged
    (uvw paths; the "x2 first" orders run the path with the operands swapped)), the entries ``(nnz, 3)``
    int32 ``(i, j, k)`` and their coefficients, and per operand its blocks ``(offset, mul,
    dim)`` (the kernel transposes each block to ``[component][channel]``). ``y_row``: the
    numbers per row of the forward's saved ``Y`` (sum of ``d1 V Wo`` over the paths whose code
    has :attr:`UvwOrder.save_y`; 0: nothing to save)."""

    key: int
    paths: np.ndarray
    entries: np.ndarray
    coeffs: dict
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray]
    dims: tuple[int, int, int]
    weight_numel: int
    scratch: int
    y_row: int = 0

    @functools.cached_property
    def args(self) -> dict[bool, tuple]:
        """The kernel's plan arguments (paths ... weight count), per ``float64`` flag."""
        (b1, b2, b3), (d1, d2, d3) = self.blocks, self.dims
        def of(coeffs):
            return (self.paths.ctypes.data, len(self.paths), self.entries.ctypes.data, coeffs.ctypes.data,
                    b1.ctypes.data, len(b1), d1, b2.ctypes.data, len(b2), d2, b3.ctypes.data, len(b3), d3,
                    self.weight_numel)
        return {f64: of(self.coeffs[torch.float64 if f64 else torch.float32]) for f64 in (False, True)}


_PLANS: list[Plan] = []
Y_CODES, Y_SAVE = 34, 50  # bit positions of UvwOrder.gradients_y and .save_y in the path code
Y_SETS = (2, 3, 6, 7)  # the wanted-gradient sets (with x2) that have saved-Y codes


# ------------------------------------------------------------- contraction orders of uvw
@dataclass(frozen=True)
class UvwOrder:
    """The contraction orders of one shared-weight fully connected path, chosen by cost.

    ``forward`` is ``"out"`` (the sparse bilinear part ``T[k, u, v]`` first, then ``T W``: ~ ``d3 U
    V Wo`` multiply-adds), ``"x1"`` (``Y[i, v, w] = sum_u x1[u, i] W[u, v, w]`` first, then the
    sparse sum with ``x2``: ~ ``d1 U V Wo``) or ``"x2"`` (the same with the operands exchanged: ~
    ``d2 U V Wo``). ``gradients[g]`` for each set ``g`` of wanted gradients (bit 0: ``x1``, bit
    1: ``x2``, bit 2: weights; the kernel's slots 1, 2, 3) is a bit set. Without bit 8 (the
    operands as they are): 1 = the ``x1`` gradient through ``Q[i, v, w] = sum c x2[v, j] h[w,
    k]`` (``Q W^T``), 2 = the ``x2`` gradient through ``Y`` (sparse dots of ``Y`` with ``h``), 4 =
    the weight gradient through ``Q`` (``x1^T Q``); a clear bit keeps the output-first order
    (``G = h W^T`` shared by both input gradients; ``T^T h`` for the weights). With bit 8 the
    same three bits apply with ``x1`` and ``x2`` exchanged (1: the ``x2`` gradient through ``Q'[j,
    u, w] = sum c x1[u, i] h[w, k]``, 2: the ``x1`` gradient through ``Y'[j, u, w] = sum_v x2[v,
    j] W[u, v, w]``, 4: the weights through ``Q'``). ``code`` packs it for the kernel: bits 0-1 the
    forward (0 out, 1 x1, 2 x2), bits ``2 + 4 g .. 5 + 4 g`` = ``gradients[g]``.

    Saved ``Y`` (x1-first forward only): when the forward keeps its ``Y`` (``d1 V Wo`` numbers per
    row), the ``x2`` gradient through ``Y`` costs only the sparse dots (``nnz V Wo``), which can
    change the best orders of the gradient sets with ``x2`` (2, 3, 6, 7): ``gradients_y`` (bits
    ``34 + 4 n``, ``n`` the set's index in that list: a code with bit 2 and without bit 8 where
    reading ``Y`` is strictly cheaper, else the set's ordinary code) and ``save_y`` (bit 50: some
    set is strictly cheaper with ``Y``, so the forward keeps it when ``x2`` needs a gradient).
    """

    forward: str
    gradients: tuple[int, ...]
    gradients_y: tuple[int, ...] = (0, 0, 0, 0)
    save_y: bool = False

    @property
    def code(self) -> int:
        f = ("out", "x1", "x2").index(self.forward)
        code = f | sum(b << (2 + 4 * g) for g, b in enumerate(self.gradients))
        code |= sum(b << (Y_CODES + 4 * n) for n, b in enumerate(self.gradients_y))
        return code | (int(self.save_y) << Y_SAVE)


def uvw_costs(U: int, V: int, Wo: int, d1: int, d3: int, nnz: int) -> dict:
    """Multiply-adds per row of each contraction step of a fully connected path ``W[u, v, w]``
    (multiplicities ``U, V, Wo``; block dimensions ``d1`` of ``x1``, ``d3`` of the output; ``nnz``
    nonzero CG entries), with ``x1`` as the operand that may meet the weights first (call it with
    ``(V, U, Wo, d2, d3, nnz)`` for the exchanged operands). Keys: ``fwd_out``, ``fwd_x1`` (whole
    forward in either order), ``T`` (bilinear part and ``T^T h``), ``G`` (``h W^T``), ``G_each``
    (the sparse sweep per input gradient from ``G``), ``Q`` (building ``Q``), ``Q_gemm`` (``x1^T
    Q`` or ``Q W^T``), ``Y`` (``x1 W`` and the sparse dots), ``Y_saved`` (the dots alone, with the
    forward's ``Y`` kept).

    >>> uvw_costs(128, 1, 128, 1, 3, 3)["fwd_x1"] < uvw_costs(128, 1, 128, 1, 3, 3)["fwd_out"]
    True
    """
    gemm = U * V * Wo
    return {"fwd_out": nnz * U * V + d3 * gemm, "fwd_x1": d1 * gemm + nnz * V * Wo,
            "T": nnz * U * V + d3 * gemm, "G": d3 * gemm, "G_each": nnz * U * V,
            "Q": nnz * V * Wo, "Q_gemm": d1 * gemm, "Y": d1 * gemm + nnz * V * Wo, "Y_saved": nnz * V * Wo}


def _gradient_cost(c: dict, wanted: int, bits: int, y_saved: bool = False) -> int:
    x1, x2, w = wanted & 1, wanted & 2, wanted & 4
    x1_q, x2_y, w_q = x1 and bits & 1, x2 and bits & 2, w and bits & 4
    via_g = (x1 and not x1_q) + (x2 and not x2_y)
    cost = (c["G"] + via_g * c["G_each"]) if via_g else 0
    cost += c["T"] if w and not w_q else 0
    cost += (c["Q"] + (bool(x1_q) + bool(w_q)) * c["Q_gemm"]) if (x1_q or w_q) else 0
    return cost + (c["Y_saved" if y_saved else "Y"] if x2_y else 0)


def _swap_wanted(g: int) -> int:
    return (g & 4) | (g & 1) << 1 | (g & 2) >> 1


def uvw_order(U: int, V: int, Wo: int, d1: int, d2: int, d3: int, nnz: int) -> UvwOrder:
    """The cheapest orders (:class:`UvwOrder`) of a shared-weight fully connected path by
    :func:`uvw_costs`; ties keep the output-first order (then x1 before x2). Chosen once per path
    when the plan is built, for the forward and for each of the 7 sets of wanted gradients.

    >>> uvw_order(128, 1, 128, 1, 3, 3, 3).forward     # 0e x 1o -> 1o: x1 has one component
    'x1'
    >>> uvw_order(128, 1, 128, 3, 3, 1, 3).forward     # 1o x 1o -> 0e: the output has one
    'out'
    >>> uvw_order(128, 1, 128, 3, 3, 5, 11).gradients[7]   # 1o x 1o -> 2e, all gradients: W via Q
    4
    >>> uvw_order(64, 64, 64, 3, 1, 3, 3).forward     # 64x1o x 64x0e -> 64x1o: x2 first
    'x2'
    """
    a, b = uvw_costs(U, V, Wo, d1, d3, nnz), uvw_costs(V, U, Wo, d2, d3, nnz)
    forward = min([("out", a["fwd_out"]), ("x1", a["fwd_x1"]), ("x2", b["fwd_x1"])], key=lambda t: t[1])[0]
    grads = []
    for g in range(8):
        options = [(_gradient_cost(a, g, bits), bits) for bits in range(8) if bits & ~g == 0]
        gs = _swap_wanted(g)  # the exchanged frame: its x1 is our x2
        options += [(_gradient_cost(b, gs, bits), 8 | bits) for bits in range(1, 8) if bits & ~gs == 0]
        grads.append(min(options))
    grads_y, save = [], False
    for g in Y_SETS:  # with the forward's Y kept (only an x1-first forward has it)
        with_y = min((_gradient_cost(a, g, bits, True), bits) for bits in range(8) if bits & ~g == 0 and bits & 2)
        better = forward == "x1" and with_y[0] < grads[g][0]
        grads_y.append(with_y[1] if better else grads[g][1])
        save |= better
    return UvwOrder(forward, tuple(b for _, b in grads), tuple(grads_y), save)


def _entries(l1: int, l2: int, l3: int, scale: float) -> np.ndarray:
    c = clebsch_gordan(l1, l2, l3, dtype=torch.float64).numpy()
    idx = np.argwhere(c != 0)
    order = np.lexsort((idx[:, 1], idx[:, 0], idx[:, 2]))  # by k, then i, then j
    idx = idx[order]
    return np.concatenate([idx.astype(np.float64), (c[idx[:, 0], idx[:, 1], idx[:, 2]] * scale)[:, None]], 1)


def _build(desc: TensorProductDescriptor, orders: list[int] | None = None) -> Plan:
    """The plan of ``desc``; ``orders`` (one code per path) overrides :func:`uvw_order` (tests)."""
    s1, s2, so = desc.irreps1.slices(), desc.irreps2.slices(), desc.irreps_out.slices()
    wsl = desc.weight_slices()
    rows, ents, swapped, e0, y_row = [], [], [], 0, 0
    for n, p in enumerate(desc.paths):
        (m1, ir1), (m2, ir2), (mo, iro) = desc.irreps1[p.i1], desc.irreps2[p.i2], desc.irreps_out[p.i_out]
        e = _entries(ir1.l, ir2.l, iro.l, desc.coefficient(n))
        code, se = 0, (-1, -1)
        if p.mode == Mode.UVW:
            code = uvw_order(m1, m2, mo, ir1.dim, ir2.dim, iro.dim, len(e)).code if orders is None else orders[n]
            start = sum(len(x) for x in swapped)  # after all the main entries (shifted below)
            swapped.append(e[:, [1, 0, 2, 3]])
            se = (start, start + len(e))
            if p.weighted and code >> Y_SAVE & 1 and code & 3 == 1:  # the kernel's saves_y
                y_row += ir1.dim * m2 * mo
        rows.append([_MODE_CODE[p.mode], m1, m2, mo, ir1.dim, ir2.dim, iro.dim, s1[p.i1].start, s2[p.i2].start,
                     so[p.i_out].start, wsl[n].start if p.weighted else -1, e0, e0 + len(e), code, *se])
        ents.append(e)
        e0 += len(e)
    for r in rows:
        if r[14] >= 0:
            r[14] += e0
            r[15] += e0
    e = np.concatenate(ents + swapped, 0) if ents else np.zeros((0, 4))
    # scratch per thread: max over paths of what path_uvu/uuu/uvw keep per row, twice (the
    # second half holds one weight column)
    need = [max(max(r[1], r[3]) * max(r[4], r[6]), 3 * (r[6] + 3) * r[1] * r[2] + 16 * (r[1] * r[2] + r[3]))
            for r in rows]
    blocks = tuple(
        np.ascontiguousarray(np.asarray([(sl.start, mul, ir.dim) for sl, (mul, ir) in zip(irreps.slices(), irreps)],
                                        dtype=np.int64).reshape(-1, 3))
        for irreps in (desc.irreps1, desc.irreps2, desc.irreps_out)
    )
    plan = Plan(
        key=len(_PLANS),
        paths=np.ascontiguousarray(np.asarray(rows, dtype=np.int64).reshape(-1, 16)),
        entries=np.ascontiguousarray(e[:, :3].astype(np.int32)),
        coeffs={torch.float64: np.ascontiguousarray(e[:, 3]),
                torch.float32: np.ascontiguousarray(e[:, 3].astype(np.float32))},
        blocks=blocks,
        dims=(desc.irreps1.dim, desc.irreps2.dim, desc.irreps_out.dim),
        weight_numel=desc.weight_numel,
        scratch=2 * max([*need, 1]),
        y_row=y_row,
    )
    _PLANS.append(plan)
    return plan


@functools.lru_cache(maxsize=512)
def plan(desc: TensorProductDescriptor) -> Plan:
    """The (cached) :class:`Plan` of a descriptor."""
    return _build(desc)


# ---------------------------------------------------------------------------------- the op
def _out_shape(pl: Plan, slot: int, rows: int, w_shared: bool) -> tuple[int, ...]:
    if slot == 3:
        return (pl.weight_numel,) if w_shared else (rows, pl.weight_numel)
    return (rows, (pl.dims[2], pl.dims[0], pl.dims[1])[slot])


def _rows(x1, x2, z) -> int:
    for t in (x1, x2, z):
        if t.ndim == 2:
            return t.shape[0]
    raise ValueError("equikit::tp_contract: no operand with a row dimension")


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None or t.numel() == 0 else t.data_ptr()


ORDER = (2, 0, 1, 3)  # slot -> position in the argument list (x1, x2, z, w)


def _run(ops: list[torch.Tensor], plan_key: int, mask: int, w_shared: bool, ysave: torch.Tensor | None = None,
         ymode: int = 0) -> list[torch.Tensor]:
    """One kernel call: every slot in ``mask`` (bit s = slot s) from the operands ``(x1, x2, z,
    w)``; an empty operand is absent (only allowed where it is an output alone). Unrequested
    outputs are empty tensors. ``ysave`` (``rows * plan.y_row``, contiguous): the forward's saved
    ``Y``, written (``ymode`` 1, with slot 0) or read for the ``x2`` gradient (``ymode`` 2)."""
    pl = _PLANS[plan_key]
    ops = [t.contiguous() for t in ops]
    rows = _rows(*ops[:3])
    dtype = ops[0].dtype
    outs = [torch.empty(_out_shape(pl, s, rows, w_shared), dtype=dtype) if mask >> s & 1
            else ops[0].new_empty(0) for s in range(4)]
    f64 = dtype == torch.float64
    lib = _library()
    fn = lib.eq_tp_contract_f64 if f64 else lib.eq_tp_contract_f32
    fn(mask, rows, *pl.args[f64], int(w_shared), pl.scratch, *[_ptr(t) for t in ops], *[_ptr(t) for t in outs],
       torch.get_num_threads(), _ptr(ysave), ymode if ysave is not None else 0)
    return outs


def _fake(ops, plan_key, mask, w_shared):
    pl = _PLANS[plan_key]
    rows = next(t.shape[0] for t in ops[:3] if t.ndim == 2)
    ref = ops[0]
    return [ref.new_empty(_out_shape(pl, s, rows, w_shared)) if mask >> s & 1 else ref.new_empty(0)
            for s in range(4)]


@torch.library.custom_op("equikit::tp_contract", mutates_args=())
def _tp_contract(x1: torch.Tensor, x2: torch.Tensor, z: torch.Tensor, w: torch.Tensor, plan_key: int, slot: int,
                 w_shared: bool) -> torch.Tensor:
    return _run([x1, x2, z, w], plan_key, 1 << slot, w_shared)[slot]


@_tp_contract.register_fake
def _(x1, x2, z, w, plan_key, slot, w_shared):
    return _fake([x1, x2, z, w], plan_key, 1 << slot, w_shared)[slot]


@torch.library.custom_op("equikit::tp_contract_multi", mutates_args=())
def _tp_contract_multi(x1: torch.Tensor, x2: torch.Tensor, z: torch.Tensor, w: torch.Tensor, plan_key: int,
                       mask: int, w_shared: bool) -> list[torch.Tensor]:
    return _run([x1, x2, z, w], plan_key, mask, w_shared)


@_tp_contract_multi.register_fake
def _(x1, x2, z, w, plan_key, mask, w_shared):
    return _fake([x1, x2, z, w], plan_key, mask, w_shared)


def _wanted(ctx, skip: int) -> int:
    """The mask of the slots whose operand needs a gradient (not ``skip``, not absent weights)."""
    mask = 0
    for r in range(4):
        if r == skip or not ctx.needs_input_grad[ORDER[r]] or (r == 3 and _PLANS[ctx.plan_key].weight_numel == 0):
            continue
        mask |= 1 << r
    return mask


def _gradients(ops: list[torch.Tensor], plan_key: int, mask: int, w_shared: bool) -> list[torch.Tensor | None]:
    """Slots ``mask`` of the operands ``ops`` (slot order), placed at their argument positions:
    one fused call when several are wanted."""
    grads: list[torch.Tensor | None] = [None] * 4
    if mask == 0:
        return grads
    args = [ops[ORDER.index(i)] for i in range(4)]  # argument order x1, x2, z, w
    if mask & (mask - 1):
        outs = _tp_contract_multi(*args, plan_key, mask, w_shared)
        for r in range(4):
            if mask >> r & 1:
                grads[ORDER[r]] = outs[r]
    else:
        r = mask.bit_length() - 1
        grads[ORDER[r]] = _tp_contract(*args, plan_key, r, w_shared)
    return grads


def _setup(ctx, inputs, output):
    x1, x2, z, w, plan_key, slot, w_shared = inputs
    ctx.save_for_backward(x1, x2, z, w)
    ctx.plan_key, ctx.slot, ctx.w_shared = plan_key, slot, w_shared


def _backward(ctx, grad):
    # d(slot s)/d(operand r) . h = slot r with operand s replaced by h (the module docs)
    x1, x2, z, w = ctx.saved_tensors
    ops = [z, x1, x2, w]  # slot order
    ops[ctx.slot] = grad
    return (*_gradients(ops, ctx.plan_key, _wanted(ctx, ctx.slot), ctx.w_shared), None, None, None)


_tp_contract.register_autograd(_backward, setup_context=_setup)


def _setup_multi(ctx, inputs, output):
    x1, x2, z, w, plan_key, mask, w_shared = inputs
    ctx.save_for_backward(x1, x2, z, w)
    ctx.plan_key, ctx.mask, ctx.w_shared = plan_key, mask, w_shared
    # outputs nobody differentiates (e.g. the x1 and weight gradients when a force loss only
    # uses the x2 one) arrive as None instead of zeros, and their terms are skipped
    ctx.set_materialize_grads(False)


def _backward_multi(ctx, grads):
    # output r depends on every operand but r: sum over the outputs of the single-output rule
    x1, x2, z, w = ctx.saved_tensors
    total: list[torch.Tensor | None] = [None] * 4
    for r in range(4):
        h = grads[r]
        if not ctx.mask >> r & 1 or h is None:
            continue
        ops = [z, x1, x2, w]
        ops[r] = h
        for i, g in enumerate(_gradients(ops, ctx.plan_key, _wanted(ctx, r), ctx.w_shared)):
            if g is not None:
                total[i] = g if total[i] is None else total[i] + g
    return (*total, None, None, None)


_tp_contract_multi.register_autograd(_backward_multi, setup_context=_setup_multi)


# ----------------------------------------------------------- forward that keeps its Y (training)
# The x1-first forward of a fully connected path computes Y[i, v, w] = sum_u x1[u, i] W[u, v,
# w]; the x2 gradient through Y needs exactly that again. When x2 needs a gradient and the plan
# has such paths (Plan.y_row > 0), contract() runs this op instead: the product and the rows' Y
# (rows * y_row numbers, kept until the backward), and a first backward (no create_graph) hands
# Y back to the kernel. Under create_graph the backward takes the ordinary differentiable route
# (the saved Y is a function of x1 and W that the op does not differentiate), so gradients of
# any order stay exact.
@torch.library.custom_op("equikit::tp_forward_keep_y", mutates_args=())
def _tp_forward_keep_y(x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, plan_key: int) -> list[torch.Tensor]:
    x1 = x1.contiguous()
    ysave = torch.empty(x1.shape[0] * _PLANS[plan_key].y_row, dtype=x1.dtype)
    z = _run([x1, x2, x1.new_empty(0), w], plan_key, 1, True, ysave, 1)[0]
    return [z, ysave]


@_tp_forward_keep_y.register_fake
def _(x1, x2, w, plan_key):
    return [x1.new_empty(x1.shape[0], _PLANS[plan_key].dims[2]), x1.new_empty(x1.shape[0] * _PLANS[plan_key].y_row)]


@torch.library.custom_op("equikit::tp_gradients_from_y", mutates_args=())
def _tp_gradients_from_y(x1: torch.Tensor, x2: torch.Tensor, h: torch.Tensor, w: torch.Tensor, ysave: torch.Tensor,
                         plan_key: int, mask: int) -> list[torch.Tensor]:
    return _run([x1, x2, h, w], plan_key, mask, True, ysave, 2)


@_tp_gradients_from_y.register_fake
def _(x1, x2, h, w, ysave, plan_key, mask):
    return _fake([x1, x2, h, w], plan_key, mask, True)


def _setup_keep_y(ctx, inputs, output):
    x1, x2, w, plan_key = inputs
    ctx.save_for_backward(x1, x2, w, output[1])
    ctx.plan_key = plan_key
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _backward_keep_y(ctx, grads):
    h = grads[0]
    mask = sum(1 << s for s, i in ((1, 0), (2, 1), (3, 2)) if ctx.needs_input_grad[i])
    if h is None or mask == 0:
        return None, None, None, None
    x1, x2, w, ysave = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the differentiable route (recomputes Y)
        g = _gradients([h, x1, x2, w], ctx.plan_key, mask, True)
        return g[0], g[1], g[3], None
    outs = _tp_gradients_from_y(x1, x2, h.contiguous(), w, ysave, ctx.plan_key, mask)
    return (*(outs[s] if mask >> s & 1 else None for s in (1, 2, 3)), None)


_tp_forward_keep_y.register_autograd(_backward_keep_y, setup_context=_setup_keep_y)


def contract(plan_key: int, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None,
             shared: bool) -> torch.Tensor:
    """Slot 0 of the plan ``plan(desc).key``: the product ``(rows, irreps_out.dim)`` of
    ``x1 (rows, d1)``, ``x2 (rows, d2)`` and ``weight`` (``(n,)`` shared, ``(rows, n)`` per row,
    or None). The key is an int so that ``torch.compile`` sees a constant."""
    empty = x1.new_empty(0)
    if (shared and weight is not None and x2.requires_grad and torch.is_grad_enabled() and _PLANS[plan_key].y_row
            and x1.device.type == "cpu"):
        return _tp_forward_keep_y(x1, x2, weight, plan_key)[0]
    return _tp_contract(x1, x2, empty, empty if weight is None else weight, plan_key, 0, bool(shared))


def flops_per_row(desc: TensorProductDescriptor) -> int:
    """Multiply-adds per row of the kernels' forward (nonzero CG terms only; fully connected
    paths in the cheapest of their three orders, :func:`uvw_order`), for reports."""
    from equikit.o3 import count_nonzero

    total = 0
    for p in desc.paths:
        (m1, ir1), (m2, ir2), (mo, iro) = desc.irreps1[p.i1], desc.irreps2[p.i2], desc.irreps_out[p.i_out]
        nnz = count_nonzero(ir1.l, ir2.l, iro.l)
        if p.mode == Mode.UVW:  # in the forward order the plan picks (shared weights)
            c = uvw_costs(m1, m2, mo, ir1.dim, iro.dim, nnz)
            total += min(c["fwd_out"], c["fwd_x1"], uvw_costs(m2, m1, mo, ir2.dim, iro.dim, nnz)["fwd_x1"])
            continue
        total += {Mode.UVU: nnz * m1 * m2, Mode.UUU: nnz * m1}[p.mode]
    return total
