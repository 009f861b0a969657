"""An EqMotion-style dynamics model (Xu et al. 2023, "EqMotion: Equivariant Multi-agent Motion
Prediction with Invariant Interaction Reasoning"), for the single-step particle task.

Each particle carries ``C`` *geometric channels* ``G_i in R^{C x 3}`` (points that move with
the input) and ``C`` velocity channels ``V_i``, plus invariant features ``h_i``:

- **equivariant geometric features**: ``G_i = x_i + A [v_i, m_i]`` and ``V_i = B v_i``, with
  ``m_i = mean_j (x_j - x_i)`` and ``A, B`` linear maps over channels (never over xyz);
- **invariant interaction reasoning**: a soft interaction type per edge, ``c_ij = softmax(
  phi_c(h_i', h_j', |G_i - G_j|, a_ij) / tau)`` over ``K`` types, from one round of invariant
  message passing ``h_i' = phi_n(h_i, sum_j phi_e(h_i, h_j, |G_i - G_j|, a_ij))``;
- **layers**: ``G_i <- G_i + alpha(h_i) (G_i - x_i)`` (inner-agent attention),
  ``G_i <- G_i + mean_j [phi_f(sum_k c_ijk phi_k(h_i, h_j, |G_i - G_j|, a_ij))] (G_i - G_j)``
  (channelwise factors), ``G_i <- G_i + W V_i``, then the equivariant non-linearity
  ``q, k = W_q (G - x), W_k (G - x)``; ``q' = q`` where ``q . k >= 0`` else
  ``q - (q . k / |k|^2) k``; ``G = x + q'``; ``h_i <- h_i + phi_h(h_i, sum_j phi_e(...))``;
- **read-out**: ``x_i + w^T (G_i - x_i)``.

All geometric operations are linear combinations over channels of translation-free vectors,
distances and dot products, so the model is equivariant to rotations, reflections and
translations of ``(pos, vel)`` and to relabelling particles. Differences from the published
code: graph form with ``edge_index`` (no dense ``(B, n, n)`` tensors, no batch vector), the
reference point of the attention and non-linearity is the particle's own input position
instead of the scene mean (which needs the batch), the edge attributes (charge products)
are given to the edge networks, no DCT over time (one input frame).
"""

from __future__ import annotations

import torch
from torch import nn

from equikit._utils import check_int
from equikit.models.dynamics import _check_graph, _mean_at, _mlp, _sum_at


def _channel_dist(diff: torch.Tensor) -> torch.Tensor:
    """``(E, C, 3) -> (E, C)`` lengths, smoothed by ``1e-12`` under the root."""
    return torch.sqrt((diff * diff).sum(-1) + 1e-12)


def _mean_nd(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i] = mean_{e: index[e] = i} values[e]`` for values of any trailing shape."""
    count = torch.bincount(index, minlength=n).clamp(min=1).to(values.dtype)
    return _sum_at(values, index, n) / count.view(-1, *([1] * (values.ndim - 1)))


def _mix(w: nn.Linear, g: torch.Tensor) -> torch.Tensor:
    """Apply a linear map over channels: ``(N, C_in, 3) -> (N, C_out, 3)``."""
    return w(g.transpose(-1, -2)).transpose(-1, -2)


def equivariant_relu(q: torch.Tensor, k: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Keep ``q`` where ``q . k >= 0``, else remove its component along ``k`` (per channel):
    ``(..., 3)`` vectors; O(3)-equivariant since it uses only the dot products.

    Example:
        >>> q, k = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[-1.0, 0.0, 0.0]])
        >>> equivariant_relu(q, k, eps=0.0).tolist()
        [[0.0, 1.0, 0.0]]
    """
    dot = (q * k).sum(-1, keepdim=True)
    keep = (dot >= 0).to(q.dtype)
    return keep * q + (1 - keep) * (q - dot / ((k * k).sum(-1, keepdim=True) + eps) * k)


class EqMotionLayer(nn.Module):
    """One EqMotion feature-learning layer (see the module docstring).

    Shapes: ``h (N, hidden)``, ``G, V (N, C, 3)``, ``x (N, 3)`` the reference points,
    ``edge_index (2, E)`` (``j -> i``), ``edge_attr (E, F)`` or ``None``, ``category (E, K)``
    -> ``(h', G')``.
    """

    def __init__(self, hidden: int, channels: int, edge_features: int, n_categories: int) -> None:
        super().__init__()
        d_in = 2 * hidden + channels + edge_features
        act = nn.SiLU
        self.edge_mlp = _mlp([d_in, hidden, hidden], act, last_act=True)
        self.category_mlps = nn.ModuleList(_mlp([d_in, hidden, channels], act, last_act=True)
                                           for _ in range(n_categories))
        self.factor_mlp = _mlp([channels, channels, channels], act)
        nn.init.xavier_uniform_(self.factor_mlp[-1].weight, gain=0.001)
        self.attention = _mlp([hidden, channels], act)
        self.vel = nn.Linear(channels, channels, bias=False)
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(channels, channels, bias=False)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden], act)

    def forward(self, h, G, V, x, edge_index, edge_attr, category):
        src, dst = edge_index[0], edge_index[1]
        n = h.shape[0]
        diff = G[dst] - G[src]  # G_i - G_j for the message j -> i
        parts = [h[dst], h[src], _channel_dist(diff)] + ([edge_attr] if edge_attr is not None else [])
        e_in = torch.cat(parts, dim=-1)
        m = self.edge_mlp(e_in)
        local = G - x.unsqueeze(1)
        G = G + self.attention(h).unsqueeze(-1) * local
        factors = sum(category[:, k : k + 1] * mlp(e_in) for k, mlp in enumerate(self.category_mlps))
        G = G + _mean_nd(self.factor_mlp(factors).unsqueeze(-1) * diff, dst, n)
        G = G + _mix(self.vel, V)
        local = G - x.unsqueeze(1)
        G = x.unsqueeze(1) + equivariant_relu(_mix(self.q, local), _mix(self.k, local))
        h = h + self.node_mlp(torch.cat([h, _sum_at(m, dst, n)], dim=-1))
        return h, G


