"""Executors of a :class:`SymmetricContractionDescriptor`, registered by name.

Every executor takes ``forward(x, element, weight)`` with ``x (N, channels, irreps_in.dim)``
(MACE's layout: per node and channel one ``irreps_in`` vector), ``element (N,)`` integer
indices into ``weight (num_elements, weight_numel, channels)``, and returns ``(N, channels *
irreps_out.dim)`` in the layout of ``descriptor.irreps_out_full(channels)``.

- ``naive``: per output block and order ``nu`` one dense ``einsum`` of the full basis ``U``
  with ``nu`` copies of ``x`` and the weights gathered per node. The oracle.
- ``recursive``: MACE's contraction order, with the weights contracted per element
  instead of per node. Per element ``e`` present: ``T_nu = U_nu . W[e, nu]`` ``(channels, d^nu,
  M)`` for all output blocks at once (their ``m`` columns side by side, ``M`` the summed output
  dims; cost independent of the number of nodes), then for the nodes of that element ``y = x .
  T_numax + T_(numax-1)`` (one ``baddbmm`` over channels), ``y = x . y + T_(nu-1)`` (row-wise
  products over channels x nodes, :func:`rowdot`), down to ``nu = 1``. MACE instead contracts
  ``U`` with the weights gathered *per node* (``(N, channels, d^nu)``, times the basis size more
  multiply-adds). Nodes are processed in chunks so that the largest temporary stays below
  ``chunk_elements`` numbers.
- ``monomial`` (default): the symmetry of ``U`` used. ``sum_{i_1..i_nu}
  U_{i_1..i_nu} x_{i_1} .. x_{i_nu}`` is a sum over the *sorted* index tuples ``i_1 <= .. <=
  i_nu`` (the symmetric monomials ``P_f(x)``) with ``U`` times the number of distinct orderings,
  and only the monomials with a nonzero coefficient in some output block are kept (parity and
  the triangle rule zero most: for ``0e+1o+2e+3o`` into ``0e + 1o`` at order 3, 355 of the 816
  sorted ones, against the ``16^3 = 4096`` products per output column of ``recursive``; into
  ``0e`` 77). Per order the monomials are built from the order below by one gather and one
  multiply (``P_{i_1..i_nu} = P_{i_1..i_(nu-1)} x_{i_nu}``, the prefixes the top order needs
  are kept below it), then ``B = sum_nu T_nu P_nu`` with ``T_nu (channels, E M, F_nu) = W^T
  V_nu`` for all ``E`` elements at once (one ``bmm`` per order over the channels; each node
  takes its element's ``M`` rows by a one-hot sum). No per-element loop, no ``d^nu`` temporaries:
  on MACE's layer sizes 2-3x less time than ``recursive`` through forces and their training
  gradient (double backward), see ``docs/potentials.md``. Chunks of nodes keep the monomials
  below ``chunk_elements`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from equikit.tp._symmetric import SymmetricContractionDescriptor


def check_element(element: Any, n: int, num_elements: int, where: str) -> torch.Tensor:
    """Validate ``element (N,)`` integer indices in ``[0, num_elements)``."""
    if not isinstance(element, torch.Tensor):
        raise TypeError(f"{where}: `element` must be an integer tensor (N,), got {type(element).__name__}")
    if element.is_floating_point() or element.is_complex() or element.dtype == torch.bool:
        raise TypeError(f"{where}: `element` must be an integer tensor (N,) of element indices, got {element.dtype} "
                        "(pass one-hot attributes to the nn.SymmetricContraction module, or use .argmax(-1))")
    if element.shape != (n,):
        raise ValueError(f"{where}: `element` must have shape ({n},) like the nodes of `x`, got {tuple(element.shape)}")
    # the range check reads values (a graph break under torch.compile): eager calls only
    if n and not torch.compiler.is_compiling() and (int(element.min()) < 0 or int(element.max()) >= num_elements):
        raise ValueError(f"{where}: `element` must lie in [0, {num_elements}) (num_elements={num_elements}), "
                         f"got values in [{int(element.min())}, {int(element.max())}]")
    return element


def _prepare(desc: SymmetricContractionDescriptor, x, element, weight, where: str):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{where}: `x` must be a floating tensor (N, channels, {desc.irreps_in.dim}), got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if x.ndim != 3 or x.shape[-1] != desc.irreps_in.dim:
        raise ValueError(f"{where}: `x` must have shape (N, channels, {desc.irreps_in.dim}) for irreps_in "
                         f"'{desc.irreps_in}', got {tuple(x.shape)}")
    n, c, _ = x.shape
    if not isinstance(weight, torch.Tensor) or weight.ndim != 3 or weight.shape[1:] != (desc.weight_numel, c):
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{where}: `weight` must have shape (num_elements, {desc.weight_numel}, {c}), got {got}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{where}: `weight` must have dtype {x.dtype} like `x`, got {weight.dtype}")
    check_element(element, n, weight.shape[0], where)
    return n, c


class SymmetricExecutor(nn.Module):
    """Base of the symmetric-contraction executors: holds the descriptor and its bases."""

    name: ClassVar[str] = ""

    def __init__(self, descriptor: SymmetricContractionDescriptor) -> None:
        super().__init__()
        if not isinstance(descriptor, SymmetricContractionDescriptor):
            raise TypeError(f"{type(self).__name__}: `descriptor` must be a SymmetricContractionDescriptor, got "
                            f"{type(descriptor).__name__}")
        self.descriptor = descriptor
        self._frozen: dict = {}  # products of weights that need no gradient (_frozen_or_fresh)
        self._keys: list[tuple[int, int]] = []
        for (i, nu), sl in descriptor.weight_slices().items():
            if sl.stop > sl.start:
                self.register_buffer(f"u{i}_{nu}", descriptor.basis(i, nu, torch.float64), persistent=False)
                self._keys.append((i, nu))

    def extra_repr(self) -> str:
        d = self.descriptor
        return f"{d.irreps_in} -> {d.irreps_out}, correlation={d.correlation}, weights={d.weight_numel}"

    def _set_chunk_elements(self, chunk_elements: int) -> None:
        if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
            raise ValueError(f"{type(self).__name__}: `chunk_elements` must be an int >= 1, got {chunk_elements!r}")
        self.chunk_elements = chunk_elements

    def _frozen_or_fresh(self, weight: torch.Tensor, tag: Any, make: Callable[[], Any], capacity: int) -> Any:
        """``make()``, kept while weights that need no gradient stay unchanged (inference, MD, the
        force evaluation of a frozen model): keyed by storage, in-place version, dtype, device,
        shape, stride and ``tag``; the cache starts over once it holds ``capacity`` entries (stale
        weights). Weights that need a gradient, or a traced call, always get a fresh ``make()``."""
        if weight.requires_grad or torch.compiler.is_compiling():
            return make()
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape),
               weight.stride(), tag)
        if key not in self._frozen:
            if len(self._frozen) >= capacity:
                self._frozen.clear()
            # the entry holds the weights, so their memory (the key's address) cannot be reused
            self._frozen[key] = (weight, make())
        return self._frozen[key][1]


SYMMETRIC_BACKENDS: dict[str, type[SymmetricExecutor]] = {}


def register_symmetric_backend(cls: type[SymmetricExecutor]) -> type[SymmetricExecutor]:
    """Register a :class:`SymmetricExecutor` subclass under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, SymmetricExecutor)) or not cls.name:
        raise TypeError(f"register_symmetric_backend: expected a SymmetricExecutor subclass with a `name`, got {cls!r}")
    SYMMETRIC_BACKENDS[cls.name] = cls
    return cls


