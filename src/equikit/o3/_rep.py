"""The action of O(3) (or SO(3)) on irreps features, for the equivariance checker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from equikit._utils import tree_map
from equikit.groups.actions import Action, _require_tensor, apply_matrix
from equikit.groups.base import Group
from equikit.groups.continuous import SO, O
from equikit.o3._irreps import Irreps
from equikit.o3._rotations import check_rotation
from equikit.o3._wigner import irreps_D


@dataclass(frozen=True)
class IrrepsRep(Action):
    r"""``x -> D(g) x`` on features ``(..., irreps.dim)`` with ``D`` block-diagonal: ``mul``
    copies of ``p^{[det g < 0]} D_l(det(g) g)`` per block (see :func:`irreps_D`).

    Args:
        irreps: anything :class:`Irreps` accepts, e.g. ``"4x0e + 2x1o"``.
        group: ``O(3)`` (default, reflections included) or ``SO(3)``.

    Batching follows :mod:`equikit.groups.actions`: ``g`` of shape ``(*gB, 3, 3)`` aligns
    with the leading batch dims of the data.

    >>> act = IrrepsRep("0e + 1o")
    >>> act(-torch.eye(3, dtype=torch.float64), torch.ones(4, dtype=torch.float64)).round(decimals=12)
    tensor([ 1., -1., -1., -1.], dtype=torch.float64)
    """

    irreps: Irreps
    group: Group = field(default_factory=lambda: O(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "irreps", Irreps(self.irreps))
        if self.group not in (O(3), SO(3)):
            raise ValueError(f"IrrepsRep: `group` must be O(3) or SO(3), got {self.group!r}")

    def matrix(self, g: torch.Tensor) -> torch.Tensor:
        """Representation matrices ``(*gB, dim, dim)``."""
        self.group.check_element(g, "g", "IrrepsRep")
        return irreps_D(self.irreps, g)

    def _act(self, g: torch.Tensor, x: Any) -> Any:
        where = "IrrepsRep"
        dim = self.irreps.dim
        check_rotation(g, "g", where, proper=True if self.group == SO(3) else None)

        def act(leaf):
            leaf = _require_tensor(leaf, where)
            if leaf.ndim == 0 or leaf.shape[-1] != dim:
                raise ValueError(
                    f"{where}: features must have shape (..., {dim}) for irreps "
                    f"'{self.irreps}', got {tuple(leaf.shape)}; check the irreps string"
                )
            return apply_matrix(irreps_D(self.irreps, g.to(leaf.dtype)), leaf, where)

        return tree_map(act, x)
