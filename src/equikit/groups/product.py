"""Direct products of groups: an element is a tuple with one element per factor."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equikit.groups.base import Group


@dataclass(frozen=True, init=False, repr=False)
class DirectProduct(Group):
    """``G1 x G2 x ...``; elements are tuples ``(g1, g2, ...)`` with matching batch dims.

    Example: ``DirectProduct(Permutation(10), E(3))`` for point clouds of 10 points, whose
    symmetries are relabelling the points and moving the cloud rigidly.

    Example:
        >>> from equikit.groups import DirectProduct, Permutation, E
        >>> G = DirectProduct(Permutation(10), E(3))
        >>> perm, motion = G.sample(4, generator=0)
        >>> perm.shape, motion.shape
        (torch.Size([4, 10]), torch.Size([4, 4, 4]))
    """

    factors: tuple[Group, ...]

    def __init__(self, *factors: Group) -> None:
        if len(factors) < 2:
            raise ValueError(f"DirectProduct: needs at least two groups, got {len(factors)}")
        flat: list[Group] = []
        for f in factors:
            if not isinstance(f, Group):
                raise TypeError(f"DirectProduct: factors must be Groups, got {type(f).__name__}")
            if isinstance(f, DirectProduct):
                raise TypeError(
                    "DirectProduct: nested products are not supported; pass all factors at once"
                )
            flat.append(f)
        object.__setattr__(self, "factors", tuple(flat))

    @property
    def compact(self) -> bool:  # type: ignore[override]
        return all(f.compact for f in self.factors)

    @property
    def discrete(self) -> bool:  # type: ignore[override]
        return all(f.discrete for f in self.factors)

    def _element_shapes(self):
        return tuple(tuple(f.element_shape) for f in self.factors)

    def _sample(self, n, generator):
        return tuple(f._sample(n, generator) for f in self.factors)

    def compose(self, g, h):
        return tuple(f.compose(a, b) for f, a, b in zip(self.factors, g, h))

    def inverse(self, g):
        return tuple(f.inverse(a) for f, a in zip(self.factors, g))

    def _identity(self):
        return tuple(f._identity() for f in self.factors)

    @property
    def order(self) -> int | None:
        orders = [f.order for f in self.factors]
        if any(o is None for o in orders):
            return None
        out = 1
        for o in orders:
            out *= o
        return out

    def elements(self, *, dtype=None, device=None):
        parts = [f.elements(dtype=dtype, device=device) for f in self.factors]
        if any(p is None for p in parts):
            return None
        sizes = [p.shape[0] for p in parts]
        grids = torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")
        return tuple(p[g.reshape(-1)] for p, g in zip(parts, grids))

    def __repr__(self) -> str:
        return "DirectProduct(" + ", ".join(repr(f) for f in self.factors) + ")"
