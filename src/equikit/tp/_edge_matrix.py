r"""The channelwise Gaunt product of an edge convolution as one small matrix per edge.

The Gaunt edge product of an equivariant potential (``tp.gaunt_product(..., mode="uvu")`` with
radial weights per edge, channel and degree before and after, docs/potentials.md) is

.. math::
    z_{e,c,(l_3 m_3)} = w^{out}_{e,c,l_3} \sum_{l_1 m_1} T_{e,(l_1 m_1),(l_3 m_3)}\,
                        w^{in}_{e,c,l_1}\, x_{e,c,(l_1 m_1)}, \qquad
    T_{e,(l_1 m_1),(l_3 m_3)} = \sum_{l_2 m_2} G_{(l_1 m_1),(l_2 m_2),(l_3 m_3)}\, Y_{e,(l_2 m_2)}

with ``G`` the Gaunt coefficients (component normalisation, no path normalisation: the
pointwise product of the spherical functions) and ``Y`` the edge's spherical harmonics. ``T``
does not depend on the channel ``c`` (a Clebsch-Gordan product with one weight per path and
channel has no such factor), so per edge it is built once, ``T = Y @ G'`` for all edges in one
matmul (``G'`` = ``G`` as a ``(d_Y, d_in d_out)`` matrix), and the channels go through a
``(C, d_in) @ (d_in, d_out)`` product per edge: ``C d_in d_out`` multiply-adds per edge for the
channels against the ``C nnz(G)`` of a sparse contraction (``nnz(G)`` = 86 for ``d_in = 4``
(``0e + 1o``), ``d_Y = d_out = 16`` (``lmax = 3``): 64 per channel; for ``d_in = 9`` 215 against 144).

:func:`edge_matrix_conv` sums the messages at their centres in one C++ kernel
(``_edge_matrix_kernel.cpp``) that never writes an ``(E, C, d_out)`` message tensor: it evaluates
one slot of the 4-linear form ``Phi(x, T, w_out, m) = sum_e <m[dst e], w_out[e] * (x[e] @ T[e])>``,
the derivative in one operand from the other three (slot ``m`` is the convolution, the others its
gradients, reading the centres' gradient at ``dst[e]``). The derivative of a slot in an operand is
again a slot, so the backward is the same op and derivatives of every order follow (forces, the
force-loss training step); a first-order backward computes the three gradients in one pass. Without
a compiler, with ``EQUIKIT_NO_NATIVE=1``, off the CPU or for other dtypes the same slots run as
PyTorch ops (gather, ``matmul``, ``index_add_``).

For ``torch.compile`` the kernel is two ``torch.library`` custom ops, ``equikit::edge_matrix`` (a slot)
and ``equikit::edge_matrix_backward`` (the one-pass gradients), each with a fake implementation and a
registered autograd formula that calls the ops again, so forces and the force-loss step trace
without a graph break. Eager calls run the same kernels and derivative rule through an
``autograd.Function`` instead: the custom op's Python dispatch and autograd layer costs tens of
microseconds a call (17-44 % of a 72-edge forward+backward, docs/tp.md). The checks that read index
values (``dst`` and ``blocks`` in range) run at the entry outside compilation and inside the op (at
run time) under it; the fallback under compilation is traced PyTorch.

Layout: channel-major per edge, ``x (E, C, d_in)`` with the ``d_in`` components of one channel's
irreps side by side (:func:`equikit.models.potential.mul_ir_to_channels`), output ``(N, C, d_out)``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path as FilePath
from typing import NamedTuple

import torch
from torch import nn

from equikit._utils.native import load_library, native_disabled
from equikit.o3 import Irreps, clebsch_gordan
from equikit.tp._descriptor import channelwise, gaunt_product

__all__ = ["GauntEdgeMatrix", "available", "edge_matrix_conv", "gaunt_edge_matrix"]


def _one_channel(irreps, name: str, where: str) -> Irreps:
    try:
        irreps = Irreps(irreps)
    except Exception as err:
        raise ValueError(f"{where}: `{name}` must be an irreps string or Irreps, got {irreps!r} ({err})") from err
    if len(irreps) == 0 or any(m.mul != 1 for m in irreps):
        raise ValueError(f"{where}: `{name}` must list one channel's irreps with multiplicity 1 each "
                         f"(e.g. '1x0e + 1x1o'), got '{irreps}'")
    return irreps


@functools.lru_cache(maxsize=32)
def _gaunt_matrix(irreps_in: Irreps, irreps_sh: Irreps, lmax: int) -> tuple[torch.Tensor, Irreps]:
    desc = gaunt_product(irreps_in, irreps_sh, lmax=lmax, mode="uvu")
    irreps_out = desc.irreps_out
    # the same coefficients as the fused sparse path: channelwise with Gaunt coefficients, no
    # path normalisation (equal to gaunt_product, docs/tp.md)
    cw = channelwise(irreps_in, irreps_sh, irreps_out, coefficients="gaunt", path_normalization="none")
    s1, s2, so = irreps_in.slices(), irreps_sh.slices(), irreps_out.slices()
    g = torch.zeros(irreps_sh.dim, irreps_in.dim, irreps_out.dim, dtype=torch.float64)
    for n, p in enumerate(cw.paths):
        ir1, ir2, iro = cw.irreps_of(p)
        c = clebsch_gordan(ir1.l, ir2.l, iro.l, dtype=torch.float64) * cw.coefficient(n)  # (d1, d2, d3)
        g[s2[p.i2], s1[p.i1], so[p.i_out]] += c.permute(1, 0, 2)
    return g.reshape(irreps_sh.dim, irreps_in.dim * irreps_out.dim), irreps_out


def gaunt_edge_matrix(irreps_in, irreps_sh, lmax: int) -> tuple[torch.Tensor, Irreps]:
    """The Gaunt tensor of one channel as a matrix ``G' (d_Y, d_in * d_out)`` (float64), with
    ``G'[j, i * d_out + k] = G[i, j, k]`` for input component ``i``, harmonic ``j``, output ``k``,
    and the output irreps (one channel: every degree ``<= lmax`` the product reaches, natural parity
    only when the inputs have it). ``Y (E, d_Y) @ G'`` reshaped to ``(E, d_in, d_out)`` is ``T``.

    Args:
        irreps_in: one channel's input irreps, multiplicity 1 each (e.g. ``"1x0e + 1x1o"``).
        irreps_sh: the harmonics' irreps, multiplicity 1 each (``"1x0e + 1x1o + 1x2e + 1x3o"``).
        lmax: highest output degree.

    >>> g, out = gaunt_edge_matrix("1x0e + 1x1o", "1x0e + 1x1o + 1x2e + 1x3o", 3)
    >>> g.shape, str(out)
    (torch.Size([16, 64]), '1x0e+1x1o+1x2e+1x3o')
    """
    where = "gaunt_edge_matrix"
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
        raise ValueError(f"{where}: `lmax` must be an int >= 0, got {lmax!r}")
    g, out = _gaunt_matrix(_one_channel(irreps_in, "irreps_in", where), _one_channel(irreps_sh, "irreps_sh", where),
                           lmax)
    return g.clone(), out


_SOURCE = FilePath(__file__).with_name("_edge_matrix_kernel.cpp")
_MAX_DIM = 256  # the kernel's stack buffers (MAX_DIM in the source)
_FLOATS = (torch.float32, torch.float64)


@functools.cache
def _library() -> ctypes.CDLL | None:
    lib = load_library(_SOURCE, "tp_edge") if _SOURCE.exists() else None
    if lib is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for name in ("eq_edge_matrix_f32", "eq_edge_matrix_f64"):
        getattr(lib, name).argtypes = [i32, i64, i64, i64, i64, i64, i64, p, p, p, p, p, p, p, i32]
        getattr(lib, name).restype = None
    for name in ("eq_edge_matrix_backward_f32", "eq_edge_matrix_backward_f64"):
        getattr(lib, name).argtypes = [i32, i64, i64, i64, i64, i64, p, p, p, p, p, p, p, p, p, i32]
        getattr(lib, name).restype = None
    return lib


def available() -> bool:
    """True when the edge-matrix kernel compiled (or was cached) and loaded."""
    return _library() is not None


class _Meta(NamedTuple):
    dst: torch.Tensor  # (E,) int64, contiguous
    blocks: torch.Tensor  # (d_out,) int64: the output block of each output component
    num_nodes: int
    num_blocks: int
    starts: torch.Tensor | None  # (num_blocks + 1,) first component of each block, when they are contiguous


@functools.lru_cache(maxsize=64)
def _blocks_of(blocks: tuple[int, ...], num_blocks: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``blocks`` as an int64 tensor and its block starts ``[s_0, .., s_B]`` (block ``b`` = components
    ``s_b .. s_(b+1) - 1``) when the blocks are sorted, i.e. contiguous ranges (what the kernel reads),
    else None (the PyTorch path runs). Cached: a module's blocks are the same on every call."""
    starts = None
    if list(blocks) == sorted(blocks):
        starts = torch.tensor([sum(1 for b in blocks if b < v) for v in range(num_blocks + 1)], dtype=torch.int64)
    return torch.tensor(blocks, dtype=torch.int64), starts


