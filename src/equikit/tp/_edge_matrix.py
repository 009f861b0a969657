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


def _block_starts(blocks: list[int], num_blocks: int) -> torch.Tensor | None:
    """``[s_0, .., s_B]`` with block ``b`` = components ``s_b .. s_(b+1) - 1`` when ``blocks`` is
    sorted and contiguous (what the kernel reads), else None (the PyTorch path runs)."""
    if blocks != sorted(blocks):
        return None
    return torch.tensor([sum(1 for b in blocks if b < v) for v in range(num_blocks + 1)], dtype=torch.int64)


def _shape_of(slot: int, ops, meta: _Meta) -> tuple[int, ...]:
    x, t, w, m = ops
    e = meta.dst.shape[0]
    c = next(o.shape[1] for o in (x, w, m) if o is not None)
    d_in = x.shape[2] if x is not None else t.shape[1]
    d_out = meta.blocks.shape[0]
    return ((e, c, d_in), (e, d_in, d_out), (e, c, meta.num_blocks), (meta.num_nodes, c, d_out))[slot]


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
    if lib is None or meta.starts is None or dtype not in (torch.float32, torch.float64) or any(
            o.device.type != "cpu" or o.dtype != dtype for o in present) or meta.blocks.shape[0] > _MAX_DIM:
        return None
    ops = [None if o is None else o.contiguous() for o in ops]
    shape = _shape_of(slot, ops, meta)
    if shape[2] > _MAX_DIM or (ops[1] is not None and ops[1].shape[1] > _MAX_DIM):
        return None
    out = torch.empty(shape, dtype=dtype)
    e, c = meta.dst.shape[0], shape[1] if slot != 1 else present[0].shape[1]
    d_in = _shape_of(0, ops, meta)[2]
    fn = lib.eq_edge_matrix_f64 if dtype == torch.float64 else lib.eq_edge_matrix_f32
    ptr = [0 if o is None else o.data_ptr() for o in ops]
    fn(slot, e, meta.num_nodes, c, d_in, meta.blocks.shape[0], meta.num_blocks, meta.dst.data_ptr(),
       meta.starts.data_ptr(), *ptr, out.data_ptr(), torch.get_num_threads())
    return out


def _native_backward(wanted: tuple[bool, bool, bool], x, t, w, h, meta: _Meta) -> list | None:
    """The gradients of the convolution (slot 3) for ``x``, ``t``, ``w`` in one kernel pass (None where
    not ``wanted``), or None when the kernel cannot run (then each slot runs on its own)."""
    lib = _library()
    ops = (x, t, w, h)
    dtype = x.dtype
    if lib is None or native_disabled() or meta.starts is None or dtype not in (torch.float32, torch.float64) \
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


class _EdgeMatrixConv(torch.autograd.Function):
    """One slot of the 4-linear form (the kernel's comment); its derivative in operand ``r``
    contracted with ``h`` is slot ``r`` with ``h`` in place of operand ``slot``, so the backward is
    this function again and derivatives of every order (forces, force-loss training) follow."""

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
        wanted = tuple(ctx.needs_input_grad[2 + r] for r in range(3))
        if ctx.slot == 3 and not torch.is_grad_enabled() and sum(wanted) > 1:
            # a first-order backward (no graph of the gradients: forces in MD / inference): all of x, t, w's
            # gradients in one kernel pass; with create_graph each slot below stays differentiable
            grads = _native_backward(wanted, *ops[:3], h, ctx.meta)
            if grads is not None:
                return (None, None, *grads, None)
        grads = [None] * 4
        for r in range(4):
            if r != ctx.slot and ctx.needs_input_grad[2 + r]:
                o = list(ops)
                o[ctx.slot], o[r] = h, None
                grads[r] = _EdgeMatrixConv.apply(r, ctx.meta, *o)
        return (None, None, *grads)


