"""Equivariant polynomial features: cycle counts equal brute-force / networkx counts on random
graphs (padded, batched); contractions equal matrix-power formulas; checker tests on dense
padded batches in both dtypes with a negative control."""

import itertools

import networkx as nx
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.graph import collate_graphs, from_networkx, to_dense_adjacency, to_dense_batch
from equikit.groups import NodePermutation
from equikit.nn import PolynomialFeatures, contract_pattern, cycle_counts


def _random_graphs(seed=0):
    return [nx.gnp_random_graph(n, p, seed=seed + k) for k, (n, p) in
            enumerate([(8, 0.5), (6, 0.7), (9, 0.35), (5, 0.9), (7, 0.0)])]


def _four_cycles_brute(g):
    """4-cycles as edge sets by enumerating ordered 4-tuples of distinct nodes."""
    cycles = set()
    for a, b, c, d in itertools.permutations(g.nodes, 4):
        if g.has_edge(a, b) and g.has_edge(b, c) and g.has_edge(c, d) and g.has_edge(d, a):
            cycles.add(frozenset(frozenset(e) for e in ((a, b), (b, c), (c, d), (d, a))))
    return cycles


def _dense(graphs, dtype):
    b = collate_graphs([from_networkx(g) for g in graphs])
    adj = to_dense_adjacency(b.edge_index, b.batch, num_graphs=b.num_graphs, dtype=dtype)
    _, mask = to_dense_batch(b.x, b.batch, b.num_graphs)
    return adj, mask


def test_cycle_counts_match_exact_counts(dtype):
    graphs = _random_graphs()
    adj, mask = _dense(graphs, dtype)
    c = cycle_counts(adj, mask)
    for k, g in enumerate(graphs):
        n = g.number_of_nodes()
        tri = nx.triangles(g)
        assert c["triangles"][k, :n].tolist() == [float(tri[i]) for i in range(n)]
        assert c["num_triangles"][k].item() == sum(tri.values()) / 3
        cycles = _four_cycles_brute(g)
        per_node = [sum(1 for cyc in cycles if any(i in e for e in cyc)) for i in range(n)]
        assert c["four_cycles"][k, :n].tolist() == [float(v) for v in per_node]
        assert c["num_four_cycles"][k].item() == len(cycles)
        nx_cycles = [cyc for cyc in nx.simple_cycles(g, length_bound=4) if len(cyc) == 4]
        assert len(nx_cycles) == len(cycles)  # the brute force agrees with networkx
        for i, j in itertools.product(range(n), repeat=2):
            on_edge = sum(1 for cyc in cycles if frozenset((i, j)) in cyc) if g.has_edge(i, j) else 0
            assert c["edge_four_cycles"][k, i, j].item() == on_edge
            tri_edge = len(set(g[i]) & set(g[j])) if g.has_edge(i, j) else 0
            assert c["edge_triangles"][k, i, j].item() == tri_edge
        # padding stays zero
        assert c["triangles"][k, n:].abs().sum() == 0


def test_contractions_equal_matrix_power_formulas():
    adj, mask = _dense(_random_graphs(3), torch.float64)
    a2, d = adj @ adj, adj.sum(-1)
    a4 = a2 @ a2
    got = contract_pattern(adj, [(0, 1), (1, 2), (2, 3), (3, 0)], out=[0], mask=mask)
    assert torch.equal(got, a4.diagonal(dim1=1, dim2=2))
    assert torch.equal(contract_pattern(adj, [(0, 1)], out=[0], mask=mask), d)
    assert torch.equal(contract_pattern(adj, [(0, 2), (2, 1)], out=[0, 1], mask=mask), a2)
    assert torch.equal(contract_pattern(adj, [(0, 1), (1, 2), (2, 0)], out=[], mask=mask),
                       (a2 @ adj).diagonal(dim1=1, dim2=2).sum(-1))
    # a vertex in no edge ranges over the real nodes only: out-degree times graph size
    sizes = mask.sum(-1, keepdim=True).to(torch.float64)
    assert torch.equal(contract_pattern(adj, [(0, 1)], out=[0], num_vertices=3, mask=mask), d * sizes * mask)


def _io(n):
    act_in = NodePermutation(n, nodes={"mask": -1}, adjacency=("adj",))
    act_out = NodePermutation(n, nodes={"node": -2}, adjacency=("pair",))
    return act_in, act_out


@pytest.mark.parametrize("log", [True, False])
def test_polynomial_features_equivariance(log, dtype):
    graphs = _random_graphs(7)
    adj, mask = _dense(graphs, dtype)
    feats = PolynomialFeatures(degree=4, log=log)
    n = adj.shape[1]
    act_in, act_out = _io(n)

    def f(d, broken=False):
        a = d["adj"]
        if broken:  # an extra edge between slots 0 and 1: depends on the labelling
            a = a.clone()
            a[:, 0, 1] += 1.0
            a[:, 1, 0] += 1.0
        node, pair = feats(a, d["mask"])
        return {"node": node, "pair": pair.movedim(-1, 1)}

    data = {"adj": adj, "mask": mask}
    assert_equivariant(f, data, act_in, act_out)
    bad = equivariance_error(lambda d: f(d, broken=True), data, act_in, act_out)
    assert not bad.passed() and bad.rel_max > 1e-3
    node, pair = feats(adj, mask)
    assert node.shape[-1] == feats.num_node_features == 9 and pair.shape[-1] == feats.num_pair_features == 8


def test_lower_degree_catalogue_and_validation():
    assert PolynomialFeatures(degree=2).num_node_features == 2
    assert PolynomialFeatures(degree=3).num_pair_features == 5
    with pytest.raises(ValueError, match="degree"):
        PolynomialFeatures(degree=5)
    with pytest.raises(ValueError, match=r"`adj` must be a floating tensor \(B, n, n\)"):
        cycle_counts(torch.ones(3, 3))
    with pytest.raises(ValueError, match="vertex ids"):
        contract_pattern(torch.ones(1, 3, 3), [(0, 5)], num_vertices=3)
