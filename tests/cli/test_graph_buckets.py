"""Size-bucketed batches (``bucket_order``, ``graph_batches(..., bucket=True)``): they
partition the graphs into contiguous size ranges, repeat with the seed, and leave every
model's per-graph predictions unchanged (the dense padding of PPGN included); a model that
mixes graphs of one batch is caught by the same comparison (negative control)."""

import itertools

import numpy as np
import pytest
import torch

from equikit.cli import train_graph as tg
from equikit.data.graph import GraphBatch
from equikit.train import TrainConfig

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _sizes(n=53, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(3, 30, size=n))


def test_bucket_order_partitions_into_contiguous_size_ranges():
    sizes = _sizes()
    chunks = tg.bucket_order(sizes, 7, torch.Generator().manual_seed(0))
    flat = torch.cat(chunks)
    assert sorted(flat.tolist()) == list(range(len(sizes)))  # every graph exactly once
    assert sorted(len(c) for c in chunks) == [4] + [7] * 7  # 53 = 7 * 7 + 4
    ranges = sorted((int(sizes[c].min()), int(sizes[c].max())) for c in chunks)
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert hi <= lo  # size ranges of different batches overlap at most at a shared size
    # without a generator: sorted by size, ties by index, batches in order
    plain = torch.cat(tg.bucket_order(sizes, 7))
    assert plain.tolist() == sorted(range(len(sizes)), key=lambda i: (int(sizes[i]), i))


def test_bucket_order_repeats_with_the_seed_and_shuffles_batches_and_ties():
    sizes = _sizes()

    def run(seed):
        return [c.tolist() for c in tg.bucket_order(sizes, 7, torch.Generator().manual_seed(seed))]

    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert sorted(map(sorted, a)) != sorted(map(sorted, c))  # ties split differently
    assert [sizes[x].min().item() for x in a] != sorted(sizes[x].min().item() for x in a)  # order shuffled


def test_bucket_order_refuses_bad_input():
    with pytest.raises(ValueError, match=r"bucket_order: `sizes` must be a 1-d sequence of ints"):
        tg.bucket_order(torch.ones(4), 2)
    with pytest.raises(ValueError, match=r"bucket_order: `batch_size` must be an int >= 1, got 0"):
        tg.bucket_order([3, 4], 0)


@pytest.fixture(scope="module")
def molecules():
    """40 solubility molecules (3..34 atoms, bond features) tagged with their index in ``y``."""
    data = tg.load_graph_data("solubility", size=40, dtype=torch.float64)
    graphs = [GraphBatch(x=g.x, edge_index=g.edge_index, edge_attr=g.edge_attr, y=torch.tensor([float(i)]))
              for i, g in enumerate(data.train)]
    return data, graphs


def _predictions(model, graphs, dtype, **batching):
    """Per-graph outputs ``(G, out)`` in graph order, collected over ``graph_batches``."""
    out = [None] * len(graphs)
    cast = [GraphBatch(x=g.x.to(dtype), edge_index=g.edge_index, edge_attr=g.edge_attr.to(dtype), y=g.y)
            for g in graphs]
    with torch.no_grad():
        for b in tg.graph_batches(cast, **batching):
            for i, row in zip(b.y.long().tolist(), model(b), strict=True):
                out[i] = row
    return torch.stack(out)


def _batch_dependence(model, graphs, dtype):
    """Largest relative deviation of bucketed and random-batch predictions from one graph
    per batch."""
    alone = _predictions(model, graphs, dtype, batch_size=1, shuffle=False)
    scale = alone.abs().max()
    gen = torch.Generator().manual_seed(3)
    bucketed = _predictions(model, graphs, dtype, batch_size=8, shuffle=True, generator=gen, bucket=True)
    mixed = _predictions(model, graphs, dtype, batch_size=8, shuffle=True, generator=gen)
    return max(float((p - alone).abs().max() / scale) for p in (bucketed, mixed))


@pytest.mark.parametrize("model_name", ["ppgn", "gin", "spen", "poly"])
def test_predictions_do_not_depend_on_the_batch(molecules, model_name, dtype):
    data, graphs = molecules
    torch.manual_seed(0)
    model = tg.build_graph_model(model_name, data, hidden=8, n_layers=2).to(dtype).eval()
    assert _batch_dependence(model, graphs, dtype) < TOL[dtype]


def test_negative_control_a_model_that_mixes_the_batch_is_caught(molecules, dtype):
    """Output shifted by the mean over the batch (as batch norm in training mode would)."""
    data, graphs = molecules
    torch.manual_seed(0)
    inner = tg.build_graph_model("ppgn", data, hidden=8, n_layers=2).to(dtype).eval()

    def mixing(batch):
        out = inner(batch)
        return out - out.mean(0, keepdim=True)

    assert _batch_dependence(mixing, graphs, dtype) > 100 * TOL[dtype]


