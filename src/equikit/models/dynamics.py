"""Dynamics models for particle systems: predict future positions from positions,
velocities and edge attributes (the n-body experiment of Satorras et al. 2021).

Every model has the same call, ``model(pos, vel, edge_index, edge_attr) -> pos_next``:

- ``pos``, ``vel``: ``(N, 3)``, all particles of a batch of graphs;
- ``edge_index``: ``(2, E)`` int64, messages flow ``edge_index[0] -> edge_index[1]``
  (``j -> i``), aggregated at ``edge_index[1]``;
- ``edge_attr``: ``(E, F)`` invariant edge features (the charge products ``q_i q_j``);
- returns ``(N, 3)`` predicted positions.

:class:`EGNN` is E(3)-equivariant in ``(pos, vel)`` and equivariant to relabelling particles;
:class:`GNN` reads raw coordinates, so it is permutation- but not E(3)-equivariant;
:class:`LinearDynamics` is ``pos + t vel`` with one learned ``t``.
"""

from __future__ import annotations

import torch
from torch import nn

from equikit._utils import check_int, check_tensor


# --------------------------------------------------------------------------- helpers
def _check_graph(pos, vel, edge_index, edge_attr, where: str) -> None:
    check_tensor(pos, "pos", where, shape=(None, 3), floating=True)
    if pos.ndim != 2:
        raise ValueError(f"{where}: `pos` must have shape (N, 3), got {tuple(pos.shape)}")
    check_tensor(vel, "vel", where, floating=True)
    if vel.shape != pos.shape:
        raise ValueError(f"{where}: `vel` must have the shape of `pos` {tuple(pos.shape)}, got {tuple(vel.shape)}")
    check_tensor(edge_index, "edge_index", where, integer=True)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{where}: `edge_index` must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_attr is not None:
        check_tensor(edge_attr, "edge_attr", where, floating=True)
        if edge_attr.ndim != 2 or edge_attr.shape[0] != edge_index.shape[1]:
            raise ValueError(
                f"{where}: `edge_attr` must have shape (E, F) with E = {edge_index.shape[1]} "
                f"edges, got {tuple(edge_attr.shape)}"
            )