def _shape_of(slot: int, ops, e: int, d_out: int, num_nodes: int, num_blocks: int) -> tuple[int, ...]:
    x, t, w, m = ops
    c = next(o.shape[1] for o in (x, w, m) if o is not None)
    d_in = x.shape[2] if x is not None else t.shape[1]
    return ((e, c, d_in), (e, d_in, d_out), (e, c, num_blocks), (num_nodes, c, d_out))[slot]


def _reference(slot: int, ops, meta: _Meta) -> torch.Tensor:
    """The slot in plain PyTorch (gather, batched matmul, scatter): the fallback and the tests' oracle."""
    x, t, w, m = ops
    if slot == 3:
        z = torch.matmul(x, t) * w.index_select(2, meta.blocks)
        out = z.new_zeros(meta.num_nodes, *z.shape[1:])
        return out.index_add_(0, meta.dst, z)
    g = m.index_select(0, meta.dst)  # (E, C, d_out)
    if slot == 2:
        z = g * torch.matmul(x, t)
        return z.new_zeros(*z.shape[:2], meta.num_blocks).index_add_(2, meta.blocks, z)
    g = g * w.index_select(2, meta.blocks)
    return torch.matmul(g, t.transpose(1, 2)) if slot == 0 else torch.matmul(x.transpose(1, 2), g)


