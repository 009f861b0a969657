"""``train_graph``'s learning-rate schedules (``extra["schedule"]``) and its model selection:
the cosine schedule lowers the lr every epoch to 0 at the end, the plateau schedule halves it
after 3 evaluations without improvement, and the model ``train_graph`` returns the metrics of
is the best-validation checkpoint (never chosen on test)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from equikit.cli import train_graph as tg
from equikit.train import MetricsLog, TrainConfig


def _cfg(epochs=5, **extra):
    return TrainConfig(epochs=epochs, batch_size=4, lr=1e-2, verbose=False, progress=False,
                       extra={"hidden": 8, "n_layers": 1, "size": 12, "model": "gin", "data": "freesolv", **extra})


def test_cosine_lowers_the_lr_every_epoch_to_zero(tmp_path):
    tg.train_graph(_cfg(schedule="cosine"), tmp_path / "run", root=tmp_path / "data")
    rows = MetricsLog(tmp_path / "run" / "metrics.csv").read()
    lrs = [r["lr"] for r in rows]  # recorded after the epoch's scheduler step: the next epoch's lr
    expected = [0.5 * 1e-2 * (1 + math.cos(math.pi * e / 5)) for e in range(1, 6)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    assert all(b < a for a, b in itertools.pairwise(lrs)) and lrs[-1] < 1e-12


def test_constant_schedule_keeps_the_lr(tmp_path):
    tg.train_graph(_cfg(), tmp_path / "run", root=tmp_path / "data")
    assert [r["lr"] for r in MetricsLog(tmp_path / "run" / "metrics.csv").read()] == [1e-2] * 5


def test_plateau_halves_after_three_evaluations_without_improvement():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = tg.graph_scheduler("plateau", opt, 10)
    lrs = []
    for metric in (1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.4):
        sched.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


def test_selected_model_is_the_best_validation_checkpoint(tmp_path):
    out = tmp_path / "run"
    root = tmp_path / "data"
    summary = tg.train_graph(_cfg(epochs=6, schedule="cosine"), out, root=root)
    rows = MetricsLog(out / "metrics.csv").read()
    val = [r["val_loss"] for r in rows]
    best = int(np.argmin(val))
    assert summary["best_epoch"] == int(rows[best]["epoch"])
    assert summary["val_loss"] == val[best] and summary["val_mae"] == rows[best]["val_mae"]
    # the test metrics come from the best-validation weights (best.pt), not from the last epoch
    data = tg.load_graph_data("freesolv", size=12, root=root)
    model = tg.build_graph_model("gin", data, hidden=8, n_layers=1)
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    again = tg.graph_metrics(model, data.test, data, "test")
    assert again["test_mae"] == pytest.approx(summary["test_mae"], rel=1e-6)
    # negative control: in this seeded run the best epoch (5) is not the last (6), and the last
    # epoch's weights give other test metrics
    assert best == 4 and len(rows) == 6
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    assert tg.graph_metrics(model, data.test, data, "test")["test_mae"] != pytest.approx(summary["test_mae"])


def test_selection_never_reads_the_test_split(tmp_path, monkeypatch):
    seen = []
    real = tg.graph_metrics

    def spy(model, graphs, data, prefix, *a, **k):
        seen.append(prefix)
        return real(model, graphs, data, prefix, *a, **k)

    monkeypatch.setattr(tg, "graph_metrics", spy)
    tg.train_graph(_cfg(epochs=3, schedule="cosine"), root=tmp_path)
    assert seen == ["val"] * 3 + ["test"]  # one validation per epoch, the test split once at the end


def test_bad_schedule_is_refused_with_the_function_name(tmp_path):
    with pytest.raises(ValueError, match=r"train_graph: `schedule` must be one of"):
        tg.train_graph(_cfg(schedule="step"), root=tmp_path)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match=r"graph_scheduler: `epochs` must be an int >= 1, got 0"):
        tg.graph_scheduler("cosine", opt, 0)
