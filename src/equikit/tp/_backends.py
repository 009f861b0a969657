"""Backends: ``nn.Module`` executors that run a :class:`TensorProductDescriptor`.

Every executor takes ``forward(x1, x2, weight)`` with ``x1 (..., irreps1.dim)``, ``x2 (...,
irreps2.dim)`` (ignored for a square: pass ``x1`` or ``None``), ``weight`` ``(weight_numel,)``
shared or ``(..., weight_numel)`` per sample (``None`` when the descriptor has no weights),
leading dims broadcasting, and returns ``(..., irreps_out.dim)``.

- ``naive``: one dense ``einsum`` over the full Clebsch-Gordan block per path. Slow, obviously
  correct: the oracle every other backend is tested against.
- ``sparse_cg`` (default): contracts only the nonzero Clebsch-Gordan entries. On CPU in float32
  / float64 it runs the C++ kernels of ``_native`` (``_kernels.cpp``, built on first use and
  cached; one ``torch.library`` custom op that is its own backward, so every derivative order
  and ``torch.compile`` work); elsewhere, with ``EQUIKIT_NO_NATIVE=1`` or without a compiler,
  the pure-PyTorch path described here (``executor.native`` says which). Per path the
  nonzeros ``(i, j, k, c)`` are sorted by ``k`` and padded to ``(d_out, n_max)`` (pads have
  ``c = 0``); the operands are gathered with ``index_select``, multiplied (weights contracted
  by a matmul) and the ``n_max`` terms of each ``k`` summed by a reshape. No scatter, so the
  backward is gathers and index-adds and double backward works. Pure PyTorch.
  The edge convolution (every path ``uvu`` and weighted, one channel per ``x2`` block, as with
  spherical harmonics) takes a fused route instead: per ``x1`` block, ``Y[z] = sum_j C_ijk
  x2[z, j]`` for all its paths at once (a small matmul whose cost does not grow with the
  channels), then one ``bmm`` ``(B, U, d1) @ (B, d1, K)`` and the weights per output column.
  That is e3nn's contraction order, fused over paths. Per channel it costs ``d1 d3``
  multiply-adds, dense (9 for ``1 x 1 -> 1`` against 6 nonzeros), but as one ``bmm`` rather
  than gathers, which measured faster in PyTorch; only a hand-written kernel gains from the
  nonzeros here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from equikit.o3 import clebsch_gordan
from equikit.tp import _native
from equikit.tp._descriptor import Mode, Path, TensorProductDescriptor


# ---------------------------------------------------------------------------------- inputs
def _prepare(desc: TensorProductDescriptor, x1, x2, weight, where: str):
    """Validate and flatten: returns ``x1 (B, d1)``, ``x2 (B, d2)``, ``weight`` ``(n,)`` or
    ``(B, n)`` or None, the batch shape and whether the weights are shared."""
    if not isinstance(x1, torch.Tensor):
        raise TypeError(f"{where}: `x1` must be a torch.Tensor, got {type(x1).__name__}")
    if desc.square:
        if x2 is not None and x2 is not x1:
            raise ValueError(f"{where}: the descriptor is a tensor square; pass x2=None (or x2 = x1)")
        x2 = x1
    elif not isinstance(x2, torch.Tensor):
        raise TypeError(f"{where}: `x2` must be a torch.Tensor, got {type(x2).__name__}")
    if not x1.is_floating_point() or x1.dtype != x2.dtype:
        raise TypeError(f"{where}: `x1` and `x2` must be floating tensors of one dtype, got {x1.dtype} and {x2.dtype}")
    for name, x, irreps in (("x1", x1, desc.irreps1), ("x2", x2, desc.irreps2)):
        if x.ndim == 0 or x.shape[-1] != irreps.dim:
            raise ValueError(
                f"{where}: `{name}` must have shape (..., {irreps.dim}) for irreps '{irreps}', got {tuple(x.shape)}"
            )
    shapes = [x1.shape[:-1], x2.shape[:-1]]
    n = desc.weight_numel
    shared = True
    if n == 0:
        if weight is not None and weight.numel() != 0:
            raise ValueError(f"{where}: the descriptor has no weights, got `weight` of shape {tuple(weight.shape)}")
        weight = None
    else:
        if not isinstance(weight, torch.Tensor):
            raise TypeError(
                f"{where}: `weight` must be a tensor of shape ({n},) or (..., {n}), got {type(weight).__name__}"
            )
        if weight.ndim == 0 or weight.shape[-1] != n:
            raise ValueError(f"{where}: `weight` must have shape ({n},) or (..., {n}), got {tuple(weight.shape)}")
        if weight.dtype != x1.dtype:
            raise TypeError(f"{where}: `weight` must have dtype {x1.dtype} like the inputs, got {weight.dtype}")
        shared = weight.ndim == 1
        if not shared:
            shapes.append(weight.shape[:-1])
    try:  # (the common case, equal leading shapes, without torch's general broadcasting)
        batch = shapes[0] if all(sh == shapes[0] for sh in shapes) else torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(
            f"{where}: leading dims do not broadcast: x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)}, "
            f"weight {None if weight is None else tuple(weight.shape)}"
        ) from None
    x1 = _flat(x1, batch)
    x2 = _flat(x2, batch)
    if weight is not None and not shared:
        weight = _flat(weight, batch)
    return x1, x2, weight, batch, shared


def _flat(x: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """``x (..., d)`` broadcast to ``batch`` and flattened to ``(B, d)`` (a view when it can be)."""
    if x.shape[:-1] != batch:
        x = x.expand(*batch, x.shape[-1])
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def _assemble(desc: TensorProductDescriptor, parts: list[list[torch.Tensor]], like: torch.Tensor) -> torch.Tensor:
    """Sum the per-path outputs ``(B, mul, d)`` of each output block and concatenate."""
    blocks = []
    for (mul, ir), ps in zip(desc.irreps_out, parts):
        if ps:
            y = ps[0]
            for p in ps[1:]:
                y = y + p
        else:
            y = like.new_zeros(like.shape[0], mul, ir.dim)
        blocks.append(y.reshape(like.shape[0], mul * ir.dim))
    if not blocks:
        return like.new_zeros(like.shape[0], 0)
    return torch.cat(blocks, dim=-1)


def _path_weight(desc, p: Path, sl, weight, shared: bool, like: torch.Tensor) -> torch.Tensor:
    shape = desc.weight_shape(p) if p.weighted else _unweighted_shape(desc, p)
    if not p.weighted:
        return like.new_ones(shape)
    w = weight[..., sl]
    return w.reshape(shape) if shared else w.reshape(-1, *shape)


def _unweighted_shape(desc, p: Path) -> tuple[int, ...]:
    m1, m2, mo = desc.irreps1[p.i1].mul, desc.irreps2[p.i2].mul, desc.irreps_out[p.i_out].mul
    return {Mode.UVW: (m1, m2, mo), Mode.UVU: (m1, m2), Mode.UUU: (m1,)}[p.mode]


# ---------------------------------------------------------------------------------- registry
class Executor(nn.Module):
    """Base of the backends: holds a descriptor, declares what it can express."""

    name: ClassVar[str] = ""
    modes: ClassVar[frozenset[Mode]] = frozenset(Mode)

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__()
        if not isinstance(descriptor, TensorProductDescriptor):
            got = type(descriptor).__name__
            raise TypeError(f"{type(self).__name__}: `descriptor` must be a TensorProductDescriptor, got {got}")
        bad = [p for p in descriptor.paths if not self.can_express(descriptor, p)]
        if bad:
            raise ValueError(
                f"backend {self.name!r} cannot express {len(bad)} path(s) of the descriptor, e.g. {bad[0]!r} "
                f"({self.why_not(descriptor, bad[0])}); use backend='sparse_cg' or 'naive', or drop those paths"
            )
        self.descriptor = descriptor

    @classmethod
    def can_express(cls, descriptor: TensorProductDescriptor, path: Path) -> bool:
        return path.mode in cls.modes

    @classmethod
    def why_not(cls, descriptor: TensorProductDescriptor, path: Path) -> str:
        return f"mode '{path.mode.value}' is not one of {sorted(m.value for m in cls.modes)}"

    def extra_repr(self) -> str:
        d = self.descriptor
        return f"{d.irreps1} x {d.irreps2} -> {d.irreps_out}, {len(d.paths)} paths"


BACKENDS: dict[str, type[Executor]] = {}


def register_backend(cls: type[Executor]) -> type[Executor]:
    """Register an :class:`Executor` subclass under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Executor)) or not cls.name:
        raise TypeError(f"register_backend: expected an Executor subclass with a `name`, got {cls!r}")
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: Any) -> type[Executor]:
    """The executor class registered as ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"equikit.tp: `backend` must be a string, got {type(name).__name__} {name!r}")
    if name not in BACKENDS:
        raise ValueError(f"equikit.tp: unknown backend {name!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[name]


def make_executor(descriptor: TensorProductDescriptor, backend: str = "sparse_cg") -> Executor:
    """Build the executor module of ``backend`` for ``descriptor``."""
    return get_backend(backend)(descriptor)


# ---------------------------------------------------------------------------------- naive
@register_backend
class NaiveExecutor(Executor):
    """Dense einsum over the full Clebsch-Gordan block, one path at a time: the oracle."""

    name = "naive"
    _EQ: ClassVar[dict[Mode, str]] = {
        Mode.UVW: "zui,zvj,ijk,{}uvw->zwk",
        Mode.UVU: "zui,zvj,ijk,{}uv->zuk",
        Mode.UUU: "zui,zuj,ijk,{}u->zuk",
    }

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__(descriptor)
        for n, p in enumerate(descriptor.paths):
            ir1, ir2, iro = descriptor.irreps_of(p)
            c = clebsch_gordan(ir1.l, ir2.l, iro.l, dtype=torch.float64) * descriptor.coefficient(n)
            self.register_buffer(f"cg{n}", c, persistent=False)

    def forward(self, x1, x2=None, weight=None):
        d = self.descriptor
        x1, x2, weight, batch, shared = _prepare(d, x1, x2, weight, "tp backend 'naive'")
        s1, s2 = d.irreps1.slices(), d.irreps2.slices()
        parts: list[list[torch.Tensor]] = [[] for _ in d.irreps_out]
        for n, (p, sl) in enumerate(zip(d.paths, d.weight_slices())):
            (m1, ir1), (m2, ir2) = d.irreps1[p.i1], d.irreps2[p.i2]
            a = x1[:, s1[p.i1]].reshape(-1, m1, ir1.dim)
            b = x2[:, s2[p.i2]].reshape(-1, m2, ir2.dim)
            w = _path_weight(d, p, sl, weight, shared, x1)
            eq = self._EQ[p.mode].format("" if shared or not p.weighted else "z")
            parts[p.i_out].append(torch.einsum(eq, a, b, getattr(self, f"cg{n}").to(x1.dtype), w))
        return _assemble(d, parts, x1).reshape(*batch, d.irreps_out.dim)


# ---------------------------------------------------------------------------------- sparse
def _sparse_entries(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Nonzeros of ``c (d1, d2, d3)`` as ``(I, J, V)`` of length ``d3 * n_max``, grouped by
    output index ``k`` and padded with zero coefficients."""
    d3 = c.shape[2]
    per_k = [np.argwhere(c[:, :, k] != 0) for k in range(d3)]
    n_max = max(1, max(len(e) for e in per_k))
    I = np.zeros((d3, n_max), dtype=np.int64)
    J = np.zeros((d3, n_max), dtype=np.int64)
    V = np.zeros((d3, n_max))
    for k, e in enumerate(per_k):
        I[k, : len(e)], J[k, : len(e)] = e[:, 0], e[:, 1]
        V[k, : len(e)] = c[e[:, 0], e[:, 1], k]
    return I.ravel(), J.ravel(), V.ravel(), n_max


