"""Graph benchmark sets: exact substructure counts against brute force, the 1-WL oracle
against an independent hash-based WL, pair families (non-isomorphic and 1-WL-equivalent),
class counts, molecule set sizes and the cache."""

import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest

from equikit.data import graph_sets as gs
from equikit.data.graph_sets import (
    CSL_SKIPS,
    GraphList,
    GraphSetConfig,
    atlas_wl_pairs,
    counting_graphs,
    csl_graphs,
    kfold_indices,
    latin_square_graph,
    load_freesolv,
    load_graph_set,
    load_solubility,
    nx_edge_index,
    paley_graph,
    paley_pairs,
    regular_pairs,
    rook_graph,
    shrikhande_graph,
    srg16_pair,
    substructure_counts,
    wl_colors,
    wl_equivalent,
    wl_histograms,
)


# --------------------------------------------------------------------------- brute force
def _brute_counts(g: nx.Graph) -> dict[str, int]:
    """Enumerate vertex subsets: triangles are adjacent triples; a 4-set holds one 4-cycle for
    each of its 3 cyclic orders whose 4 edges are present; a 3-star is a centre with 3
    neighbours among the other members of a 4-set."""
    nodes = list(g.nodes)
    tri = sum(1 for a, b, c in itertools.combinations(nodes, 3)
              if g.has_edge(a, b) and g.has_edge(b, c) and g.has_edge(a, c))
    cyc = star = 0
    for quad in itertools.combinations(nodes, 4):
        a, b, c, d = quad
        for order in ((a, b, c, d), (a, b, d, c), (a, c, b, d)):
            if all(g.has_edge(order[i], order[(i + 1) % 4]) for i in range(4)):
                cyc += 1
        for centre in quad:
            if all(g.has_edge(centre, o) for o in quad if o != centre):
                star += 1
    return {"triangle": tri, "4cycle": cyc, "3star": star}


@pytest.mark.parametrize("seed", range(6))
def test_substructure_counts_match_brute_force_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    g = nx.gnp_random_graph(int(rng.integers(5, 11)), float(rng.uniform(0.2, 0.8)), seed=seed)
    assert substructure_counts(*nx_edge_index(g)) == _brute_counts(g)


def test_substructure_counts_on_named_graphs():
    """Closed forms: K_n has C(n,3) triangles, 3 C(n,4) four-cycles, n C(n-1,3) 3-stars;
    the 4x4 grid has 9 four-cycles and no triangle."""
    for n in (4, 5, 7):
        c = substructure_counts(*nx_edge_index(nx.complete_graph(n)))
        assert c == {"triangle": math.comb(n, 3), "4cycle": 3 * math.comb(n, 4),
                     "3star": n * math.comb(n - 1, 3)}
    grid = substructure_counts(*nx_edge_index(nx.grid_2d_graph(4, 4)))
    assert grid["triangle"] == 0 and grid["4cycle"] == 9


def test_substructure_counts_rejects_one_directional_edges():
    with pytest.raises(ValueError, match=r"substructure_counts: .*both directions"):
        substructure_counts(3, np.array([[0, 1], [1, 2]]))


def test_counting_labels_are_the_exact_counts_of_each_graph():
    gl = counting_graphs(12, seed=3)
    assert gl.y.shape == (12, 3) and gl.y.dtype == np.int64
    for g in range(len(gl)):
        brute = _brute_counts(gl.to_networkx(g))
        assert gl.y[g].tolist() == [brute[s] for s in gs.SUBSTRUCTURES]
    assert (gl.num_nodes >= 10).all() and (gl.num_nodes <= 20).all()


# --------------------------------------------------------------------------- 1-WL
def _nx_wl_classes(graphs):
    """Partition by networkx's hash-based WL (per graph, n rounds): an independent oracle."""
    hashes = []
    for g in graphs:
        g = g.copy()
        nx.set_node_attributes(g, "0", "c")  # a constant start colour, as in our WL
        hashes.append(nx.weisfeiler_lehman_graph_hash(g, node_attr="c",
                                                      iterations=max(g.number_of_nodes(), 1)))
    return np.unique(hashes, return_inverse=True)[1].reshape(-1)


def test_wl_partition_of_the_atlas_matches_networkx_hash_wl():
    graphs = [g for g in nx.graph_atlas_g() if 1 <= g.number_of_nodes() <= 6]
    hist = wl_histograms(GraphList.from_networkx(graphs, y=[0] * len(graphs)))
    ours = np.unique(hist, axis=0, return_inverse=True)[1].reshape(-1)
    theirs = _nx_wl_classes(graphs)
    # same partition: the pair (ours, theirs) of labels is a bijection
    assert len(set(zip(ours.tolist(), theirs.tolist()))) == len(set(ours.tolist())) == len(
        set(theirs.tolist()))
    assert len(set(ours.tolist())) < len(graphs)  # some graphs are 1-WL-equivalent


