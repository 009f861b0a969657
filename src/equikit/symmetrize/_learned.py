"""Learned canonicalisation for small finite groups (Kaba et al. 2023) with the
canonicalisation prior of Mondal et al. 2023."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from equikit._utils import check_positive, tree_flatten, tree_unflatten
from equikit.groups import Action
from equikit.symmetrize._frame import Frame, FrameOutput, batch_size, expand_elements


class LearnedCanonicalizer(Frame):
    """A learned, exactly equivariant choice of group element for a small finite group.

    Math: a scorer network ``s`` (any architecture) rates every element through the input it
    would canonicalise, ``score_k(x) = s(g_k^-1 x)``. Since ``score_k(h x) = score_{h^-1 g_k}(x)``,
    the scores move with the input, so the frame ``F(x) = {argmax_k score_k(x)}`` is
    equivariant. In training mode the frame is the whole group weighted by
    ``softmax(score / temperature)`` -- still exactly equivariant, and differentiable -- and
    in eval mode the argmax alone (a canonicalisation; ties flagged as degenerate).

    The prior loss ``-log softmax(score)[identity]`` (Mondal et al., "Equivariant Adaptation
    of Large Pretrained Models") pulls the canonical element of training data towards the
    identity, so a pretrained backbone keeps seeing upright inputs.

    Args:
        action: the action on inputs (its group must be finite and small).
        scorer: module mapping a batch of inputs to ``(B,)`` or ``(B, 1)`` scores.
        temperature: softmax temperature in training mode.

    Example:
        >>> import torch
        >>> from equikit.groups import ImageRot90
        >>> scorer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 1))
        >>> canon = LearnedCanonicalizer(ImageRot90(), scorer).eval()
        >>> x = torch.randn(3, 5, 5)
        >>> k, k_rot = canon(x).elements[0], canon(torch.rot90(x, 1, (-2, -1))).elements[0]
        >>> torch.equal(k_rot, (k + 1) % 4)
        True
    """

    def __init__(self, action: Action, scorer: nn.Module, *, temperature: float = 1.0) -> None:
        super().__init__()
        if not isinstance(action, Action):
            raise TypeError(f"LearnedCanonicalizer: `action` must be an equikit Action, got {type(action).__name__}")
        if not callable(scorer):
            raise TypeError(f"LearnedCanonicalizer: `scorer` must be a module, got {type(scorer).__name__}")
        order = action.group.order
        if order is None or order > 1024:
            raise ValueError(
                f"LearnedCanonicalizer: the action's group must be finite with at most 1024 elements, got "
                f"{action.group!r} (order {order})"
            )
        self.action, self.scorer, self.group = action, scorer, action.group
        self.temperature = check_positive(temperature, "temperature", "LearnedCanonicalizer")

    def scores(self, x: Any) -> torch.Tensor:
        """``(K, B)`` scores ``s(g_k^-1 x)`` for every group element ``g_k``."""
        where = "LearnedCanonicalizer"
        b = batch_size(x, where)
        leaves, structure = tree_flatten(x)
        g = self.group.elements(device=leaves[0].device)
        k = self.group.order
        ginv = self.group.inverse(expand_elements(self.group, g, b))
        expanded = tree_unflatten([t.unsqueeze(0).expand(k, *t.shape) for t in leaves], structure)
        moved, mstruct = tree_flatten(self.action(ginv, expanded))
        s = self.scorer(tree_unflatten([t.reshape(k * b, *t.shape[2:]) for t in moved], mstruct))
        if not isinstance(s, torch.Tensor) or s.numel() != k * b:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"{where}: `scorer` must return one score per input, (B,) or (B, 1); got {got}")
        return s.reshape(k, b)

    def forward(self, x: Any) -> FrameOutput:
        s = self.scores(x)
        _k, b = s.shape
        if self.training:
            g = expand_elements(self.group, self.group.elements(device=s.device), b)
            w = torch.softmax(s / self.temperature, dim=0)
            return FrameOutput(g, w, torch.zeros(b, dtype=torch.bool, device=s.device))
        return self._argmax(s)

    def canonical(self, x: Any) -> FrameOutput:
        return self._argmax(self.scores(x))

    def _argmax(self, s: torch.Tensor) -> FrameOutput:
        _k, b = s.shape
        best = s.argmax(dim=0)
        top = s.max(dim=0).values
        deg = (s == top).sum(dim=0) > 1
        g = self.group.take(self.group.elements(device=s.device), best)
        g = tuple(t[None] for t in g) if isinstance(g, tuple) else g[None]
        return FrameOutput(g, torch.ones(1, b, dtype=s.dtype, device=s.device), deg)

    def prior_loss(self, x: Any) -> torch.Tensor:
        """Cross-entropy pulling the canonical element of ``x`` towards the identity."""
        s = self.scores(x)
        ident = self.group.identity(1, device=s.device)
        elems = self.group.elements(device=s.device)
        parts = elems if isinstance(elems, tuple) else (elems,)
        iparts = ident if isinstance(ident, tuple) else (ident,)
        match = torch.ones(parts[0].shape[0], dtype=torch.bool, device=s.device)
        for p, e in zip(parts, iparts):
            match &= (p == e).reshape(p.shape[0], -1).all(dim=1)
        target = int(match.nonzero()[0])
        return F.cross_entropy(s.T / self.temperature, torch.full((s.shape[1],), target, device=s.device))
