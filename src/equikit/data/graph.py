"""A typed batch of graphs, its collation, and conversions (PyG, networkx, RDKit, dense).

A :class:`GraphBatch` is one disjoint union of ``num_graphs`` graphs:

- ``x (N, F)`` node features, ``N`` the total number of nodes;
- ``edge_index (2, E)`` directed edges, messages flow ``edge_index[0] -> edge_index[1]``;
  an undirected graph lists both directions;
- ``edge_attr (E, Fe)`` edge features or ``None``;
- ``pos (N, 3)`` positions or ``None``;
- ``batch (N,)`` the graph of each node (need not be sorted: a node permutation of a batch
  interleaves graphs and every function here accepts that);
- ``y`` targets or ``None``: graph-level ``(num_graphs, ...)`` or node-level ``(N, ...)``;
- ``num_graphs`` an int (graphs without nodes are allowed).

A single graph is a batch with ``num_graphs == 1``. :func:`collate_graphs` joins batches
(offsetting ``edge_index`` by the nodes before each graph); :meth:`GraphBatch.unbatch` splits
them again. Higher-order layers work on dense padded tensors: :func:`to_dense_batch`,
:func:`to_dense_adjacency` and :func:`from_dense_batch`.

Conversions: :meth:`GraphBatch.from_pyg` / :meth:`GraphBatch.to_pyg` (``torch_geometric``
``Data``/``Batch``, imported lazily), :func:`from_networkx` / :func:`to_networkx`,
:func:`from_smiles` / :func:`from_rdkit` (RDKit, imported lazily; features in
:data:`ATOM_FEATURES` and :data:`BOND_FEATURES`).

For the equivariance checker, :meth:`GraphBatch.to_dict` gives the inputs as a dict and
:meth:`GraphBatch.permutation_action` the matching
:class:`~equikit.groups.NodePermutation`; :meth:`GraphBatch.from_dict` rebuilds the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from equikit.groups import NodePermutation

__all__ = [
    "ATOM_FEATURES",
    "ATOM_FEATURE_DIM",
    "BOND_FEATURES",
    "BOND_FEATURE_DIM",
    "GraphBatch",
    "atom_features",
    "bond_features",
    "collate_graphs",
    "from_dense_batch",
    "from_networkx",
    "from_rdkit",
    "from_smiles",
    "node_slots",
    "to_dense_adjacency",
    "to_dense_batch",
    "to_networkx",
]


def _fail(where: str, msg: str, exc=ValueError):
    raise exc(f"{where}: {msg}")


def _as_index(t: Any, name: str, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        _fail(where, f"`{name}` must be a torch.Tensor, got {type(t).__name__}", TypeError)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        _fail(where, f"`{name}` must be an integer tensor (torch.long), got {t.dtype}", TypeError)
    return t.long()


@dataclass
class GraphBatch:
    """A batch of graphs as one disjoint graph (see the module docstring for the fields).

    Shapes: ``x (N, F)``, ``edge_index (2, E)`` (messages ``edge_index[0] -> edge_index[1]``),
    ``edge_attr (E, Fe)`` or ``None``, ``pos (N, 3)`` or ``None``, ``batch (N,)`` (defaults to
    all zeros: one graph), ``y`` graph-level ``(num_graphs, ...)`` or node-level ``(N, ...)``
    or ``None``, ``num_graphs`` (defaults to ``batch.max() + 1``).

    Example:
        >>> import torch
        >>> from equikit.data.graph import GraphBatch, collate_graphs
        >>> g1 = GraphBatch(x=torch.ones(2, 1), edge_index=torch.tensor([[0, 1], [1, 0]]))
        >>> g2 = GraphBatch(x=torch.ones(3, 1), edge_index=torch.tensor([[0, 1], [1, 2]]))
        >>> b = collate_graphs([g1, g2])
        >>> b.num_graphs, b.batch.tolist(), b.edge_index.tolist()
        (2, [0, 0, 1, 1, 1], [[0, 1, 2, 3], [1, 0, 3, 4]])
        >>> [g.num_nodes for g in b.unbatch()]
        [2, 3]
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor | None = None
    pos: torch.Tensor | None = None
    batch: torch.Tensor | None = None  # type: ignore[assignment]  (filled in __post_init__)
    y: torch.Tensor | None = None
    num_graphs: int | None = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        where = "GraphBatch"
        if not isinstance(self.x, torch.Tensor):
            _fail(where, f"`x` must be a tensor (N, F), got {type(self.x).__name__}", TypeError)
        if self.x.ndim != 2:
            _fail(where, f"`x` must be (N, F) (use x.unsqueeze(-1) for one feature), got "
                         f"shape {tuple(self.x.shape)}")
        n = self.x.shape[0]
        self.edge_index = _as_index(self.edge_index, "edge_index", where)
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            _fail(where, f"`edge_index` must be (2, E), got shape {tuple(self.edge_index.shape)} "
                         f"(transpose an (E, 2) edge list)")
        e = self.edge_index.shape[1]
        if self.edge_attr is not None:
            if not isinstance(self.edge_attr, torch.Tensor) or self.edge_attr.ndim != 2 \
                    or self.edge_attr.shape[0] != e:
                _fail(where, f"`edge_attr` must be a tensor (E, Fe) with E = {e}, got "
                             f"{getattr(self.edge_attr, 'shape', type(self.edge_attr).__name__)}")
        if self.pos is not None:
            if not isinstance(self.pos, torch.Tensor) or self.pos.ndim != 2 or self.pos.shape[0] != n:
                _fail(where, f"`pos` must be a tensor (N, d) with N = {n}, got "
                             f"{getattr(self.pos, 'shape', type(self.pos).__name__)}")
        if self.batch is None:
            self.batch = torch.zeros(n, dtype=torch.long, device=self.x.device)
        self.batch = _as_index(self.batch, "batch", where)
        if self.batch.shape != (n,):
            _fail(where, f"`batch` must be (N,) with N = {n}, got shape {tuple(self.batch.shape)}")
        if self.num_graphs is None:
            self.num_graphs = int(self.batch.max()) + 1 if n else 1
        if isinstance(self.num_graphs, bool) or not isinstance(self.num_graphs, int) \
                or self.num_graphs < 1:
            _fail(where, f"`num_graphs` must be an int >= 1, got {self.num_graphs!r}")
        if self.y is not None and not isinstance(self.y, torch.Tensor):
            _fail(where, f"`y` must be a tensor or None, got {type(self.y).__name__}", TypeError)

    # ------------------------------------------------------------------ sizes
    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    def node_counts(self) -> torch.Tensor:
        """Nodes per graph, ``(num_graphs,)``."""
        return torch.bincount(self.batch, minlength=self.num_graphs)

    def edge_counts(self) -> torch.Tensor:
        """Edges per graph (the graph of an edge is the graph of its source), ``(num_graphs,)``."""
        return torch.bincount(self.batch[self.edge_index[0]], minlength=self.num_graphs)

    def validate(self) -> GraphBatch:
        """Check the values (not only shapes): node ids in range, edges within one graph,
        ``batch`` in ``[0, num_graphs)``. Returns ``self``; raises ``ValueError``."""
        where = "GraphBatch.validate"
        n = self.num_nodes
        ei = self.edge_index
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            _fail(where, f"`edge_index` has node ids outside [0, {n}): min {int(ei.min())}, "
                         f"max {int(ei.max())}")
        if n and (int(self.batch.min()) < 0 or int(self.batch.max()) >= self.num_graphs):
            _fail(where, f"`batch` values must lie in [0, num_graphs={self.num_graphs})")
        if ei.numel() and not bool((self.batch[ei[0]] == self.batch[ei[1]]).all()):
            _fail(where, "`edge_index` has edges between different graphs of the batch")
        return self

    # ------------------------------------------------------------------ moving
    def to(self, device=None, dtype: torch.dtype | None = None) -> GraphBatch:
        """Move to ``device``; cast the floating tensors (``x``, ``edge_attr``, ``pos``,
        floating ``y``) to ``dtype`` when given."""
        def move(t):
            if not isinstance(t, torch.Tensor):
                return t
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name))
                                            for f in dataclasses.fields(self)})

    # ------------------------------------------------------------------ checker glue
    def to_dict(self, *, with_y: bool = False) -> dict[str, torch.Tensor]:
        """The tensors as a dict (keys ``x, edge_index, batch`` and ``edge_attr``/``pos``/``y``
        when present; ``y`` only with ``with_y``), the form the checker's actions move."""
        out = {"x": self.x, "edge_index": self.edge_index, "batch": self.batch}
        for key in ("edge_attr", "pos") + (("y",) if with_y else ()):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, torch.Tensor], num_graphs: int | None = None) -> GraphBatch:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, Mapping):
            _fail("GraphBatch.from_dict", f"`d` must be a dict, got {type(d).__name__}", TypeError)
        known = {"x", "edge_index", "edge_attr", "pos", "batch", "y"}
        extra = sorted(set(d) - known)
        if extra:
            _fail("GraphBatch.from_dict", f"unknown keys {extra}; known {sorted(known)}")
        return cls(**dict(d), num_graphs=num_graphs)

    def permutation_action(self, *, with_y: bool = False, node_level_y: bool = False) -> NodePermutation:
        """The :class:`~equikit.groups.NodePermutation` of all ``N`` nodes acting on
        :meth:`to_dict`: ``x``, ``pos``, ``batch`` (and a node-level ``y``) are permuted,
        ``edge_index`` relabelled, ``edge_attr`` (and a graph-level ``y``) kept.

        Permuting all nodes of a batch at once is a relabelling of the disjoint union; graphs
        end up interleaved, which every layer here supports (``batch`` moves with the nodes).
        """
        nodes = {"x": -2, "batch": -1}
        invariant: list[str] = []
        if self.pos is not None:
            nodes["pos"] = -2
        if self.edge_attr is not None:
            invariant.append("edge_attr")
        if with_y and self.y is not None:
            if node_level_y:
                nodes["y"] = -self.y.ndim
            else:
                invariant.append("y")
        return NodePermutation(self.num_nodes, nodes=nodes, edge_index="edge_index",
                               invariant=tuple(invariant))

    # ------------------------------------------------------------------ (un)batching
    def _y_level(self) -> str | None:
        if self.y is None:
            return None
        if self.y.ndim >= 1 and self.y.shape[0] == self.num_graphs:
            return "graph"
        if self.y.ndim >= 1 and self.y.shape[0] == self.num_nodes:
            return "node"
        _fail("GraphBatch", f"`y` must be graph-level ({self.num_graphs}, ...) or node-level "
                            f"({self.num_nodes}, ...), got shape {tuple(self.y.shape)}")

    def unbatch(self) -> list[GraphBatch]:
        """Split into ``num_graphs`` single graphs, node order within each graph kept and
        ``edge_index`` shifted to local ids. Inverse of :func:`collate_graphs` (for a sorted
        ``batch``)."""
        slot = node_slots(self.batch, self.num_graphs)
        edge_graph = self.batch[self.edge_index[0]]
        level = self._y_level()
        out = []
        for gi in range(self.num_graphs):
            nodes = (self.batch == gi).nonzero().flatten()
            edges = (edge_graph == gi).nonzero().flatten()
            y = None
            if level == "graph":
                y = self.y[gi : gi + 1]
            elif level == "node":
                y = self.y[nodes]
            out.append(GraphBatch(
                x=self.x[nodes],
                edge_index=slot[self.edge_index[:, edges]],
                edge_attr=None if self.edge_attr is None else self.edge_attr[edges],
                pos=None if self.pos is None else self.pos[nodes],
                batch=torch.zeros(len(nodes), dtype=torch.long, device=self.x.device),
                y=y,
                num_graphs=1,
            ))
        return out

    # ------------------------------------------------------------------ PyG
    @classmethod
    def from_pyg(cls, data: Any) -> GraphBatch:
        """From a ``torch_geometric.data.Data`` or ``Batch`` (fields ``x``, ``edge_index``,
        ``edge_attr``, ``pos``, ``y``, ``batch``; a missing ``x`` becomes ones ``(N, 1)``)."""
        where = "GraphBatch.from_pyg"
        if not hasattr(data, "edge_index"):
            _fail(where, f"`data` must be a torch_geometric Data/Batch, got {type(data).__name__}",
                  TypeError)
        n = int(data.num_nodes)
        x = getattr(data, "x", None)
        if x is None:
            x = torch.ones(n, 1)
        elif x.ndim == 1:
            x = x.unsqueeze(-1)
        batch = getattr(data, "batch", None)
        num_graphs = int(getattr(data, "num_graphs", 1)) if batch is not None else 1
        y = getattr(data, "y", None)
        if y is not None and y.ndim == 0:
            y = y.reshape(1)
        edge_attr = getattr(data, "edge_attr", None)
        if edge_attr is not None and edge_attr.ndim == 1:
            edge_attr = edge_attr.unsqueeze(-1)
        return cls(x=x, edge_index=data.edge_index, edge_attr=edge_attr,
                   pos=getattr(data, "pos", None), batch=batch, y=y, num_graphs=num_graphs)

    def to_pyg(self) -> Any:
        """A ``torch_geometric.data.Batch`` of the graphs (``Data`` objects with ``x``,
        ``edge_index`` and, when present, ``edge_attr``, ``pos``, ``y``)."""
        try:
            from torch_geometric.data import Batch, Data
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("GraphBatch.to_pyg needs torch_geometric: pip install "
                              "'equikit[graphs]' (or torch-geometric)") from err
        datas = []
        for g in self.unbatch():
            kw = {k: getattr(g, k) for k in ("edge_attr", "pos", "y") if getattr(g, k) is not None}
            datas.append(Data(x=g.x, edge_index=g.edge_index, num_nodes=g.num_nodes, **kw))
        return Batch.from_data_list(datas)


