r"""Message passing on edge lists, messages flowing ``edge_index[0] -> edge_index[1]``
(source ``j`` to target ``i``), aggregated at targets with ``index_add_`` (no
``torch_scatter``), vectorised over all edges of a batch.

All layers are equivariant to relabelling the nodes (``x' = P x``, edge ids relabelled, edge
order and ``edge_attr`` unchanged); :func:`global_pool` is invariant. Exact up to float
rounding of the sums.

- :class:`GINConv`: GIN (Xu et al. 2019); with ``edge_dim`` the GINE variant (Hu et al. 2020);
- :class:`GCNConv`: GCN (Kipf & Welling 2017) with symmetric degree normalisation;
- :func:`global_pool`: node -> graph readout.
"""

from __future__ import annotations

import torch
from torch import nn

from equikit._utils.validate import check_int
from equikit.nn import _graph_native as _native
from equikit.nn._aggregation import Aggregation, LCMAggregation, SoftmaxAggregation, scatter
from equikit.nn._mlp import make_mlp

__all__ = ["GCNConv", "GINConv", "global_pool"]


AGGREGATIONS = ("sum", "mean", "max", "softmax", "lcm")


def make_aggregation(aggr: str | nn.Module, channels: int, where: str) -> nn.Module | None:
    """The neighbourhood aggregator named by ``aggr`` (``None`` for the plain sum)."""
    if isinstance(aggr, nn.Module):
        return aggr
    if aggr not in AGGREGATIONS:
        raise ValueError(f"{where}: `aggr` must be one of {AGGREGATIONS} or an nn.Module, got {aggr!r}")
    if aggr == "sum":
        return None
    if aggr in ("mean", "max"):
        return Aggregation(aggr)
    return SoftmaxAggregation(channels) if aggr == "softmax" else LCMAggregation(channels)


def _check_graph(x, edge_index, edge_attr, where, channels, edge_dim):
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{where}: `x` must be a floating tensor (N, C), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] != channels:
        raise ValueError(f"{where}: `x` must have {channels} channels, got {x.shape[1]}")
    if not isinstance(edge_index, torch.Tensor) or edge_index.ndim != 2 or edge_index.shape[0] != 2 \
            or edge_index.is_floating_point():
        raise ValueError(f"{where}: `edge_index` must be an integer tensor (2, E), got "
                         f"{tuple(getattr(edge_index, 'shape', ()))}")
    if edge_dim:
        if edge_attr is None or edge_attr.shape != (edge_index.shape[1], edge_dim):
            raise ValueError(f"{where}: built with edge_dim={edge_dim}, so `edge_attr` must be "
                             f"(E, {edge_dim}) = ({edge_index.shape[1]}, {edge_dim}), got "
                             f"{None if edge_attr is None else tuple(edge_attr.shape)}")
    elif edge_attr is not None:
        raise ValueError(f"{where}: got `edge_attr` but the layer was built without edge_dim; "
                         f"pass edge_dim={edge_attr.shape[-1]} to use edge features")


