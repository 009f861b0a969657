r"""Subgraph permutation-equivariant networks on k-hop ego networks (after SPEN, Mitton &
Murray-Smith, "Subgraph Permutation Equivariant Networks").

Every node ``s`` roots one subgraph, its ``k``-hop ego network (nodes within ``k`` hops of
``s``, edges of the graph between them; hops counted on the undirected graph). The
representation is the sparse "subgraph x node" tensor: one row per pair ``(s, v)`` with
``v`` in the ego network of ``s``.

:func:`ego_subgraphs` extracts all ego networks of a whole batch at once by breadth-first
search with sparse matrix products (``frontier @ A`` as a join of the frontier's pairs
with the CSR adjacency, ``k`` products, no loop over nodes), and lists the edges inside each
subgraph by the same join and a sorted-key lookup.

:class:`SPENLayer` updates every pair from four permutation-equivariant terms, with weights
shared by subgraphs of the same size bucket (the paper groups subgraphs by size so that
each bucket has its own weights):

.. math::
    h'_{sv} = \sigma\Big( W^{b(s)}_1 h_{sv} + W^{b(s)}_2 \sum_{u \to v,\; u, v \in S_s} h_{su}
       + W^{b(s)}_3\, \mathrm{mean}_{u \in S_s} h_{su}
       + W^{b(s)}_4\, \mathrm{mean}_{t:\, v \in S_t} h_{tv} + c^{b(s)} \Big)

(message passing inside the subgraph, DeepSets within the subgraph, DeepSets across the
subgraphs that contain the same node). :class:`SPEN` stacks them on pair features
``[x_v, onehot(hop(s, v))]`` and pools back to nodes (``[h_{vv}, mean_s h_{sv}]``).

Equivariance: relabelling the nodes by ``sigma`` maps the pair ``(s, v)`` to
``(sigma s, sigma v)``, subgraph sizes and hops are unchanged, so node outputs permute and
graph readouts are invariant (up to float rounding of sums).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equikit._utils.validate import check_int
from equikit.nn._aggregation import scatter
from equikit.nn._mlp import make_mlp

__all__ = ["SPEN", "EgoSubgraphs", "SPENLayer", "ego_subgraphs"]

DEFAULT_BUCKETS = (3, 6, 12, 24)


@dataclass(frozen=True)
class EgoSubgraphs:
    """The pairs of the ``k``-hop ego networks of a batch.

    ``sub (P,)`` root of each pair's subgraph, ``node (P,)`` its node, ``hop (P,)`` the
    distance root -> node, sorted by ``(sub, node)``; ``edge_index (2, P_E)`` pair ids of the
    edges inside subgraphs (``src pair -> dst pair``, same subgraph); ``size (N,)`` nodes in
    each node's ego network; ``root (N,)`` the pair id of ``(v, v)``.
    """

    sub: torch.Tensor
    node: torch.Tensor
    hop: torch.Tensor
    edge_index: torch.Tensor
    size: torch.Tensor
    root: torch.Tensor
    num_nodes: int
    k: int

    @property
    def num_pairs(self) -> int:
        return self.sub.shape[0]


def _csr(src: torch.Tensor, dst: torch.Tensor, n: int):
    """Edges sorted by source: ``(ptr (n,), out-degree (n,), targets (E,))``."""
    order = torch.argsort(src, stable=True)
    deg = torch.bincount(src, minlength=n)
    return torch.cumsum(deg, 0) - deg, deg, dst[order]


def _expand(rows: torch.Tensor, cols: torch.Tensor, csr) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse product ``R @ A`` of a 0/1 pattern ``R`` (pairs ``(rows, cols)``) with the
    adjacency ``A`` in CSR form, as the list of (possibly repeated) pairs ``(r, w)`` with
    ``(r, v)`` in ``R`` and ``v -> w`` in ``A``; also returns which ``R`` pair each came from."""
    ptr, deg, nbr = csr
    count = deg[cols]
    origin = torch.repeat_interleave(torch.arange(rows.shape[0], device=rows.device), count)
    starts = torch.cumsum(count, 0) - count
    within = torch.arange(origin.shape[0], device=rows.device) - torch.repeat_interleave(starts, count)
    return origin, nbr[ptr[cols[origin]] + within]