def _native(slot: int, ops, meta: _Meta) -> torch.Tensor | None:
    lib = _library()
    present = [o for o in ops if o is not None]
    dtype = present[0].dtype
    if lib is None or meta.starts is None or dtype not in _FLOATS or any(
            o.device.type != "cpu" or o.dtype != dtype for o in present) or meta.blocks.shape[0] > _MAX_DIM:
        return None
    ops = [None if o is None else o.contiguous() for o in ops]
    shape = _shape_of(slot, ops, meta.dst.shape[0], meta.blocks.shape[0], meta.num_nodes, meta.num_blocks)
    d_in = ops[0].shape[2] if ops[0] is not None else ops[1].shape[1]
    if d_in > _MAX_DIM:
        return None
    out = torch.empty(shape, dtype=dtype)
    c = next(o.shape[1] for o in (ops[0], ops[2], ops[3]) if o is not None)
    fn = lib.eq_edge_matrix_f64 if dtype == torch.float64 else lib.eq_edge_matrix_f32
    ptr = [0 if o is None else o.data_ptr() for o in ops]
    fn(slot, meta.dst.shape[0], meta.num_nodes, c, d_in, meta.blocks.shape[0], meta.num_blocks, meta.dst.data_ptr(),
       meta.starts.data_ptr(), *ptr, out.data_ptr(), torch.get_num_threads())
    return out


