"""Graph classifiers and regressors built from the set and graph layers of :mod:`equikit.nn`.

``GraphModel(GraphModelConfig(in_channels=..., layer=...))`` maps a
:class:`~equikit.data.graph.GraphBatch` to graph outputs ``(num_graphs, out_channels)``
(``task="graph"``, invariant to relabelling the nodes) or node outputs
``(N, out_channels)`` (``task="node"``, equivariant). Backbones (``layer``):

- ``"gin"``: GIN / GINE message passing (edge features when ``edge_dim`` is set); 1-WL;
- ``"gcn"``: GCN with symmetric normalisation (ignores edge features); 1-WL at most;
- ``"ppgn"``: dense Provably Powerful Graph Network blocks on ``[A, edge features,
  diag(x)]`` (3-WL), invariant readout over diagonal and off-diagonal entries;
- ``"ign"``: a 2-IGN (Maron et al. 2019): the same dense input, residual
  :class:`~equikit.nn.PermutationLinear` 2->2 layers (15-element basis) with ReLU, same
  readout (as expressive as 2-WL, i.e. 1-WL, on graphs);
- ``"spen"``: subgraph network on ``k``-hop ego networks (:class:`~equikit.nn.SPEN`;
  ignores edge features);
- ``"poly"``: GINE on node and edge features augmented with equivariant polynomial features
  of the adjacency up to degree 4 (triangles, 4-cycles, walk counts;
  :class:`~equikit.nn.PolynomialFeatures`);
- ``"deepsets"``: DeepSets over the nodes, ignoring edges (a baseline that sees no structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equikit.data.graph import GraphBatch, from_dense_batch, node_slots, to_dense_adjacency, to_dense_batch
from equikit.nn import (
    SPEN,
    DeepSets,
    GCNConv,
    GINConv,
    PermutationLinear,
    PolynomialFeatures,
    PPGNBlock,
    global_pool,
    pool_order2,
)
from equikit.nn._graph import AGGREGATIONS
from equikit.nn._mlp import make_mlp

__all__ = ["LAYERS", "GraphModel", "GraphModelConfig"]

LAYERS = ("gin", "gcn", "ppgn", "ign", "spen", "poly", "deepsets")


@dataclass(frozen=True)
class GraphModelConfig:
    """Configuration of :class:`GraphModel`.

    Args:
        in_channels: node feature dim ``F`` of ``batch.x``.
        out_channels: outputs per graph (``task="graph"``) or per node (``"node"``).
        hidden: hidden width.
        n_layers: number of message-passing / PPGN / IGN / SPEN layers.
        layer: backbone, one of :data:`LAYERS`.
        edge_dim: edge feature dim ``Fe`` of ``batch.edge_attr`` (``None``: no edge features;
            used by ``gin``, ``poly``, ``ppgn`` and ``ign``).
        pool: graph readout, one or more of ``sum``, ``mean``, ``max`` (not used by ``ppgn``
            and ``ign``, which read out diagonal and off-diagonal means).
        task: ``"graph"`` or ``"node"``.
        spen_k: ego-network radius for ``spen``.
        poly_degree: degree of the polynomial features for ``poly`` (1..4).
        poly_norm: standardise each polynomial feature (node and edge) with a
            ``BatchNorm1d`` without affine parameters (batch statistics in training,
            running statistics in eval mode) before it joins the atom and bond features.
        aggr: neighbourhood aggregation of ``gin`` / ``poly`` (``sum``, ``mean``, ``max``,
            ``softmax``, ``lcm``; see :class:`~equikit.nn.GINConv`). ``lcm`` is only
            approximately permutation invariant.
        dropout: dropout before the output MLP.
    """

    in_channels: int
    out_channels: int = 1
    hidden: int = 64
    n_layers: int = 3
    layer: str = "gin"
    edge_dim: int | None = None
    pool: str | tuple[str, ...] = "sum"
    task: str = "graph"
    spen_k: int = 2
    poly_degree: int = 4
    poly_norm: bool = False
    dropout: float = 0.0
    aggr: str = "sum"

    def __post_init__(self) -> None:
        where = "GraphModelConfig"
        for name in ("in_channels", "out_channels", "hidden", "n_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}: `{name}` must be an int >= 1, got {v!r}")
        if self.layer not in LAYERS:
            raise ValueError(f"{where}: `layer` must be one of {LAYERS}, got {self.layer!r}")
        if self.task not in ("graph", "node"):
            raise ValueError(f"{where}: `task` must be 'graph' or 'node', got {self.task!r}")
        if self.edge_dim is not None and (isinstance(self.edge_dim, bool) or not isinstance(self.edge_dim, int)
                                          or self.edge_dim < 1):
            raise ValueError(f"{where}: `edge_dim` must be None or an int >= 1, got {self.edge_dim!r}")
        pools = (self.pool,) if isinstance(self.pool, str) else tuple(self.pool)
        if not pools or any(p not in ("sum", "mean", "max") for p in pools):
            raise ValueError(f"{where}: `pool` must be one or more of 'sum', 'mean', 'max', got {self.pool!r}")
        if self.aggr not in AGGREGATIONS:
            raise ValueError(f"{where}: `aggr` must be one of {AGGREGATIONS}, got {self.aggr!r}")
        if not isinstance(self.poly_norm, bool):
            raise TypeError(f"{where}: `poly_norm` must be a bool, got {type(self.poly_norm).__name__} "
                            f"{self.poly_norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{where}: `dropout` must be in [0, 1), got {self.dropout!r}")

    @property
    def pools(self) -> tuple[str, ...]:
        return (self.pool,) if isinstance(self.pool, str) else tuple(self.pool)


class GraphModel(nn.Module):
    """A graph-level (invariant) or node-level (equivariant) model; see the module docstring
    for the backbones.

    Shapes: ``batch`` a :class:`~equikit.data.graph.GraphBatch` with ``x (N, in_channels)``
    (and ``edge_attr (E, edge_dim)`` when ``edge_dim`` is set) -> ``(num_graphs, out_channels)``
    or ``(N, out_channels)``.

    Example:
        >>> import torch, networkx as nx
        >>> from equikit.data.graph import collate_graphs, from_networkx
        >>> from equikit.models import GraphModel, GraphModelConfig
        >>> batch = collate_graphs([from_networkx(nx.cycle_graph(5)), from_networkx(nx.path_graph(3))])
        >>> GraphModel(GraphModelConfig(in_channels=1, out_channels=2, hidden=8, layer="ppgn"))(batch).shape
        torch.Size([2, 2])
    """

    def __init__(self, config: GraphModelConfig) -> None:
        super().__init__()
        if not isinstance(config, GraphModelConfig):
            raise TypeError(f"GraphModel: `config` must be a GraphModelConfig, got {type(config).__name__}")
        self.config = c = config
        h, fe = c.hidden, c.edge_dim or 0
        readout_in = h * len(c.pools)
        if c.layer in ("gin", "poly"):
            self.poly = PolynomialFeatures(c.poly_degree) if c.layer == "poly" else None
            if self.poly is not None and c.poly_norm:
                self.poly_node_norm = nn.BatchNorm1d(self.poly.num_node_features, affine=False)
                self.poly_edge_norm = nn.BatchNorm1d(self.poly.num_pair_features, affine=False)
            extra_node = self.poly.num_node_features if self.poly else 0
            edge_in = fe + (self.poly.num_pair_features if self.poly else 0)
            self.embed = nn.Linear(c.in_channels + extra_node, h)
            self.convs = nn.ModuleList(GINConv(h, h, edge_dim=edge_in or None, aggr=c.aggr)
                                       for _ in range(c.n_layers))
        elif c.layer == "gcn":
            self.embed = nn.Linear(c.in_channels, h)
            self.convs = nn.ModuleList(GCNConv(h, h) for _ in range(c.n_layers))
        elif c.layer in ("ppgn", "ign"):
            self.embed = nn.Linear(1 + fe + c.in_channels, h)
            if c.layer == "ppgn":
                self.blocks = nn.ModuleList(PPGNBlock(h, h) for _ in range(c.n_layers))
            else:
                self.blocks = nn.ModuleList(PermutationLinear(h, h) for _ in range(c.n_layers))
            readout_in = 2 * h
        elif c.layer == "spen":
            self.spen = SPEN(c.in_channels, h, h, n_layers=c.n_layers, k=c.spen_k)
        else:  # deepsets
            self.sets = DeepSets(c.in_channels, h, h, equivariant=True, n_layers=c.n_layers)
        out_in = h if c.task == "node" else readout_in
        self.dropout = nn.Dropout(c.dropout)
        self.head = make_mlp([out_in, h, c.out_channels])

    # ------------------------------------------------------------------ backbones
    def _check(self, batch: GraphBatch) -> None:
        c = self.config
        if not isinstance(batch, GraphBatch):
            raise TypeError(f"GraphModel: input must be a GraphBatch, got {type(batch).__name__} "
                            f"(convert PyG data with GraphBatch.from_pyg)")
        if batch.x.shape[1] != c.in_channels:
            raise ValueError(f"GraphModel: batch.x has {batch.x.shape[1]} features, the config says "
                             f"in_channels={c.in_channels}")
        if c.edge_dim and (batch.edge_attr is None or batch.edge_attr.shape[1] != c.edge_dim):
            got = None if batch.edge_attr is None else batch.edge_attr.shape[1]
            raise ValueError(f"GraphModel: config edge_dim={c.edge_dim} but batch.edge_attr has dim {got}")

    def _dense(self, batch: GraphBatch):
        adj = to_dense_adjacency(batch.edge_index, batch.batch, num_graphs=batch.num_graphs, dtype=batch.x.dtype)
        _, mask = to_dense_batch(batch.x, batch.batch, batch.num_graphs)
        return adj, mask

    def _message_passing(self, batch: GraphBatch) -> torch.Tensor:
        x, edge_attr = batch.x, batch.edge_attr if self.config.edge_dim else None
        if self.poly is not None:
            adj, mask = self._dense(batch)
            node_p, pair_p = self.poly(adj, mask)
            node_p = from_dense_batch(node_p, batch.batch)
            slot = node_slots(batch.batch, batch.num_graphs)
            src, dst = batch.edge_index
            edge_p = pair_p[batch.batch[src], slot[src], slot[dst]]
            if self.config.poly_norm:
                node_p, edge_p = self._standardise(self.poly_node_norm, node_p), \
                    self._standardise(self.poly_edge_norm, edge_p)
            x = torch.cat([x, node_p], -1)
            edge_attr = edge_p if edge_attr is None else torch.cat([edge_attr, edge_p], -1)
        h = self.embed(x)
        for conv in self.convs:
            h = h + conv(h, batch.edge_index, edge_attr)
        return h

    def _standardise(self, norm: nn.BatchNorm1d, v: torch.Tensor) -> torch.Tensor:
        """``norm(v)``; in training with fewer than 2 rows (no batch statistics) the running
        statistics are used instead."""
        if self.training and v.shape[0] < 2:
            return nn.functional.batch_norm(v, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
        return norm(v)

    def _ppgn(self, batch: GraphBatch):
        adj, mask = self._dense(batch)
        parts = [adj.unsqueeze(-1)]
        if self.config.edge_dim:
            parts.append(to_dense_adjacency(batch.edge_index, batch.batch, batch.edge_attr,
                                            num_graphs=batch.num_graphs, n_max=adj.shape[1]))
        xd, _ = to_dense_batch(batch.x, batch.batch, batch.num_graphs)
        parts.append(torch.diag_embed(xd.transpose(1, 2)).permute(0, 2, 3, 1))
        pm = (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(-1).to(adj.dtype)
        h = self.embed(torch.cat(parts, -1)) * pm
        for block in self.blocks:
            out = block(h, mask)
            h = h + (torch.relu(out) if self.config.layer == "ign" else out)
        return h, mask

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        self._check(batch)
        c = self.config
        if c.layer in ("ppgn", "ign"):
            h2, mask = self._ppgn(batch)
            if c.task == "node":
                node = from_dense_batch(h2.diagonal(dim1=1, dim2=2).transpose(1, 2), batch.batch)
                return self.head(self.dropout(node))
            return self.head(self.dropout(pool_order2(h2, mask, normalize=True)))
        if c.layer in ("gin", "poly", "gcn"):
            h = self._message_passing(batch) if c.layer != "gcn" else self._gcn(batch)
        elif c.layer == "spen":
            h = self.spen(batch.x, batch.edge_index)
        else:
            xd, mask = to_dense_batch(batch.x, batch.batch, batch.num_graphs)
            h = from_dense_batch(self.sets(xd, mask), batch.batch)
        if c.task == "node":
            return self.head(self.dropout(h))
        pooled = global_pool(h, batch.batch, batch.num_graphs, c.pools)
        return self.head(self.dropout(pooled))

    def _gcn(self, batch: GraphBatch) -> torch.Tensor:
        h = self.embed(batch.x)
        for conv in self.convs:
            h = h + torch.relu(conv(h, batch.edge_index))
        return h