@register_backend
class SparseCGExecutor(Executor):
    """Contracts only the nonzero Clebsch-Gordan entries (see the module docs). The default."""

    name = "sparse_cg"

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__(descriptor)
        self._n_max: list[int] = []
        for n, p in enumerate(descriptor.paths):
            ir1, ir2, iro = descriptor.irreps_of(p)
            c = clebsch_gordan(ir1.l, ir2.l, iro.l, dtype=torch.float64).numpy() * descriptor.coefficient(n)
            I, J, V, n_max = _sparse_entries(c)
            self.register_buffer(f"i{n}", torch.from_numpy(I), persistent=False)
            self.register_buffer(f"j{n}", torch.from_numpy(J), persistent=False)
            self.register_buffer(f"c{n}", torch.from_numpy(V), persistent=False)
            self._n_max.append(n_max)

        self._groups = _edge_conv_groups(descriptor) if _is_edge_conv(descriptor) else None
        # fully connected paths on the PyTorch path: dense per-path CG matrices (see _fully_connected)
        # (paths with a scalar operand or output keep the gather route: there the CG tensor is a
        # (scaled) identity and the dense products only add reshapes)
        self._dense_uvw = frozenset(n for n, p in enumerate(descriptor.paths)
                                    if p.mode == Mode.UVW and min(ir.dim for ir in descriptor.irreps_of(p)) > 1)
        for n in sorted(self._dense_uvw):
            ir1, ir2, iro = descriptor.irreps_of(descriptor.paths[n])
            c = clebsch_gordan(ir1.l, ir2.l, iro.l, dtype=torch.float64) * descriptor.coefficient(n)
            # m[j, k * d1 + i] = C[i, j, k]: x2 (B V, d2) @ m -> y[z, v, k, i]
            self.register_buffer(f"fc{n}", c.permute(1, 2, 0).reshape(ir2.dim, iro.dim * ir1.dim).contiguous(),
                                 persistent=False)
        for g, grp in enumerate(self._groups or ()):
            self.register_buffer(f"m{g}", torch.from_numpy(grp.pop("M")), persistent=False)
            self.register_buffer(f"widx{g}", torch.from_numpy(grp.pop("widx")), persistent=False)
        # the C++ kernels (``_native``): CPU, float32/float64; None -> the PyTorch path below
        self.native = _native.available() and len(descriptor.paths) > 0
        self._plan_key = _native.plan(descriptor).key if self.native else -1

    def forward(self, x1, x2=None, weight=None):
        d = self.descriptor
        x1, x2, weight, batch, shared = _prepare(d, x1, x2, weight, "tp backend 'sparse_cg'")
        if self.native and x1.device.type == "cpu" and x1.dtype in (torch.float32, torch.float64):
            return self._native_forward(x1, x2, weight, shared).reshape(*batch, d.irreps_out.dim)
        if self._groups is not None:
            return self._edge_conv(x1, x2, weight, shared).reshape(*batch, d.irreps_out.dim)
        s1, s2 = d.irreps1.slices(), d.irreps2.slices()
        B = x1.shape[0]
        parts: list[list[torch.Tensor]] = [[] for _ in d.irreps_out]
        for n, (p, sl) in enumerate(zip(d.paths, d.weight_slices())):
            (m1, ir1), (m2, ir2), (mo, iro) = d.irreps1[p.i1], d.irreps2[p.i2], d.irreps_out[p.i_out]
            a = x1[:, s1[p.i1]].reshape(B, m1, ir1.dim)
            b = x2[:, s2[p.i2]].reshape(B, m2, ir2.dim)
            if n in self._dense_uvw:  # uvw paths only
                w = None if not p.weighted else weight[..., sl]
                parts[p.i_out].append(self._fully_connected(n, a, b, w, shared, mo))
                continue
            I, J, c = getattr(self, f"i{n}"), getattr(self, f"j{n}"), getattr(self, f"c{n}").to(x1.dtype)
            w = None
            if p.weighted:
                w = weight[..., sl]
                w = w.reshape(d.weight_shape(p)) if shared else w.reshape(B, *d.weight_shape(p))
            t = _contract(p.mode, a, b, I, J, c, w, shared, mo)  # (B, mul_out, d3 * n_max)
            parts[p.i_out].append(t.reshape(B, mo, iro.dim, self._n_max[n]).sum(-1))
        return _assemble(d, parts, x1).reshape(*batch, d.irreps_out.dim)

    def _fully_connected(self, n, a, b, w, shared, mo):
        """One ``uvw`` path as dense products (the GPU / no-compiler route; about e3nn's order of
        operations): ``y[z, v, k, i] = sum_j b[z, v, j] C[i, j, k]`` (one small matmul), then
        ``s[z, k, v, u] = sum_i y[z, v, k, i] a[z, u, i]`` (one ``bmm``), then one GEMM of
        ``s`` as ``(B d3, V U)`` rows with the weights ``(V U, W)``. Returns ``(B, W, d3)``."""
        B, U, d1 = a.shape
        V, d2 = b.shape[1], b.shape[2]
        m = getattr(self, f"fc{n}").to(a.dtype)
        d3 = m.shape[1] // d1
        y = (b.reshape(B * V, d2) @ m).reshape(B, V, d3, d1).transpose(1, 2).reshape(B, d3 * V, d1)
        s = torch.bmm(y, a.transpose(1, 2))  # (B, d3 V, U) = s[z, k, v, u]
        if w is None:  # unweighted: every output channel is the sum over (u, v)
            return s.reshape(B, d3, V * U).sum(-1)[:, None, :].expand(B, mo, d3)
        if shared:
            wt = w.reshape(U, V, mo).transpose(0, 1).reshape(V * U, mo)
            out = (s.reshape(B * d3, V * U) @ wt).reshape(B, d3, mo)
        else:
            wt = w.reshape(B, U, V, mo).transpose(1, 2).reshape(B, V * U, mo)
            out = torch.bmm(s.reshape(B, d3, V * U), wt)
        return out.transpose(1, 2)

    def _native_forward(self, x1, x2, weight, shared):
        """All paths in one call of the C++ kernels (``_native``), differentiable to any order."""
        return _native.contract(self._plan_key, x1, x2, weight, shared)

    def _edge_conv(self, x1, x2, weight, shared):
        """Channelwise with one channel per x2 block: ``Y[z] = sum_j C_ijk x2[z, j]`` for all
        paths of one x1 block at once (sparse in ``j``, cost independent of the channels), then
        one ``bmm`` ``x1_block (B, U, d1) @ Y (B, d1, K)`` and the weights per output column."""
        d = self.descriptor
        B = x1.shape[0]
        s1 = d.irreps1.slices()
        parts: list[list[torch.Tensor]] = [[] for _ in d.irreps_out]
        for g, grp in enumerate(self._groups):
            i1, K, cols = grp["i1"], grp["K"], grp["cols"]
            (U, ir1) = d.irreps1[i1]
            y = (x2 @ getattr(self, f"m{g}").to(x1.dtype)).reshape(B, ir1.dim, K)
            out = torch.bmm(x1[:, s1[i1]].reshape(B, U, ir1.dim), y)  # (B, U, K)
            widx = getattr(self, f"widx{g}")
            w = weight.index_select(-1, widx)
            out = out * (w.reshape(U, K) if shared else w.reshape(B, U, K))
            for n, c0, c1 in cols:
                parts[d.paths[n].i_out].append(out[:, :, c0:c1])
        return _assemble(d, parts, x1)