def test_wl_colours_are_permutation_invariant_and_refine_degrees():
    g = nx.gnp_random_graph(12, 0.3, seed=1)
    n, ei = nx_edge_index(g)
    perm = np.random.default_rng(0).permutation(n)
    colors, rounds = wl_colors([(n, ei), (n, gs.permute_graph(n, ei, perm))])
    a, b = colors[:n], colors[n:]
    np.testing.assert_array_equal(b[perm], a)  # node i of the first is node perm[i] of the second
    deg = np.bincount(ei[1], minlength=n)
    for c in np.unique(a):  # one colour -> one degree
        assert len(set(deg[a == c].tolist())) == 1
    assert rounds >= 1


def test_wl_max_iter_zero_keeps_the_initial_colours():
    colors, rounds = wl_colors([nx_edge_index(nx.path_graph(4))], max_iter=0)
    assert rounds == 0 and colors.tolist() == [0, 0, 0, 0]


def test_wl_distinguishes_c6_from_path_but_not_from_two_triangles():
    two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    assert wl_equivalent(nx.cycle_graph(6), two_triangles)
    assert not wl_equivalent(nx.cycle_graph(6), nx.path_graph(6))


def test_atlas_pairs_are_non_isomorphic_and_1wl_equivalent():
    pairs = atlas_wl_pairs(7)
    assert len(pairs) == 26  # all atlas graphs with 1..7 nodes (20 with connected_only=True)
    assert len(atlas_wl_pairs(7, connected_only=True)) == 20
    for p in pairs:
        assert not nx.is_isomorphic(p.first, p.second)
        assert wl_equivalent(p.first, p.second)
        assert p.first.number_of_nodes() == p.second.number_of_nodes()


def test_atlas_max_nodes_is_validated():
    with pytest.raises(ValueError, match=r"atlas_wl_pairs: .*7 nodes"):
        atlas_wl_pairs(8)


# --------------------------------------------------------------------------- named graphs
def _srg_parameters(g: nx.Graph) -> tuple[int, int, int, int] | None:
    a = nx.to_numpy_array(g, dtype=np.int64)
    n = a.shape[0]
    deg = set(a.sum(1).tolist())
    if len(deg) != 1:
        return None
    a2 = a @ a
    off = ~np.eye(n, dtype=bool)
    lam, mu = set(a2[(a == 1) & off].tolist()), set(a2[(a == 0) & off].tolist())
    if len(lam) != 1 or len(mu) != 1:
        return None
    return n, deg.pop(), lam.pop(), mu.pop()


def test_shrikhande_and_rook_are_srg_16_6_2_2_non_isomorphic_and_1wl_equivalent():
    assert _srg_parameters(shrikhande_graph()) == (16, 6, 2, 2)
    assert _srg_parameters(rook_graph(4)) == (16, 6, 2, 2)
    pair = srg16_pair()
    assert not pair.isomorphic and not nx.is_isomorphic(pair.first, pair.second)
    assert wl_equivalent(pair.first, pair.second)


