"""Frames: input-dependent sets of group elements, and the output type they share.

A *frame* (Puny et al., "Frame Averaging for Invariant and Equivariant Network Design") maps
an input ``x`` to a finite weighted set of group elements ``F(x)`` with the equivariance
property ``F(g x) = g F(x)`` (as weighted sets). Averaging a backbone over it,

    Phi(x) = sum_k w_k(x) rho_out(g_k) phi(rho_in(g_k)^-1 x),    g_k in F(x),

is exactly invariant/equivariant for *any* backbone ``phi``. A frame with one element is a
*canonicalisation*.

Layout (used everywhere in :mod:`equikit.symmetrize`): inputs carry one leading batch dim
``B``; a frame returns elements of batch shape ``(K, B)`` -- frame index **first** -- and
weights ``(K, B)`` that sum to one over ``K``. Under the left-aligned batching rule of
:mod:`equikit.groups.actions`, ``(K, B)`` elements act directly on data expanded to
``(K, B, ...)``. Frames of different sizes per input are padded with zero weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from equikit._utils import check_int, resolve_generator, tree_flatten
from equikit.groups import Element, Group


@dataclass
class FrameOutput:
    """A batch of weighted frames.

    Attributes:
        elements: group elements of batch shape ``(K, B)``.
        weights: ``(K, B)`` non-negative, summing to one over ``K`` (zero marks padding).
        degenerate: ``(B,)`` bool, inputs where the frame is not uniquely defined (ties that
            the frame could not resolve); the symmetrised output is then not guaranteed exact.
    """

    elements: Element
    weights: torch.Tensor
    degenerate: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.weights.shape[0])


def batch_size(x: Any, where: str) -> int:
    """The leading batch dim shared by every leaf of ``x`` (a tensor or a pytree)."""
    leaves, _ = tree_flatten(x)
    if not leaves:
        raise ValueError(f"{where}: the input holds no tensors")
    sizes = set()
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{where}: every leaf of the input must be a tensor, leaf {i} is {type(leaf).__name__}")
        if leaf.ndim == 0:
            raise ValueError(f"{where}: inputs need a leading batch dim (B, ...), leaf {i} is a scalar")
        sizes.add(leaf.shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"{where}: every leaf of the input must share the leading batch dim B, got leading sizes "
            f"{sorted(sizes)}"
        )
    return sizes.pop()


def select(x: Any, key: str | None, where: str) -> torch.Tensor:
    """``x`` itself, or ``x[key]`` for dict inputs."""
    if key is None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{where}: input must be a tensor (or pass `key=` for dict inputs), got {type(x).__name__}")
        return x
    if not isinstance(x, dict) or key not in x:
        got = sorted(x) if isinstance(x, dict) else type(x).__name__
        raise ValueError(f"{where}: expected a dict input with key {key!r}, got {got}")
    return x[key]


def uniform(k: int, b: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    return torch.full((k, b), 1.0 / k, dtype=dtype, device=device)


def expand_elements(group: Group, g: Element, b: int) -> Element:
    """``(K, *e)`` elements -> ``(K, B, *e)`` (the same frame for every input)."""
    shapes = group._element_shapes()
    parts = g if isinstance(g, tuple) else (g,)
    out = tuple(p[:, None].expand(p.shape[0], b, *s) for p, s in zip(parts, shapes))
    return out if isinstance(g, tuple) else out[0]


class Frame(nn.Module):
    """Base class. Subclasses set ``group`` and implement ``forward(x) -> FrameOutput``.

    ``canonical(x)`` returns a one-element frame (a canonicalisation) where the frame has an
    equivariant rule to pick one element; ``sample(x, n)`` draws ``n`` elements per input
    from the frame's weights (Monte Carlo frame averaging).
    """

    group: Group

    def canonical(self, x: Any) -> FrameOutput:
        raise TypeError(
            f"{type(self).__name__}.canonical: this frame has no equivariant rule to pick one "
            "element; use mode='average' or mode='sample'"
        )

    def sample(self, x: Any, n: int, generator: torch.Generator | int | None = None) -> FrameOutput:
        """``n`` elements per input drawn (with replacement) from the frame's weights."""
        check_int(n, "n", f"{type(self).__name__}.sample", minimum=1)
        full = self(x)
        gen = resolve_generator(generator)
        probs = full.weights.detach().to(torch.float64).cpu().T  # (B, K)
        idx = torch.multinomial(probs, n, replacement=True, generator=gen).T.to(full.weights.device)  # (n, B)
        cols = torch.arange(idx.shape[1], device=idx.device).expand_as(idx)
        parts = full.elements if isinstance(full.elements, tuple) else (full.elements,)
        picked = tuple(p[idx, cols] for p in parts)
        elements = picked if isinstance(full.elements, tuple) else picked[0]
        weights = uniform(n, idx.shape[1], full.weights.dtype, full.weights.device)
        return FrameOutput(elements, weights, full.degenerate)


