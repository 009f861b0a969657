"""GraphModel: graph outputs invariant and node outputs equivariant under permutations of all
nodes of a batch (graphs interleave), every backbone, both dtypes, with a negative control;
batch independence; a short fit; config validation."""

import networkx as nx
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.graph import GraphBatch, collate_graphs, from_networkx, from_smiles
from equikit.groups import NodePermutation
from equikit.models import GraphModel, GraphModelConfig
from equikit.models.graph import LAYERS


def _batch(dtype, edge_dim=2):
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for k, n in enumerate((6, 4, 7)):
        g = from_networkx(nx.gnp_random_graph(n, 0.45, seed=k))
        e = g.edge_index.shape[1]
        graphs.append(GraphBatch(x=torch.randn(n, 3, generator=gen, dtype=dtype), edge_index=g.edge_index,
                                 edge_attr=torch.randn(e, edge_dim, generator=gen, dtype=dtype)))
    return collate_graphs(graphs)


def _config(layer, task="graph"):
    edge_dim = 2 if layer in ("gin", "poly", "ppgn", "ign") else None
    return GraphModelConfig(in_channels=3, out_channels=2, hidden=8, n_layers=2, layer=layer,
                            edge_dim=edge_dim, pool=("sum", "max"), task=task, spen_k=1)


def _f(model, num_graphs=3, broken=False):
    def f(d):
        g = GraphBatch.from_dict(d, num_graphs=num_graphs)
        if broken:  # node ids as features: depends on the labelling
            g = GraphBatch(x=g.x + torch.arange(g.num_nodes, dtype=g.x.dtype).unsqueeze(-1) / 7,
                           edge_index=g.edge_index, edge_attr=g.edge_attr, batch=g.batch, num_graphs=num_graphs)
        if not model.config.edge_dim:
            g = GraphBatch(x=g.x, edge_index=g.edge_index, batch=g.batch, num_graphs=num_graphs)
        return model(g)
    return f


@pytest.mark.parametrize("layer", LAYERS)
def test_graph_outputs_are_invariant(layer, dtype):
    torch.manual_seed(0)
    model = GraphModel(_config(layer)).to(dtype)
    b = _batch(dtype)
    act = b.permutation_action()
    assert_equivariant(_f(model), b.to_dict(), act)
    bad = equivariance_error(_f(model, broken=True), b.to_dict(), act)
    assert not bad.passed() and bad.rel_max > 1e-4


@pytest.mark.parametrize("aggr", ["mean", "max", "softmax"])
def test_gin_with_other_aggregations_is_invariant(aggr, dtype):
    torch.manual_seed(0)
    cfg = GraphModelConfig(in_channels=3, out_channels=2, hidden=8, n_layers=2, layer="gin", edge_dim=2, aggr=aggr)
    model = GraphModel(cfg).to(dtype)
    b = _batch(dtype)
    assert_equivariant(_f(model), b.to_dict(), b.permutation_action())
    assert not equivariance_error(_f(model, broken=True), b.to_dict(), b.permutation_action()).passed()


@pytest.mark.parametrize("layer", ["gin", "ppgn", "ign", "spen", "poly"])
def test_node_outputs_are_equivariant(layer, dtype):
    torch.manual_seed(0)
    model = GraphModel(_config(layer, task="node")).to(dtype)
    b = _batch(dtype)
    act, out_act = b.permutation_action(), NodePermutation(b.num_nodes, node_dim=-2)
    assert_equivariant(_f(model), b.to_dict(), act, out_act)
    bad = equivariance_error(_f(model, broken=True), b.to_dict(), act, out_act)
    assert not bad.passed()


@pytest.mark.parametrize("layer", LAYERS)
def test_batch_independence(layer):
    """A graph's output does not depend on the other graphs in its batch (padding, dense
    sizes and LCM-free readouts all respect graph boundaries)."""
    torch.manual_seed(0)
    model = GraphModel(_config(layer)).double()
    b = _batch(torch.float64)
    parts = b.unbatch()
    if not model.config.edge_dim:
        strip = lambda g: GraphBatch(x=g.x, edge_index=g.edge_index, batch=g.batch, num_graphs=g.num_graphs)  # noqa: E731
        b, parts = strip(b), [strip(p) for p in parts]
    together = model(b)
    for k, g in enumerate(parts):
        assert torch.allclose(model(g)[0], together[k], atol=1e-10)


def test_short_fit_on_molecules():
    """A few Adam steps on 6 molecules reduce the training loss (the model is trainable end to end)."""
    torch.manual_seed(0)
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "C1CC1", "CCN(CC)CC", "O=C=O"]
    graphs = [from_smiles(s, y=float(len(s))) for s in smiles]
    b = collate_graphs(graphs)
    for layer in ("gin",):
        model = GraphModel(GraphModelConfig(in_channels=b.x.shape[1], edge_dim=b.edge_attr.shape[1],
                                            hidden=16, n_layers=2, layer=layer, pool="mean"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            loss = (model(b).squeeze(-1) - b.y).pow(2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], (layer, losses[0], losses[-1])


def test_config_and_input_validation():
    with pytest.raises(ValueError, match="`layer` must be one of"):
        GraphModelConfig(in_channels=3, layer="transformer")
    with pytest.raises(ValueError, match="`pool`"):
        GraphModelConfig(in_channels=3, pool="median")
    with pytest.raises(ValueError, match="`aggr`"):
        GraphModelConfig(in_channels=3, aggr="median")
    with pytest.raises(ValueError, match="`task`"):
        GraphModelConfig(in_channels=3, task="edge")
    with pytest.raises(TypeError, match="GraphModelConfig"):
        GraphModel({"in_channels": 3})
    model = GraphModel(GraphModelConfig(in_channels=3, edge_dim=2))
    b = _batch(torch.float32)
    with pytest.raises(TypeError, match="GraphBatch"):
        model(b.to_dict())
    with pytest.raises(ValueError, match="in_channels=4"):
        GraphModel(GraphModelConfig(in_channels=4))(b)
    with pytest.raises(ValueError, match=r"edge_dim=2 but batch\.edge_attr has dim None"):
        model(GraphBatch(x=b.x, edge_index=b.edge_index, batch=b.batch))
