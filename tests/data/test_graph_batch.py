"""GraphBatch: collation / unbatching round trips, dense helpers under unsorted batches,
PyG / networkx / RDKit conversions, the checker glue, and input validation."""

import networkx as nx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.graph import (
    ATOM_FEATURE_DIM,
    ATOM_FEATURES,
    BOND_FEATURE_DIM,
    GraphBatch,
    collate_graphs,
    from_dense_batch,
    from_networkx,
    from_smiles,
    node_slots,
    to_dense_adjacency,
    to_dense_batch,
    to_networkx,
)
from equikit.groups import NodePermutation


def _random_graph(n, p=0.4, seed=0, fe=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=gen) < p
    adj.fill_diagonal_(False)
    ei = adj.nonzero().T.contiguous()
    return GraphBatch(
        x=torch.randn(n, 3, generator=gen, dtype=dtype), edge_index=ei,
        edge_attr=torch.randn(ei.shape[1], fe, generator=gen, dtype=dtype),
        pos=torch.randn(n, 3, generator=gen, dtype=dtype), y=torch.randn(1, 2, generator=gen, dtype=dtype))


def test_collate_offsets_and_unbatch_round_trip():
    graphs = [_random_graph(n, seed=n) for n in (3, 5, 1, 4)]
    b = collate_graphs(graphs).validate()
    assert b.num_graphs == 4 and b.num_nodes == 13
    assert b.node_counts().tolist() == [3, 5, 1, 4]
    assert b.edge_counts().tolist() == [g.num_edges for g in graphs]
    # edges of graph 1 are shifted by the 3 nodes of graph 0
    e0 = graphs[0].num_edges
    assert torch.equal(b.edge_index[:, e0 : e0 + graphs[1].num_edges], graphs[1].edge_index + 3)
    for g, h in zip(graphs, b.unbatch()):
        for key in ("x", "edge_index", "edge_attr", "pos", "y", "batch"):
            assert torch.equal(getattr(g, key), getattr(h, key)), key
    # collating batches: graph ids offset too
    bb = collate_graphs([b, b])
    assert bb.num_graphs == 8 and bb.batch.max() == 7


def test_unbatch_handles_interleaved_nodes_and_node_level_y():
    b = collate_graphs([_random_graph(3, seed=1), _random_graph(4, seed=2)])
    b = GraphBatch(x=b.x, edge_index=b.edge_index, batch=b.batch, y=torch.arange(7.0).unsqueeze(-1))
    g = torch.tensor([4, 0, 6, 1, 3, 5, 2])  # node i -> g[i]
    act = b.permutation_action(with_y=True, node_level_y=True)
    pb = GraphBatch.from_dict(act(g, b.to_dict(with_y=True)), num_graphs=2).validate()
    assert pb.batch.tolist() != sorted(pb.batch.tolist())  # graphs interleave
    for orig, perm in zip(b.unbatch(), pb.unbatch()):
        # same graph up to a relabelling: sorted node-level y and edge multiset of y-labels agree
        assert torch.equal(orig.y.sort(0).values, perm.y.sort(0).values)
        lab = lambda h: sorted(map(tuple, h.y[h.edge_index].squeeze(-1).T.tolist()))  # noqa: E731
        assert lab(orig) == lab(perm)


def test_node_slots_and_dense_round_trip_unsorted():
    batch = torch.tensor([2, 0, 2, 1, 0, 2])
    assert node_slots(batch).tolist() == [0, 0, 1, 0, 1, 2]
    x = torch.randn(6, 4)
    dense, mask = to_dense_batch(x, batch)
    assert dense.shape == (3, 3, 4) and mask.sum().item() == 6
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert torch.equal(dense[2, 1], x[2]) and torch.equal(dense[1, 1], torch.zeros(4))
    assert torch.equal(from_dense_batch(dense, batch), x)
    with pytest.raises(ValueError, match="n_max"):
        to_dense_batch(x, batch, n_max=2)


def test_dense_adjacency_matches_per_graph_networkx():
    graphs = [_random_graph(n, seed=10 + n) for n in (4, 6, 2)]
    b = collate_graphs(graphs)
    adj = to_dense_adjacency(b.edge_index, b.batch, dtype=torch.float64)
    assert adj.shape == (3, 6, 6)
    for k, g in enumerate(graphs):
        ref = torch.as_tensor(nx.to_numpy_array(to_networkx(g), nodelist=range(g.num_nodes)))
        n = g.num_nodes
        assert torch.equal(adj[k, :n, :n], ref)
        assert adj[k, n:].abs().sum() == 0 and adj[k, :, n:].abs().sum() == 0
    ea = to_dense_adjacency(b.edge_index, b.batch, edge_attr=b.edge_attr)
    src, dst = graphs[1].edge_index[:, 0].tolist()
    assert torch.equal(ea[1, src, dst], graphs[1].edge_attr[0])


