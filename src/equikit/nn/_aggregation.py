r"""Aggregation of a multiset of vectors per group (messages per target node, nodes per graph).

Every aggregator here maps ``x (M, C)`` with a group id ``index (M,)`` in ``[0, G)`` to
``(G, C')``; empty groups give zeros (the learned identity for :class:`LCMAggregation`).
Written with ``index_add_`` / ``scatter_reduce_`` (no ``torch_scatter``), vectorised over all
groups at once.

What invariance holds, exactly:

- ``sum``, ``mean``, ``max``, ``min``, ``std`` and :class:`SoftmaxAggregation` are invariant to
  any reordering of the elements of a group, up to float rounding of the sums;
- :class:`RecurrentAggregation` (an LSTM over the group read as a sequence) is NOT invariant
  unless the order is canonical: ``order="sorted"`` sorts each group by a fixed projection of
  the features (invariant whenever those keys have no ties), ``"input"`` reads the order the
  elements come in, ``"random"`` a fresh random order per call (invariant only in
  expectation);
- :class:`LCMAggregation` (learnable commutative monoid, Ong & Velickovic 2022) reduces each
  group with a learned binary operator over a balanced binary tree. The operator is exactly
  commutative by construction (symmetrised); associativity is only encouraged by
  :meth:`LCMAggregation.associativity_loss`, so the result depends on the tree order and is
  permutation invariant only approximately (measured in the tests and in docs/graphs.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equikit._utils.validate import check_int
from equikit.nn._mlp import make_mlp

__all__ = [
    "Aggregation",
    "LCMAggregation",
    "RecurrentAggregation",
    "SoftmaxAggregation",
    "group_slots",
    "scatter",
    "scatter_softmax",
]

REDUCTIONS = ("sum", "mean", "max", "min", "std")


def _check(x, index, dim_size, where):
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise TypeError(f"{where}: `x` must be a tensor (M, ...), got {type(x).__name__}")
    if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.shape != x.shape[:1]:
        raise ValueError(
            f"{where}: `index` must be an integer tensor (M,) = ({x.shape[0]},), got "
            f"{getattr(index, 'dtype', type(index).__name__)} {tuple(getattr(index, 'shape', ()))}"
        )
    check_int(dim_size, "dim_size", where, minimum=0)


def _expand(index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return index.view(-1, *([1] * (x.ndim - 1))).expand_as(x)


def scatter(x: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str = "sum",
            eps: float = 1e-10) -> torch.Tensor:
    r"""Reduce the rows of ``x`` that share an ``index``: ``out[g] = reduce_{m: index[m]=g} x[m]``.

    ``reduce`` is ``sum``, ``mean``, ``max``, ``min`` or ``std`` (population standard deviation
    :math:`\sqrt{\mathrm{mean}((x - \mathrm{mean})^2)}`, set to 0 where the variance is at most
    ``eps``, e.g. one-element groups, so the gradient stays finite). Empty groups give 0.

    Shapes: ``x (M, ...)``, ``index (M,)`` -> ``(dim_size, ...)``.

    Example:
        >>> import torch
        >>> from equikit.nn import scatter
        >>> x, idx = torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0, 0, 2])
        >>> scatter(x, idx, 3).tolist(), scatter(x, idx, 3, "max").tolist()
        ([3.0, 0.0, 5.0], [2.0, 0.0, 5.0])
    """
    _check(x, index, dim_size, "scatter")
    if reduce not in REDUCTIONS:
        raise ValueError(f"scatter: `reduce` must be one of {REDUCTIONS}, got {reduce!r}")
    out_shape = (dim_size, *x.shape[1:])
    if reduce in ("max", "min"):
        out = x.new_zeros(out_shape)
        return out.scatter_reduce_(0, _expand(index, x), x, "amax" if reduce == "max" else "amin",
                                   include_self=False)
    total = x.new_zeros(out_shape).index_add_(0, index, x)
    if reduce == "sum":
        return total
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(x.dtype)
    count = count.view(-1, *([1] * (x.ndim - 1)))
    mean = total / count
    if reduce == "mean":
        return mean
    var = x.new_zeros(out_shape).index_add_(0, index, (x - mean[index]) ** 2) / count
    # groups with variance <= eps (e.g. one element) give 0; the clamp keeps gradients finite
    return torch.sqrt(var.clamp(min=eps)) * (var > eps).to(x.dtype)


def scatter_softmax(score: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    r"""Softmax of ``score`` within each group: :math:`w_m = e^{s_m} / \sum_{m': index[m']=index[m]} e^{s_{m'}}`
    (computed with the group maximum subtracted). Shapes: ``(M, ...)`` -> ``(M, ...)``.

    Example:
        >>> import torch
        >>> from equikit.nn import scatter_softmax
        >>> scatter_softmax(torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0, 0, 1]), 2).tolist()
        [0.5, 0.5, 1.0]
    """
    _check(score, index, dim_size, "scatter_softmax")
    top = scatter(score.detach(), index, dim_size, "max")
    e = torch.exp(score - top[index])
    return e / scatter(e, index, dim_size, "sum")[index]


def group_slots(index: torch.Tensor, dim_size: int, key: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Position of each element within its group, ``(M,)``, and the largest group size.
    Elements keep their input order, or are ordered by ascending ``key (M,)`` (ties by input
    order) when given."""
    order = torch.arange(index.numel(), device=index.device)
    if key is not None:
        order = torch.argsort(key, stable=True)
    order = order[torch.argsort(index[order], stable=True)]
    counts = torch.bincount(index, minlength=dim_size)
    ptr = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(index)
    slot[order] = torch.arange(index.numel(), device=index.device) - ptr[index[order]]
    return slot, int(counts.max()) if counts.numel() else 0