def _sum_at(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i] = sum_{e: index[e] = i} values[e]`` (one vectorised ``index_add``)."""
    out = values.new_zeros((n, *values.shape[1:]))
    return out.index_add_(0, index, values)


def _mean_at(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    count = torch.bincount(index, minlength=n).clamp(min=1).to(values.dtype)
    return _sum_at(values, index, n) / count.unsqueeze(-1)


def _pair_mlp(mlp: nn.Sequential, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
              extra: torch.Tensor | None) -> torch.Tensor:
    r"""``mlp(cat[h[dst], h[src], extra])`` per edge, without building the ``(E, 2H + F)``
    input: the first linear layer ``W = [W_d, W_s, W_e]`` is applied to the nodes first,

    .. math:: W [h_i, h_j, e_{ij}] + b = (W_d h + b)_i + (W_s h)_j + W_e e_{ij},

    so its cost is two ``(N, H) x (H, H)`` products and two gathers instead of one
    ``(E, 2H + F) x (2H + F, H)`` product (E = 4N for 5-particle complete graphs). Same
    parameters and the same function as the concatenated form (to rounding).

    Shapes: ``h (N, H)``, ``src, dst (E,)``, ``extra (E, F)`` or ``None`` -> ``(E, out)``.
    """
    first, k = mlp[0], h.shape[-1]
    w = first.weight
    out = (nn.functional.linear(h, w[:, :k], first.bias).index_select(0, dst)
           + nn.functional.linear(h, w[:, k : 2 * k]).index_select(0, src))
    if extra is not None:
        out = out + nn.functional.linear(extra, w[:, 2 * k :])
    for layer in mlp[1:]:
        out = layer(out)
    return out


def _mlp(sizes: list[int], act: type[nn.Module], last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- EGNN
class EGNNLayer(nn.Module):
    r"""One E(n)-equivariant graph convolution with a velocity term (E_GCL with velocity):

    .. math::
        m_{ij} = \phi_e(h_i, h_j, \|x_i - x_j\|^2, a_{ij}), \quad
        x_i' = x_i + \frac{1}{|\mathcal N(i)|}\sum_j (x_i - x_j)\,\phi_x(m_{ij})
               + \phi_v(h_i)\, v_i, \quad
        h_i' = h_i + \phi_h\big(h_i, \textstyle\sum_j m_{ij}\big)

    Distances are squared and not normalised, coordinate messages are averaged, ``phi_x``'s
    last layer has no bias and starts tiny (xavier gain 0.001), as in the published n-body
    model. The published code also clamps each coordinate message to +-100; that is not
    equivariant where it acts, so it is left out here.

    Args:
        hidden: width of ``h`` and of the messages.
        edge_features: ``F`` of ``edge_attr``.
        act: activation class (SiLU by default).

    Shapes: ``h (N, hidden)``, ``x, vel (N, 3)``, ``edge_index (2, E)``,
    ``edge_attr (E, edge_features)`` -> ``(h', x')``.

    Example:
        >>> import torch
        >>> from equikit.models import EGNNLayer
        >>> layer = EGNNLayer(8, edge_features=2)
        >>> ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> h, x = layer(torch.randn(3, 8), torch.randn(3, 3), torch.randn(3, 3), ei, torch.randn(4, 2))
        >>> tuple(h.shape), tuple(x.shape)
        ((3, 8), (3, 3))
    """

    def __init__(self, hidden: int, edge_features: int = 0, act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        check_int(hidden, "hidden", "EGNNLayer", minimum=1)
        check_int(edge_features, "edge_features", "EGNNLayer", minimum=0)
        self.edge_mlp = _mlp([2 * hidden + 1 + edge_features, hidden, hidden], act, last_act=True)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden], act)
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), act(), last)
        self.vel_mlp = _mlp([hidden, hidden, 1], act)

    def forward(self, h, x, vel, edge_index, edge_attr=None):
        src, dst = edge_index[0], edge_index[1]
        n = x.shape[0]
        diff = x.index_select(0, dst) - x.index_select(0, src)  # x_i - x_j for the message j -> i
        radial = (diff * diff).sum(-1, keepdim=True)
        m = _pair_mlp(self.edge_mlp, h, src, dst,
                      radial if edge_attr is None else torch.cat([radial, edge_attr], dim=-1))
        x = x + _mean_at(diff * self.coord_mlp(m), dst, n) + self.vel_mlp(h) * vel
        h = h + self.node_mlp(torch.cat([h, _sum_at(m, dst, n)], dim=-1))
        return h, x


class EGNN(nn.Module):
    """E(n) equivariant graph network for dynamics (Satorras et al. 2021, the n-body model
    ``EGNN_vel``): node scalars ``h = |v|``, edge attributes ``[edge_attr, |x_i - x_j|^2]``
    (the input distances), ``n_layers`` :class:`EGNNLayer` updating ``h`` and ``x``; returns
    the final ``x``. Equivariant to rotations, reflections and translations of
    ``(pos, vel)`` (``vel`` as a vector) and to relabelling the particles.

    Args:
        hidden: width (64 in the paper).
        n_layers: layers (4 in the paper).
        edge_features: ``F`` of ``edge_attr`` (1: the charge product).
        node_features: ``C`` of the node scalars ``h`` (1: the speed ``|v|``).

    Shapes: ``pos, vel (N, 3)``, ``edge_index (2, E)``, ``edge_attr (E, F)``, optional
    ``h (N, C)`` (default ``|v|``) -> ``(N, 3)``.

    Example:
        >>> import torch
        >>> from equikit.models import EGNN
        >>> from equikit.data.nbody import complete_edge_index
        >>> model = EGNN(hidden=16, n_layers=2)
        >>> ei = complete_edge_index(5)
        >>> out = model(torch.randn(5, 3), torch.randn(5, 3), ei, torch.ones(20, 1))
        >>> tuple(out.shape)
        (5, 3)
    """

    def __init__(
        self,
        hidden: int = 64,
        n_layers: int = 4,
        edge_features: int = 1,
        node_features: int = 1,
        act: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        check_int(n_layers, "n_layers", "EGNN", minimum=1)
        check_int(node_features, "node_features", "EGNN", minimum=1)
        check_int(edge_features, "edge_features", "EGNN", minimum=0)
        self.node_features = node_features
        self.embedding = nn.Linear(node_features, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge_features + 1, act) for _ in range(n_layers))

    def forward(self, pos, vel, edge_index, edge_attr=None, h=None):
        _check_graph(pos, vel, edge_index, edge_attr, "EGNN")
        if h is None:
            h = vel.norm(dim=-1, keepdim=True)
        if h.shape != (pos.shape[0], self.node_features):
            raise ValueError(
                f"EGNN: `h` must have shape (N, node_features) = {(pos.shape[0], self.node_features)}, "
                f"got {tuple(h.shape)}"
            )
        src, dst = edge_index[0], edge_index[1]
        radial = ((pos.index_select(0, dst) - pos.index_select(0, src)) ** 2).sum(-1, keepdim=True)
        edges = radial if edge_attr is None else torch.cat([edge_attr, radial], dim=-1)
        h = self.embedding(h)
        x = pos
        for layer in self.layers:
            h, x = layer(h, x, vel, edge_index, edges)
        return x


# --------------------------------------------------------------------------- GNN baseline
class GNNLayer(nn.Module):
    r"""A plain message-passing layer (the GCL of the EGNN baselines):
    ``m_ij = phi_e(h_i, h_j, a_ij)``, ``h_i' = h_i + phi_h(h_i, sum_j m_ij)``.

    Shapes: ``h (N, hidden)``, ``edge_index (2, E)``, ``edge_attr (E, edge_features)`` ->
    ``(N, hidden)``.

    Example:
        >>> import torch
        >>> from equikit.models import GNNLayer
        >>> out = GNNLayer(8, 1)(torch.randn(3, 8), torch.tensor([[0, 1], [1, 2]]), torch.ones(2, 1))
        >>> tuple(out.shape)
        (3, 8)
    """

    def __init__(self, hidden: int, edge_features: int = 0, act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        check_int(hidden, "hidden", "GNNLayer", minimum=1)
        check_int(edge_features, "edge_features", "GNNLayer", minimum=0)
        self.edge_mlp = _mlp([2 * hidden + edge_features, hidden, hidden], act, last_act=True)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden], act)

    def forward(self, h, edge_index, edge_attr=None):
        m = _pair_mlp(self.edge_mlp, h, edge_index[0], edge_index[1], edge_attr)
        return h + self.node_mlp(torch.cat([h, _sum_at(m, edge_index[1], h.shape[0])], dim=-1))


class GNN(nn.Module):
    """Non-equivariant GNN baseline of the n-body experiment: node features
    ``[pos, vel]`` (raw coordinates, so NOT E(3)-equivariant), ``n_layers`` :class:`GNNLayer`,
    an MLP decoder to 3 numbers per node read as the predicted position. Permutation
    equivariant.

    Shapes: as :class:`EGNN`.

    Example:
        >>> import torch
        >>> from equikit.models import GNN
        >>> from equikit.data.nbody import complete_edge_index
        >>> model = GNN(hidden=16, n_layers=2)
        >>> out = model(torch.randn(5, 3), torch.randn(5, 3), complete_edge_index(5), torch.ones(20, 1))
        >>> tuple(out.shape)
        (5, 3)
    """

    def __init__(
        self, hidden: int = 64, n_layers: int = 4, edge_features: int = 1, act: type[nn.Module] = nn.SiLU
    ) -> None:
        super().__init__()
        check_int(n_layers, "n_layers", "GNN", minimum=1)
        self.embedding = nn.Linear(6, hidden)
        self.layers = nn.ModuleList(GNNLayer(hidden, edge_features, act) for _ in range(n_layers))
        self.decoder = _mlp([hidden, hidden, 3], act)

    def forward(self, pos, vel, edge_index, edge_attr=None):
        _check_graph(pos, vel, edge_index, edge_attr, "GNN")
        h = self.embedding(torch.cat([pos, vel], dim=-1))
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr)
        return self.decoder(h)


# --------------------------------------------------------------------------- linear
class LinearDynamics(nn.Module):
    """The linear baseline ``pos + t * vel`` with one learned time ``t`` (initialised at 0.7,
    as published). Ignores the graph.

    Example:
        >>> import torch
        >>> from equikit.models import LinearDynamics
        >>> m = LinearDynamics()
        >>> m(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 0, dtype=torch.long)).tolist()[0]
        [0.699999988079071, 0.699999988079071, 0.699999988079071]
    """

    def __init__(self, t0: float = 0.7) -> None:
        super().__init__()
        self.time = nn.Parameter(torch.tensor(float(t0)))

    def forward(self, pos, vel, edge_index, edge_attr=None):
        _check_graph(pos, vel, edge_index, edge_attr, "LinearDynamics")
        return pos + self.time * vel