class GroupAverage(Frame):
    """The whole of a small finite group as the frame (classic group averaging / Reynolds
    operator): ``Phi(x) = 1/|G| sum_g rho_out(g) phi(rho_in(g)^-1 x)``.

    For an infinite group only ``mode="sample"`` is available (Monte Carlo over the group's
    sampling distribution, exact only in expectation).

    Args:
        group: e.g. ``Cyclic(4)`` (C4), ``Dihedral(4)`` (D4), ``Permutation(4)``.

    Example:
        >>> import torch
        >>> from equikit.groups import ImageRot90
        >>> from equikit.symmetrize import GroupAverage, Symmetrize
        >>> net = Symmetrize(torch.nn.Flatten(), GroupAverage(ImageRot90().group), ImageRot90())
        >>> x = torch.randn(2, 5, 5)
        >>> torch.allclose(net(torch.rot90(x, 1, (-2, -1))), net(x))
        True
    """

    def __init__(self, group: Group) -> None:
        super().__init__()
        if not isinstance(group, Group):
            raise TypeError(f"GroupAverage: `group` must be an equikit Group, got {type(group).__name__}")
        self.group = group

    def forward(self, x: Any) -> FrameOutput:
        b = batch_size(x, "GroupAverage")
        leaf = tree_flatten(x)[0][0]
        if self.group.order is None:
            raise TypeError(
                f"GroupAverage: {self.group!r} is infinite, so it cannot be averaged exactly; use "
                "mode='sample' (Monte Carlo) or a frame (PCAFrame, SortFrame, PolyphaseFrame)"
            )
        if self.group.order > 10_000:
            raise ValueError(
                f"GroupAverage: {self.group!r} has {self.group.order} elements; averaging over more than "
                "10000 is wasteful -- use a frame or mode='sample'"
            )
        fdtype = leaf.dtype if leaf.is_floating_point() else torch.get_default_dtype()
        g = self.group.elements(dtype=fdtype, device=leaf.device)
        k = self.group.order
        return FrameOutput(expand_elements(self.group, g, b), uniform(k, b, fdtype, leaf.device),
                           torch.zeros(b, dtype=torch.bool, device=leaf.device))

    def sample(self, x: Any, n: int, generator: torch.Generator | int | None = None) -> FrameOutput:
        check_int(n, "n", "GroupAverage.sample", minimum=1)
        b = batch_size(x, "GroupAverage.sample")
        leaf = tree_flatten(x)[0][0]
        fdtype = leaf.dtype if leaf.is_floating_point() else torch.get_default_dtype()
        g = self.group.sample(n * b, generator=resolve_generator(generator), dtype=fdtype, device=leaf.device)
        g = self.group.reshape(g, (n, b))
        return FrameOutput(g, uniform(n, b, fdtype, leaf.device), torch.zeros(b, dtype=torch.bool, device=leaf.device))
