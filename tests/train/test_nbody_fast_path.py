"""The fast n-body training path: batches indexed from the dataset's tensors equal the
per-sample ``collate_nbody`` batches, and the EGNN / GNN layers with the first edge-MLP layer
applied to nodes equal the published concatenated form ``phi_e([h_i, h_j, a_ij])``."""

import pytest
import torch

from equikit.data.nbody import ChargedNBodyConfig, NBodyBatch, NBodyDataset, collate_nbody, generate_charged_nbody
from equikit.models import EGNNLayer, GNNLayer
from equikit.train.nbody import nbody_batches

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def trajectories():
    cfg = ChargedNBodyConfig(n_train=7, n_val=0, n_test=0, steps=600, sample_every=50)
    return generate_charged_nbody(cfg, progress=False)["train"]


def _assert_same_batch(a: NBodyBatch, b: NBodyBatch) -> None:
    assert a.num_graphs == b.num_graphs
    for name in ("pos", "vel", "charges", "edge_index", "edge_attr", "target", "batch"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x, y), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("indices", [[3], [0, 1, 2], [6, 2, 2, 5], [4, 0, 6, 1, 3, 5, 2]])
def test_dataset_batch_equals_collate(trajectories, dtype, indices):
    ds = NBodyDataset(trajectories=trajectories, frame_in=5, frame_out=9, dtype=dtype)
    _assert_same_batch(ds.batch(torch.tensor(indices)), collate_nbody([ds[i] for i in indices]))
    _assert_same_batch(ds.batch(indices), collate_nbody([ds[i] for i in indices]))  # a list, cached graph


@pytest.mark.parametrize("shuffle", [True, False])
def test_nbody_batches_equal_the_collate_path(trajectories, shuffle):
    ds = NBodyDataset(trajectories=trajectories, frame_in=5, frame_out=9)
    got = list(nbody_batches(ds, 3, shuffle, torch.Generator().manual_seed(11)))
    order = torch.randperm(7, generator=torch.Generator().manual_seed(11)) if shuffle else torch.arange(7)
    chunks = [order[0:3], order[3:6]] if shuffle else [order[0:3], order[3:6], order[6:7]]  # drop_last if shuffle
    assert len(got) == len(chunks)
    for b, idx in zip(got, chunks):
        _assert_same_batch(b, collate_nbody([ds[int(i)] for i in idx]))


@pytest.mark.parametrize("bad", [[], [[0, 1]], [0.5, 1.0], [True, False]])
def test_dataset_batch_rejects_bad_indices(trajectories, bad):
    ds = NBodyDataset(trajectories=trajectories, frame_in=5, frame_out=9)
    with pytest.raises(ValueError, match=r"NBodyDataset\.batch: `indices` must be a non-empty 1-d"):
        ds.batch(torch.tensor(bad))


# --------------------------------------------------------------------------- layers
def _graph(dtype, n_graphs=3, n=5, hidden=8, features=2):
    from equikit.data.nbody import complete_edge_index

    ei = complete_edge_index(n)
    edge_index = ei.repeat(1, n_graphs) + (torch.arange(n_graphs) * n).repeat_interleave(ei.shape[1])
    g = torch.Generator().manual_seed(3)
    nn_ = n_graphs * n
    return (torch.randn(nn_, hidden, generator=g, dtype=dtype), torch.randn(nn_, 3, generator=g, dtype=dtype),
            torch.randn(nn_, 3, generator=g, dtype=dtype), edge_index,
            torch.randn(edge_index.shape[1], features, generator=g, dtype=dtype))


def _reference_egnn_layer(layer, h, x, vel, edge_index, edge_attr, swap=False):
    """E_GCL with velocity exactly as published: the edge MLP on the concatenation."""
    src, dst = edge_index
    diff = x[dst] - x[src]
    radial = (diff**2).sum(-1, keepdim=True)
    hi, hj = (h[src], h[dst]) if swap else (h[dst], h[src])
    m = layer.edge_mlp(torch.cat([hi, hj, radial, edge_attr], dim=-1))
    n = x.shape[0]
    count = torch.bincount(dst, minlength=n).to(x.dtype).unsqueeze(-1)
    agg_x = torch.zeros_like(x).index_add_(0, dst, diff * layer.coord_mlp(m)) / count
    x_new = x + agg_x + layer.vel_mlp(h) * vel
    h_new = h + layer.node_mlp(torch.cat([h, torch.zeros_like(h).index_add_(0, dst, m)], dim=-1))
    return h_new, x_new