@pytest.mark.parametrize("q", [5, 9, 13, 17, 25])
def test_paley_graphs_are_strongly_regular_with_paley_parameters(q):
    assert _srg_parameters(paley_graph(q)) == (q, (q - 1) // 2, (q - 5) // 4, (q - 1) // 4)


def test_paley_rejects_orders_it_cannot_build():
    with pytest.raises(ValueError, match=r"paley_graph: .*1 mod 4"):
        paley_graph(11)
    with pytest.raises(ValueError, match=r"paley_graph: .*prime"):
        paley_graph(45)


def test_latin_square_graph_of_the_noncyclic_square_matches_paley25_parameters():
    g = latin_square_graph(gs.NONCYCLIC_LATIN_5)
    assert _srg_parameters(g) == (25, 12, 5, 6)
    with pytest.raises(ValueError, match=r"latin_square_graph: .*Latin square"):
        latin_square_graph([[0, 1], [0, 1]])


def test_paley_pairs_ground_truth():
    pairs = {p.name: p for p in paley_pairs((9, 25))}
    assert set(pairs) == {"paley9-copy", "paley9-vs-regular", "paley25-copy",
                          "paley25-vs-regular", "paley25-vs-latin5"}
    for p in pairs.values():
        assert p.isomorphic == nx.is_isomorphic(p.first, p.second)
        assert wl_equivalent(p.first, p.second)  # all regular of one degree
    assert pairs["paley9-copy"].isomorphic and not pairs["paley25-vs-latin5"].isomorphic
    assert not pairs["paley25-vs-regular"].isomorphic


def test_regular_pairs_are_non_isomorphic_1wl_equivalent_and_equal_size():
    for p in regular_pairs(4, seed=2):
        assert p.first.number_of_nodes() == p.second.number_of_nodes()
        assert len({d for _, d in p.first.degree} | {d for _, d in p.second.degree}) == 1
        assert not nx.is_isomorphic(p.first, p.second)
        assert wl_equivalent(p.first, p.second)


# --------------------------------------------------------------------------- CSL
def test_csl_has_ten_balanced_classes_of_isomorphic_copies():
    gl = csl_graphs(3, seed=1)
    assert np.bincount(gl.y).tolist() == [3] * 10
    assert set(gl.num_nodes.tolist()) == {41} and len(CSL_SKIPS) == 10
    for c in range(10):
        members = np.flatnonzero(gl.y == c)
        ref = nx.circulant_graph(41, [1, CSL_SKIPS[c]])
        for g in members:
            assert nx.is_isomorphic(gl.to_networkx(g), ref)
    # copies are relabelled, not identical edge lists
    assert not np.array_equal(gl.edges(0), gl.edges(1))
    # every CSL graph is 4-regular on 41 nodes: 1-WL sees one class
    hist = wl_histograms(gl)
    assert (hist == hist[0]).all()
    assert not nx.is_isomorphic(gl.to_networkx(0), gl.to_networkx(3))


# --------------------------------------------------------------------------- containers / cache
def test_graph_list_subset_and_arrays_round_trip():
    gl = counting_graphs(5, seed=0)
    sub = gl.subset([3, 1])
    assert sub.num_nodes.tolist() == gl.num_nodes[[3, 1]].tolist()
    np.testing.assert_array_equal(sub.edges(0), gl.edges(3))
    np.testing.assert_array_equal(sub.y, gl.y[[3, 1]])
    back = GraphList.from_arrays(gl.arrays())
    np.testing.assert_array_equal(back.edge_index, gl.edge_index)
    np.testing.assert_array_equal(back.adjacency(2), gl.adjacency(2))


def test_cache_writes_a_manifest_and_regenerates_on_a_changed_recipe(tmp_path):
    cfg = GraphSetConfig("csl", 2, seed=0)
    a = load_graph_set(cfg, root=tmp_path)
    (folder,) = (tmp_path / "graphs").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "csl" and manifest["n_graphs"] == 20
    b = load_graph_set(cfg, root=tmp_path)
    np.testing.assert_array_equal(a.edge_index, b.edge_index)
    c = load_graph_set(GraphSetConfig("csl", 2, seed=1), root=tmp_path)
    assert not np.array_equal(a.edge_index, c.edge_index)
    assert len(list((tmp_path / "graphs").iterdir())) == 2
    with pytest.raises(ValueError, match=r"GraphSetConfig: `name`"):
        GraphSetConfig("zinc")


def test_permute_graph_validates_the_permutation():
    with pytest.raises(ValueError, match=r"permute_graph: `perm`"):
        gs.permute_graph(3, np.array([[0], [1]]), np.array([0, 0, 1]))


# --------------------------------------------------------------------------- molecules
def test_solubility_sizes_labels_and_classes():
    smi_tr, y_tr, c_tr = load_solubility("train")
    smi_te, y_te, c_te = load_solubility("test")
    assert (len(smi_tr), len(smi_te)) == (1025, 257)
    assert y_tr.shape == (1025,) and np.isfinite(y_tr).all() and np.isfinite(y_te).all()
    assert np.bincount(c_tr).tolist() == [417, 402, 206]
    assert set(c_te.tolist()) == {0, 1, 2}
    # the classes are bins of log S: low < medium < high
    assert y_tr[c_tr == 0].max() < y_tr[c_tr == 1].min() <= y_tr[c_tr == 1].max() < y_tr[c_tr == 2].min()
    with pytest.raises(ValueError, match=r"load_solubility: `split`"):
        load_solubility("val")


def test_freesolv_size_and_labels():
    smiles, y = load_freesolv()
    assert len(smiles) == 642 and y.shape == (642,) and np.isfinite(y).all()
    assert smiles[1] == "CS(=O)(=O)Cl" and y[1] == -4.87  # second row of the shipped CSV


def test_kfold_indices_partition_the_molecules():
    folds = kfold_indices(642, 10, seed=0)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(642))
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 642


