"""A plain MLP builder shared by the set and graph layers (acts on the last dim only, so it
commutes with every permutation of the other dims)."""

from __future__ import annotations

import itertools

from torch import nn


def make_mlp(sizes: list[int], act: type[nn.Module] = nn.SiLU, last_act: bool = False) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1])``, ``act``, ..., ``Linear(sizes[-2], sizes[-1])`` (``act``
    after the last layer too when ``last_act``).

    >>> make_mlp([4, 8, 2])(__import__("torch").zeros(3, 4)).shape
    torch.Size([3, 2])
    """
    if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"make_mlp: `sizes` must be >= 2 positive ints, got {sizes!r}")
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)
