r"""Fused neighbour sums for :class:`~equikit.nn.GINConv` (``aggr="sum"``) by the C kernel
``_graph_kernel.c``.

GIN aggregates :math:`h_i = (1 + \epsilon) x_i + \sum_{j \to i} m_{ji}` with :math:`m_{ji} = x_j`
(GIN) or :math:`\mathrm{ReLU}(x_j + a_{ji})` (GINE, :math:`a = W e`). In plain PyTorch that is a
gather ``x.index_select(0, src)`` into an ``(E, C)`` message tensor and a scatter-add into the
targets, and the backward is the same pair again; every ``(E, C)`` tensor is a fresh allocation
written once and read once. Here the edges are put in compressed-row order by target (forward)
and by source (backward) with a stable counting sort, ``O(E + N)``, and each sum is one pass over
output rows with no message tensor: OpenMP over rows, no atomics.

- :func:`edge_csr` builds both orderings (:class:`EdgeCSR`) and validates the indices;
- :func:`gin_aggregate` / :func:`gine_aggregate` are differentiable (the GIN backward is the same
  kernel on the transposed rows, so every order of derivative works; the GINE backward is one
  kernel pass giving ``dx`` and ``da``, and under ``create_graph=True`` it is recomputed with
  differentiable PyTorch ops, so double backward is exact);
- :func:`available` says whether the kernel compiled. Without a compiler, with
  ``EQUIKIT_NO_NATIVE=1``, off the CPU, for other dtypes or under ``torch.compile``
  :class:`~equikit.nn.GINConv` uses its pure-PyTorch gather / scatter-add path instead.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import weakref
from pathlib import Path
from typing import NamedTuple

import torch

from equikit._utils.native import C_FLAGS, load_library

__all__ = ["EdgeCSR", "available", "cached_edge_csr", "clear_cache", "edge_csr", "gin_aggregate", "gine_aggregate",
           "usable"]

_SOURCE = Path(__file__).with_name("_graph_kernel.c")
# no fused multiply-add: (1 + eps) x is rounded before the sum, as in the PyTorch path
_FLAGS = (*C_FLAGS, "-ffp-contract=off")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel with argument types declared, or ``None`` (no compiler, build failure,
    ``EQUIKIT_NO_NATIVE``). Cached per process."""
    lib = load_library(_SOURCE, "nn", _FLAGS) if _SOURCE.exists() else None  # source not packaged: fallback
    if lib is None:
        return None
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    lib.eq_gin_csr.argtypes = [i64, i64, p, p, p, p, p]
    lib.eq_gin_csr.restype = i64
    lib.eq_gin_same.argtypes = [p, p, i64]
    lib.eq_gin_same.restype = i32
    for t in ("f32", "f64"):
        getattr(lib, f"eq_gin_sum_{t}").argtypes = [i64, i64, p, p, p, f64, p, i32]
        getattr(lib, f"eq_gine_forward_{t}").argtypes = [i64, i64, p, p, p, p, p, f64, p, i32]
        getattr(lib, f"eq_gine_backward_{t}").argtypes = [i64, i64, p, p, p, p, p, p, f64, p, p, i32]
        for kind in ("gin_sum", "gine_forward", "gine_backward"):
            getattr(lib, f"eq_{kind}_{t}").restype = None
    return lib


def available() -> bool:
    """True when the kernel compiled (or was cached) and loads."""
    return library() is not None