def _native_backward(wanted: tuple[bool, bool, bool], x, t, w, h, meta: _Meta) -> list | None:
    """The gradients of the convolution (slot 3) for ``x``, ``t``, ``w`` in one kernel pass (None where
    not ``wanted``), or None when the kernel cannot run (then each slot runs on its own)."""
    lib = _library()
    ops = (x, t, w, h)
    dtype = x.dtype
    if lib is None or native_disabled() or meta.starts is None or dtype not in _FLOATS \
            or any(o.device.type != "cpu" or o.dtype != dtype for o in ops) \
            or max(x.shape[2], t.shape[2]) > _MAX_DIM:
        return None
    x, t, w, h = (o.contiguous() for o in ops)
    outs = [torch.empty(o.shape, dtype=dtype) if want else None for o, want in zip((x, t, w), wanted)]
    mask = sum(1 << r for r, want in enumerate(wanted) if want)
    fn = lib.eq_edge_matrix_backward_f64 if dtype == torch.float64 else lib.eq_edge_matrix_backward_f32
    e, c, d_in = x.shape
    fn(mask, e, c, d_in, t.shape[2], meta.num_blocks, meta.dst.data_ptr(), meta.starts.data_ptr(), x.data_ptr(),
       t.data_ptr(), w.data_ptr(), h.data_ptr(), *[0 if o is None else o.data_ptr() for o in outs],
       torch.get_num_threads())
    return outs


def _contract(slot: int, ops, meta: _Meta) -> torch.Tensor:
    out = None if native_disabled() else _native(slot, ops, meta)
    return _reference(slot, ops, meta) if out is None else out


def _meta(dst, blocks, starts, num_nodes, num_blocks, where: str) -> _Meta:
    """The op's arguments as a :class:`_Meta`, with the checks that read index values (traced code
    skips them: the op runs them, the kernel must not index out of range); ``starts`` None: found from
    ``blocks`` here."""
    if dst.numel():
        lo, hi = (int(v) for v in torch.aminmax(dst))
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{where}: `dst` must lie in 0..{num_nodes - 1}, got {lo}..{hi}")
    if starts is None:
        key = tuple(blocks.tolist())
        if key and (min(key) < 0 or max(key) >= num_blocks):
            raise ValueError(f"{where}: `blocks` must lie in 0..{num_blocks - 1}, got {min(key)}..{max(key)}")
        starts = _blocks_of(key, num_blocks)[1]
    return _Meta(dst.contiguous(), blocks.contiguous(), num_nodes, num_blocks, starts)


def _gradients(slot: int, ops, h: torch.Tensor, wanted, run, run_all) -> list:
    """The gradients of slot ``slot`` of ``ops`` (the operand in that slot absent) contracted with ``h``
    for the operands ``wanted``: d(slot s)/d(operand r) . h = slot r with operand s replaced by h, which
    ``run(r, operands)`` computes (so the gradients are differentiable again); for a first-order
    backward of the convolution (no graph of the gradients: forces in MD / inference)
    ``run_all(wanted[:3], x, t, w, h)`` gives the gradients of x, t, w in one kernel pass (or None)."""
    if slot == 3 and not torch.is_grad_enabled() and sum(wanted) > 1:
        outs = run_all(tuple(wanted[:3]), *ops[:3], h)
        if outs is not None:
            return [*outs, None]
    ops = list(ops)
    ops[slot] = h
    grads: list[torch.Tensor | None] = [None] * 4
    for r in range(4):
        if r != slot and wanted[r]:
            grads[r] = run(r, [None if q == r else o for q, o in enumerate(ops)])
    return grads


