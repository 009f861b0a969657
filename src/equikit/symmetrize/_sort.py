"""Sort frame for permutations: order the items by an equivariant key, enumerate ties."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

from equikit._utils import check_finite, check_int
from equikit.groups import Permutation
from equikit.symmetrize._frame import Frame, FrameOutput, batch_size, select


def lexsort(keys: torch.Tensor) -> torch.Tensor:
    """Stable lexicographic argsort of ``keys (B, n, m)`` along ``n`` (column 0 most significant).

    Example:
        >>> import torch
        >>> lexsort(torch.tensor([[[1, 2], [0, 5], [1, 0]]])).tolist()
        [[1, 2, 0]]
    """
    order = torch.arange(keys.shape[1], device=keys.device).expand(keys.shape[0], -1)
    for col in range(keys.shape[2] - 1, -1, -1):
        vals = torch.gather(keys[..., col], 1, order)
        order = torch.gather(order, 1, torch.sort(vals, dim=1, stable=True).indices)
    return order


def tie_blocks(sorted_keys: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per batch row, the ``[start, stop)`` runs of equal keys (length > 1) in sorted keys ``(B, n, m)``."""
    same = (sorted_keys[:, 1:] == sorted_keys[:, :-1]).all(dim=-1).cpu()  # (B, n-1)
    blocks = []
    for row in same.tolist():
        runs, start = [], None
        for i, eq in enumerate(row):
            if eq and start is None:
                start = i
            elif not eq and start is not None:
                runs.append((start, i + 1))
                start = None
        if start is not None:
            runs.append((start, len(row) + 1))
        blocks.append(runs)
    return blocks


def _orderings(order: list[int], runs: list[tuple[int, int]]) -> list[list[int]]:
    """All orders obtained by permuting each tied run of ``order``."""
    choices = [list(itertools.permutations(order[a:b])) for a, b in runs]
    out = []
    for combo in itertools.product(*choices):
        o = list(order)
        for (a, b), perm in zip(runs, combo):
            o[a:b] = perm
        out.append(o)
    return out