def make_symmetric_executor(descriptor: SymmetricContractionDescriptor, backend: str = "monomial",
                            **kwargs: Any) -> SymmetricExecutor:
    """Build the executor registered as ``backend`` (``"monomial"``, ``"recursive"`` or ``"naive"``).

    >>> from equikit.tp import symmetric_contraction
    >>> d = symmetric_contraction("0e + 1o", "0e", 2)
    >>> ex = make_symmetric_executor(d, "naive")
    >>> x, w = torch.randn(5, 4, 4), torch.randn(3, d.weight_numel, 4)
    >>> ex(x, torch.tensor([0, 2, 1, 0, 0]), w).shape
    torch.Size([5, 4])
    """
    if not isinstance(backend, str):
        raise TypeError(f"make_symmetric_executor: `backend` must be a string, got {type(backend).__name__}")
    if backend not in SYMMETRIC_BACKENDS:
        raise ValueError(f"make_symmetric_executor: unknown backend {backend!r}; available: "
                         f"{sorted(SYMMETRIC_BACKENDS)}")
    return SYMMETRIC_BACKENDS[backend](descriptor, **kwargs)


def _output(desc: SymmetricContractionDescriptor, blocks: list[torch.Tensor | None], n: int, c: int,
            like: torch.Tensor) -> torch.Tensor:
    out = []
    for (_, ir), y in zip(desc.irreps_out, blocks):
        out.append((like.new_zeros(n, c, ir.dim) if y is None else y).reshape(n, c * ir.dim))
    return torch.cat(out, dim=-1)