def test_networkx_round_trip_and_attributes():
    g = nx.cycle_graph(5)
    for i in g.nodes:
        g.nodes[i]["h"] = [float(i), 1.0]
    for u, v in g.edges:
        g.edges[u, v]["w"] = float(u + v)
    gb = from_networkx(g, node_attrs=["h"], edge_attrs=["w"], y=3.0)
    assert gb.x.shape == (5, 2) and gb.num_edges == 10 and gb.edge_attr.shape == (10, 1)
    assert gb.y.shape == (1,)
    # both directions carry the undirected edge's weight
    for (u, v), w in zip(gb.edge_index.T.tolist(), gb.edge_attr.squeeze(-1).tolist()):
        assert w == u + v
    back = to_networkx(gb, undirected=True)
    assert nx.is_isomorphic(back, g)
    with pytest.raises(ValueError, match="no attribute"):
        from_networkx(g, node_attrs=["missing"])


def test_pyg_round_trip():
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Batch, Data

    graphs = [_random_graph(n, seed=n) for n in (3, 4)]
    b = collate_graphs(graphs)
    pyg = b.to_pyg()
    assert isinstance(pyg, Batch) and pyg.num_graphs == 2
    assert torch.equal(pyg.edge_index, b.edge_index) and torch.equal(pyg.batch, b.batch)
    back = GraphBatch.from_pyg(pyg)
    for key in ("x", "edge_index", "edge_attr", "pos", "y", "batch"):
        assert torch.equal(getattr(back, key), getattr(b, key)), key
    assert back.num_graphs == 2
    single = GraphBatch.from_pyg(Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3))
    assert single.x.shape == (3, 1) and single.num_graphs == 1


def test_smiles_features():
    g = from_smiles("c1ccccc1O", y=1.5)
    assert g.num_nodes == 7 and g.num_edges == 14
    assert g.x.shape == (7, ATOM_FEATURE_DIM) and g.edge_attr.shape == (14, BOND_FEATURE_DIM)
    blocks = {k: len(v) for k, v in ATOM_FEATURES.items()}
    starts = dict(zip(blocks, torch.cumsum(torch.tensor([0, *blocks.values()]), 0).tolist()))
    an = g.x[:, starts["atomic_num"] : starts["atomic_num"] + blocks["atomic_num"]]
    carbon, oxygen = ATOM_FEATURES["atomic_num"].index(6), ATOM_FEATURES["atomic_num"].index(8)
    assert an[:, carbon].sum() == 6 and an[:, oxygen].sum() == 1
    assert (an.sum(-1) == 1).all()  # each block is one-hot
    arom = g.x[:, starts["aromatic"]]
    assert arom.tolist() == [1.0] * 6 + [0.0]
    hs = g.x[:, starts["num_hs"] : starts["num_hs"] + blocks["num_hs"]].argmax(-1)
    assert hs.tolist() == [1, 1, 1, 1, 1, 0, 1]  # 5 CH, the C-O carbon, the OH
    # bond type: 6 aromatic ring bonds (both directions) and one single C-O bond
    btype = g.edge_attr[:, :5].argmax(-1)
    assert (btype == 3).sum() == 12 and (btype == 0).sum() == 2
    assert g.edge_attr[:, 6].sum() == 12  # in ring
    assert from_smiles("CC", add_hs=True).num_nodes == 8
    with pytest.raises(ValueError, match="could not parse"):
        from_smiles("C1CC(")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_permutation_action_with_the_checker(dtype):
    b = collate_graphs([_random_graph(4, seed=3), _random_graph(5, seed=4)]).to(dtype=dtype)
    act = b.permutation_action()
    out_act = NodePermutation(b.num_nodes, node_dim=-2)

    def layer(d, broken=False):
        g = GraphBatch.from_dict(d, num_graphs=2)
        src, dst = g.edge_index
        msg = g.x[src] * g.edge_attr[:, :1]
        if broken:  # node ids as messages (edge ids would be fine: edges keep their order)
            msg = msg + src.to(dtype).unsqueeze(-1)
        agg = torch.zeros_like(g.x).index_add_(0, dst, msg)
        pooled = torch.zeros(g.num_graphs, 3, dtype=dtype).index_add_(0, g.batch, g.x)
        return g.x + agg + pooled[g.batch]

    assert_equivariant(layer, b.to_dict(), act, out_act)
    bad = equivariance_error(lambda d: layer(d, broken=True), b.to_dict(), act, out_act)
    assert not bad.passed()