def test_to_graph_batches_and_molecule_batches():
    import torch

    gl = counting_graphs(3, seed=0)
    batches = gs.to_graph_batches(gl, dtype=torch.float64)
    assert [b.num_nodes for b in batches] == gl.num_nodes.tolist()
    assert torch.equal(batches[1].edge_index, torch.as_tensor(gl.edges(1)))
    assert batches[2].y.tolist() == [gl.y[2].tolist()] and batches[0].x.dtype == torch.float64
    mols = gs.molecule_batches(["CCO", "c1ccccc1"], [0.5, -1.0])
    assert [m.num_nodes for m in mols] == [3, 6] and [m.num_edges for m in mols] == [4, 12]
    with pytest.raises(ValueError, match=r"molecule_batches: .*same length"):
        gs.molecule_batches(["C"], [1.0, 2.0])
    with pytest.raises(TypeError, match=r"to_graph_batches: `graphs`"):
        gs.to_graph_batches([1, 2])


# --------------------------------------------------------------------------- separation
def _gin_embed(layers: int = 7, width: int = 16, seed: int = 0):
    """A plain-torch GIN (sum aggregation, random float64 weights, sum readout of every
    layer): bounded by 1-WL, and with random weights as strong as 1-WL on small graphs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ws = [(torch.randn(1 if k == 0 else width, width, generator=gen, dtype=torch.float64),
           torch.randn(width, width, generator=gen, dtype=torch.float64) / width**0.5)
          for k in range(layers)]

    def embed(graphs):
        out = []
        for g in graphs:
            h = g.x.to(torch.float64)
            reads = []
            for w1, w2 in ws:
                agg = torch.zeros_like(h).index_add_(0, g.edge_index[1], h[g.edge_index[0]])
                h = torch.tanh(torch.tanh((1.5 * h + agg) @ w1) @ w2)
                reads.append(h.sum(0))
            out.append(torch.cat(reads))
        return torch.stack(out)

    return embed


def test_gin_separates_exactly_the_pairs_1wl_separates_on_small_atlas_graphs():
    """Every pair of atlas graphs with 1..6 nodes (208 graphs, 21528 pairs): a random GIN's
    embeddings differ beyond the permutation-noise threshold iff 1-WL histograms differ."""
    import torch

    graphs = [g for g in nx.graph_atlas_g() if 1 <= g.number_of_nodes() <= 6]
    gl = GraphList.from_networkx(graphs, y=[0] * len(graphs))
    hist = wl_histograms(gl)
    wl_same = (hist[:, None, :] == hist[None, :, :]).all(-1)
    embed = _gin_embed()
    emb = embed(gs.to_graph_batches(gl, dtype=torch.float64))
    rng = np.random.default_rng(0)
    perm_lists = [(int(n), gs.permute_graph(int(n), gl.edges(k), rng.permutation(int(n))))
                  for k, n in enumerate(gl.num_nodes)]
    emb_p = embed(gs.to_graph_batches(GraphList.from_edge_lists(perm_lists, y=[0] * len(graphs)),
                                      dtype=torch.float64))
    noise = float((emb - emb_p).abs().max())
    threshold = 100 * max(noise, 2.2e-16 * float(emb.abs().max()))
    dist = (emb[:, None, :] - emb[None, :, :]).abs().amax(-1).numpy()
    gin_same = dist <= threshold
    assert np.array_equal(gin_same, wl_same)
    assert (~wl_same).sum() > 0 and (wl_same & ~np.eye(len(graphs), dtype=bool)).sum() == 8


def test_separation_follows_1wl_for_gin_and_flags_isomorphic_pairs_as_same():
    embed = _gin_embed()
    two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    same = gs.separation(embed, nx.cycle_graph(6), two_triangles)  # 1-WL-equivalent
    assert not same.distinguished and same.distance <= same.threshold
    diff = gs.separation(embed, nx.cycle_graph(6), nx.path_graph(6))
    assert diff.distinguished and diff.ratio > 1e4
    iso = gs.separation(embed, paley_graph(13), gs.relabel(paley_graph(13), 3))
    assert not iso.distinguished


def test_separation_noise_exposes_a_model_that_is_not_permutation_invariant():
    """Negative control: an embedding that reads node 0's degree depends on the labelling,
    so the relabelled copies of one graph disagree and the measured noise is O(1)."""
    import torch

    def broken(graphs):
        return torch.stack([torch.bincount(g.edge_index[1], minlength=g.num_nodes)[:1]
                            .to(torch.float64) for g in graphs])

    sep = gs.separation(broken, nx.path_graph(7), nx.star_graph(6), n_perms=8)
    assert sep.noise >= 1.0
    with pytest.raises(ValueError, match=r"separation: `embed` must return"):
        gs.separation(lambda gs_: gs_[0].x, nx.path_graph(3), nx.path_graph(3))