def _reference_gnn_layer(layer, h, edge_index, edge_attr):
    src, dst = edge_index
    m = layer.edge_mlp(torch.cat([h[dst], h[src], edge_attr], dim=-1))
    return h + layer.node_mlp(torch.cat([h, torch.zeros_like(h).index_add_(0, dst, m)], dim=-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_egnn_layer_equals_the_concatenated_edge_mlp(dtype):
    torch.manual_seed(0)
    layer = EGNNLayer(8, edge_features=2).to(dtype)
    torch.nn.init.normal_(layer.coord_mlp[-1].weight, std=0.3)  # coordinate messages that matter
    h, x, vel, ei, ea = _graph(dtype)
    got = layer(h, x, vel, ei, ea)
    want = _reference_egnn_layer(layer, h, x, vel, ei, ea)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=RTOL[dtype], atol=RTOL[dtype])
    # negative control: the reference with the two node slots swapped is a different function
    swapped = _reference_egnn_layer(layer, h, x, vel, ei, ea, swap=True)
    assert (got[0] - swapped[0]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gnn_layer_equals_the_concatenated_edge_mlp(dtype):
    torch.manual_seed(0)
    layer = GNNLayer(8, edge_features=2).to(dtype)
    h, _, _, ei, ea = _graph(dtype)
    torch.testing.assert_close(layer(h, ei, ea), _reference_gnn_layer(layer, h, ei, ea),
                               rtol=RTOL[dtype], atol=RTOL[dtype])
    h0 = torch.zeros_like(h)  # and without edge attributes
    layer0 = GNNLayer(8).to(dtype)
    src, dst = ei
    m = layer0.edge_mlp(torch.cat([h[dst], h[src]], dim=-1))
    want = h + layer0.node_mlp(torch.cat([h, h0.index_add(0, dst, m)], dim=-1))
    torch.testing.assert_close(layer0(h, ei), want, rtol=RTOL[dtype], atol=RTOL[dtype])


# --------------------------------------------------------------------------- devices
def _small_config(device, steps=3):
    from equikit.train import TrainConfig

    data = {"n_train": 6, "n_val": 2, "n_test": 2, "steps": 600, "sample_every": 50}
    return TrainConfig(epochs=1, batch_size=2, max_steps=steps, verbose=False, progress=False,
                       extra={"model": "egnn", "model_kwargs": {"hidden": 8, "n_layers": 2}, "n_train": 6,
                              "frame_in": 5, "frame_out": 9, "data": data, "device": device})


def test_dataset_to_keeps_batches(trajectories):
    ds = NBodyDataset(trajectories=trajectories, frame_in=5, frame_out=9)
    before = ds.batch([4, 1])
    _assert_same_batch(ds.to("cpu").batch([4, 1]), before)  # moved (here: to the same device) and re-indexed


@pytest.mark.parametrize("bad", ["gpu0", 3.5])
def test_train_nbody_rejects_a_bad_device(bad):
    from equikit.train.nbody import nbody_settings

    with pytest.raises(ValueError, match="train_nbody: `device` must name a torch device"):
        nbody_settings(_small_config(bad))


@pytest.mark.gpu
def test_train_nbody_on_cuda_follows_the_cpu_run(tmp_path):
    """Same seed and batch order on both devices: the losses of the first steps agree to float32
    rounding (the kernels differ, so not bit for bit)."""
    from equikit.train.nbody import train_nbody

    out = {d: train_nbody(_small_config(d), tmp_path / d, root=tmp_path / "data") for d in ("cpu", "cuda")}
    assert out["cuda"]["steps"] == out["cpu"]["steps"] == 3
    assert out["cuda"]["test_mse"] == pytest.approx(out["cpu"]["test_mse"], rel=1e-4)
    for k, v in out["cpu"]["best_state"].items():
        torch.testing.assert_close(out["cuda"]["best_state"][k].cpu(), v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dataset_from_tensors_equals_the_original(trajectories, dtype):
    ds = NBodyDataset(trajectories=trajectories, frame_in=5, frame_out=9, dtype=dtype)
    copy = NBodyDataset.from_tensors(ds.pos.clone(), ds.vel.clone(), ds.target.clone(), ds.charges.clone())
    assert len(copy) == len(ds)
    _assert_same_batch(copy.batch([6, 0, 3]), ds.batch([6, 0, 3]))


def test_dataset_from_tensors_rejects_mismatched_shapes(trajectories):
    ds = NBodyDataset(trajectories=trajectories, frame_in=5, frame_out=9)
    with pytest.raises(ValueError, match=r"from_tensors: `vel` must have shape \(7, 5, 3\)"):
        NBodyDataset.from_tensors(ds.pos, ds.vel[:, :4], ds.target, ds.charges)
    with pytest.raises(ValueError, match=r"`pos` must have shape \(S, n >= 2, 3\)"):
        NBodyDataset.from_tensors(ds.pos[..., :2], ds.vel, ds.target, ds.charges)
    with pytest.raises(TypeError, match="`charges` must be a floating tensor"):
        NBodyDataset.from_tensors(ds.pos, ds.vel, ds.target, ds.charges.long())
