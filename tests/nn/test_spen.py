"""SPEN: ego networks equal networkx's (nodes, hops, inner edges) on a batch; node outputs
equivariant and pooled outputs invariant under permutations of the whole batch (checker, both
dtypes, negative control); size buckets select weights; it separates two triangles from a
hexagon, which GIN (1-WL) cannot."""

import networkx as nx
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.graph import GraphBatch, collate_graphs, from_networkx
from equikit.groups import NodePermutation
from equikit.nn import SPEN, GINConv, SPENLayer, ego_subgraphs, global_pool


def _graphs():
    return [nx.gnp_random_graph(7, 0.35, seed=1), nx.cycle_graph(5), nx.star_graph(4)]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_ego_subgraphs_match_networkx(k):
    graphs = _graphs()
    b = collate_graphs([from_networkx(g) for g in graphs])
    ego = ego_subgraphs(b.edge_index, b.num_nodes, k)
    offset = 0
    for g in graphs:
        for s in g.nodes:
            dist = nx.single_source_shortest_path_length(g, s, cutoff=k)
            sel = ego.sub == s + offset
            got = dict(zip((ego.node[sel] - offset).tolist(), ego.hop[sel].tolist()))
            assert got == dist
            assert ego.size[s + offset] == len(dist)
            # directed edges inside the ego network, as pairs of the same subgraph
            sub_g = g.subgraph(dist)
            e_sel = ego.sub[ego.edge_index[0]] == s + offset
            assert int(e_sel.sum()) == 2 * sub_g.number_of_edges()
            src = ego.node[ego.edge_index[0, e_sel]] - offset
            dst = ego.node[ego.edge_index[1, e_sel]] - offset
            assert all(sub_g.has_edge(u, v) for u, v in zip(src.tolist(), dst.tolist()))
            assert ego.node[ego.root[s + offset]] == s + offset
        offset += g.number_of_nodes()
    assert (ego.sub[ego.edge_index[0]] == ego.sub[ego.edge_index[1]]).all()


def _batch(dtype):
    gen = torch.Generator().manual_seed(0)
    b = collate_graphs([from_networkx(g) for g in _graphs()])
    return GraphBatch(x=torch.randn(b.num_nodes, 3, generator=gen, dtype=dtype), edge_index=b.edge_index,
                      batch=b.batch, num_graphs=b.num_graphs)


def test_spen_equivariance_invariance_and_control(dtype):
    torch.manual_seed(0)
    net = SPEN(3, 8, 4, n_layers=2, k=2, buckets=(3, 5)).to(dtype)
    b = _batch(dtype)
    act, out_act = b.permutation_action(), NodePermutation(b.num_nodes, node_dim=-2)

    def f(d, broken=False, pool=False):
        g = GraphBatch.from_dict(d, num_graphs=3)
        x = g.x + torch.arange(g.num_nodes, dtype=dtype).unsqueeze(-1) / 10 if broken else g.x
        out = net(x, g.edge_index)
        return global_pool(out, g.batch, g.num_graphs) if pool else out

    assert_equivariant(f, b.to_dict(), act, out_act)
    assert_equivariant(lambda d: f(d, pool=True), b.to_dict(), act)
    bad = equivariance_error(lambda d: f(d, broken=True), b.to_dict(), act, out_act)
    assert not bad.passed() and bad.rel_max > 1e-3


def test_size_buckets_select_weights():
    torch.manual_seed(0)
    b = _batch(torch.float64)
    ego = ego_subgraphs(b.edge_index, b.num_nodes, 1)
    layer = SPENLayer(3, 4, buckets=(3,)).double()
    h = torch.randn(ego.num_pairs, 3, dtype=torch.float64)
    out = layer(h, ego)
    with torch.no_grad():
        layer.weight[1].add_(1.0)  # subgraphs with more than 3 nodes
    changed = (layer(h, ego) - out).abs().amax(-1) > 0
    big = ego.size[ego.sub] > 3
    assert big.any() and (~big).any()
    assert torch.equal(changed, big)


def _two_triangles_and_hexagon():
    tri = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    return from_networkx(tri), from_networkx(nx.cycle_graph(6))


def test_spen_separates_graphs_that_1wl_cannot():
    torch.manual_seed(0)
    g1, g2 = _two_triangles_and_hexagon()
    zeros = torch.zeros(6, dtype=torch.long)
    gin = torch.nn.ModuleList([GINConv(1, 8), GINConv(8, 8)]).double()

    def run_gin(g):
        x = g.x.double()
        for layer in gin:
            x = layer(x, g.edge_index)
        return global_pool(x, zeros, 1)

    assert torch.allclose(run_gin(g1), run_gin(g2), atol=1e-12)  # 1-WL: same colours
    for k in (1, 2):
        net = SPEN(1, 8, 4, k=k).double()
        a = global_pool(net(g1.x.double(), g1.edge_index), zeros, 1)
        b = global_pool(net(g2.x.double(), g2.edge_index), zeros, 1)
        assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_spen_validation():
    with pytest.raises(ValueError, match=r"SPEN: `x` must be \(N, 3\)"):
        SPEN(3, 8, 4)(torch.randn(4, 2), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="buckets"):
        SPENLayer(3, 4, buckets=(5, 3))
    with pytest.raises(ValueError, match=r"`edge_index` must be an integer tensor \(2, E\)"):
        ego_subgraphs(torch.zeros(2, 3), 4)