def _is_edge_conv(d: TensorProductDescriptor) -> bool:
    return (not d.square and len(d.paths) > 0 and all(p.mode == Mode.UVU and p.weighted for p in d.paths)
            and all(m.mul == 1 for m in d.irreps2))


def _edge_conv_groups(d: TensorProductDescriptor) -> list[dict]:
    """Per x1 block: the dense matrix ``M (d2_total, d1 * K)`` mapping x2 to the per-row CG
    contraction ``Y (d1, K)`` of all its paths (``K`` = their output dims side by side), the
    weight index of every ``(u, column)`` and each path's columns."""
    s2, slices = d.irreps2.slices(), d.weight_slices()
    groups = []
    for i1 in sorted({p.i1 for p in d.paths}):
        (U, ir1) = d.irreps1[i1]
        ns = [n for n, p in enumerate(d.paths) if p.i1 == i1]
        K = sum(d.irreps_out[d.paths[n].i_out].ir.dim for n in ns)
        M = np.zeros((d.irreps2.dim, ir1.dim, K))
        widx = np.zeros((U, K), dtype=np.int64)
        cols, c0 = [], 0
        for n in ns:
            p = d.paths[n]
            ir2, iro = d.irreps2[p.i2].ir, d.irreps_out[p.i_out].ir
            c = clebsch_gordan(ir1.l, ir2.l, iro.l, dtype=torch.float64).numpy() * d.coefficient(n)
            M[s2[p.i2], :, c0 : c0 + iro.dim] += c.transpose(1, 0, 2)
            widx[:, c0 : c0 + iro.dim] = (slices[n].start + np.arange(U))[:, None]  # weight (U, 1) of the path
            cols.append((n, c0, c0 + iro.dim))
            c0 += iro.dim
        groups.append({"i1": i1, "K": K, "cols": cols, "M": M.reshape(d.irreps2.dim, ir1.dim * K),
                       "widx": widx.reshape(-1)})
    return groups