def ego_subgraphs(edge_index: torch.Tensor, num_nodes: int, k: int = 2) -> EgoSubgraphs:
    """All ``k``-hop ego networks of a (batched) graph, vectorised (see :class:`EgoSubgraphs`).

    Example (a path 0-1-2-3, 1 hop):
        >>> import torch
        >>> from equikit.nn import ego_subgraphs
        >>> ei = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
        >>> ego = ego_subgraphs(ei, 4, k=1)
        >>> ego.size.tolist(), ego.node[ego.sub == 1].tolist(), ego.edge_index.shape[1]
        ([2, 3, 3, 2], [0, 1, 2], 12)
    """
    where = "ego_subgraphs"
    check_int(num_nodes, "num_nodes", where, minimum=1)
    check_int(k, "k", where, minimum=0)
    if not isinstance(edge_index, torch.Tensor) or edge_index.ndim != 2 or edge_index.shape[0] != 2 \
            or edge_index.is_floating_point():
        raise ValueError(f"{where}: `edge_index` must be an integer tensor (2, E), got "
                         f"{tuple(getattr(edge_index, 'shape', ()))}")
    n, dev = num_nodes, edge_index.device
    edge_index = edge_index.long()
    undirected = torch.cat([edge_index, edge_index.flip(0)], 1)
    undirected = undirected[:, undirected[0] != undirected[1]]
    hop_csr = _csr(undirected[0], undirected[1], n)
    ids = torch.arange(n, device=dev)
    reach_keys = ids * n + ids  # key of the pair (s, v) is s * n + v
    keys, hops = [reach_keys], [torch.zeros(n, dtype=torch.long, device=dev)]
    f_sub, f_node = ids, ids  # BFS frontier: pairs reached in the last step
    for t in range(1, k + 1):
        origin, w = _expand(f_sub, f_node, hop_csr)  # frontier @ A
        nkeys = torch.unique(f_sub[origin] * n + w)
        nkeys = nkeys[~torch.isin(nkeys, reach_keys)]
        if nkeys.numel() == 0:
            break
        reach_keys = torch.cat([reach_keys, nkeys])
        keys.append(nkeys)
        hops.append(torch.full_like(nkeys, t))
        f_sub, f_node = nkeys // n, nkeys % n
    all_keys, all_hops = torch.cat(keys), torch.cat(hops)
    order = torch.argsort(all_keys)
    all_keys, all_hops = all_keys[order], all_hops[order]
    sub, node = all_keys // n, all_keys % n
    size = torch.bincount(sub, minlength=n)
    root = torch.searchsorted(all_keys, ids * n + ids)
    # edges inside subgraphs: for every pair (s, u) and every edge u -> w, keep (s, w) if present
    pair_of, w = _expand(sub, node, _csr(edge_index[0], edge_index[1], n))
    target = sub[pair_of] * n + w
    pos = torch.searchsorted(all_keys, target).clamp(max=all_keys.shape[0] - 1)
    found = all_keys[pos] == target
    sub_edges = torch.stack([pair_of[found], pos[found]])
    return EgoSubgraphs(sub=sub, node=node, hop=all_hops, edge_index=sub_edges, size=size,
                        root=root, num_nodes=n, k=k)