@register_symmetric_backend
class NaiveSymmetricExecutor(SymmetricExecutor):
    """Dense einsum over the full basis with per-node weights: the oracle."""

    name = "naive"

    def forward(self, x: torch.Tensor, element: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        d = self.descriptor
        n, c = _prepare(d, x, element, weight, "symmetric contraction backend 'naive'")
        w = weight[element]  # (N, K_total, C)
        slices = d.weight_slices()
        blocks: list[torch.Tensor | None] = [None] * len(d.irreps_out)
        for i, nu in self._keys:
            idx = "ijlnop"[:nu]
            eq = ",".join(f"zc{a}" for a in idx) + f",{idx}mk,zkc->zcm"
            y = torch.einsum(eq, *([x] * nu), getattr(self, f"u{i}_{nu}").to(x.dtype), w[:, slices[(i, nu)]])
            blocks[i] = y if blocks[i] is None else blocks[i] + y
        return _output(d, blocks, n, c, x)


def _rowdot_impl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # a batched (1 x d) @ (d x k) bmm has a large per-matrix cost where k == d (measured on this
    # CPU: 1536 x (16 x 16) 0.59 ms bmm vs 0.16 ms broadcast-multiply-and-sum; bmm wins for k = 3, 48)
    if y.shape[-1] == y.shape[-2]:
        return (x[:, :, None] * y).sum(1)
    return torch.bmm(x[:, None, :], y)[:, 0]


class _RowDot(torch.autograd.Function):
    """``out[b, k] = sum_d x[b, d] y[b, d, k]``: per-row vector-matrix products whose derivatives
    (and theirs: double backward for forces) are again :class:`_RowDot`, :class:`_RowMatvec` and
    :class:`_RowOuter`. The outer products of a ``bmm`` backward (``(d x 1) @ (1 x k)`` per row)
    cost ~2 us per row on this CPU; a broadcast multiply does them 5-15x faster."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return _rowdot_impl(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        gx = _RowMatvec.apply(y, g) if ctx.needs_input_grad[0] else None
        gy = _RowOuter.apply(x, g) if ctx.needs_input_grad[1] else None
        return gx, gy


class _RowMatvec(torch.autograd.Function):
    """``out[b, d] = sum_k y[b, d, k] g[b, k]``."""

    @staticmethod
    def forward(ctx, y, g):
        ctx.save_for_backward(y, g)
        return torch.bmm(y, g[:, :, None])[:, :, 0]

    @staticmethod
    def backward(ctx, go):
        y, g = ctx.saved_tensors
        gy = _RowOuter.apply(go, g) if ctx.needs_input_grad[0] else None
        gg = _RowDot.apply(go, y) if ctx.needs_input_grad[1] else None
        return gy, gg


class _RowOuter(torch.autograd.Function):
    """``out[b, d, k] = x[b, d] g[b, k]``."""

    @staticmethod
    def forward(ctx, x, g):
        ctx.save_for_backward(x, g)
        return x[:, :, None] * g[:, None, :]

    @staticmethod
    def backward(ctx, go):
        x, g = ctx.saved_tensors
        gx = _RowMatvec.apply(go, g) if ctx.needs_input_grad[0] else None
        gg = _RowDot.apply(x, go) if ctx.needs_input_grad[1] else None
        return gx, gg


def rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x (B, d)``, ``y (B, d, k)`` -> ``(B, k)``, ``out[b] = x[b] @ y[b]``, differentiable to any
    order (each derivative is again a row-wise product, never a batched outer-product ``bmm``).

    >>> x, y = torch.randn(4, 3), torch.randn(4, 3, 2)
    >>> torch.allclose(rowdot(x, y), torch.einsum("bd,bdk->bk", x, y))
    True
    """
    return _RowDot.apply(x, y)


@register_symmetric_backend
class RecursiveSymmetricExecutor(SymmetricExecutor):
    """MACE's recursive order with the weights contracted per element (see the module docs)."""

    name = "recursive"

    def __init__(self, descriptor: SymmetricContractionDescriptor, chunk_elements: int = 2**25) -> None:
        super().__init__(descriptor)
        self._set_chunk_elements(chunk_elements)
        # all output blocks in one pass: per nu, U_nu of every block as (K_nu, d^nu * M), the
        # blocks' m-columns side by side (M = sum of the output dims; zeros where a block has no
        # basis), and the rows of the weights they read
        desc, d = descriptor, descriptor.irreps_in.dim
        self._dims = [ir.dim for _, ir in desc.irreps_out]
        offsets = [sum(self._dims[:i]) for i in range(len(self._dims))]
        slices = desc.weight_slices()
        self._orders: list[int] = []
        for nu in range(1, desc.correlation + 1):
            blocks = [i for i in range(len(self._dims)) if (i, nu) in self._keys]
            if not blocks:
                continue
            rows = torch.cat([torch.arange(slices[(i, nu)].start, slices[(i, nu)].stop) for i in blocks])
            v = torch.zeros(len(rows), d**nu, sum(self._dims), dtype=torch.float64)
            k0 = 0
            for i in blocks:
                u = getattr(self, f"u{i}_{nu}")  # (d, ..., d, m, K)
                k = u.shape[-1]
                v[k0 : k0 + k, :, offsets[i] : offsets[i] + self._dims[i]] = u.reshape(d**nu, self._dims[i], k).permute(
                    2, 0, 1)
                k0 += k
            self.register_buffer(f"v{nu}", v.reshape(len(rows), -1), persistent=False)
            self.register_buffer(f"rows{nu}", rows, persistent=False)
            self._orders.append(nu)

    def _tensors(self, w_e: torch.Tensor) -> list[torch.Tensor | None]:
        """``T_nu = sum_k U_nu[..., k] W[e, nu, k, c]`` of all output blocks as ``(C, d^nu * M)``
        for nu = 1..numax (``None`` where no block has a basis of that order)."""
        out: list[torch.Tensor | None] = [None] * self.descriptor.correlation
        for nu in self._orders:
            v = getattr(self, f"v{nu}").to(w_e.dtype)
            out[nu - 1] = w_e.index_select(0, getattr(self, f"rows{nu}")).T @ v
        return out

    def _tensors_of(self, weight: torch.Tensor, e: int) -> list[torch.Tensor | None]:
        """:meth:`_tensors` of element ``e``; for weights that need no gradient (inference, MD,
        the force evaluation of a frozen model) kept until the weights change, so repeated calls
        skip the ``U W`` products (room for the elements of a few weight versions)."""
        return self._frozen_or_fresh(weight, e, lambda: self._tensors(weight[e]), 4 * weight.shape[0])

    @staticmethod
    def _contract(x: torch.Tensor, ts: list[torch.Tensor | None], d: int) -> torch.Tensor:
        """``x (C, n, d)``, ``ts[nu-1] (C, d^nu m)`` (``None``: no basis) -> ``(C, n, m)``,
        highest order first: ``y = x . T_top + T_(top-1)`` (one ``baddbmm`` over channels), then
        ``y = x . y + T_(nu-1)`` (a :func:`rowdot` over channels x nodes) down to ``nu = 1``."""
        C, n, _ = x.shape
        top = max(nu for nu in range(1, len(ts) + 1) if ts[nu - 1] is not None)
        t_top, below = ts[top - 1].reshape(C, d, -1), ts[top - 2] if top >= 2 else None
        y = torch.bmm(x, t_top) if below is None else torch.baddbmm(below.reshape(C, 1, -1), x, t_top)
        xr = x.reshape(C * n, d)
        for nu in range(top - 1, 0, -1):  # y: (C, n, d^nu m), T_nu included
            y = rowdot(xr, y.reshape(C * n, d, -1)).reshape(C, n, -1)
            if nu >= 2 and ts[nu - 2] is not None:
                y = y + ts[nu - 2].reshape(C, 1, -1)
        return y

    def forward(self, x: torch.Tensor, element: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        desc = self.descriptor
        n, c = _prepare(desc, x, element, weight, "symmetric contraction backend 'recursive'")
        d = desc.irreps_in.dim
        if n == 0 or not self._orders:
            return x.new_zeros(n, c * desc.irreps_out.dim)
        order = torch.argsort(element, stable=True)
        counts = torch.bincount(element, minlength=weight.shape[0]).tolist()
        xs = x.index_select(0, order).transpose(0, 1).contiguous()  # (C, N, d), nodes grouped by element
        size = c * d ** (desc.correlation - 1) * sum(self._dims)  # numbers per node of the largest temporary
        step = max(1, self.chunk_elements // max(size, 1))
        parts, start = [], 0
        for e, cnt in enumerate(counts):
            if cnt == 0:
                continue
            ts = self._tensors_of(weight, e)
            for s in range(start, start + cnt, step):
                parts.append(self._contract(xs[:, s : min(s + step, start + cnt)], ts, d))
            start += cnt
        y = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        y = y.transpose(0, 1)  # (N, C, M) in grouped order
        y = torch.empty_like(y).index_copy(0, order, y)
        if len(self._dims) == 1:
            return y.reshape(n, c * self._dims[0])
        return torch.cat([b.reshape(n, -1) for b in torch.split(y, self._dims, dim=-1)], dim=-1)



def _monomial_plan(desc: SymmetricContractionDescriptor) -> dict:
    """The monomials of the ``monomial`` executor. Per order ``nu``: the sorted index tuples
    ``i_1 <= ... <= i_nu`` with a nonzero coefficient in some output block's basis, plus (below
    the top order) the prefixes the next order is built from: each order-``nu`` monomial is an
    order-``nu - 1`` one times one component of ``x`` (order 1 is ``x`` itself). And per order
    ``V_nu (K_total, M * F_nu)``: the basis on those monomials, each entry times the monomial's
    number of distinct orderings (``U`` is symmetric, so the sum over all index tuples is the sum
    over sorted ones with that multiplicity); zero rows for the blocks of other orders."""
    import itertools
    import math
    from collections import Counter

    d = desc.irreps_in.dim
    dims = [ir.dim for _, ir in desc.irreps_out]
    offsets = [sum(dims[:i]) for i in range(len(dims))]
    slices = desc.weight_slices()
    built: dict[int, list[tuple[int, ...]]] = {1: [(i,) for i in range(d)]}
    need: set[tuple[int, ...]] = set()
    for nu in range(desc.correlation, 1, -1):  # top order first: its prefixes are needed below
        us = [desc.basis(i, nu, torch.float64).numpy() for i in range(len(dims))]
        built[nu] = sorted(need | {m for m in itertools.combinations_with_replacement(range(d), nu)
                                   if any(u.shape[-1] and abs(u[m]).max() > 1e-13 for u in us)})
        need = {m[:-1] for m in built[nu]}
    orders = []
    for nu in range(1, desc.correlation + 1):
        v = torch.zeros(desc.weight_numel, sum(dims), len(built[nu]), dtype=torch.float64)
        for i in range(len(dims)):
            sl = slices[(i, nu)]
            if sl.stop == sl.start:
                continue
            u = desc.basis(i, nu, torch.float64)  # (d, ..., d, m, K)
            for f, m in enumerate(built[nu]):
                mult = math.factorial(nu) / math.prod(math.factorial(c) for c in Counter(m).values())
                v[sl, offsets[i] : offsets[i] + dims[i], f] = u[m].T * mult
        prev = last = None
        if nu >= 2:
            below = {m: r for r, m in enumerate(built[nu - 1])}
            prev = torch.tensor([below[m[:-1]] for m in built[nu]], dtype=torch.long)
            last = torch.tensor([m[-1] for m in built[nu]], dtype=torch.long)
        orders.append((v.reshape(v.shape[0], -1), prev, last, len(built[nu])))
    return {"orders": orders}


@register_symmetric_backend
class MonomialSymmetricExecutor(SymmetricExecutor):
    """The contraction as matrix products with the symmetric monomials of ``x`` (see the module
    docs): ``B[n, c] = sum_nu T_nu[e_n, c] P_nu(x[n, c])``, ``T_nu = W^T V_nu``."""

    name = "monomial"

    def __init__(self, descriptor: SymmetricContractionDescriptor, chunk_elements: int = 2**25) -> None:
        super().__init__(descriptor)
        self._set_chunk_elements(chunk_elements)
        self._dims = [ir.dim for _, ir in descriptor.irreps_out]
        self._sizes: list[int] = []  # monomials per order
        for nu, (v, prev, last, size) in enumerate(_monomial_plan(descriptor)["orders"], start=1):
            self.register_buffer(f"v{nu}", v, persistent=False)
            if prev is not None:
                self.register_buffer(f"prev{nu}", prev, persistent=False)
                self.register_buffer(f"last{nu}", last, persistent=False)
            self._sizes.append(size)

    @property
    def num_monomials(self) -> int:
        """Monomials computed per node and channel (all orders)."""
        return sum(self._sizes)

    def monomials(self, xt: torch.Tensor) -> list[torch.Tensor]:
        """``xt (C, d, n)`` -> per order ``nu`` the monomials ``(C, F_nu, n)`` (order 1: ``xt``)."""
        out = [xt]
        for nu in range(2, len(self._sizes) + 1):
            out.append(out[-1].index_select(1, getattr(self, f"prev{nu}"))
                       * xt.index_select(1, getattr(self, f"last{nu}")))
        return out

    def _tensors(self, weight: torch.Tensor) -> list[torch.Tensor]:
        """Per order ``T_nu (C, E * M, F_nu)``, ``T_nu[c, e M + m, f] = sum_k W[e, k, c] V_nu[k, m, f]``."""
        E, K, C = weight.shape
        w = weight.permute(2, 0, 1).reshape(C * E, K)
        return [(w @ getattr(self, f"v{nu}").to(weight.dtype)).reshape(C, E * sum(self._dims), f)
                for nu, f in enumerate(self._sizes, start=1)]

    def _tensors_of(self, weight: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`_tensors`, kept while weights that need no gradient stay unchanged (inference, MD)."""
        return self._frozen_or_fresh(weight, None, lambda: self._tensors(weight), 1)

    def forward(self, x: torch.Tensor, element: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        desc = self.descriptor
        n, c = _prepare(desc, x, element, weight, "symmetric contraction backend 'monomial'")
        E, M = weight.shape[0], sum(self._dims)
        if n == 0 or not self._keys:
            return x.new_zeros(n, c * desc.irreps_out.dim)
        ts = self._tensors_of(weight)
        step = max(1, self.chunk_elements // max(1, c * max(self._sizes)))
        ys = []
        for s in range(0, n, step):
            ps = self.monomials(x[s : s + step].permute(1, 2, 0))  # (C, d, n) ...
            y = torch.bmm(ts[0], ps[0])
            for t, p in zip(ts[1:], ps[1:]):
                y = torch.baddbmm(y, t, p)  # (C, E M, n)
            if E > 1:  # each node's element: a one-hot sum over the E row blocks
                hot = torch.nn.functional.one_hot(element[s : s + step], E).T.to(x.dtype)  # (E, n)
                y = (y.reshape(c, E, M, -1) * hot[:, None]).sum(1)
            ys.append(y)
        y = (torch.cat(ys, dim=-1) if len(ys) > 1 else ys[0]).permute(2, 0, 1)  # (N, C, M)
        if len(self._dims) == 1:
            return y.reshape(n, c * M)
        return torch.cat([b.reshape(n, -1) for b in torch.split(y, self._dims, dim=-1)], dim=-1)