def _contract(mode: Mode, a, b, I, J, c, w, shared: bool, mo: int) -> torch.Tensor:
    """The gathered products of one path, ``(B, mul_out, nnz_padded)``; see the module docs."""
    bj = b.index_select(2, J) * c  # (B, V, n)
    if mode == Mode.UVU:
        ai = a.index_select(2, I)  # (B, U, n)
        if w is None:
            return ai * bj.sum(1, keepdim=True)
        return ai * (torch.matmul(w, bj) if shared else torch.bmm(w, bj))  # sum_v w[u, v] b[v, n]
    if mode == Mode.UUU:
        t = a.index_select(2, I) * bj
        return t if w is None else t * (w[:, None] if shared else w[..., None])
    # UVW: contract u with the weights before gathering (d1 <= nnz): q[z, v, w, i]
    B, U, d1 = a.shape
    V = b.shape[1]
    if w is None:
        t = a.sum(1).index_select(1, I) * bj.sum(1)
        return t[:, None].expand(B, mo, t.shape[-1])
    if shared:
        q = torch.matmul(a.transpose(1, 2), w.reshape(U, V * mo))  # (B, d1, V*W)
    else:
        q = torch.bmm(a.transpose(1, 2), w.reshape(B, U, V * mo))
    q = q.reshape(B, d1, V, mo).index_select(1, I)  # (B, n, V, W)
    return torch.einsum("znvw,zvn->zwn", q, bj)


def dense_flops(descriptor: TensorProductDescriptor) -> int:
    """Multiply-adds of the dense CG contraction per row (for reports): ``sum_p d1 d2 d3 * (#uv terms)``."""
    total = 0
    for p in descriptor.paths:
        ir1, ir2, iro = descriptor.irreps_of(p)
        total += ir1.dim * ir2.dim * iro.dim * descriptor.num_elements(p) * descriptor.irreps_out[p.i_out].mul
    return total


def sparse_flops(descriptor: TensorProductDescriptor) -> int:
    """The same counting only the nonzero CG entries."""
    from equikit.o3 import count_nonzero

    return sum(
        count_nonzero(*(ir.l for ir in descriptor.irreps_of(p))) * descriptor.num_elements(p)
        * descriptor.irreps_out[p.i_out].mul
        for p in descriptor.paths
    )

