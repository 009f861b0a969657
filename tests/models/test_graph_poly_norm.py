"""GraphModel(layer="poly", poly_norm=True): the polynomial features are standardised
(BatchNorm1d without affine parameters) before they join the atom/bond features; the model
stays permutation invariant (graph task) and equivariant (node task) in training and eval
mode, both dtypes, with a negative control; eval mode is batch independent; tiny batches
(one node, no edges) train."""

import networkx as nx
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.graph import GraphBatch, collate_graphs, from_networkx
from equikit.groups import NodePermutation
from equikit.models import GraphModel, GraphModelConfig


def _batch(dtype):
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for k, n in enumerate((6, 4, 7)):
        g = from_networkx(nx.gnp_random_graph(n, 0.5, seed=k))
        graphs.append(GraphBatch(x=torch.randn(n, 3, generator=gen, dtype=dtype), edge_index=g.edge_index,
                                 edge_attr=torch.randn(g.edge_index.shape[1], 2, generator=gen, dtype=dtype)))
    return collate_graphs(graphs)


def _model(dtype, task="graph", norm=True):
    torch.manual_seed(0)
    cfg = GraphModelConfig(in_channels=3, out_channels=2, hidden=8, n_layers=2, layer="poly", edge_dim=2,
                           pool=("sum", "max"), task=task, poly_norm=norm)
    return GraphModel(cfg).to(dtype)


def _f(model, broken=False):
    def f(d):
        g = GraphBatch.from_dict(d, num_graphs=3)
        if broken:  # node ids as features: depends on the labelling
            g = GraphBatch(x=g.x + torch.arange(g.num_nodes, dtype=g.x.dtype).unsqueeze(-1) / 7,
                           edge_index=g.edge_index, edge_attr=g.edge_attr, batch=g.batch, num_graphs=3)
        return model(g)
    return f


@pytest.mark.parametrize("training", [True, False])
def test_normalised_poly_is_invariant_and_equivariant(training, dtype):
    b = _batch(dtype)
    act = b.permutation_action()
    for task, out_act in (("graph", None), ("node", NodePermutation(b.num_nodes, node_dim=-2))):
        model = _model(dtype, task)
        model(b)  # one training-mode pass moves the running statistics off their init
        model.train(training)
        assert_equivariant(_f(model), b.to_dict(), act, out_act)
        bad = equivariance_error(_f(model, broken=True), b.to_dict(), act, out_act)
        assert not bad.passed(), (task, training)


def _embed_input(model, b):
    seen = []
    handle = model.embed.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    model(b)
    handle.remove()
    return seen[0][:, 3:]  # the polynomial node features (after the 3 input features)


def test_features_reaching_the_embedding_are_standardised():
    b = _batch(torch.float64)
    feats = _embed_input(_model(torch.float64), b)
    raw = _embed_input(_model(torch.float64, norm=False), b)  # the log1p counts themselves
    assert (raw.std(0) > 0).sum() >= 5
    # BatchNorm in training: (v - batch mean) / sqrt(biased batch var + eps), eps = 1e-5
    expected = (raw - raw.mean(0)) / (raw.var(0, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(feats, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(feats.mean(0), torch.zeros(feats.shape[1], dtype=torch.float64), atol=1e-12, rtol=0)
    # negative control: without poly_norm the features are raw log1p counts (clearly off-centre)
    assert raw.mean(0).max() > 0.5


def test_eval_mode_is_batch_independent():
    b = _batch(torch.float64)
    model = _model(torch.float64)
    for _ in range(3):
        model(b)
    model.eval()
    together = model(b)
    for k, g in enumerate(b.unbatch()):
        torch.testing.assert_close(model(g)[0], together[k], atol=1e-10, rtol=1e-10)


def test_tiny_batches_train():
    model = _model(torch.float64)
    one = GraphBatch(x=torch.randn(1, 3, dtype=torch.float64), edge_index=torch.zeros(2, 0, dtype=torch.long),
                     edge_attr=torch.zeros(0, 2, dtype=torch.float64))
    out = model(one)
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    out.sum().backward()


def test_poly_norm_must_be_a_bool():
    with pytest.raises(TypeError, match=r"GraphModelConfig: `poly_norm` must be a bool, got str 'yes'"):
        GraphModelConfig(in_channels=3, layer="poly", poly_norm="yes")