class _EdgeMatrixConv(torch.autograd.Function):
    """The eager route: one slot of the 4-linear form (the kernel's comment) as an autograd.Function
    whose backward is this function again (derivatives of every order: forces, force-loss training).
    The same kernels and rule (:func:`_gradients`) as the ops below, without their dispatch cost (the
    op's Python dispatch and autograd layer: tens of microseconds a call, 17-44 % of a 72-edge
    forward+backward; docs/tp.md, "Edge-matrix op and torch.compile")."""

    @staticmethod
    def forward(ctx, slot, meta, x, t, w, m):
        ops = (x, t, w, m)
        ctx.slot, ctx.meta = slot, meta
        ctx.save_for_backward(*(o for o in ops if o is not None))
        return _contract(slot, ops, meta)

    @staticmethod
    def backward(ctx, h):
        saved = iter(ctx.saved_tensors)
        ops = [None if r == ctx.slot else next(saved) for r in range(4)]
        meta = ctx.meta
        grads = _gradients(ctx.slot, ops, h, ctx.needs_input_grad[2:],
                           lambda r, o: _EdgeMatrixConv.apply(r, meta, *o),
                           lambda want, x, t, w, h: _native_backward(want, x, t, w, h, meta))
        return (None, None, *grads)


# ----------------------------------------------------------------- the ops, for autograd and tracing
# Two torch.library custom ops around the kernel: ``equikit::edge_matrix`` (slot ``slot`` of the
# 4-linear form, the operand in that slot absent) and ``equikit::edge_matrix_backward`` (the gradients
# of the convolution for x, t, w in one pass). Their arguments are tensors and ints, so torch.compile
# traces each as one node (a fake implementation gives the output's shape); their registered autograd
# formulas call the ops again, so every derivative order works eagerly and in compiled graphs.
@torch.library.custom_op("equikit::edge_matrix", mutates_args=(), device_types="cpu")
def _edge_matrix_op(x: torch.Tensor | None, t: torch.Tensor | None, w: torch.Tensor | None, m: torch.Tensor | None,
                    dst: torch.Tensor, blocks: torch.Tensor, starts: torch.Tensor | None, slot: int, num_nodes: int,
                    num_blocks: int) -> torch.Tensor:
    """Slot ``slot`` (0: ``x``, 1: ``t``, 2: ``w``, 3: ``m``, the convolution) of the 4-linear form from
    the other three operands (the kernel's comment); ``starts`` None: found from ``blocks``."""
    return _contract(slot, (x, t, w, m), _meta(dst, blocks, starts, num_nodes, num_blocks, "equikit::edge_matrix"))


@_edge_matrix_op.register_fake
def _(x, t, w, m, dst, blocks, starts, slot, num_nodes, num_blocks):
    ops = (x, t, w, m)
    ref = next(o for o in ops if o is not None)
    return ref.new_empty(_shape_of(slot, ops, dst.shape[0], blocks.shape[0], num_nodes, num_blocks))


@torch.library.custom_op("equikit::edge_matrix_backward", mutates_args=(), device_types="cpu")
def _edge_matrix_backward_op(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor, h: torch.Tensor, dst: torch.Tensor,
                             blocks: torch.Tensor, starts: torch.Tensor | None, mask: int) -> list[torch.Tensor]:
    """The gradients ``[g_x, g_t, g_w]`` of the convolution (slot 3) with incoming gradient ``h`` in one
    kernel pass; bit ``r`` of ``mask`` asks for gradient ``r`` (the others are empty tensors)."""
    meta = _meta(dst, blocks, starts, h.shape[0], w.shape[2], "equikit::edge_matrix_backward")
    wanted = tuple(bool(mask >> r & 1) for r in range(3))
    grads = _native_backward(wanted, x, t, w, h, meta)
    if grads is None:
        ops = (x, t, w, h)
        grads = [_contract(r, tuple(None if q == r else o for q, o in enumerate(ops)), meta) if want else None
                 for r, want in enumerate(wanted)]
    return [x.new_empty(0) if g is None else g for g in grads]


@_edge_matrix_backward_op.register_fake
def _(x, t, w, h, dst, blocks, starts, mask):
    return [o.new_empty(o.shape) if mask >> r & 1 else o.new_empty(0) for r, o in enumerate((x, t, w))]