class GINConv(nn.Module):
    r"""Graph isomorphism network layer (GIN; GINE with edge features):

    .. math::
        x_i' = \mathrm{MLP}\Big((1 + \epsilon)\, x_i + \sum_{j \to i} \mathrm{ReLU}(x_j + W e_{ji})\Big)

    (without ``edge_dim`` the message is plain :math:`x_j`). ``train_eps`` learns
    :math:`\epsilon`. The MLP is ``Linear, act, Linear`` with ``hidden`` units (default
    ``out_channels``). ``aggr`` replaces the sum over incoming messages: ``"sum"`` (GIN),
    ``"mean"``, ``"max"``, ``"softmax"`` (:class:`~equikit.nn.SoftmaxAggregation`), ``"lcm"``
    (:class:`~equikit.nn.LCMAggregation`, only approximately invariant, see its docs) or any
    module called as ``aggr(messages (E, C), targets (E,), N) -> (N, C)``.

    Shapes: ``x (N, C_in)``, ``edge_index (2, E)``, ``edge_attr (E, edge_dim)`` ->
    ``(N, C_out)``.

    Example:
        >>> import torch
        >>> from equikit.nn import GINConv
        >>> ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> GINConv(3, 8, edge_dim=2)(torch.randn(3, 3), ei, torch.randn(4, 2)).shape
        torch.Size([3, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, *, edge_dim: int | None = None,
                 hidden: int | None = None, eps: float = 0.0, train_eps: bool = False,
                 act: type[nn.Module] = nn.ReLU, aggr: str | nn.Module = "sum") -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "GINConv", minimum=1)
        check_int(out_channels, "out_channels", "GINConv", minimum=1)
        if edge_dim is not None:
            check_int(edge_dim, "edge_dim", "GINConv", minimum=1)
        self.in_channels, self.edge_dim = in_channels, edge_dim
        self.edge = nn.Linear(edge_dim, in_channels) if edge_dim else None
        self.mlp = make_mlp([in_channels, hidden or out_channels, out_channels], act)
        self.aggr = make_aggregation(aggr, in_channels, "GINConv")
        eps_t = torch.tensor([float(eps)])
        self.eps = nn.Parameter(eps_t) if train_eps else None
        if not train_eps:
            self.register_buffer("eps_fixed", eps_t)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor | None = None) -> torch.Tensor:
        _check_graph(x, edge_index, edge_attr, "GINConv", self.in_channels, self.edge_dim)
        eps = (self.eps if self.eps is not None else self.eps_fixed).to(x.dtype)
        a = self.edge(edge_attr) if self.edge is not None else None
        if self.aggr is None and _native.usable(x, a):  # fused kernel: no (E, C) message tensor
            csr = _native.cached_edge_csr(edge_index, x.shape[0], "GINConv")
            h = _native.gin_aggregate(x, eps, csr) if a is None else _native.gine_aggregate(x, a, eps, csr)
            return self.mlp(h)
        src, dst = edge_index
        msg = x.index_select(0, src)  # not x[src]: its backward is an accumulating index_put (slow)
        if a is not None:
            msg = torch.relu(msg + a)
        if self.aggr is None:  # the sum accumulated straight into (1 + eps) x: no zeros, no extra add
            return self.mlp(((1 + eps) * x).index_add_(0, dst, msg))
        return self.mlp((1 + eps) * x + self.aggr(msg, dst, x.shape[0]))


class GCNConv(nn.Module):
    r"""Graph convolution with symmetric normalisation (Kipf & Welling 2017):

    .. math::
        x_i' = \sum_{j \to i \,\cup\, \{i\}} \frac{w_{ji}}{\sqrt{\hat d_j \hat d_i}}\, W x_j + b,
        \qquad \hat d_i = 1 + \sum_{j \to i} w_{ji}

    with ``edge_weight`` ``w`` (ones by default) and self loops of weight 1
    (``self_loops=False``: no loops, :math:`\hat d_i = \sum_{j \to i} w_{ji}`, isolated
    nodes give ``b``). Degrees are in-degrees (at targets), as in PyG's ``GCNConv``.

    Shapes: ``x (N, C_in)``, ``edge_index (2, E)``, ``edge_weight (E,)`` -> ``(N, C_out)``.

    Example:
        >>> import torch
        >>> from equikit.nn import GCNConv
        >>> GCNConv(3, 4)(torch.randn(3, 3), torch.tensor([[0, 1], [1, 2]])).shape
        torch.Size([3, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, *, self_loops: bool = True, bias: bool = True) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "GCNConv", minimum=1)
        check_int(out_channels, "out_channels", "GCNConv", minimum=1)
        self.in_channels, self.self_loops = in_channels, self_loops
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        _check_graph(x, edge_index, None, "GCNConv", self.in_channels, None)
        n = x.shape[0]
        src, dst = edge_index
        w = x.new_ones(src.shape[0]) if edge_weight is None else edge_weight.to(x.dtype)
        if w.shape != src.shape:
            raise ValueError(f"GCNConv: `edge_weight` must be (E,) = ({src.shape[0]},), got {tuple(w.shape)}")
        if self.self_loops:
            loop = torch.arange(n, device=x.device)
            src, dst = torch.cat([src, loop]), torch.cat([dst, loop])
            w = torch.cat([w, x.new_ones(n)])
        deg = x.new_zeros(n).index_add_(0, dst, w)
        inv = torch.where(deg > 0, deg.clamp(min=1e-30).rsqrt(), torch.zeros_like(deg))
        h = self.lin(x)
        norm = (inv[src] * w * inv[dst]).unsqueeze(-1)
        out = h.new_zeros(n, h.shape[1]).index_add_(0, dst, norm * h.index_select(0, src))
        return out if self.bias is None else out + self.bias.to(x.dtype)


def global_pool(x: torch.Tensor, batch: torch.Tensor, num_graphs: int,
                reduce: str | tuple[str, ...] = "sum") -> torch.Tensor:
    """Node features ``(N, C)`` to graph features ``(num_graphs, k C)`` by one or more
    reductions (``sum``, ``mean``, ``max``, ``min``, ``std``) over the nodes of each graph.

    Example:
        >>> import torch
        >>> from equikit.nn import global_pool
        >>> global_pool(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0, 0, 1]), 2, ("sum", "max")).tolist()
        [[3.0, 2.0], [4.0, 4.0]]
    """
    if isinstance(reduce, str):
        return scatter(x, batch, num_graphs, reduce)
    return Aggregation(reduce)(x, batch, num_graphs)