# ---------------------------------------------------------------------- collation
def collate_graphs(graphs: Sequence[GraphBatch]) -> GraphBatch:
    """Join graphs (or batches) into one batch: node tensors concatenated, each part's
    ``edge_index`` offset by the number of nodes before it, ``batch`` offset by the graphs
    before it, ``y`` concatenated along dim 0. Use as ``DataLoader(..., collate_fn=collate_graphs)``.

    Example:
        >>> import torch
        >>> from equikit.data.graph import GraphBatch, collate_graphs
        >>> g = GraphBatch(x=torch.zeros(2, 3), edge_index=torch.tensor([[0], [1]]), y=torch.ones(1))
        >>> b = collate_graphs([g, g, g])
        >>> b.edge_index.tolist(), b.y.tolist(), b.num_graphs
        ([[0, 2, 4], [1, 3, 5]], [1.0, 1.0, 1.0], 3)
    """
    where = "collate_graphs"
    if not isinstance(graphs, (list, tuple)) or not graphs:
        _fail(where, f"`graphs` must be a non-empty list of GraphBatch, got {type(graphs).__name__}"
                     f"{' of length 0' if isinstance(graphs, (list, tuple)) else ''}")
    for k, g in enumerate(graphs):
        if not isinstance(g, GraphBatch):
            _fail(where, f"graphs[{k}] must be a GraphBatch, got {type(g).__name__} (convert "
                         f"PyG data with GraphBatch.from_pyg)", TypeError)
    for key in ("edge_attr", "pos", "y"):
        has = [getattr(g, key) is not None for g in graphs]
        if any(has) and not all(has):
            _fail(where, f"`{key}` is set on graphs {[i for i, h in enumerate(has) if h]} but not "
                         f"on the others; set it on all graphs or none")
    dims = {g.x.shape[1] for g in graphs}
    if len(dims) > 1:
        _fail(where, f"node feature dims differ: {sorted(dims)}")
    nodes = torch.tensor([g.num_nodes for g in graphs])
    node_off = (torch.cumsum(nodes, 0) - nodes).tolist()
    ngraphs = torch.tensor([g.num_graphs for g in graphs])
    graph_off = (torch.cumsum(ngraphs, 0) - ngraphs).tolist()

    def cat(key):
        if getattr(graphs[0], key) is None:
            return None
        return torch.cat([getattr(g, key) for g in graphs])

    return GraphBatch(
        x=cat("x"),
        edge_index=torch.cat([g.edge_index + o for g, o in zip(graphs, node_off)], dim=1),
        edge_attr=cat("edge_attr"),
        pos=cat("pos"),
        batch=torch.cat([g.batch + o for g, o in zip(graphs, graph_off)]),
        y=cat("y"),
        num_graphs=int(ngraphs.sum()),
    )


