"""equikit.train: exact resume (float64 parameters identical to an uninterrupted run),
checkpoints, RNG states, metrics files, early stopping, budgets, configs, errors."""

import json
import random

import numpy as np
import pytest
import torch

from equikit.train import (
    EarlyStopping,
    MetricsLog,
    TrainConfig,
    fit,
    get_rng_state,
    load_checkpoint,
    load_config,
    save_checkpoint,
    save_config,
    seed_everything,
    set_rng_state,
)

X = torch.randn(48, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
Y = torch.sin(X).sum(-1, keepdim=True)


def _model():
    # dropout draws from torch's global stream: resume must restore it
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(16, 1)).double()


def _batches(epoch, gen):
    order = torch.randperm(len(X), generator=gen)
    return [order[k:k + 8] for k in range(0, len(X), 8)]  # 6 steps an epoch


def _loss(model, idx):
    # numpy and python streams are used too (a noise scale), so their states matter
    scale = 1.0 + 0.01 * float(np.random.rand())  # noqa: NPY002 (global stream on purpose) + 0.01 * random.random()
    return ((model(X[idx]) - Y[idx]) ** 2).mean() * scale


def _evaluate(model):
    model.eval()
    with torch.no_grad():
        val = float(((model(X[:16]) - Y[:16]) ** 2).mean())
    model.train()
    return {"val_loss": val}


def _run(out, resume=False, **kw):
    seed_everything(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    cfg = TrainConfig(**{"epochs": 6, "progress": False, "verbose": False, **kw})
    res = fit(model, opt, _batches, _loss, cfg, evaluate=_evaluate, scheduler=sched, out_dir=out, resume=resume)
    return model, res


def _rows(out):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in MetricsLog(out / "metrics.csv").read()]


def _same_params(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("stop_at", [9, 12, 20])  # mid-epoch, at an epoch boundary, mid-epoch later
def test_resume_after_max_steps_is_bit_identical(tmp_path, stop_at):
    straight, res_a = _run(tmp_path / "a")
    first, res_b1 = _run(tmp_path / "b", max_steps=stop_at)
    assert res_b1.stop_reason == "max_steps" and res_b1.steps == stop_at
    assert not _same_params(straight, first)
    resumed, res_b = _run(tmp_path / "b", resume=True)
    assert res_b.steps == res_a.steps == 36 and res_b.epochs == 6
    assert _same_params(straight, resumed)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert res_a.best_epoch == res_b.best_epoch and res_a.best_metric == res_b.best_metric


def test_resume_after_a_crash_replays_from_the_last_checkpoint(tmp_path):
    straight, _ = _run(tmp_path / "a")
    calls = {"n": 0}

    def crashing(model, idx):
        calls["n"] += 1
        if calls["n"] == 17:  # in epoch 3, after checkpoints at epochs 1 and 2
            raise KeyboardInterrupt
        return _loss(model, idx)

    seed_everything(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    cfg = TrainConfig(epochs=6, progress=False, verbose=False)
    with pytest.raises(KeyboardInterrupt):
        fit(model, opt, _batches, crashing, cfg, evaluate=_evaluate, scheduler=sched, out_dir=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["loop"]["step"] == 12
    resumed, _ = _run(tmp_path / "b", resume=True)
    assert _same_params(straight, resumed)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


def test_output_files_and_summary(tmp_path):
    model, _ = _run(tmp_path, eval_every=2)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "best.pt", "metrics.csv", "summary.json",
                                                    "config.yaml"}
    rows = MetricsLog(tmp_path / "metrics.csv").read()
    assert [r["epoch"] for r in rows] == [2, 4, 6] and [r["step"] for r in rows] == [12, 24, 36]
    assert [r["lr"] for r in rows] == [0.005, 0.0025, 0.00125]  # StepLR stepped once an epoch
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "epochs" and summary["steps"] == 36
    assert summary["best_metric"] == min(r["val_loss"] for r in rows)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    model.load_state_dict(best)
    assert _evaluate(model)["val_loss"] == summary["best_metric"]
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["loop"]["epoch"] == 6 and ck["config"]["eval_every"] == 2
    assert set(ck["rng"]) == {"torch", "numpy", "python"}
    assert load_config(tmp_path / "config.yaml").eval_every == 2


def test_early_stopping_stops_after_patience(tmp_path):
    values = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.1])
    seed_everything(0)
    model = _model()
    cfg = TrainConfig(epochs=6, patience=2, progress=False, verbose=False)
    res = fit(model, torch.optim.SGD(model.parameters(), lr=1e-3), _batches, _loss, cfg,
              evaluate=lambda m: {"val_loss": next(values)}, out_dir=tmp_path)
    assert res.stop_reason == "early_stopping" and res.epochs == 4
    assert res.best_epoch == 2 and res.best_metric == 0.5


def test_early_stopping_max_mode_and_min_delta():
    es = EarlyStopping("max", patience=1, min_delta=0.1)
    assert es.update(1.0) and not es.update(1.05) and es.should_stop and es.best == 1.0


def test_budget_stops_and_evaluates(tmp_path):
    _, res = _run(tmp_path, budget_s=1e-9)
    assert res.stop_reason == "budget" and res.steps == 0
    assert len(MetricsLog(tmp_path / "metrics.csv").read()) == 1


def test_without_out_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, res = _run(None)
    assert res.best_state is not None and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="out_dir"):
        _run(None, resume=True)


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path):
    seed_everything(1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": get_rng_state()})
    a = (torch.rand(3), np.random.rand(3), [  # noqa: NPY002
        random.random() for _ in range(3)])
    seed_everything(2)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), [  # noqa: NPY002
        random.random() for _ in range(3)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ck.pt", {"v": 1})

    def broken(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(OSError):
        save_checkpoint(path, {"v": 2})
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left


def test_config_yaml_roundtrip_and_errors(tmp_path):
    cfg = TrainConfig(seed=4, epochs=9, budget_s=12.5, extra={"model": "egnn", "hidden": 32})
    assert load_config(save_config(cfg, tmp_path / "c.yaml")) == cfg
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['epochz'\\]"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="not a file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="`epochs` must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        TrainConfig(seed=1.5)
    with pytest.raises(ValueError, match="`mode`"):
        TrainConfig(mode="lowest")
    with pytest.raises(ValueError, match="`budget_s`"):
        TrainConfig(budget_s=-1)


def test_fit_rejects_bad_arguments(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = TrainConfig(epochs=1, progress=False, verbose=False)
    with pytest.raises(TypeError, match="fit: `model`"):
        fit(lambda x: x, opt, _batches, _loss, cfg)
    with pytest.raises(TypeError, match="fit: `config`"):
        fit(model, opt, _batches, _loss, {"epochs": 1})
    with pytest.raises(ValueError, match="monitor"):
        fit(model, opt, _batches, _loss, TrainConfig(epochs=1, monitor="val_acc", progress=False, verbose=False),
            evaluate=_evaluate)
    with pytest.raises(ValueError, match="differ from the columns"):
        log = MetricsLog(tmp_path / "m.csv")
        log.append({"epoch": 1, "step": 1})
        log.append({"epoch": 2, "loss": 1})
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


def test_progress_bar_and_log_lines_go_to_stderr(capsys):
    _run(None, epochs=2, progress=True, verbose=True)
    err = capsys.readouterr().err
    assert "epoch 2 step 12" in err and "2/2" in err
