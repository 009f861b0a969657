r"""``PathGate``: SPHNet-style learned gates that keep only the important paths of a product.

One gate logit ``a_p`` per path; ``g_p = sigmoid(a_p / T)``. The kept set ``K`` is the top-``k``
paths by ``g_p`` (or those with ``g_p > threshold``). Path ``p`` is scaled by

.. math:: s_p = [p \in K] \cdot v_p, \qquad v_p = \begin{cases} 1 & \text{straight-through} \\
          g_p & \text{anneal} \end{cases}

Training rules:

- ``"straight_through"`` (default): the forward pass uses the hard ``s_p = [p in K]``; the
  backward pass treats it as ``g_p`` (``s = hard + g - g.detach()``), so every gate, kept or
  dropped, gets the gradient ``<dL/dz, z_p> g_p'``: the whole descriptor runs while training
  and a dropped path whose contribution would lower the loss can come back.
- ``"anneal"``: ``s_p = g_p`` on all paths while training (soft, differentiable), and the user
  lowers the temperature ``T`` (``set_temperature``) so that ``g`` approaches 0/1; at
  evaluation the dropped paths are cut and the kept ones keep their factor ``g_p``.

In evaluation mode only the kept paths run: a *pruned* descriptor (same irreps, the kept paths)
with each kept path's weights multiplied by ``s_p`` and by ``c_p(full) / c_p(pruned)`` (pruning
changes the ``element``/``path`` normalisation constants), so it equals the full product with
the dropped paths' weights set to zero (test). Gating scales whole paths, so equivariance is
kept. SPHNet (2025) uses the same idea with a three-phase schedule (random, adaptive, fixed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from equikit.tp import TensorProductDescriptor, make_executor

RULES = ("straight_through", "anneal")


def prune(descriptor: TensorProductDescriptor, keep: Any) -> tuple[TensorProductDescriptor, np.ndarray, np.ndarray]:
    """The descriptor of the kept paths (indices ``keep`` into ``descriptor.paths``), the index
    of its weights in the full weight vector, and per kept path ``c_p(full) / c_p(pruned)``.

    >>> from equikit.tp import fully_connected
    >>> d, idx, ratio = prune(fully_connected("2x0e + 2x1e", "1o", "2x1o"), [0])
    >>> len(d.paths), idx.shape, round(float(ratio[0]), 6)  # 2 paths -> 1: c from 1/sqrt(4) to 1/sqrt(2)
    (1, (4,), 0.707107)
    """
    keep = sorted(int(i) for i in keep)
    paths = tuple(descriptor.paths[i] for i in keep)
    pruned = TensorProductDescriptor(descriptor.irreps1, descriptor.irreps2, descriptor.irreps_out, paths,
                                     descriptor.path_normalization, descriptor.irrep_normalization,
                                     descriptor.square, descriptor.coefficients)
    slices = descriptor.weight_slices()
    idx = np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in keep] or [np.zeros(0, np.int64)])
    ratio = np.array([descriptor.coefficient(i) / pruned.coefficient(n) for n, i in enumerate(keep)])
    return pruned, idx.astype(np.int64), ratio


class PathGate(nn.Module):
    r"""A tensor product with one learned gate per path that runs only the top paths
    (see the module docs for the rules).

    Args:
        descriptor: the full product; every path must be weighted (the gate scales its weights).
        k: keep the ``k`` paths with the largest gates; or
        threshold: keep the paths with ``g_p > threshold`` (exactly one of ``k`` / ``threshold``).
        rule: ``"straight_through"`` or ``"anneal"``.
        temperature: ``T`` in ``g = sigmoid(a / T)``.
        backend: executor of the full and the pruned products.
        internal_weights: hold ``N(0, 1)`` weights; else ``forward`` takes ``weight``.
        init: initial logit of every gate (2.0: ``g = 0.88``, all paths on).

    Shapes: as :class:`~equikit.nn.TensorProduct`.

    >>> from equikit import tp
    >>> m = PathGate(tp.fully_connected("4x0e + 4x1o", "0e + 1o", "4x0e + 4x1o + 4x1e"), k=3)
    >>> y = m(torch.randn(5, 16), torch.randn(5, 4))  # training: all paths run, gated
    >>> m.eval().kept_paths(), len(m.pruned_descriptor().paths), m(torch.randn(5, 16), torch.randn(5, 4)).shape
    ((0, 1, 2), 3, torch.Size([5, 28]))
    """

    def __init__(self, descriptor: TensorProductDescriptor, *, k: int | None = None, threshold: float | None = None,
                 rule: str = "straight_through", temperature: float = 1.0, backend: str = "sparse_cg",
                 internal_weights: bool = True, init: float = 2.0) -> None:
        super().__init__()
        where = "PathGate"
        if not isinstance(descriptor, TensorProductDescriptor):
            raise TypeError(f"{where}: `descriptor` must be a TensorProductDescriptor, got {type(descriptor).__name__}")
        bad = [p for p in descriptor.paths if not p.weighted]
        if bad:
            raise ValueError(
                f"{where}: every path must be weighted (the gate scales the path's weights), got {bad[0]!r}"
            )
        if (k is None) == (threshold is None):
            raise ValueError(f"{where}: give exactly one of `k` (top-k paths) and `threshold`, got k={k!r}, "
                             f"threshold={threshold!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(descriptor.paths)):
            raise ValueError(f"{where}: `k` must be an int in [1, {len(descriptor.paths)}], got {k!r}")
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"{where}: `threshold` must be in (0, 1), got {threshold!r}")
        if rule not in RULES:
            raise ValueError(f"{where}: `rule` must be one of {RULES}, got {rule!r}")
        self.descriptor, self.k, self.threshold, self.rule, self.backend = descriptor, k, threshold, rule, backend
        self.set_temperature(temperature)
        self.full = make_executor(descriptor, backend)
        self.logits = nn.Parameter(torch.full((len(descriptor.paths),), float(init)))
        self.internal_weights = internal_weights
        n = descriptor.weight_numel
        self.weight = nn.Parameter(torch.randn(n)) if internal_weights else None
        sizes = [(s.stop - s.start) for s in descriptor.weight_slices()]
        self.register_buffer("path_of_weight", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
                             persistent=False)
        self._pruned: dict[tuple[int, ...], tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}

    def set_temperature(self, temperature: float) -> None:
        """Set ``T`` (lower it over training with the ``anneal`` rule)."""
        if not float(temperature) > 0:
            raise ValueError(f"PathGate: `temperature` must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def gates(self) -> torch.Tensor:
        """``g_p = sigmoid(a_p / T)``, shape ``(num_paths,)``."""
        return torch.sigmoid(self.logits / self.temperature)

    def mask(self) -> torch.Tensor:
        """Hard 0/1 mask of the kept paths (ties broken by path order)."""
        g = self.gates().detach()
        if self.k is not None:
            keep = torch.argsort(-g, stable=True)[: self.k]
            return torch.zeros_like(g).index_fill(0, keep, 1.0)
        return (g > self.threshold).to(g.dtype)

    def kept_paths(self) -> tuple[int, ...]:
        """Indices (into ``descriptor.paths``) of the kept paths."""
        return tuple(int(i) for i in torch.nonzero(self.mask()).flatten())

    def scales(self) -> torch.Tensor:
        """Per-path factor ``s_p`` of the current mode (see the module docs)."""
        g = self.gates()
        if self.training:
            if self.rule == "anneal":
                return g
            return self.mask() + g - g.detach()
        return self.mask() * (g if self.rule == "anneal" else torch.ones_like(g))

    def pruned_descriptor(self) -> TensorProductDescriptor:
        """The descriptor of the kept paths (what runs in evaluation mode)."""
        return self._pruned_entry()[0].descriptor

    def _pruned_entry(self):
        """``(executor, weight index, full path and ratio of each pruned weight)``, cached per kept set."""
        keep = self.kept_paths()
        if keep not in self._pruned:
            d, idx, ratio = prune(self.descriptor, keep)
            dev = self.logits.device
            sizes = [s.stop - s.start for s in d.weight_slices()]
            pidx = np.repeat(np.array(keep, dtype=np.int64), sizes)
            self._pruned[keep] = (make_executor(d, self.backend).to(dev), torch.from_numpy(idx).to(dev),
                                  torch.from_numpy(pidx).to(dev), torch.from_numpy(np.repeat(ratio, sizes)).to(dev))
        return self._pruned[keep]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.internal_weights:
            if weight is not None:
                raise ValueError("PathGate.forward: this module holds its weights (internal_weights=True)")
            weight = self.weight.to(x1.dtype)
        elif not isinstance(weight, torch.Tensor):
            raise ValueError(f"PathGate.forward: internal_weights=False needs `weight` of shape "
                             f"({self.descriptor.weight_numel},) or (..., {self.descriptor.weight_numel})")
        s = self.scales().to(weight.dtype)
        if self.training:
            return self.full(x1, x2, weight * s.index_select(0, self.path_of_weight))
        ex, idx, pidx, ratio = self._pruned_entry()
        return ex(x1, x2, weight.index_select(-1, idx) * (s.index_select(0, pidx) * ratio.to(s.dtype)))

    def extra_repr(self) -> str:
        sel = f"k={self.k}" if self.k is not None else f"threshold={self.threshold}"
        return f"{len(self.descriptor.paths)} paths, {sel}, rule={self.rule!r}, T={self.temperature}"