class SPENLayer(nn.Module):
    """One SPEN update of the pair features (formula in the module docstring), weights per
    subgraph-size bucket. Shapes: ``h (P, C_in)`` -> ``(P, C_out)``.

    ``buckets`` are the upper bounds of the size buckets: sizes ``<= buckets[0]`` use weights
    0, ..., sizes above ``buckets[-1]`` the last weights (``len(buckets) + 1`` in all).
    """

    def __init__(self, in_channels: int, out_channels: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS,
                 act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "SPENLayer", minimum=1)
        check_int(out_channels, "out_channels", "SPENLayer", minimum=1)
        buckets = tuple(buckets)
        if any(isinstance(b, bool) or not isinstance(b, int) for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"SPENLayer: `buckets` must be increasing ints, got {buckets!r}")
        self.in_channels, self.buckets = in_channels, buckets
        nb = len(buckets) + 1
        self.weight = nn.Parameter(torch.randn(nb, 4 * in_channels, out_channels) / (4 * in_channels) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(nb, out_channels))
        self.act = act()

    def bucket_of(self, size: torch.Tensor) -> torch.Tensor:
        """Bucket id of each subgraph size."""
        return torch.searchsorted(torch.tensor(self.buckets, device=size.device), size, right=False)

    def forward(self, h: torch.Tensor, ego: EgoSubgraphs) -> torch.Tensor:
        if not isinstance(h, torch.Tensor) or h.shape != (ego.num_pairs, self.in_channels):
            raise ValueError(f"SPENLayer: `h` must be (P, C) = ({ego.num_pairs}, {self.in_channels}), "
                             f"got {tuple(getattr(h, 'shape', ()))}")
        src, dst = ego.edge_index
        msg = h.new_zeros(h.shape).index_add_(0, dst, h.index_select(0, src))
        in_sub = scatter(h, ego.sub, ego.num_nodes, "mean")[ego.sub]
        across = scatter(h, ego.node, ego.num_nodes, "mean")[ego.node]
        feats = torch.cat([h, msg, in_sub, across], -1)
        bucket = self.bucket_of(ego.size)[ego.sub]
        out = h.new_zeros(h.shape[0], self.weight.shape[-1])
        for b in torch.unique(bucket).tolist():  # a handful of size buckets, not nodes
            sel = (bucket == b).nonzero().flatten()
            out[sel] = feats[sel] @ self.weight[b].to(h.dtype) + self.bias[b].to(h.dtype)
        return self.act(out)


class SPEN(nn.Module):
    r"""A subgraph permutation-equivariant network: ``k``-hop ego networks, pair features
    ``[x_v, onehot(hop)]`` embedded to ``hidden``, ``n_layers`` :class:`SPENLayer`, and a
    readout to nodes ``[h_{vv}, mean_{s \ni v} h_{sv}] -> MLP -> out_channels``.

    Shapes: ``x (N, C_in)``, ``edge_index (2, E)`` -> ``(N, C_out)`` (equivariant; pool with
    :func:`~equikit.nn.global_pool` for an invariant graph output).

    Example (two triangles vs a hexagon, which 1-WL cannot tell apart):
        >>> import torch
        >>> from equikit.nn import SPEN, global_pool
        >>> tri = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 0, 4, 5, 3]])
        >>> hexa = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
        >>> both = lambda e: torch.cat([e, e.flip(0)], 1)
        >>> net, x = SPEN(1, 8, 4, k=1), torch.ones(6, 1)
        >>> a = global_pool(net(x, both(tri)), torch.zeros(6, dtype=torch.long), 1)
        >>> b = global_pool(net(x, both(hexa)), torch.zeros(6, dtype=torch.long), 1)
        >>> bool((a - b).abs().max() > 1e-4)
        True
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, *, n_layers: int = 2, k: int = 2,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS, act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "SPEN", minimum=1)
        check_int(n_layers, "n_layers", "SPEN", minimum=1)
        check_int(k, "k", "SPEN", minimum=0)
        self.k, self.in_channels = k, in_channels
        self.embed = nn.Linear(in_channels + k + 1, hidden)
        self.layers = nn.ModuleList(SPENLayer(hidden, hidden, buckets, act) for _ in range(n_layers))
        self.readout = make_mlp([2 * hidden, hidden, out_channels], act)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, ego: EgoSubgraphs | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"SPEN: `x` must be (N, {self.in_channels}), got {tuple(getattr(x, 'shape', ()))}")
        n = x.shape[0]
        if ego is None:
            ego = ego_subgraphs(edge_index, n, self.k)
        hop = torch.nn.functional.one_hot(ego.hop, self.k + 1).to(x.dtype)
        h = self.embed(torch.cat([x[ego.node], hop], -1))
        for layer in self.layers:
            h = h + layer(h, ego)
        node = torch.cat([h[ego.root], scatter(h, ego.node, n, "mean")], -1)
        return self.readout(node)