def edge_matrix_conv(x: torch.Tensor, t: torch.Tensor, w_out: torch.Tensor, blocks: torch.Tensor,
                     dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    r"""Messages ``z[e, c, k] = w_out[e, c, blocks[k]] * sum_i x[e, c, i] t[e, i, k]`` summed at the
    centres: ``out[n, c, k] = sum_{e: dst[e] = n} z[e, c, k]``, without an ``(E, C, d_out)`` tensor
    (the C++ kernel ``_edge_matrix_kernel.cpp``; a pure-PyTorch gather / matmul / scatter path without
    a compiler, with ``EQUIKIT_NO_NATIVE=1``, off the CPU or for other dtypes). Differentiable to any
    order in ``x``, ``t`` and ``w_out``.

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
    for name, v, nd in (("x", x, 3), ("t", t, 3), ("w_out", w_out, 3)):
        if not isinstance(v, torch.Tensor) or v.ndim != nd or not v.is_floating_point():
            raise ValueError(f"{where}: `{name}` must be a floating tensor with {nd} dims, got {_shape(v)}")
    e, c, d_in = x.shape
    if not isinstance(blocks, torch.Tensor) or blocks.ndim != 1 or blocks.is_floating_point():
        raise ValueError(f"{where}: `blocks` must be an int tensor (d_out,), got {_shape(blocks)}")
    d_out = blocks.shape[0]
    if t.shape != (e, d_in, d_out):
        raise ValueError(f"{where}: `t` must be (E, d_in, d_out) = {(e, d_in, d_out)}, got {_shape(t)}")
    if w_out.shape[:2] != (e, c) or (d_out and int(blocks.max()) >= w_out.shape[2]) or \
            (d_out and int(blocks.min()) < 0):
        raise ValueError(f"{where}: `w_out` must be (E, C, B) = ({e}, {c}, > max(blocks)), got {_shape(w_out)}")
    if not isinstance(dst, torch.Tensor) or dst.shape != (e,) or dst.is_floating_point():
        raise ValueError(f"{where}: `dst` must be an int tensor (E,) = ({e},), got {_shape(dst)}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"{where}: `num_nodes` must be an int >= 0, got {num_nodes!r}")
    if e and (int(dst.min()) < 0 or int(dst.max()) >= num_nodes):
        raise ValueError(f"{where}: `dst` must lie in 0..{num_nodes - 1}, got {int(dst.min())}..{int(dst.max())}")
    dtype = x.dtype
    if t.dtype != dtype or w_out.dtype != dtype:
        raise TypeError(f"{where}: `x`, `t`, `w_out` must share a dtype, got {x.dtype}, {t.dtype}, {w_out.dtype}")
    nb = w_out.shape[2]
    meta = _Meta(dst.to(torch.int64).contiguous(), blocks.to(torch.int64).contiguous(), num_nodes, nb,
                 _block_starts(blocks.tolist(), nb))
    return _EdgeMatrixConv.apply(3, meta, x, t, w_out, None)


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
        blocks = torch.cat([torch.full((m.ir.dim,), b) for b, m in enumerate(self.irreps_out)])
        self.register_buffer("blocks", blocks, persistent=False)

    def forward(self, x: torch.Tensor, sh: torch.Tensor, w_out: torch.Tensor, dst: torch.Tensor,
                num_nodes: int) -> torch.Tensor:
        if not isinstance(sh, torch.Tensor) or sh.ndim != 2 or sh.shape[1] != self.irreps_sh.dim:
            raise ValueError(f"GauntEdgeMatrix: `sh` must be (E, {self.irreps_sh.dim}), got {_shape(sh)}")
        t = (sh @ self.matrix.to(sh.dtype)).reshape(sh.shape[0], self.irreps_in.dim, self.irreps_out.dim)
        return edge_matrix_conv(x, t, w_out, self.blocks, dst, num_nodes)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x {self.irreps_sh} -> {self.irreps_out}"