# ---------------------------------------------------------------------- dense
def node_slots(batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """The position of each node within its graph, ``(N,)``: nodes of one graph are numbered
    ``0, 1, ...`` in the order they appear in ``batch`` (which need not be sorted).

    Example:
        >>> import torch
        >>> from equikit.data.graph import node_slots
        >>> node_slots(torch.tensor([1, 0, 1, 0, 0])).tolist()
        [0, 0, 1, 1, 2]
    """
    batch = _as_index(batch, "batch", "node_slots")
    if batch.numel() == 0:
        return batch.clone()
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1
    counts = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.cumsum(counts, 0) - counts
    order = torch.argsort(batch, stable=True)
    slot = torch.empty_like(batch)
    slot[order] = torch.arange(batch.numel(), device=batch.device) - ptr[batch[order]]
    return slot


def _n_max(batch, num_graphs, n_max, where):
    counts = torch.bincount(batch, minlength=num_graphs)
    largest = int(counts.max()) if counts.numel() else 0
    if n_max is None:
        return max(largest, 1)
    if n_max < largest:
        _fail(where, f"`n_max`={n_max} is smaller than the largest graph ({largest} nodes)")
    return n_max


def to_dense_batch(x: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None,
                   n_max: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Node features ``(N, F)`` to padded ``(B, n_max, F)`` and a bool ``mask (B, n_max)``
    (True at real nodes); node ``i`` goes to ``[batch[i], node_slots(batch)[i]]``, padding is 0.

    Example:
        >>> import torch
        >>> from equikit.data.graph import to_dense_batch
        >>> X, mask = to_dense_batch(torch.arange(3.0).unsqueeze(-1), torch.tensor([0, 1, 1]))
        >>> X.squeeze(-1).tolist(), mask.tolist()
        ([[0.0, 0.0], [1.0, 2.0]], [[True, False], [True, True]])
    """
    where = "to_dense_batch"
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        _fail(where, f"`x` must be a tensor (N, ...), got {getattr(x, 'shape', type(x).__name__)}",
              TypeError)
    batch = _as_index(batch, "batch", where)
    if batch.shape != x.shape[:1]:
        _fail(where, f"`batch` must be (N,) = ({x.shape[0]},), got {tuple(batch.shape)}")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 1
    n = _n_max(batch, num_graphs, n_max, where)
    slot = node_slots(batch, num_graphs)
    out = x.new_zeros(num_graphs, n, *x.shape[1:])
    out[batch, slot] = x
    mask = torch.zeros(num_graphs, n, dtype=torch.bool, device=x.device)
    mask[batch, slot] = True
    return out, mask


def from_dense_batch(dense: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_dense_batch`: ``(B, n_max, ...)`` back to ``(N, ...)`` in the
    node order of ``batch``."""
    batch = _as_index(batch, "batch", "from_dense_batch")
    return dense[batch, node_slots(batch, dense.shape[0])]


def to_dense_adjacency(edge_index: torch.Tensor, batch: torch.Tensor,
                       edge_attr: torch.Tensor | None = None, num_graphs: int | None = None,
                       n_max: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dense adjacency ``(B, n_max, n_max)`` with ``A[b, i, j]`` the number of edges
    ``i -> j`` (source row, target column, so ``A^T X`` aggregates messages at targets), or
    ``(B, n_max, n_max, Fe)`` summing ``edge_attr`` per pair. Node slots as in
    :func:`to_dense_batch`.

    Example:
        >>> import torch
        >>> from equikit.data.graph import to_dense_adjacency
        >>> to_dense_adjacency(torch.tensor([[1], [2]]), torch.tensor([0, 1, 1])).tolist()
        [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]
    """
    where = "to_dense_adjacency"
    edge_index = _as_index(edge_index, "edge_index", where)
    batch = _as_index(batch, "batch", where)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        _fail(where, f"`edge_index` must be (2, E), got {tuple(edge_index.shape)}")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 1
    n = _n_max(batch, num_graphs, n_max, where)
    slot = node_slots(batch, num_graphs)
    src, dst = edge_index
    b = batch[src]
    if edge_attr is None:
        dtype = dtype or torch.get_default_dtype()
        adj = torch.zeros(num_graphs, n, n, dtype=dtype, device=edge_index.device)
        adj.index_put_((b, slot[src], slot[dst]), torch.ones(src.shape[0], dtype=dtype,
                                                             device=edge_index.device), accumulate=True)
        return adj
    if edge_attr.ndim != 2 or edge_attr.shape[0] != src.shape[0]:
        _fail(where, f"`edge_attr` must be (E, Fe) with E = {src.shape[0]}, got {tuple(edge_attr.shape)}")
    adj = edge_attr.new_zeros(num_graphs, n, n, edge_attr.shape[1])
    adj.index_put_((b, slot[src], slot[dst]), edge_attr, accumulate=True)
    return adj


# ---------------------------------------------------------------------- networkx
def from_networkx(graph: Any, *, node_attrs: Sequence[str] = (), edge_attrs: Sequence[str] = (),
                  y: torch.Tensor | float | None = None, dtype: torch.dtype | None = None) -> GraphBatch:
    """A networkx graph as a one-graph :class:`GraphBatch`. Nodes are numbered in
    ``graph.nodes`` order; an undirected edge gives both directions. ``x`` stacks the named
    numeric node attributes (ones ``(N, 1)`` when none), ``edge_attr`` the named edge
    attributes (``None`` when none). ``y`` is stored as a graph-level ``(1, ...)`` tensor.

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph import from_networkx
        >>> g = from_networkx(nx.path_graph(3))
        >>> g.x.shape, g.edge_index.tolist()
        (torch.Size([3, 1]), [[0, 1, 1, 2], [1, 0, 2, 1]])
    """
    where = "from_networkx"
    if not hasattr(graph, "nodes") or not hasattr(graph, "edges"):
        _fail(where, f"`graph` must be a networkx graph, got {type(graph).__name__}", TypeError)
    dtype = dtype or torch.get_default_dtype()
    nodes = list(graph.nodes)
    index = {v: i for i, v in enumerate(nodes)}

    def feats(attrs, items, kind):
        rows = []
        for item, data in items:
            row = []
            for a in attrs:
                if a not in data:
                    _fail(where, f"{kind} {item!r} has no attribute {a!r}")
                row.extend(torch.as_tensor(data[a], dtype=dtype).reshape(-1).tolist())
            rows.append(row)
        return torch.tensor(rows, dtype=dtype).reshape(len(rows), -1)

    x = feats(node_attrs, graph.nodes(data=True), "node") if node_attrs else \
        torch.ones(len(nodes), 1, dtype=dtype)
    directed = graph.is_directed()
    src, dst, eitems = [], [], []
    for u, v, data in graph.edges(data=True):
        pairs = [(u, v)] if directed or u == v else [(u, v), (v, u)]
        for a, b in pairs:
            src.append(index[a])
            dst.append(index[b])
            eitems.append(((a, b), data))
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    edge_attr = feats(edge_attrs, eitems, "edge") if edge_attrs else None
    if y is not None:
        y = torch.as_tensor(y)
        y = y.reshape(1, *y.shape)
    return GraphBatch(x=x, edge_index=edge_index, edge_attr=edge_attr, y=y)


def to_networkx(graph: GraphBatch, *, index: int = 0, undirected: bool = False) -> Any:
    """Graph ``index`` of a batch as a networkx ``DiGraph`` (``Graph`` with ``undirected``)
    with node attribute ``x`` (list of floats) and, when present, edge attribute ``edge_attr``."""
    try:
        import networkx as nx
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("to_networkx needs networkx: pip install 'equikit[graphs]' (or networkx)") from err
    if not isinstance(graph, GraphBatch):
        _fail("to_networkx", f"`graph` must be a GraphBatch, got {type(graph).__name__}", TypeError)
    if not 0 <= index < graph.num_graphs:
        _fail("to_networkx", f"`index` must be in [0, {graph.num_graphs}), got {index}")
    g = graph.unbatch()[index] if graph.num_graphs > 1 else graph
    out = nx.Graph() if undirected else nx.DiGraph()
    for i in range(g.num_nodes):
        out.add_node(i, x=g.x[i].tolist())
    for k, (u, v) in enumerate(g.edge_index.T.tolist()):
        kw = {} if g.edge_attr is None else {"edge_attr": g.edge_attr[k].tolist()}
        out.add_edge(u, v, **kw)
    return out


# ---------------------------------------------------------------------- RDKit
#: Atom feature blocks, concatenated in this order (one-hot unless noted); the last entry of
#: each one-hot list means "other / more". Total width :data:`ATOM_FEATURE_DIM`.
ATOM_FEATURES: dict[str, tuple] = {
    "atomic_num": (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53, "other"),  # H B C N O F Si P S Cl Br I
    "degree": (0, 1, 2, 3, 4, 5, "other"),
    "formal_charge": (-2, -1, 0, 1, 2, "other"),
    "aromatic": ("bit",),
    "hybridization": ("SP", "SP2", "SP3", "SP3D", "SP3D2", "other"),
    "num_hs": (0, 1, 2, 3, 4, "other"),  # total hydrogens (implicit + explicit)
}
ATOM_FEATURE_DIM = sum(len(v) for v in ATOM_FEATURES.values())
#: Bond feature blocks: bond type one-hot, then conjugation and ring membership bits.
BOND_FEATURES: dict[str, tuple] = {
    "bond_type": ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "other"),
    "conjugated": ("bit",),
    "in_ring": ("bit",),
}
BOND_FEATURE_DIM = sum(len(v) for v in BOND_FEATURES.values())


def _one_hot(value, choices) -> list[float]:
    out = [0.0] * len(choices)
    out[choices.index(value) if value in choices else len(choices) - 1] = 1.0
    return out


def atom_features(atom: Any) -> list[float]:
    """The :data:`ATOM_FEATURES` of an RDKit atom as a list of ``ATOM_FEATURE_DIM`` floats."""
    f = ATOM_FEATURES
    return (_one_hot(atom.GetAtomicNum(), f["atomic_num"])
            + _one_hot(atom.GetDegree(), f["degree"])
            + _one_hot(atom.GetFormalCharge(), f["formal_charge"])
            + [float(atom.GetIsAromatic())]
            + _one_hot(str(atom.GetHybridization()), f["hybridization"])
            + _one_hot(atom.GetTotalNumHs(), f["num_hs"]))


def bond_features(bond: Any) -> list[float]:
    """The :data:`BOND_FEATURES` of an RDKit bond as a list of ``BOND_FEATURE_DIM`` floats."""
    return [*_one_hot(str(bond.GetBondType()), BOND_FEATURES["bond_type"]),
            float(bond.GetIsConjugated()), float(bond.IsInRing())]


def from_rdkit(mol: Any, *, y: torch.Tensor | float | None = None, with_pos: bool | None = None,
               dtype: torch.dtype | None = None) -> GraphBatch:
    """An RDKit molecule as a one-graph :class:`GraphBatch`: ``x (N, ATOM_FEATURE_DIM)``,
    both directions of every bond in ``edge_index`` with ``edge_attr (E, BOND_FEATURE_DIM)``,
    and ``pos`` from the first conformer when the molecule has one (``with_pos=None``), always
    (``True``, error without a conformer) or never (``False``)."""
    where = "from_rdkit"
    if not hasattr(mol, "GetAtoms"):
        _fail(where, f"`mol` must be an RDKit Mol, got {type(mol).__name__}", TypeError)
    dtype = dtype or torch.get_default_dtype()
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=dtype)
    x = x.reshape(-1, ATOM_FEATURE_DIM)
    src, dst, attrs = [], [], []
    for bond in mol.GetBonds():
        i, j, f = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond_features(bond)
        src += [i, j]
        dst += [j, i]
        attrs += [f, f]
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    edge_attr = torch.tensor(attrs, dtype=dtype).reshape(-1, BOND_FEATURE_DIM)
    pos = None
    if with_pos is None:
        with_pos = mol.GetNumConformers() > 0
    if with_pos:
        if mol.GetNumConformers() == 0:
            _fail(where, "`with_pos=True` but the molecule has no conformer (embed one with "
                         "rdkit.Chem.AllChem.EmbedMolecule)")
        pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=dtype)
    if y is not None:
        y = torch.as_tensor(y)
        y = y.reshape(1, *y.shape)
    return GraphBatch(x=x, edge_index=edge_index, edge_attr=edge_attr, pos=pos, y=y)


def from_smiles(smiles: str, *, y: torch.Tensor | float | None = None, add_hs: bool = False,
                dtype: torch.dtype | None = None) -> GraphBatch:
    """A SMILES string as a one-graph :class:`GraphBatch` (see :func:`from_rdkit`; no
    positions). ``add_hs`` makes hydrogens explicit nodes.

    Example:
        >>> from equikit.data.graph import ATOM_FEATURE_DIM, from_smiles
        >>> g = from_smiles("CCO")
        >>> g.num_nodes, g.num_edges, g.x.shape[1] == ATOM_FEATURE_DIM, g.edge_attr.shape[1]
        (3, 4, True, 7)
    """
    if not isinstance(smiles, str):
        _fail("from_smiles", f"`smiles` must be a str, got {type(smiles).__name__}", TypeError)
    try:
        from rdkit import Chem
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("from_smiles needs RDKit: pip install 'equikit[graphs]' (or rdkit)") from err
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"from_smiles: RDKit could not parse the SMILES {smiles!r}")
    if add_hs:
        mol = Chem.AddHs(mol)
    return from_rdkit(mol, y=y, with_pos=False, dtype=dtype)