def _slot(r: int, ops, dst, blocks, starts, num_nodes, num_blocks) -> torch.Tensor:
    """Slot ``r`` of ``ops`` (operand ``r`` dropped) by the op."""
    ops = [None if q == r else o for q, o in enumerate(ops)]
    return _edge_matrix_op(*ops, dst, blocks, starts, r, num_nodes, num_blocks)


def _setup(ctx, inputs, output):
    x, t, w, m, dst, blocks, starts, slot, num_nodes, num_blocks = inputs
    ctx.save_for_backward(x, t, w, m, dst, blocks, starts)
    ctx.slot, ctx.num_nodes, ctx.num_blocks = slot, num_nodes, num_blocks


def _backward(ctx, h):
    x, t, w, m, dst, blocks, starts = ctx.saved_tensors

    def run_all(wanted, x, t, w, h):
        mask = sum(1 << r for r in range(3) if wanted[r])
        outs = _edge_matrix_backward_op(x, t, w, h, dst, blocks, starts, mask)
        return [g if want else None for g, want in zip(outs, wanted)]

    grads = _gradients(ctx.slot, [x, t, w, m], h, ctx.needs_input_grad[:4],
                       lambda r, o: _slot(r, o, dst, blocks, starts, ctx.num_nodes, ctx.num_blocks), run_all)
    return (*grads, None, None, None, None, None, None)


_edge_matrix_op.register_autograd(_backward, setup_context=_setup)


def _setup_backward(ctx, inputs, output):
    x, t, w, h, dst, blocks, starts, mask = inputs
    ctx.save_for_backward(x, t, w, h, dst, blocks, starts)
    ctx.mask = mask
    # gradients nobody differentiates arrive as None instead of zeros, and their terms are skipped
    ctx.set_materialize_grads(False)


def _backward_of_backward(ctx, grads):
    # output r is slot r of (x, t, w, h); its derivative in operand q, contracted with g, is slot q
    # with g in place of operand r: summed over the outputs
    x, t, w, h, dst, blocks, starts = ctx.saved_tensors
    total: list[torch.Tensor | None] = [None] * 4
    for r in range(3):
        g = grads[r]
        if not ctx.mask >> r & 1 or g is None:
            continue
        ops = [x, t, w, h]
        ops[r] = g
        for q in range(4):
            if q != r and ctx.needs_input_grad[q]:
                d = _slot(q, ops, dst, blocks, starts, h.shape[0], w.shape[2])
                total[q] = d if total[q] is None else total[q] + d
    return (*total, None, None, None, None)


_edge_matrix_backward_op.register_autograd(_backward_of_backward, setup_context=_setup_backward)


# ----------------------------------------------------------------- the entry
@torch.compiler.assume_constant_result  # torch.compile: a constant, not traced into
def _native_enabled() -> bool:
    """The kernel loads and ``EQUIKIT_NO_NATIVE`` is not set."""
    return not native_disabled() and _library() is not None


def _conv(x, t, w, blocks, starts, dst, num_nodes) -> torch.Tensor:
    """The validated convolution. Eager: :class:`_EdgeMatrixConv` (the kernel, or the PyTorch slots when
    it cannot run; ``starts`` None: blocks not contiguous). Under torch.compile: the op (``starts`` None:
    found by the op from ``blocks``), or plain PyTorch ops where the kernel cannot run (traced, any
    derivative order)."""
    nb = w.shape[2]
    if not torch.compiler.is_compiling():
        return _EdgeMatrixConv.apply(3, _Meta(dst.contiguous(), blocks, num_nodes, nb, starts), x, t, w, None)
    if _native_enabled() and x.dtype in _FLOATS and x.device.type == t.device.type == w.device.type == "cpu" \
            and max(x.shape[2], blocks.shape[0]) <= _MAX_DIM:
        return _edge_matrix_op(x, t, w, None, dst, blocks, starts, 3, num_nodes, nb)
    return _reference(3, (x, t, w, None), _Meta(dst, blocks, num_nodes, nb, None))


