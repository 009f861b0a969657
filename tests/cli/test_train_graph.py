"""``equikit train graph``: the registered task runs end to end on tiny data (files, metrics),
resumes bit for bit, every backbone trains on the counting and molecule sets, splits follow
the protocols, the trained model is permutation invariant, bad arguments raise."""

import argparse
import json

import numpy as np
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.cli import train as train_cli
from equikit.cli import train_graph as tg
from equikit.data.graph import GraphBatch, collate_graphs
from equikit.train import TrainConfig


def _parser():
    parser = argparse.ArgumentParser(prog="equikit")
    train_cli.register(parser.add_subparsers(dest="command"))
    return parser


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def _cfg(**extra):
    return TrainConfig(epochs=2, batch_size=4, lr=1e-3, verbose=False, progress=False,
                       extra={"hidden": 8, "n_layers": 1, "size": 6, **extra})


def test_graph_task_is_registered_with_its_arguments():
    assert train_cli.TASKS["graph"] is tg.GRAPH_TASK
    args = _parser().parse_args(["train", "graph", "--model", "spen", "--data", "freesolv", "--fold", "3"])
    assert (args.model, args.data, args.fold) == ("spen", "freesolv", 3)
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "graph", "--model", "transformer"])


def test_cli_run_writes_checkpoint_metrics_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code = _run(["train", "graph", "--model", "gin", "--data", "counting-triangle", "--size", "6",
                 "--hidden", "8", "--layers", "1", "--epochs", "3", "--batch-size", "4", "--seed", "1",
                 "--out", str(out), "--root", str(tmp_path / "data"), "--quiet", "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["model"] == "gin" and printed["epochs"] == 3 and printed["steps"] == 6
    for name in ("checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"] == {"train": 6, "val": 6, "test": 6}
    assert np.isfinite(summary["test_mae"]) and summary["config"]["seed"] == 1
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


def test_resume_after_max_steps_equals_the_straight_run_bit_for_bit(tmp_path):
    root = tmp_path / "data"
    straight = tmp_path / "straight"
    tg.train_graph(_cfg(model="gin", data="csl", size=8), straight, root=root)
    cut = tmp_path / "cut"
    cfg_cut = TrainConfig(**{**_cfg(model="gin", data="csl", size=8).__dict__, "max_steps": 3})
    first = tg.train_graph(cfg_cut, cut, root=root)
    assert first["stop_reason"] == "max_steps" and first["steps"] == 3  # mid-epoch 2 (2 steps/epoch)
    resumed = tg.train_graph(_cfg(model="gin", data="csl", size=8), cut, resume=True, root=root)
    assert resumed["steps"] == 4 and resumed["stop_reason"] == "epochs"
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(cut / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_seed_changes_the_model_and_repeats_exactly(tmp_path):
    root = tmp_path / "data"
    runs = [tg.train_graph(TrainConfig(**{**_cfg(model="gcn", data="counting-4cycle").__dict__, "seed": s}),
                           root=root) for s in (0, 0, 1)]
    assert runs[0]["test_mae"] == runs[1]["test_mae"]
    assert runs[0]["test_mae"] != runs[2]["test_mae"]


@pytest.mark.parametrize("model", tg.GRAPH_MODELS)
def test_every_backbone_trains_on_counting(model, tmp_path):
    out = tg.train_graph(_cfg(model=model, data="counting-3star"), root=tmp_path)
    assert out["steps"] == 4 and np.isfinite(out["test_mae"]) and out["model"] == model


@pytest.mark.parametrize("data", ["solubility", "solubility-class", "freesolv"])
def test_molecule_sets_train_with_edge_features(data, tmp_path):
    out = tg.train_graph(_cfg(model="gin", data=data, size=5), root=tmp_path)
    key = "test_acc" if data == "solubility-class" else "test_mae"
    assert np.isfinite(out[key]) and out["sizes"] == {"train": 5, "val": 5, "test": 5}


def test_protocol_splits(tmp_path):
    csl = tg.load_graph_data("csl", fold=2, root=tmp_path)
    assert (len(csl.train), len(csl.val), len(csl.test)) == (90, 30, 30)
    for split in (csl.train, csl.val, csl.test):  # stratified: every class equally often
        counts = np.bincount(torch.cat([g.y for g in split]).numpy(), minlength=10)
        assert len(set(counts.tolist())) == 1


@pytest.mark.slow
def test_molecule_protocol_splits(tmp_path):
    """Full featurisation of FreeSolv (twice) and solubility: ~10 s of CPU."""
    fs = [tg.load_graph_data("freesolv", fold=k, root=tmp_path) for k in (0, 1)]
    assert sum(len(getattr(fs[0], s)) for s in ("train", "val", "test")) == 642
    assert len(fs[0].test) in (64, 65) and fs[0].kind == "regression" and fs[0].unit == "kcal/mol"
    smiles_0 = {(*g.x.sum(0).tolist(), g.num_nodes, float(g.y)) for g in fs[0].test}
    smiles_1 = {(*g.x.sum(0).tolist(), g.num_nodes, float(g.y)) for g in fs[1].test}
    assert smiles_0 != smiles_1  # different test folds
    sol = tg.load_graph_data("solubility", root=tmp_path)
    assert (len(sol.train) + len(sol.val), len(sol.test)) == (1025, 257)
    assert sol.edge_dim == sol.train[0].edge_attr.shape[1] and sol.y_std > 0


def test_trained_model_is_permutation_invariant(tmp_path, dtype):
    """The model the task builds and trains, on a batch of molecules (edge features), through
    the checker; a negative control feeds the node index in and must fail."""
    data = tg.load_graph_data("solubility", size=4, root=tmp_path, dtype=dtype)
    torch.manual_seed(0)
    model = tg.build_graph_model("gin", data, hidden=8, n_layers=2).to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = collate_graphs(data.train)
    for _ in range(3):
        opt.zero_grad()
        tg.graph_loss(model, batch, data).backward()
        opt.step()
    batch = GraphBatch(x=batch.x, edge_index=batch.edge_index, edge_attr=batch.edge_attr, batch=batch.batch,
                       num_graphs=batch.num_graphs)
    act = batch.permutation_action()

    def f(d, broken=False):
        g = GraphBatch.from_dict(d, num_graphs=batch.num_graphs)
        if broken:
            g = GraphBatch(x=g.x + torch.arange(g.num_nodes, dtype=g.x.dtype).unsqueeze(-1) / 10,
                           edge_index=g.edge_index, edge_attr=g.edge_attr, batch=g.batch, num_graphs=g.num_graphs)
        return model(g)

    assert_equivariant(f, batch.to_dict(), act)
    bad = equivariance_error(lambda d: f(d, broken=True), batch.to_dict(), act)
    assert not bad.passed()


def test_bad_arguments_raise_with_the_function_name(tmp_path):
    with pytest.raises(ValueError, match=r"train_graph: unknown `extra` keys \['widht'\]"):
        tg.train_graph(_cfg(widht=3), root=tmp_path)
    with pytest.raises(ValueError, match=r"train_graph: `model` must be one of"):
        tg.train_graph(_cfg(model="mlp"), root=tmp_path)
    with pytest.raises(ValueError, match=r"load_graph_data: CSL has 5 folds"):
        tg.load_graph_data("csl", fold=5, root=tmp_path)
    with pytest.raises(ValueError, match=r"load_graph_data: FreeSolv uses 10-fold CV"):
        tg.load_graph_data("freesolv", fold=10, root=tmp_path)
    with pytest.raises(TypeError, match=r"train_graph: `config` must be a TrainConfig"):
        tg.train_graph({"epochs": 1})