class Aggregation(nn.Module):
    """A fixed reduction (``sum``, ``mean``, ``max``, ``min``, ``std``) or several concatenated
    (``reduce=("mean", "max", "std")``, PNA-style) as a module: ``(M, C) -> (G, k C)``.

    Example:
        >>> import torch
        >>> from equikit.nn import Aggregation
        >>> Aggregation(("sum", "max"))(torch.ones(3, 2), torch.tensor([0, 0, 1]), 2).tolist()
        [[2.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, reduce: str | tuple[str, ...] = "sum") -> None:
        super().__init__()
        reduce = (reduce,) if isinstance(reduce, str) else tuple(reduce)
        bad = [r for r in reduce if r not in REDUCTIONS]
        if not reduce or bad:
            raise ValueError(f"Aggregation: `reduce` must be one or more of {REDUCTIONS}, got {reduce!r}")
        self.reduce = reduce

    def forward(self, x: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
        return torch.cat([scatter(x, index, dim_size, r) for r in self.reduce], dim=-1)


class SoftmaxAggregation(nn.Module):
    r"""Attention-weighted sum: per channel, :math:`\mathrm{out}_g = \sum_m w_m \odot x_m` with
    :math:`w = \mathrm{softmax}_{m \in g}(\mathrm{score}(x_m))` and ``score`` a learned
    ``Linear(C, C)`` (``heads`` = C weights per element) or ``Linear(C, 1)`` (``per_channel=False``).

    Invariant to reordering a group (weights depend on the element, not its position).
    ``forward(..., return_weights=True)`` also returns ``w (M, C or 1)``.

    Example:
        >>> import torch
        >>> from equikit.nn import SoftmaxAggregation
        >>> SoftmaxAggregation(4)(torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 1]), 2).shape
        torch.Size([2, 4])
    """

    def __init__(self, channels: int, per_channel: bool = True) -> None:
        super().__init__()
        check_int(channels, "channels", "SoftmaxAggregation", minimum=1)
        self.score = nn.Linear(channels, channels if per_channel else 1)

    def forward(self, x, index, dim_size, return_weights: bool = False):
        _check(x, index, dim_size, "SoftmaxAggregation")
        w = scatter_softmax(self.score(x), index, dim_size)
        out = scatter(w * x, index, dim_size, "sum")
        return (out, w) if return_weights else out


class RecurrentAggregation(nn.Module):
    """An LSTM read over each group as a sequence; the output is the last hidden state
    ``(G, out_channels)`` (Hamilton et al.'s LSTM aggregator).

    NOT permutation invariant in general. ``order``:

    - ``"sorted"`` (default): each group sorted by ``x @ key`` with ``key`` a fixed random unit
      vector (a buffer, seeded): invariant whenever no two elements of a group tie on the key;
    - ``"input"``: the order the elements come in (depends on the labelling);
    - ``"random"``: a fresh random order each call (invariant only in distribution).

    Example:
        >>> import torch
        >>> from equikit.nn import RecurrentAggregation
        >>> RecurrentAggregation(3, 5)(torch.randn(4, 3), torch.tensor([0, 1, 1, 1]), 2).shape
        torch.Size([2, 5])
    """

    ORDERS = ("sorted", "input", "random")

    def __init__(self, in_channels: int, out_channels: int, order: str = "sorted", seed: int = 0) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "RecurrentAggregation", minimum=1)
        check_int(out_channels, "out_channels", "RecurrentAggregation", minimum=1)
        if order not in self.ORDERS:
            raise ValueError(f"RecurrentAggregation: `order` must be one of {self.ORDERS}, got {order!r}")
        self.order = order
        self.lstm = nn.LSTM(in_channels, out_channels, batch_first=True)
        key = torch.randn(in_channels, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("key", key / key.norm())

    def forward(self, x: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
        _check(x, index, dim_size, "RecurrentAggregation")
        if self.order == "sorted":
            key = x.detach() @ self.key.to(x.dtype)
        elif self.order == "random":
            key = torch.rand(x.shape[0], device=x.device)
        else:
            key = None
        slot, length = group_slots(index, dim_size, key)
        seq = x.new_zeros(dim_size, max(length, 1), x.shape[-1])
        seq[index, slot] = x
        out, _ = self.lstm(seq)
        counts = torch.bincount(index, minlength=dim_size)
        last = out[torch.arange(dim_size, device=x.device), (counts - 1).clamp(min=0)]
        return last * (counts > 0).unsqueeze(-1).to(x.dtype)


class LCMAggregation(nn.Module):
    r"""Learnable commutative monoid aggregation (Ong & Velickovic 2022).

    A learned binary operator, symmetrised so that it is exactly commutative,

    .. math:: a \oplus b = \tfrac12\big(h([a, b]) + h([b, a])\big), \qquad h = \text{MLP}(2C \to C),

    reduces each group over a balanced binary tree: the group's elements (input order) are
    padded with the learned identity ``e`` to a power of two ``L = 2^{\lceil \log_2 V \rceil}``
    and neighbours are combined level by level, ``ceil(log2 V)`` levels, all groups at once
    (no Python loop over nodes; each group stops at its own depth, so its result does not
    depend on the other groups of the batch). Empty groups give ``e``.

    Invariance: exact for the permutations that the tree's commutativity absorbs (swapping the
    two children of any tree node); for any other reordering only as far as ``\oplus`` is
    associative and ``e`` is its identity. :meth:`associativity_loss` (the paper's regulariser)
    and :meth:`identity_loss` push towards a monoid; add them to the task loss.

    Shapes: ``x (M, C)``, ``index (M,)`` -> ``(G, C)``.

    Example:
        >>> import torch
        >>> from equikit.nn import LCMAggregation
        >>> agg = LCMAggregation(4)
        >>> a, b = torch.randn(1, 4), torch.randn(1, 4)
        >>> torch.equal(agg.combine(a, b), agg.combine(b, a))
        True
    """

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        check_int(channels, "channels", "LCMAggregation", minimum=1)
        hidden = hidden or 2 * channels
        self.channels = channels
        self.h = make_mlp([2 * channels, hidden, channels])
        self.identity = nn.Parameter(torch.zeros(channels))

    def combine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The commutative operator ``a (+) b`` (elementwise over leading dims)."""
        # IEEE addition is commutative, so combine(a, b) == combine(b, a) bit for bit
        return 0.5 * (self.h(torch.cat([a, b], -1)) + self.h(torch.cat([b, a], -1)))

    def forward(self, x: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
        _check(x, index, dim_size, "LCMAggregation")
        slot, length = group_slots(index, dim_size)
        depth = math.ceil(math.log2(length)) if length > 1 else 0
        tree = self.identity.to(x.dtype).expand(dim_size, 2**depth, self.channels).clone()
        tree[index, slot] = x
        # a group of V elements uses its own depth ceil(log2 V): above it, the left child is
        # passed up unchanged, so a group's result does not depend on the rest of the batch
        counts = torch.bincount(index, minlength=dim_size)
        own_depth = torch.ceil(torch.log2(counts.clamp(min=1).to(torch.float64))).long()
        level = 0
        while tree.shape[1] > 1:
            merged = self.combine(tree[:, 0::2], tree[:, 1::2])
            active = (own_depth > level).view(-1, 1, 1)
            tree = torch.where(active, merged, tree[:, 0::2])
            level += 1
        return tree[:, 0]

    def associativity_loss(self, x: torch.Tensor, n_triples: int = 64,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Mean of :math:`\|(a \oplus b) \oplus c - a \oplus (b \oplus c)\|^2` over random
        triples of rows of ``x (M, C)``."""
        idx = torch.randint(0, x.shape[0], (3, n_triples), generator=generator).to(x.device)
        a, b, c = x[idx[0]], x[idx[1]], x[idx[2]]
        return (self.combine(self.combine(a, b), c) - self.combine(a, self.combine(b, c))).pow(2).mean()

    def identity_loss(self, x: torch.Tensor) -> torch.Tensor:
        r"""Mean of :math:`\|x \oplus e - x\|^2` over the rows of ``x``."""
        e = self.identity.to(x.dtype).expand_as(x)
        return (self.combine(x, e) - x).pow(2).mean()
