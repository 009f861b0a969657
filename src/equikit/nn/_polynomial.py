r"""Equivariant polynomial features of a graph (Puny et al. 2023, "Equivariant Polynomials for
Graph Neural Networks"), computed batched on dense adjacencies.

A pattern graph ``H`` with vertices ``0..k-1``, edges ``E(H)`` and output vertices ``o``
(none, one or two) defines the graph-indexed contraction

.. math:: P_H(A)_{o} = \sum_{\text{other vertices}} \prod_{(u, v) \in E(H)} A_{x_u x_v},

an invariant (no output vertex), node-level (one) or pair-level (two) polynomial of degree
``|E(H)|`` in ``A``; ``P_H(P A P^T) = P \cdot P_H(A)`` exactly (up to float rounding): the
polynomials ``P_H`` span all equivariant polynomials (Puny et al., Theorem 1).
:func:`contract_pattern` evaluates any ``H`` with one ``einsum``.

:class:`PolynomialFeatures` stacks a fixed catalogue of degree <= 4 contractions and the
substructure counts they give by inclusion-exclusion over closed walks, exact on simple
undirected graphs (symmetric 0/1 ``A``, zero diagonal):

- triangles at node ``i``: ``t_i = (A^3)_ii / 2``; at edge ``(i, j)``: ``(A^2)_ij A_ij``;
- 4-cycles at node ``i``: ``c_i = ((A^4)_ii - d_i^2 - (A d)_i + d_i) / 2`` (closed 4-walks
  minus the walks ``i-j-i-k-i`` and ``i-j-k-j-i``; each 4-cycle is walked both ways);
- 4-cycles at edge ``(i, j)``: ``A_ij ((A^3)_ij - d_i - d_j + 1)`` (3-walks from ``i`` to
  ``j`` minus those that step back).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["NODE_PATTERNS", "PAIR_PATTERNS", "PolynomialFeatures", "contract_pattern", "cycle_counts"]


def _check_adj(adj, mask, where):
    if not isinstance(adj, torch.Tensor) or not adj.is_floating_point() or adj.ndim != 3 \
            or adj.shape[1] != adj.shape[2]:
        raise ValueError(f"{where}: `adj` must be a floating tensor (B, n, n), got "
                         f"{getattr(adj, 'dtype', type(adj).__name__)} {tuple(getattr(adj, 'shape', ()))}")
    if mask is None:
        return adj, torch.ones(adj.shape[:2], dtype=adj.dtype, device=adj.device)
    if not isinstance(mask, torch.Tensor) or mask.shape != adj.shape[:2]:
        raise ValueError(f"{where}: `mask` must be (B, n) = {tuple(adj.shape[:2])}, got "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    m = mask.to(adj.dtype)
    return adj * m.unsqueeze(1) * m.unsqueeze(2), m


def contract_pattern(adj: torch.Tensor, edges: Sequence[tuple[int, int]], out: Sequence[int] = (),
                     num_vertices: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Evaluate the graph-indexed contraction ``P_H(A)`` of the pattern ``H`` (``edges`` on
    vertices ``0..num_vertices-1``) with output vertices ``out``.

    Shapes: ``adj (B, n, n)``, ``mask (B, n)`` -> ``(B,)``, ``(B, n)`` or ``(B, n, n)`` for
    0, 1 or 2 output vertices. Vertices in no edge range over the real nodes (``mask``).

    Example (closed 3-walks, twice the triangles at each node of a triangle):
        >>> import torch
        >>> from equikit.nn import contract_pattern
        >>> A = (1 - torch.eye(3)).unsqueeze(0)
        >>> contract_pattern(A, [(0, 1), (1, 2), (2, 0)], out=[0]).tolist()
        [[2.0, 2.0, 2.0]]
    """
    where = "contract_pattern"
    adj, m = _check_adj(adj, mask, where)
    k = num_vertices if num_vertices is not None else 1 + max([v for e in edges for v in e] + list(out) + [-1])
    if k < 1 or k > 20:
        raise ValueError(f"{where}: the pattern needs 1..20 vertices, got {k}")
    bad = [e for e in edges if len(e) != 2 or not all(0 <= v < k for v in e)]
    if bad or len(out) > 2 or any(not 0 <= v < k for v in out) or len(set(out)) != len(out):
        raise ValueError(f"{where}: `edges` must be pairs of vertex ids in [0, {k}) and `out` at most "
                         f"two distinct ids; got edges={list(edges)}, out={list(out)}")
    letters = string.ascii_lowercase[:k]
    terms, operands = [], []
    for u, v in edges:
        terms.append("z" + letters[u] + letters[v])
        operands.append(adj)
    covered = {v for e in edges for v in e}
    for v in range(k):
        if v not in covered:
            terms.append("z" + letters[v])
            operands.append(m)
    spec = ",".join(terms) + "->z" + "".join(letters[v] for v in out)
    if not operands:
        raise ValueError(f"{where}: the pattern has no edges and no vertices")
    return torch.einsum(spec, *operands)