class SortFrame(Frame):
    """Frame for ``Permutation(n)``: the permutations that sort the items by a key.

    Math: with ``order`` a sorting permutation of the keys (``key(x)[order[0]] <= ...``), the
    frame element is ``g = order`` (``g(j) = order[j]``) so that ``(g^-1 x)[j] = x[order[j]]``
    is the sorted input. Relabelling the items by ``sigma`` maps ``order`` to ``sigma o order``,
    so ``F(sigma x) = sigma F(x)``. Items with equal keys (ties) make the sorting permutation
    non-unique: ``ties="enumerate"`` (default) puts every ordering of every tied run in the
    frame (``prod_runs m!`` elements, refused above ``max_size``) and stays exact;
    ``ties="first"`` keeps the stable order, which is exact only when tied items are
    identical in *all* data the backbone sees (e.g. duplicate set elements, but not graph
    nodes with equal features and different neighbours). Inputs with ties are reported as
    degenerate only under ``ties="first"``.

    Args:
        n: number of items.
        key: callable ``x -> (B, n)`` or ``(B, n, m)`` keys computed per item (so that they
            move with the items exactly); default: the item features themselves, sorted
            lexicographically. For graphs, pass e.g. ``lambda d: d["adj"].sum(-1)`` combined
            with features.
        node_dim: the items' dim in the (selected) input tensor (negative).
        input_key: the dict key holding the items when ``key`` is None.
        ties: ``"enumerate"`` or ``"first"``.
        max_size: largest frame allowed per input.

    Example:
        >>> import torch
        >>> fr = SortFrame(3)(torch.tensor([[[2.0], [0.0], [1.0]]]))
        >>> fr.elements[0].tolist()
        [[1, 2, 0]]
    """

    def __init__(
        self,
        n: int,
        key: Callable[[Any], torch.Tensor] | None = None,
        *,
        node_dim: int = -2,
        input_key: str | None = None,
        ties: str = "enumerate",
        max_size: int = 720,
    ) -> None:
        super().__init__()
        check_int(n, "n", "SortFrame", minimum=1)
        check_int(max_size, "max_size", "SortFrame", minimum=1)
        if ties not in ("enumerate", "first"):
            raise ValueError(f"SortFrame: `ties` must be 'enumerate' or 'first', got {ties!r}")
        if key is not None and not callable(key):
            raise TypeError(f"SortFrame: `key` must be callable or None, got {type(key).__name__}")
        if isinstance(node_dim, bool) or not isinstance(node_dim, int) or node_dim >= 0:
            raise ValueError(f"SortFrame: `node_dim` must be a negative int, got {node_dim!r}")
        self.group = Permutation(n)
        self.n, self.key, self.node_dim, self.input_key = n, key, node_dim, input_key
        self.ties, self.max_size = ties, max_size

    def keys(self, x: Any) -> torch.Tensor:
        """The ``(B, n, m)`` sort keys of ``x``."""
        where = "SortFrame"
        b = batch_size(x, where)
        if self.key is None:
            t = select(x, self.input_key, where)
            if t.ndim < -self.node_dim + 1 or t.shape[self.node_dim] != self.n:
                raise ValueError(
                    f"{where}: expected {self.n} items along dim {self.node_dim} of a (B, ...) input, got "
                    f"shape {tuple(t.shape)}"
                )
            k = t.movedim(self.node_dim, 1).reshape(b, self.n, -1)
        else:
            k = self.key(x)
            if not isinstance(k, torch.Tensor) or k.ndim not in (2, 3) or tuple(k.shape[:2]) != (b, self.n):
                got = tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
                raise ValueError(f"{where}: `key` must return (B={b}, n={self.n}) or (B, n, m) keys, got {got}")
            k = k.reshape(b, self.n, -1)
        return check_finite(k, "keys", where)

    def _sorted(self, x: Any):
        keys = self.keys(x)
        order = lexsort(keys)
        skeys = torch.gather(keys, 1, order[..., None].expand_as(keys))
        return order, tie_blocks(skeys)

    def forward(self, x: Any) -> FrameOutput:
        order, blocks = self._sorted(x)
        b = order.shape[0]
        fdtype = _float_dtype(x)
        if self.ties == "first" or not any(blocks):
            deg = torch.tensor([bool(r) for r in blocks], dtype=torch.bool, device=order.device)
            if self.ties == "enumerate":
                deg = torch.zeros_like(deg)
            return FrameOutput(order[None], torch.ones(1, b, dtype=fdtype, device=order.device), deg)
        sizes = [math.prod(math.factorial(e - s) for s, e in runs) for runs in blocks]
        if max(sizes) > self.max_size:
            raise ValueError(
                f"SortFrame: an input has {max(sizes)} tied orderings, more than max_size={self.max_size}; "
                "use a more discriminative `key`, ties='first' (exact only for identical tied items) or a "
                "larger max_size"
            )
        k = max(sizes)
        elements = torch.empty(k, b, self.n, dtype=torch.int64)
        weights = torch.zeros(k, b, dtype=fdtype)
        for i, (o, runs) in enumerate(zip(order.cpu().tolist(), blocks)):
            alts = torch.tensor(_orderings(o, runs), dtype=torch.int64)
            elements[:, i] = alts[torch.arange(k) % len(alts)]
            weights[: len(alts), i] = 1.0 / len(alts)
        dev = order.device
        return FrameOutput(elements.to(dev), weights.to(dev), torch.zeros(b, dtype=torch.bool, device=dev))

    def canonical(self, x: Any) -> FrameOutput:
        """The stable sorting permutation (exact when tied items are identical; ties flagged)."""
        order, blocks = self._sorted(x)
        b = order.shape[0]
        deg = torch.tensor([bool(r) for r in blocks], dtype=torch.bool, device=order.device)
        return FrameOutput(order[None], torch.ones(1, b, dtype=_float_dtype(x), device=order.device), deg)


def _float_dtype(x: Any) -> torch.dtype:
    from equikit._utils import tree_leaves

    for t in tree_leaves(x):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()
