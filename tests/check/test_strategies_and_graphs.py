"""Hypothesis strategies, and the checker on a single graph given by an edge list (an action
that takes one element at a time), with a negative control."""

import pytest
import torch
from hypothesis import given

from equikit.check import assert_equivariant, equivariance_error
from equikit.check.strategies import group_elements, point_clouds
from equikit.groups import E, FeaturePermutation, NodePermutation, O, PointCloud


@given(group_elements(O(3), batch=3))
def test_group_elements_strategy_draws_orthogonal_batches(g):
    assert g.shape == (3, 3, 3)
    assert torch.allclose(g @ g.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


@given(point_clouds((2, 9), batch=2), group_elements(E(3)))
def test_centroid_property_with_strategies(x, g):
    act = PointCloud(E(3))
    assert torch.allclose(act(g, x).mean(-2), act(g, x.mean(-2)))
    assert_equivariant(lambda p: p.mean(-2), x, act, act, elements=g.unsqueeze(0))


def _graph(n=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=gen) < 0.35
    adj = adj | adj.T
    adj.fill_diagonal_(False)
    edge_index = adj.nonzero().T.contiguous()
    return {"x": torch.randn(n, 4, generator=gen, dtype=torch.float64), "edge_index": edge_index}


def message_passing(data, broken=False):
    """Two rounds of sum aggregation over incoming edges (edge_index[0] -> edge_index[1])."""
    x, (src, dst) = data["x"], data["edge_index"]
    w = torch.linspace(-1, 1, 16, dtype=x.dtype).reshape(4, 4)
    if broken:  # node ids as features: depends on the labelling
        x = x + torch.arange(x.shape[0], dtype=x.dtype).unsqueeze(-1) / x.shape[0]
    for _ in range(2):
        agg = torch.zeros_like(x).index_add_(0, dst, x[src])
        x = torch.tanh((x + agg) @ w)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_index_graphs_one_element_at_a_time(dtype):
    data = _graph()
    data["x"] = data["x"].to(dtype)
    act = NodePermutation(9, nodes={"x": -2}, edge_index="edge_index")
    out_act = NodePermutation(9, node_dim=-2)
    assert not act.batchable and out_act.batchable
    report = assert_equivariant(message_passing, data, act, out_act)
    assert report.n_rows == 1
    bad = equivariance_error(lambda d: message_passing(d, broken=True), data, act, out_act)
    assert not bad.passed() and bad.rel_max > 1e-2


def test_negative_dims_are_required_for_node_and_feature_dims():
    with pytest.raises(ValueError, match="negative"):
        NodePermutation(4, node_dim=0)
    with pytest.raises(ValueError, match="negative"):
        NodePermutation(4, nodes={"x": 1})
    with pytest.raises(ValueError, match="negative"):
        FeaturePermutation(4, dim=1)


def test_chunk_size_bounds_and_validation():
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    act = PointCloud(E(3))
    full = equivariance_error(lambda p: p.mean(-2), x, act, act, n_samples=7)
    chunked = equivariance_error(lambda p: p.mean(-2), x, act, act, n_samples=7, chunk_size=3)
    # same elements, same errors up to the rounding of differently blocked GEMMs
    assert torch.allclose(full.per_element_rel, chunked.per_element_rel, rtol=0, atol=1e-14)
    assert full.passed() and chunked.passed()
    with pytest.raises(ValueError, match="chunk_size"):
        equivariance_error(lambda p: p, x, act, chunk_size=0)