def test_bucketed_metrics_equal_the_unbucketed_ones(molecules):
    data, _ = molecules
    torch.manual_seed(0)
    model = tg.build_graph_model("ppgn", data, hidden=8, n_layers=2).double()
    a = tg.graph_metrics(model, data.train, data, "x")
    b = tg.graph_metrics(model, data.train, data, "x", batch_size=8, bucket=True)
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-10 * max(abs(a[k]), 1.0), k


def test_bucketed_training_runs_repeats_and_resumes_bit_for_bit(tmp_path):
    def cfg(**kw):
        return TrainConfig(epochs=2, batch_size=4, lr=1e-3, verbose=False, progress=False, **kw,
                           extra={"hidden": 8, "n_layers": 1, "size": 10, "model": "ppgn",
                                  "data": "freesolv", "bucket": True})

    straight = tg.train_graph(cfg(), tmp_path / "a")
    again = tg.train_graph(cfg())
    assert straight["test_mae"] == again["test_mae"] and straight["steps"] == 6  # 10 graphs: 3 batches
    cut = tg.train_graph(cfg(max_steps=4), tmp_path / "b")
    assert cut["steps"] == 4
    resumed = tg.train_graph(cfg(), tmp_path / "b", resume=True)
    assert resumed["steps"] == 6
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # bucketing changes the batches, so the same seed trains a different model than random batches
    plain = tg.train_graph(TrainConfig(**{**cfg().__dict__, "extra": {**cfg().extra, "bucket": False}}))
    assert plain["test_mae"] != straight["test_mae"]


def _tags(batch):
    parts = batch if isinstance(batch, tuple) else (batch,)
    return [int(t) for b in parts for t in b.y.long().tolist()]


def test_sub_batches_split_the_same_random_batches_into_size_sorted_parts(molecules):
    _, graphs = molecules
    plain = list(tg.graph_batches(graphs, 10, True, torch.Generator().manual_seed(5)))
    split = list(tg.graph_batches(graphs, 10, True, torch.Generator().manual_seed(5), sub_batches=3))
    assert len(plain) == len(split) == 4
    for a, b in zip(plain, split, strict=True):
        assert isinstance(b, tuple) and len(b) == 3
        assert sorted(_tags(a)) == sorted(_tags(b))  # same graphs per batch as without sub-batches
        sizes = [g.num_nodes for part in b for g in part.unbatch()]
        assert sizes == sorted(sizes)  # parts are size-sorted
        assert [p.num_graphs for p in b] == [4, 3, 3]


def test_sub_batch_loss_and_gradient_equal_the_whole_batch(molecules):
    """float64: the weighted sub-batch loss is the batch mean; an unweighted mean of the part
    means (negative control) is not, because the parts have 4, 3 and 3 graphs."""
    data, graphs = molecules
    torch.manual_seed(0)
    model = tg.build_graph_model("ppgn", data, hidden=8, n_layers=2).double()
    fake = tg.GraphData("x", "regression", [], [], [], data.in_channels, data.edge_dim, y_mean=10.0, y_std=7.0)
    whole = next(tg.graph_batches(graphs, 10, True, torch.Generator().manual_seed(1)))
    parts = next(tg.graph_batches(graphs, 10, True, torch.Generator().manual_seed(1), sub_batches=3))

    def loss_and_grad(batch):
        model.zero_grad()
        loss = tg.graph_loss(model, batch, fake)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    (l1, g1), (l2, g2) = loss_and_grad(whole), loss_and_grad(parts)
    assert abs(float(l1 - l2)) <= 1e-12 * abs(float(l1))
    assert float((g1 - g2).abs().max()) <= 1e-10 * float(g1.abs().max())
    with torch.no_grad():
        unweighted = sum(tg.graph_loss(model, p, fake) for p in parts) / len(parts)
    assert abs(float(unweighted - l1)) > 1e-6 * abs(float(l1))


def test_sub_batches_train_and_refuse_bad_settings(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=5, lr=1e-3, verbose=False, progress=False,
                      extra={"hidden": 8, "n_layers": 1, "size": 10, "model": "ppgn", "data": "freesolv",
                             "sub_batches": 2})
    out = tg.train_graph(cfg)
    assert out["steps"] == 2 and np.isfinite(out["test_mae"])
    with pytest.raises(ValueError, match=r"graph_batches: use either `bucket` or `sub_batches > 1`"):
        tg.train_graph(TrainConfig(**{**cfg.__dict__, "extra": {**cfg.extra, "bucket": True}}))
    with pytest.raises(ValueError, match=r"graph_batches: `sub_batches` must be an int >= 1, got 0"):
        list(tg.graph_batches([], 4, False, sub_batches=0))
