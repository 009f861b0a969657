"""``equikit train nbody`` on a tiny recipe: files, progress lines, YAML config, exact resume
after an interruption, every model, registry and argument errors."""

import json

import pytest
import torch
import yaml

from equikit.cli import main as cli_main
from equikit.cli.train import TASKS, Task, register_task
from equikit.train import MetricsLog, load_checkpoint

TINY = {"epochs": 2, "batch_size": 4, "eval_every": 1, "lr": 1e-3,
        "extra": {"model": "egnn", "model_kwargs": {"hidden": 8, "n_layers": 1}, "n_train": 8,
                  "frame_in": 2, "frame_out": 4,
                  "data": {"n_train": 8, "n_val": 4, "n_test": 4, "steps": 300, "sample_every": 50}}}


@pytest.fixture()
def run(monkeypatch, tmp_path):
    monkeypatch.setitem(cli_main.COMMANDS, "train", "equikit.cli.train")
    root = tmp_path / "data"

    def _run(out, *flags, config=TINY):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(config))
        argv = ["train", "nbody", "--config", str(cfg), "--out", str(out), "--root", str(root), "--no-progress",
                *flags]
        return cli_main.main(argv)

    return _run


def _params(out):
    return load_checkpoint(out / "checkpoint.pt")["model"]


def test_train_nbody_writes_run_files_and_prints_a_summary(run, tmp_path, capsys):
    assert run(tmp_path / "a", "--seed", "3") == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["model"] == "egnn" and result["epochs"] == 2 and result["steps"] == 4
    assert result["stop_reason"] == "epochs" and result["test_mse"] > 0
    assert "epoch 1 step 2" in captured.err and "val_loss" in captured.err
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml"} <= files
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["config"]["seed"] == 3 and summary["test_mse"] == result["test_mse"]
    assert len(MetricsLog(tmp_path / "a" / "metrics.csv").read()) == 2


def test_resume_after_interruption_matches_the_straight_run(run, tmp_path, capsys):
    run(tmp_path / "straight", "--seed", "1")
    run(tmp_path / "cut", "--seed", "1", "--max-steps", "3")  # stops inside epoch 2
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["loop"]["step"] == 3
    run(tmp_path / "cut", "--seed", "1", "--resume")
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [MetricsLog(tmp_path / d / "metrics.csv").read() for d in ("straight", "cut")]
    assert [r["val_loss"] for r in rows[0]] == [r["val_loss"] for r in rows[1]]
    sums = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("straight", "cut")]
    assert sums[0]["test_mse"] == sums[1]["test_mse"]


def test_seeds_change_the_run(run, tmp_path):
    run(tmp_path / "s0", "--seed", "0")
    run(tmp_path / "s1", "--seed", "1")
    a, b = _params(tmp_path / "s0"), _params(tmp_path / "s1")
    assert not all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model,kwargs", [
    ("linear", {}), ("gnn", {"hidden": 8, "n_layers": 1}), ("fa_gnn", {"hidden": 8, "n_layers": 1}),
    ("ponita", {"hidden": 8, "n_layers": 1, "basis": 8, "n_orientations": 6}),
    ("eqmotion", {"hidden": 8, "channels": 2, "n_layers": 1}),
])
def test_every_model_trains(run, tmp_path, capsys, model, kwargs):
    assert run(tmp_path / model, "--model", model, "--model-kwargs", json.dumps(kwargs), "--epochs", "1",
               "--quiet") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == model and result["steps"] == 2 and result["test_mse"] > 0


def test_flags_override_the_config_file(run, tmp_path):
    run(tmp_path / "o", "--epochs", "1", "--lr", "0.01", "--quiet")
    cfg = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert cfg["epochs"] == 1 and cfg["lr"] == 0.01 and cfg["batch_size"] == 4 and cfg["verbose"] is False


def test_bad_config_and_registry_errors(run, tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        run(tmp_path / "x", config={**TINY, "epoch": 3})
    with pytest.raises(ValueError, match="unknown `extra` keys"):
        run(tmp_path / "x", config={**TINY, "extra": {**TINY["extra"], "modle": "egnn"}})
    with pytest.raises(ValueError, match="already registered"):
        register_task(Task("nbody", "other", lambda p: None, lambda a: 0))
    with pytest.raises(TypeError, match="must be a Task"):
        register_task("nbody")
    assert "nbody" in TASKS