def test_to_moves_floats_only():
    b = _random_graph(3).to(dtype=torch.float32)
    assert b.x.dtype == torch.float32 and b.edge_index.dtype == torch.long
    assert b.to("cpu").x.device.type == "cpu"


def test_validation_messages():
    with pytest.raises(ValueError, match=r"GraphBatch: `x` must be \(N, F\)"):
        GraphBatch(x=torch.ones(3), edge_index=torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        GraphBatch(x=torch.ones(3, 1), edge_index=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        GraphBatch(x=torch.ones(3, 1), edge_index=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="edge_attr"):
        GraphBatch(x=torch.ones(3, 1), edge_index=torch.zeros(2, 2, dtype=torch.long),
                   edge_attr=torch.ones(3, 1))
    with pytest.raises(ValueError, match="outside"):
        GraphBatch(x=torch.ones(3, 1), edge_index=torch.tensor([[0], [3]])).validate()
    with pytest.raises(ValueError, match="different graphs"):
        GraphBatch(x=torch.ones(2, 1), edge_index=torch.tensor([[0], [1]]),
                   batch=torch.tensor([0, 1])).validate()
    with pytest.raises(ValueError, match="non-empty"):
        collate_graphs([])
    with pytest.raises(TypeError, match="GraphBatch"):
        collate_graphs([{"x": 1}])
    g = _random_graph(3)
    with pytest.raises(ValueError, match="edge_attr"):
        collate_graphs([g, GraphBatch(x=g.x, edge_index=g.edge_index, pos=g.pos, y=g.y)])


def test_dense_helpers_match_torch_geometric():
    utils = pytest.importorskip("torch_geometric.utils")
    b = collate_graphs([_random_graph(n, seed=20 + n) for n in (3, 6, 4)])
    dense, mask = to_dense_batch(b.x, b.batch)
    ref, ref_mask = utils.to_dense_batch(b.x, b.batch)
    assert torch.equal(dense, ref) and torch.equal(mask, ref_mask)
    adj = to_dense_adjacency(b.edge_index, b.batch, dtype=torch.float32)
    assert torch.equal(adj, utils.to_dense_adj(b.edge_index, b.batch))
    ea = to_dense_adjacency(b.edge_index, b.batch, edge_attr=b.edge_attr)
    assert torch.allclose(ea, utils.to_dense_adj(b.edge_index, b.batch, edge_attr=b.edge_attr))


@given(st.lists(st.tuples(st.integers(1, 7), st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=5))
def test_collate_unbatch_dense_round_trips_property(specs):
    """Any list of graphs (sizes 1..7, any density, all with or all without edge features)
    survives collate -> unbatch and dense padding -> back; a node permutation of the batch
    keeps every graph's dense adjacency up to relabelling (same sorted degrees, same edges)."""
    with_attr = specs[0][2]
    graphs = []
    for k, (n, p, _) in enumerate(specs):
        g = _random_graph(n, p=p, seed=k)
        graphs.append(g if with_attr else GraphBatch(x=g.x, edge_index=g.edge_index, y=g.y))
    b = collate_graphs(graphs).validate()
    for g, h in zip(graphs, b.unbatch()):
        assert torch.equal(g.x, h.x) and torch.equal(g.edge_index, h.edge_index)
    dense, mask = to_dense_batch(b.x, b.batch, b.num_graphs)
    assert torch.equal(from_dense_batch(dense, b.batch), b.x)
    assert mask.sum(1).tolist() == [g.num_nodes for g in graphs]
    perm = torch.randperm(b.num_nodes, generator=torch.Generator().manual_seed(len(specs)))
    pb = GraphBatch.from_dict(b.permutation_action()(perm, b.to_dict()), num_graphs=b.num_graphs).validate()
    adj = to_dense_adjacency(b.edge_index, b.batch, num_graphs=b.num_graphs)
    padj = to_dense_adjacency(pb.edge_index, pb.batch, num_graphs=pb.num_graphs)
    assert torch.equal(adj.sum(-1).sort(-1).values, padj.sum(-1).sort(-1).values)
    assert torch.equal(adj.sum((1, 2)), padj.sum((1, 2)))
