"""Small actions that group averaging needs and :mod:`equikit.groups` does not (yet) have."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equikit._utils import tree_map
from equikit.groups import Action, Dihedral
from equikit.groups.actions import align


@dataclass(frozen=True)
class ImageDihedral(Action):
    """D4 on square images ``(..., H, H)``: ``(k, s) = r^k f^s`` acts as
    ``rot90(flip(x, -1) if s else x, k)`` -- the flip first, then ``k`` quarter turns.

    This is an action of ``Dihedral(4)`` because a mirror conjugates a quarter turn to its
    inverse (``f r f = r^-1``). Elements batch as in :mod:`equikit.groups.actions`.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(2, 2)
        >>> ImageDihedral()(torch.tensor([1, 1]), x).tolist()
        [[0.0, 2.0], [1.0, 3.0]]
    """

    @property
    def group(self) -> Dihedral:  # type: ignore[override]
        return Dihedral(4)

    def _act(self, g, x):
        def act(t):
            if not isinstance(t, torch.Tensor) or t.ndim < 2 or t.shape[-1] != t.shape[-2]:
                raise ValueError(f"ImageDihedral: images must be square (..., H, H), got {getattr(t, 'shape', t)}")
            options = [torch.rot90(torch.flip(t, (-1,)) if s else t, k, (-2, -1)) for s in (0, 1) for k in range(4)]
            idx = g[..., 1] * 4 + g[..., 0]
            if idx.ndim == 0:
                return options[int(idx)]
            stacked = torch.stack(options)
            sel = align(idx, 0, t, 2, "ImageDihedral")
            sel = sel.reshape(1, *sel.shape, 1, 1).expand(1, *t.shape)
            return torch.gather(stacked, 0, sel).squeeze(0)

        return tree_map(act, x)
