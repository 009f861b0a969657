"""Finite and discrete groups: permutations, cyclic and dihedral groups, torus shifts.

Conventions (used by every action in :mod:`equikit.groups.actions`):

- ``Permutation(n)``: an element is an int64 tensor ``p`` of shape ``(..., n)`` with
  ``p[i] = sigma(i)``, the image of ``i``. Composition ``(sigma tau)(i) = sigma(tau(i))``.
  Acting on items, item ``i`` moves to slot ``sigma(i)``: ``x'[sigma(i)] = x[i]``.
- ``Cyclic(n)``: an int64 ``k`` in ``[0, n)``; composition is addition mod n.
- ``Dihedral(n)``: an int64 pair ``(k, s)`` meaning ``r^k f^s`` with ``f r f = r^-1``;
  ``(k1, s1)(k2, s2) = (k1 + (-1)^s1 k2, s1 xor s2)``. Order ``2n``.
- ``CyclicShift(shape)``: an int64 vector of shifts, one per axis, composition is addition
  modulo ``shape``: the translations of a discrete torus (images, sequences).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from equikit._utils import check_int
from equikit.groups.base import Group

_MAX_ENUMERATE = 10**6


def _enumerable(order: int, name: str) -> None:
    if order > _MAX_ENUMERATE:
        raise ValueError(
            f"{name}.elements: the group has {order} elements, more than {_MAX_ENUMERATE}; "
            "sample elements instead"
        )


@dataclass(frozen=True, repr=False)
class Permutation(Group):
    """The symmetric group S_n acting on ``n`` items (nodes, set elements, hidden units).

    Example:
        >>> import torch
        >>> from equikit.groups import Permutation
        >>> S3 = Permutation(3)
        >>> g, h = torch.tensor([1, 2, 0]), torch.tensor([0, 2, 1])
        >>> S3.compose(g, h)  # (g h)(i) = g(h(i))
        tensor([1, 0, 2])
        >>> S3.inverse(g)
        tensor([2, 0, 1])
        >>> S3.order, S3.elements().shape
        (6, torch.Size([6, 3]))
    """

    n: int
    discrete = True

    def __post_init__(self) -> None:
        check_int(self.n, "n", "Permutation", minimum=1)

    @property
    def element_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.n,)

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, self.n, generator=generator, dtype=torch.float64).argsort(dim=-1)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(g.shape, h.shape)
        return torch.gather(g.expand(shape), -1, h.expand(shape))

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        inv = torch.empty_like(g)
        src = torch.arange(self.n, device=g.device).expand_as(g)
        return inv.scatter_(-1, g, src)

    def _identity(self) -> torch.Tensor:
        return torch.arange(self.n)

    @property
    def order(self) -> int:
        return math.factorial(self.n)

    def elements(self, *, dtype=None, device=None) -> torch.Tensor:
        _enumerable(self.order, "Permutation")
        perms = torch.tensor(list(itertools.permutations(range(self.n))), dtype=torch.int64)
        return perms.to(device)

    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Permutation matrices ``P[sigma(i), i] = 1`` so that ``(P x)[sigma(i)] = x[i]``."""
        eye = torch.eye(self.n, dtype=dtype or torch.get_default_dtype(), device=g.device)
        return eye[g].transpose(-1, -2)


@dataclass(frozen=True, repr=False)
class Cyclic(Group):
    """The cyclic group C_n = Z/nZ (e.g. C_4: rotations of an image by multiples of 90°)."""

    n: int
    discrete = True
    element_shape = ()

    def __post_init__(self) -> None:
        check_int(self.n, "n", "Cyclic", minimum=1)

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.n, (n,), generator=generator)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.remainder(g + h, self.n)

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        return torch.remainder(-g, self.n)

    def _identity(self) -> torch.Tensor:
        return torch.tensor(0)

    @property
    def order(self) -> int:
        return self.n

    def elements(self, *, dtype=None, device=None) -> torch.Tensor:
        return torch.arange(self.n, device=device)


@dataclass(frozen=True, repr=False)
class Dihedral(Group):
    """The dihedral group D_n of order 2n: rotations ``r^k`` and reflections ``r^k f``.

    Example:
        >>> import torch
        >>> from equikit.groups import Dihedral
        >>> D4 = Dihedral(4)
        >>> r, f = torch.tensor([1, 0]), torch.tensor([0, 1])
        >>> D4.compose(D4.compose(f, r), f).tolist()  # f r f = r^-1 = r^3
        [3, 0]
    """

    n: int
    discrete = True
    element_shape = (2,)

    def __post_init__(self) -> None:
        check_int(self.n, "n", "Dihedral", minimum=1)

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(0, self.n, (n,), generator=generator)
        s = torch.randint(0, 2, (n,), generator=generator)
        return torch.stack([k, s], dim=-1)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        k1, s1 = g[..., 0], g[..., 1]
        k2, s2 = h[..., 0], h[..., 1]
        sign = 1 - 2 * s1
        return torch.stack([torch.remainder(k1 + sign * k2, self.n), (s1 + s2) % 2], dim=-1)

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        k, s = g[..., 0], g[..., 1]
        # (r^k f^s)^-1 = f^s r^-k = r^{(-1)^{s+1} k} f^s
        k_inv = torch.where(s == 1, k, torch.remainder(-k, self.n))
        return torch.stack([k_inv, s], dim=-1)

    def _identity(self) -> torch.Tensor:
        return torch.tensor([0, 0])

    @property
    def order(self) -> int:
        return 2 * self.n

    def elements(self, *, dtype=None, device=None) -> torch.Tensor:
        k = torch.arange(self.n).repeat(2)
        s = torch.arange(2).repeat_interleave(self.n)
        return torch.stack([k, s], dim=-1).to(device)


@dataclass(frozen=True, repr=False)
class CyclicShift(Group):
    """Circular shifts of a discrete torus of the given ``shape`` (Z/H x Z/W for images)."""

    shape: tuple[int, ...]
    discrete = True

    def __post_init__(self) -> None:
        shape = tuple(self.shape) if not isinstance(self.shape, int) else (self.shape,)
        if not shape:
            raise ValueError("CyclicShift: `shape` must have at least one axis, got ()")
        for i, s in enumerate(shape):
            check_int(s, f"shape[{i}]", "CyclicShift", minimum=1)
        object.__setattr__(self, "shape", shape)

    @property
    def element_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (len(self.shape),)

    def _modulus(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.shape, dtype=torch.int64, device=like.device)

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, len(self.shape), generator=generator, dtype=torch.float64)
        return (u * torch.tensor(self.shape, dtype=torch.float64)).long()

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.remainder(g + h, self._modulus(g))

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        return torch.remainder(-g, self._modulus(g))

    def _identity(self) -> torch.Tensor:
        return torch.zeros(len(self.shape), dtype=torch.int64)

    @property
    def order(self) -> int:
        return math.prod(self.shape)

    def elements(self, *, dtype=None, device=None) -> torch.Tensor:
        _enumerable(self.order, "CyclicShift")
        grids = torch.meshgrid(*[torch.arange(s) for s in self.shape], indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], dim=-1).to(device)