#: Node-level contractions (output vertex 0): name -> (edges, degree).
NODE_PATTERNS: dict[str, tuple[tuple[tuple[int, int], ...], int]] = {
    "degree": (((0, 1),), 1),
    "walks2": (((0, 1), (1, 2)), 2),
    "closed3": (((0, 1), (1, 2), (2, 0)), 3),
    "walks3": (((0, 1), (1, 2), (2, 3)), 3),
    "star3": (((0, 1), (0, 2), (0, 3)), 3),
    "closed4": (((0, 1), (1, 2), (2, 3), (3, 0)), 4),
    "tailed_triangle": (((0, 1), (1, 2), (2, 0), (0, 3)), 4),
}
#: Pair-level contractions (output vertices 0, 1): name -> (edges, degree).
PAIR_PATTERNS: dict[str, tuple[tuple[tuple[int, int], ...], int]] = {
    "adjacency": (((0, 1),), 1),
    "walks2": (((0, 2), (2, 1)), 2),
    "triangle_edge": (((0, 1), (0, 2), (2, 1)), 3),
    "walks3": (((0, 2), (2, 3), (3, 1)), 3),
    "four_cycle_closure": (((0, 1), (0, 2), (2, 3), (3, 1)), 4),
    "common_pairs": (((0, 2), (2, 1), (0, 3), (3, 1)), 4),
}


def cycle_counts(adj: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Exact triangle and 4-cycle counts of simple undirected graphs from closed-walk
    inclusion-exclusion (formulas in the module docstring): ``triangles (B, n)``,
    ``four_cycles (B, n)`` per node, ``edge_triangles (B, n, n)``, ``edge_four_cycles
    (B, n, n)`` per (directed) edge, and the totals ``num_triangles (B,)``,
    ``num_four_cycles (B,)``.

    Example:
        >>> import torch
        >>> from equikit.nn import cycle_counts
        >>> square = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0.]])
        >>> c = cycle_counts(square.unsqueeze(0))
        >>> c["four_cycles"].tolist(), c["num_triangles"].tolist()
        ([[1.0, 1.0, 1.0, 1.0]], [0.0])
    """
    adj, _ = _check_adj(adj, mask, "cycle_counts")
    a2 = adj @ adj
    a3 = a2 @ adj
    d = adj.sum(-1)
    closed3 = a3.diagonal(dim1=1, dim2=2)
    closed4 = (a2 * a2.transpose(1, 2)).sum(-1)  # (A^4)_ii = sum_k (A^2)_ik (A^2)_ki
    four = (closed4 - d**2 - (adj @ d.unsqueeze(-1)).squeeze(-1) + d) / 2
    edge_four = adj * (a3 - d.unsqueeze(2) - d.unsqueeze(1) + 1)
    return {
        "triangles": closed3 / 2,
        "four_cycles": four,
        "edge_triangles": a2 * adj,
        "edge_four_cycles": edge_four,
        "num_triangles": closed3.sum(-1) / 6,
        "num_four_cycles": four.sum(-1) / 4,
    }


class PolynomialFeatures(nn.Module):
    r"""Node- and pair-level equivariant polynomial features of a dense graph: the
    contractions of :data:`NODE_PATTERNS` and :data:`PAIR_PATTERNS` up to ``degree`` plus the
    cycle counts of :func:`cycle_counts` (node: triangles, 4-cycles; pair: edge triangles,
    edge 4-cycles). ``log=True`` maps every feature through ``sign(v) log(1 + |v|)`` so that
    walk counts on larger graphs stay in range (equivariance is unaffected: it is elementwise).

    Shapes: ``adj (B, n, n)``, ``mask (B, n)`` -> ``node (B, n, num_node_features)``,
    ``pair (B, n, n, num_pair_features)``, zero at padding.

    Example:
        >>> import torch
        >>> from equikit.nn import PolynomialFeatures
        >>> feats = PolynomialFeatures()
        >>> node, pair = feats(torch.ones(2, 5, 5) - torch.eye(5))
        >>> node.shape[-1] == feats.num_node_features, pair.shape[:3]
        (True, torch.Size([2, 5, 5]))
    """

    def __init__(self, degree: int = 4, log: bool = True) -> None:
        super().__init__()
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 4:
            raise ValueError(f"PolynomialFeatures: `degree` must be an int in 1..4, got {degree!r}")
        self.degree, self.log = degree, log
        self.node_names = [k for k, (_, d) in NODE_PATTERNS.items() if d <= degree]
        self.pair_names = [k for k, (_, d) in PAIR_PATTERNS.items() if d <= degree]
        if degree >= 3:
            self.node_names.append("triangles")
            self.pair_names.append("edge_triangles")
        if degree >= 4:
            self.node_names.append("four_cycles")
            self.pair_names.append("edge_four_cycles")

    @property
    def num_node_features(self) -> int:
        return len(self.node_names)

    @property
    def num_pair_features(self) -> int:
        return len(self.pair_names)

    def forward(self, adj: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        adj, m = _check_adj(adj, mask, "PolynomialFeatures")
        counts = cycle_counts(adj) if self.degree >= 3 else {}
        node, pair = [], []
        for name in self.node_names:
            if name in NODE_PATTERNS:
                node.append(contract_pattern(adj, NODE_PATTERNS[name][0], out=[0], mask=m))
            else:
                node.append(counts[name])
        for name in self.pair_names:
            if name in PAIR_PATTERNS:
                pair.append(contract_pattern(adj, PAIR_PATTERNS[name][0], out=[0, 1], mask=m))
            else:
                pair.append(counts[name])
        node_t = torch.stack(node, -1) * m.unsqueeze(-1)
        pm = (m.unsqueeze(1) * m.unsqueeze(2)).unsqueeze(-1)
        pair_t = torch.stack(pair, -1) * pm
        if self.log:
            node_t = torch.sign(node_t) * torch.log1p(node_t.abs())
            pair_t = torch.sign(pair_t) * torch.log1p(pair_t.abs())
        return node_t, pair_t