def usable(x: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """Whether the kernel can run on ``x`` (and the other tensors): compiled, not under
    ``torch.compile``, CPU, float32 / float64, one dtype."""
    if torch.compiler.is_compiling() or x.device.type != "cpu" or x.dtype not in _SUFFIX:
        return False
    if any(t is not None and (t.device.type != "cpu" or t.dtype != x.dtype) for t in others):
        return False
    return available()


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


class EdgeCSR(NamedTuple):
    """The edges of ``edge_index (2, E)`` in compressed-row order twice (stable within rows).

    ``in_ptr (N + 1)``, ``in_src (E)``, ``in_eid (E)``: edges grouped by target ``i``
    (the sources ``j`` and edge ids of the edges ``j -> i`` are ``in_src / in_eid
    [in_ptr[i]:in_ptr[i + 1]]``); ``out_ptr``, ``out_dst``, ``out_eid``: grouped by source.
    ``edge_index`` is a private int64 copy (the differentiable double-backward path and the
    cache's content check use it).
    """

    num_nodes: int
    edge_index: torch.Tensor
    in_ptr: torch.Tensor
    in_src: torch.Tensor
    in_eid: torch.Tensor
    out_ptr: torch.Tensor
    out_dst: torch.Tensor
    out_eid: torch.Tensor


def edge_csr(edge_index: torch.Tensor, num_nodes: int, where: str = "edge_csr") -> EdgeCSR:
    """Both compressed-row orderings of ``edge_index (2, E)`` (int32 or int64) by the kernel's
    counting sort (``O(E + N)``); raises ``ValueError`` naming ``where`` for an id outside
    ``[0, num_nodes)``. Needs the kernel (:func:`available`).

    Example:
        >>> import torch
        >>> from equikit.nn._graph_native import available, edge_csr
        >>> if available():
        ...     csr = edge_csr(torch.tensor([[2, 0, 2], [1, 1, 0]]), 3)
        ...     assert csr.in_ptr.tolist() == [0, 1, 3, 3] and csr.in_src.tolist() == [2, 2, 0]
    """
    lib = library()
    if lib is None:
        raise RuntimeError("edge_csr: the native graph kernel is not available (no compiler or EQUIKIT_NO_NATIVE)")
    e = edge_index.shape[1]
    ei = torch.empty(2, e, dtype=torch.int64).copy_(edge_index)  # private: the caller may change theirs
    src, dst = ei[0], ei[1]
    in_ptr, out_ptr = torch.empty(num_nodes + 1, dtype=torch.int64), torch.empty(num_nodes + 1, dtype=torch.int64)
    in_src, in_eid, out_dst, out_eid = (torch.empty(e, dtype=torch.int64) for _ in range(4))
    bad = lib.eq_gin_csr(num_nodes, e, dst.data_ptr(), src.data_ptr(), in_ptr.data_ptr(), in_src.data_ptr(),
                         in_eid.data_ptr())
    if bad >= 0:
        raise ValueError(f"{where}: `edge_index` must hold node ids in [0, {num_nodes}) (N = x.shape[0]), got edge "
                         f"{bad}: {int(src[bad])} -> {int(dst[bad])}; drop or renumber it")
    lib.eq_gin_csr(num_nodes, e, src.data_ptr(), dst.data_ptr(), out_ptr.data_ptr(), out_dst.data_ptr(),
                   out_eid.data_ptr())
    return EdgeCSR(num_nodes, ei, in_ptr, in_src, in_eid, out_ptr, out_dst, out_eid)


CACHE_SIZE = 4
_CACHE: collections.OrderedDict[tuple, tuple[torch.Tensor, EdgeCSR]] = collections.OrderedDict()


def clear_cache() -> None:
    """Drop every cached :class:`EdgeCSR` (see :func:`cached_edge_csr`)."""
    _CACHE.clear()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_contiguous() and b.is_contiguous():
        return bool(library().eq_gin_same(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()))
    return torch.equal(a, b)


def cached_edge_csr(edge_index: torch.Tensor, num_nodes: int, where: str = "edge_csr") -> EdgeCSR:
    """:func:`edge_csr`, reused while the same ``edge_index`` comes back (several layers, or
    several calls, on one batch).

    The last :data:`CACHE_SIZE` graphs are kept, looked up by storage address, shape, strides,
    dtype and ``num_nodes`` and then compared **by content** with a private copy of the indices
    they were built from (a ``memcmp``, ~15x cheaper than the sort), so an ``edge_index``
    changed in place, or a new one at a recycled address, is never served stale rows. A miss
    costs one build; an entry is dropped when its ``edge_index`` is garbage collected.
    """
    key = (edge_index.data_ptr(), tuple(edge_index.shape), edge_index.stride(), edge_index.dtype, num_nodes)
    hit = _CACHE.get(key)
    if hit is not None and _same(edge_index, hit[0]):
        _CACHE.move_to_end(key)
        return hit[1]
    csr = edge_csr(edge_index, num_nodes, where)
    copy = csr.edge_index if edge_index.dtype == torch.int64 else edge_index.contiguous().clone()
    _CACHE[key] = (copy, csr)
    _CACHE.move_to_end(key)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    weakref.finalize(edge_index, _CACHE.pop, key, None)
    return csr


def _gin_sum(x: torch.Tensor, scale: float, ptr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    fn = getattr(library(), f"eq_gin_sum_{_SUFFIX[x.dtype]}")
    fn(x.shape[0], x.shape[1], ptr.data_ptr(), col.data_ptr(), x.data_ptr(), scale, out.data_ptr(),
       torch.get_num_threads())
    return out


class _GINSum(torch.autograd.Function):
    """``(1 + eps) x + A x`` with ``A`` the target-by-source adjacency (``transpose``: ``A^T``)."""

    @staticmethod
    def forward(ctx, x, eps, csr, transpose):
        ctx.csr, ctx.transpose = csr, transpose
        ctx.save_for_backward(x if eps.requires_grad else None, eps)
        ptr, col = (csr.out_ptr, csr.out_dst) if transpose else (csr.in_ptr, csr.in_src)
        return _gin_sum(x, 1.0 + float(eps), ptr, col)

    @staticmethod
    def backward(ctx, grad):
        x, eps = ctx.saved_tensors
        gx = _GINSum.apply(grad, eps, ctx.csr, not ctx.transpose) if ctx.needs_input_grad[0] else None
        geps = (grad * x).sum().reshape(eps.shape) if ctx.needs_input_grad[1] else None
        return gx, geps, None, None


def gin_aggregate(x: torch.Tensor, eps: torch.Tensor, csr: EdgeCSR) -> torch.Tensor:
    r""":math:`(1 + \epsilon) x_i + \sum_{j \to i} x_j` for ``x (N, C)``, ``eps (1,)``
    (differentiable in both, any order)."""
    return _GINSum.apply(x, eps, csr, False)


class _GINESum(torch.autograd.Function):
    """``(1 + eps) x_i + sum_{e = j -> i} relu(x_j + a_e)``."""

    @staticmethod
    def forward(ctx, x, a, eps, csr):
        ctx.csr = csr
        ctx.save_for_backward(x, a, eps)  # the inputs themselves: create_graph differentiates through them
        x, a = x.contiguous(), a.contiguous()
        out = torch.empty_like(x)
        fn = getattr(library(), f"eq_gine_forward_{_SUFFIX[x.dtype]}")
        fn(x.shape[0], x.shape[1], csr.in_ptr.data_ptr(), csr.in_src.data_ptr(), csr.in_eid.data_ptr(),
           x.data_ptr(), a.data_ptr(), 1.0 + float(eps), out.data_ptr(), torch.get_num_threads())
        return out

    @staticmethod
    def backward(ctx, grad):
        x, a, eps = ctx.saved_tensors
        csr = ctx.csr
        need_x, need_a, need_eps = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: the same backward in differentiable PyTorch ops
            src, dst = csr.edge_index
            g_msg = grad.index_select(0, dst) * (x.index_select(0, src) + a > 0).to(grad.dtype)
            gx = ((1 + eps) * grad).index_add(0, src, g_msg) if need_x else None
            geps = (grad * x).sum().reshape(eps.shape) if need_eps else None
            return gx, g_msg if need_a else None, geps, None
        g, x, a = grad.contiguous(), x.contiguous(), a.contiguous()
        gx = torch.empty_like(x)
        ga = torch.empty_like(a) if need_a else None
        fn = getattr(library(), f"eq_gine_backward_{_SUFFIX[x.dtype]}")
        fn(x.shape[0], x.shape[1], csr.out_ptr.data_ptr(), csr.out_dst.data_ptr(), csr.out_eid.data_ptr(),
           x.data_ptr(), a.data_ptr(), g.data_ptr(), 1.0 + float(eps), gx.data_ptr(),
           None if ga is None else ga.data_ptr(), torch.get_num_threads())
        geps = (g * x).sum().reshape(eps.shape) if need_eps else None
        return gx if need_x else None, ga, geps, None


def gine_aggregate(x: torch.Tensor, a: torch.Tensor, eps: torch.Tensor, csr: EdgeCSR) -> torch.Tensor:
    r""":math:`(1 + \epsilon) x_i + \sum_{e = (j \to i)} \mathrm{ReLU}(x_j + a_e)` for
    ``x (N, C)``, ``a (E, C)``, ``eps (1,)`` (differentiable in all three; second derivatives
    exact)."""
    return _GINESum.apply(x, a, eps, csr)