class EqMotion(nn.Module):
    """EqMotion-style model for one-step particle dynamics (see the module docstring).

    Args:
        hidden: width of the invariant features (64).
        channels: geometric channels ``C`` (16).
        n_layers: :class:`EqMotionLayer` count (4).
        n_categories: interaction types ``K`` inferred per edge (2).
        tau: softmax temperature of the interaction types (1).
        edge_features: ``F`` of ``edge_attr`` (1: the charge product).
        node_features: ``C`` of the node scalars ``h`` (default ``|v|``, 1).

    Shapes: ``pos, vel (N, 3)``, ``edge_index (2, E)``, ``edge_attr (E, F)``, optional
    ``h (N, node_features)`` -> ``(N, 3)``. :meth:`forward` with ``return_categories=True``
    also returns the inferred ``(E, K)`` interaction types.

    Example:
        >>> import torch
        >>> from equikit.models import EqMotion
        >>> from equikit.data.nbody import complete_edge_index
        >>> model = EqMotion(hidden=16, channels=4, n_layers=2)
        >>> out = model(torch.randn(5, 3), torch.randn(5, 3), complete_edge_index(5), torch.ones(20, 1))
        >>> tuple(out.shape)
        (5, 3)
    """

    def __init__(
        self,
        hidden: int = 64,
        channels: int = 16,
        n_layers: int = 4,
        n_categories: int = 2,
        tau: float = 1.0,
        edge_features: int = 1,
        node_features: int = 1,
    ) -> None:
        super().__init__()
        for name, v, lo in (("hidden", hidden, 1), ("channels", channels, 1), ("n_layers", n_layers, 1),
                            ("n_categories", n_categories, 1), ("edge_features", edge_features, 0),
                            ("node_features", node_features, 1)):
            check_int(v, name, "EqMotion", minimum=lo)
        if not tau > 0:
            raise ValueError(f"EqMotion: `tau` must be > 0, got {tau}")
        self.node_features, self.edge_features, self.tau = node_features, edge_features, float(tau)
        act = nn.SiLU
        self.embed = nn.Linear(node_features, hidden)
        self.coord_in = nn.Linear(2, channels, bias=False)
        self.vel_in = nn.Linear(1, channels, bias=False)
        d_in = 2 * hidden + channels + edge_features
        self.reason_edge = _mlp([d_in, hidden, hidden], act, last_act=True)
        self.reason_node = _mlp([2 * hidden, hidden, hidden], act, last_act=True)
        self.reason_category = _mlp([d_in, hidden, n_categories], act)
        self.layers = nn.ModuleList(EqMotionLayer(hidden, channels, edge_features, n_categories)
                                    for _ in range(n_layers))
        self.head = nn.Linear(channels, 1, bias=False)

    def _categories(self, h, G, edge_index, edge_attr):
        src, dst = edge_index[0], edge_index[1]
        dist = _channel_dist(G[dst] - G[src])
        extra = [edge_attr] if edge_attr is not None else []
        m = self.reason_edge(torch.cat([h[dst], h[src], dist, *extra], dim=-1))
        h2 = self.reason_node(torch.cat([h, _sum_at(m, dst, h.shape[0])], dim=-1))
        logits = self.reason_category(torch.cat([h2[dst], h2[src], dist, *extra], dim=-1))
        return torch.softmax(logits / self.tau, dim=-1)

    def forward(self, pos, vel, edge_index, edge_attr=None, h=None, return_categories: bool = False):
        _check_graph(pos, vel, edge_index, edge_attr, "EqMotion")
        if (edge_attr is None) != (self.edge_features == 0):
            raise ValueError(f"EqMotion: built for edge_features={self.edge_features}, got edge_attr "
                             f"{None if edge_attr is None else tuple(edge_attr.shape)}")
        n = pos.shape[0]
        if h is None:
            h = vel.norm(dim=-1, keepdim=True)
        if h.shape != (n, self.node_features):
            raise ValueError(f"EqMotion: `h` must have shape (N, node_features) = {(n, self.node_features)}, "
                             f"got {tuple(h.shape)}")
        src, dst = edge_index[0], edge_index[1]
        rel_mean = _mean_at(pos[src] - pos[dst], dst, n)  # m_i = mean_j (x_j - x_i)
        G = pos.unsqueeze(1) + _mix(self.coord_in, torch.stack([vel, rel_mean], dim=1))
        V = _mix(self.vel_in, vel.unsqueeze(1))
        h = self.embed(h)
        category = self._categories(h, G, edge_index, edge_attr)
        for layer in self.layers:
            h, G = layer(h, G, V, pos, edge_index, edge_attr, category)
        out = pos + _mix(self.head, G - pos.unsqueeze(1)).squeeze(1)
        return (out, category) if return_categories else out