def edge_matrix_conv(x: torch.Tensor, t: torch.Tensor, w_out: torch.Tensor, blocks: torch.Tensor,
                     dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    r"""Messages ``z[e, c, k] = w_out[e, c, blocks[k]] * sum_i x[e, c, i] t[e, i, k]`` summed at the
    centres: ``out[n, c, k] = sum_{e: dst[e] = n} z[e, c, k]``, without an ``(E, C, d_out)`` tensor
    (the C++ kernel ``_edge_matrix_kernel.cpp`` as the custom op ``equikit::edge_matrix``; a pure-PyTorch
    gather / matmul / scatter path without a compiler, with ``EQUIKIT_NO_NATIVE=1``, off the CPU or for
    other dtypes). Differentiable to any order in ``x``, ``t`` and ``w_out``; ``torch.compile`` traces
    it without a graph break (the checks that read index values, ``blocks`` and ``dst`` in range, run
    only outside compilation).

    Args:
        x: ``(E, C, d_in)`` the edges' input features, channel-major (input weights folded in).
        t: ``(E, d_in, d_out)`` one matrix per edge (e.g. ``Y @ G'``, :func:`gaunt_edge_matrix`).
        w_out: ``(E, C, B)`` output scalings per output block.
        blocks: ``(d_out,)`` int, the block (``0 .. B - 1``) of every output component.
        dst: ``(E,)`` int, the centre of every edge (``0 .. num_nodes - 1``).
        num_nodes: ``N``.

    Returns: ``(N, C, d_out)``.

    >>> x, t = torch.ones(3, 2, 1), torch.ones(3, 1, 4)
    >>> out = edge_matrix_conv(x, t, torch.ones(3, 2, 2), torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1]), 2)
    >>> out[:, 0].tolist()
    [[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
    """
    where = "edge_matrix_conv"
    if not isinstance(blocks, torch.Tensor) or blocks.ndim != 1 or blocks.is_floating_point():
        raise ValueError(f"{where}: `blocks` must be an int tensor (d_out,), got {_shape(blocks)}")
    _check(where, x, t, w_out, blocks.shape[0], dst, num_nodes)
    nb = w_out.shape[2]
    if torch.compiler.is_compiling():  # no tensor values in traced code: the op finds the block starts
        blocks, starts = blocks.to(torch.int64), None
    else:
        key = tuple(blocks.tolist())
        if key and min(key) < 0:
            raise ValueError(f"{where}: `blocks` must be >= 0, got min(blocks) = {min(key)}")
        if key and max(key) >= nb:
            raise ValueError(f"{where}: `w_out` must be (E, C, B) = ({x.shape[0]}, {x.shape[1]}, > max(blocks) = "
                             f"{max(key)}), got {_shape(w_out)}")
        blocks, starts = _blocks_of(key, nb)
    return _conv(x, t, w_out, blocks, starts, dst.to(torch.int64), num_nodes)


def _check(where: str, x, t, w_out, d_out: int, dst, num_nodes) -> None:
    """Shapes and dtypes always; the range of ``dst`` (tensor values) only outside compilation."""
    for name, v, nd in (("x", x, 3), ("t", t, 3), ("w_out", w_out, 3)):
        if not isinstance(v, torch.Tensor) or v.ndim != nd or not v.is_floating_point():
            raise ValueError(f"{where}: `{name}` must be a floating tensor with {nd} dims, got {_shape(v)}")
    e, c, d_in = x.shape
    if t.shape != (e, d_in, d_out):
        raise ValueError(f"{where}: `t` must be (E, d_in, d_out) = {(e, d_in, d_out)}, got {_shape(t)}")
    if w_out.shape[:2] != (e, c) or (d_out and w_out.shape[2] == 0):
        raise ValueError(f"{where}: `w_out` must be (E, C, B) = ({e}, {c}, B), got {_shape(w_out)}")
    if not isinstance(dst, torch.Tensor) or dst.shape != (e,) or dst.is_floating_point():
        raise ValueError(f"{where}: `dst` must be an int tensor (E,) = ({e},), got {_shape(dst)}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int | torch.SymInt) or num_nodes < 0:
        raise ValueError(f"{where}: `num_nodes` must be an int >= 0, got {num_nodes!r}")
    if t.dtype != x.dtype or w_out.dtype != x.dtype:
        raise TypeError(f"{where}: `x`, `t`, `w_out` must share a dtype, got {x.dtype}, {t.dtype}, {w_out.dtype}")
    if e and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(dst))
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{where}: `dst` must lie in 0..{num_nodes - 1}, got {lo}..{hi}")


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class GauntEdgeMatrix(nn.Module):
    r"""The channelwise Gaunt product of ``C`` channels of ``irreps_in`` (one channel's irreps,
    multiplicity 1 each) with the harmonics ``irreps_sh``, weighted per output degree and summed at
    the centres (:func:`edge_matrix_conv` with ``T = Y @ G'``, :func:`gaunt_edge_matrix`). Per
    channel and edge it equals ``tp.gaunt_product(C x irreps_in, irreps_sh, lmax=lmax, mode="uvu")``
    times the output weights, in the channel-major layout ``(.., C, d)`` instead of ``mul x ir``.

    .. math:: m_{n,c,k} = \sum_{e 	o n} w^{out}_{e,c,l(k)} \sum_i (Y_e G')_{i k}\, x_{e,c,i}

    Shapes: ``x (E, C, d_in)``, ``sh (E, d_Y)``, ``w_out (E, C, B)`` (``B`` output degrees),
    ``dst (E,)`` -> ``(num_nodes, C, d_out)``.

    >>> tp = GauntEdgeMatrix("1x0e + 1x1o", "1x0e + 1x1o + 1x2e + 1x3o", lmax=3)
    >>> out = tp(torch.randn(5, 8, 4), torch.randn(5, 16), torch.randn(5, 8, 4), torch.tensor([0, 0, 1, 2, 2]), 3)
    >>> str(tp.irreps_out), out.shape
    ('1x0e+1x1o+1x2e+1x3o', torch.Size([3, 8, 16]))
    """

    def __init__(self, irreps_in, irreps_sh, lmax: int) -> None:
        super().__init__()
        g, self.irreps_out = gaunt_edge_matrix(irreps_in, irreps_sh, lmax)
        self.irreps_in, self.irreps_sh = Irreps(irreps_in), Irreps(irreps_sh)
        self.register_buffer("matrix", g, persistent=False)
        blocks, starts = _blocks_of(tuple(b for b, m in enumerate(self.irreps_out) for _ in range(m.ir.dim)),
                                    len(self.irreps_out))
        self.register_buffer("blocks", blocks.clone(), persistent=False)
        self.register_buffer("starts", starts.clone(), persistent=False)  # contiguous blocks: one per degree

    def forward(self, x: torch.Tensor, sh: torch.Tensor, w_out: torch.Tensor, dst: torch.Tensor,
                num_nodes: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[2] != self.irreps_in.dim:
            raise ValueError(f"GauntEdgeMatrix: `x` must be (E, C, {self.irreps_in.dim}), got {_shape(x)}")
        if not isinstance(sh, torch.Tensor) or sh.ndim != 2 or sh.shape[1] != self.irreps_sh.dim:
            raise ValueError(f"GauntEdgeMatrix: `sh` must be (E, {self.irreps_sh.dim}), got {_shape(sh)}")
        t = (sh @ self.matrix.to(sh.dtype)).reshape(sh.shape[0], self.irreps_in.dim, self.irreps_out.dim)
        # the blocks are this module's (valid by construction): no per-call look at their values
        _check("GauntEdgeMatrix", x, t, w_out, self.irreps_out.dim, dst, num_nodes)
        if w_out.shape[2] != len(self.irreps_out):
            raise ValueError(f"GauntEdgeMatrix: `w_out` must be (E, C, {len(self.irreps_out)}) (one weight per "
                             f"output degree), got {_shape(w_out)}")
        return _conv(x, t, w_out, self.blocks, self.starts, dst.to(torch.int64), num_nodes)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x {self.irreps_sh} -> {self.irreps_out}"
