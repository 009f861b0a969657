"""``equikit train potential``: runs from a YAML file end to end (files, metrics, plots),
flags override the file, the loss goes down, an interrupted run resumes bit for bit (float64),
the saved model holds the EMA weights (which differ from the raw ones), the trained model is
E(3) x permutation equivariant, bad settings raise errors naming the field."""

import argparse
import json

import numpy as np
import pytest
import torch
import yaml

from equikit.cli import train as train_cli
from equikit.cli import train_potential as tp
from equikit.data.atoms import write_extxyz
from equikit.data.atoms_md import EMTConfig, generate_emt
from equikit.models.calculator import load_potential
from equikit.train import TrainConfig

TINY_MODEL = {"hidden_irreps": "4x0e + 4x1o", "max_ell": 1, "correlation": 2, "radial_mlp": [8],
              "num_interactions": 1, "cutoff": 3.0}


@pytest.fixture(scope="module")
def frames():
    """8 EMT Cu frames of 4 atoms (cubic FCC cell) at 300 K and 900 K: energy, forces, stress."""
    return generate_emt(EMTConfig(repeat=1, temperatures=(300.0, 900.0), frames_per_temperature=4, stride=2,
                                  equilibration_steps=2))


@pytest.fixture(scope="module")
def xyz(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cu.extxyz"
    write_extxyz(path, frames)
    return path


def _extra(**kw):
    return {"model": dict(TINY_MODEL), "val_fraction": 0.25, "test_fraction": 0.25, "ema_decay": 0.5,
            "stress_weight": 1.0, "schedule": "cosine", **kw}


def _cfg(epochs=3, **kw):
    return TrainConfig(epochs=epochs, batch_size=2, lr=1e-2, verbose=False, progress=False, extra=_extra(**kw))


def _run(argv):
    parser = argparse.ArgumentParser(prog="equikit")
    train_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_runs_from_a_yaml_file_and_flags_override_it(xyz, tmp_path, capsys):
    assert train_cli.TASKS["potential"] is tp.POTENTIAL_TASK
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 5, "batch_size": 2, "lr": 0.01, "seed": 1,
                                   "extra": _extra(data=str(xyz))}))
    out = tmp_path / "run"
    code = _run(["train", "potential", "--config", str(cfg), "--epochs", "2", "--forces-weight", "5",
                 "--out", str(out), "--quiet", "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["epochs"] == 2 and printed["steps"] == 4  # 4 training frames, batches of 2
    for name in ("checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml", "model.pt",
                 "learning_curves.png", "parity.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"] == {"train": 4, "val": 2, "test": 2}
    assert summary["config"]["seed"] == 1 and summary["config"]["extra"]["forces_weight"] == 5.0
    for key in ("test_energy_mae_per_atom", "test_forces_mae", "test_forces_rmse", "test_stress_rmse",
                "val_energy_mae_per_atom"):
        assert np.isfinite(summary[key]) and summary[key] > 0, key
    assert summary["test_forces_mae"] <= summary["test_forces_rmse"]
    assert (out / "parity.png").read_bytes()[:4] == b"\x89PNG"
    # the saved model reproduces the test force MAE of the summary
    model = load_potential(out / "model.pt")
    test = tp.potential_metrics(model, tp.load_frames(tp.PotentialTrainConfig(data=str(xyz)))[
        tp.split_frames(8, 0.25, 0.25, 0)["test"]], tp.PotentialTrainConfig(), "test")
    assert test["test_forces_mae"] == pytest.approx(summary["test_forces_mae"], rel=1e-10)


def test_e0_and_neighbours_come_from_the_training_set(frames):
    s = tp.PotentialTrainConfig(model=dict(TINY_MODEL))
    mcfg = tp.build_model_config(s, frames)
    assert mcfg.atomic_numbers == (29,)
    # one element: E0 is the mean energy per atom
    assert mcfg.e0[0] == pytest.approx(float((frames.energy / frames.natoms).mean()), rel=1e-10)
    assert mcfg.avg_num_neighbors == 12.0  # FCC nearest neighbours at 2.55 A < 3.0 A < 3.6 A


def test_loss_decreases_on_a_fixed_tiny_set(frames, tmp_path):
    from equikit.train import MetricsLog, seed_everything

    out = tmp_path / "run"
    cfg = _cfg(epochs=8, ema_decay=None, schedule="none", stress_weight=0.0)
    tp.train_potential(cfg, out, frames=frames)
    rows = MetricsLog(out / "metrics.csv").read()
    assert len(rows) == 8
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # the same fixed frames through the initial (same seed) and the trained model
    s = tp.potential_settings(cfg)
    train = frames[tp.split_frames(len(frames), 0.25, 0.25, 0)["train"]]
    seed_everything(cfg.seed)
    initial = tp.Potential(tp.build_model_config(s, train))
    trained = tp.Potential(initial.config)
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]  # the EMAPotential wrapper's
    trained.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    before = float(tp.potential_loss(initial, train, s, training=False).detach())
    after = float(tp.potential_loss(trained, train, s, training=False).detach())
    assert after < 0.8 * before, (before, after)


def test_resume_after_max_steps_is_bit_identical_in_float64(frames, tmp_path):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    a = tp.train_potential(_cfg(), straight, frames=frames)
    first = tp.train_potential(TrainConfig(**{**_cfg().__dict__, "max_steps": 3}), cut, frames=frames)
    assert first["stop_reason"] == "max_steps" and first["steps"] == 3  # mid-epoch 2 (2 steps per epoch)
    b = tp.train_potential(_cfg(), cut, resume=True, frames=frames)
    assert b["steps"] == a["steps"] == 6 and b["stop_reason"] == "epochs"
    sa = torch.load(straight / "checkpoint.pt", weights_only=True)
    sb = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert sa["model"].keys() == sb["model"].keys()
    assert any(k.startswith("ema.") for k in sa["model"])
    for k in sa["model"]:
        assert sa["model"][k].dtype != torch.float32, k
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert a["test_forces_mae"] == b["test_forces_mae"]


def test_saved_model_holds_the_ema_weights_which_differ_from_the_raw_ones(frames, tmp_path):
    out = tmp_path / "run"
    tp.train_potential(_cfg(epochs=2), out, frames=frames)
    best = torch.load(out / "best.pt", weights_only=True)
    saved = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    differ = 0
    for k, v in saved.items():
        if k == "e0":
            continue
        assert torch.equal(v, best[f"ema.{k}"]), k
        differ += not torch.equal(v, best[f"model.{k}"])
    assert differ > 0
    # the EMA recursion itself: decay 0.5 after one step from identical weights
    s = tp.PotentialTrainConfig(model=dict(TINY_MODEL))
    w = tp.EMAPotential(tp.Potential(tp.build_model_config(s, frames)), decay=0.5)
    before = w.model.embedding.detach().clone()
    opt = torch.optim.SGD(w.model.parameters(), lr=0.1)
    opt.register_step_post_hook(lambda *_: w.update())
    tp.potential_loss(w.model, frames[[0, 1]], s).backward()
    opt.step()
    torch.testing.assert_close(w.ema.embedding, 0.5 * before + 0.5 * w.model.embedding, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("extra", "match"), [
    ({"schedule": "cos"}, r"PotentialTrainConfig: `schedule` must be one of"),
    ({"optimizer": "sgd"}, r"PotentialTrainConfig: `optimizer` must be one of"),
    ({"ema_decay": 1.5}, r"PotentialTrainConfig: `ema_decay` must be None or a number in \(0, 1\)"),
    ({"forces_weight": -1.0}, r"PotentialTrainConfig: `forces_weight` must be a finite number >= 0"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, r"`val_fraction` \+ `test_fraction` must be < 1"),
    ({"lerning_rate": 1.0}, r"train_potential: unknown `extra` keys \['lerning_rate'\]"),
    ({"model": {"hiden_irreps": "4x0e"}}, r"train_potential: unknown `model` fields \['hiden_irreps'\]"),
    ({"data": "no/such/file.xyz"}, r"train_potential: `data` 'no/such/file.xyz' is neither a file nor a recipe"),
])
def test_bad_settings_raise_naming_the_field(extra, match):
    cfg = TrainConfig(epochs=1, verbose=False, progress=False, extra=extra)
    with pytest.raises((ValueError, TypeError), match=match):
        tp.train_potential(cfg, frames=None if "data" in extra else _tiny_frames())


def _tiny_frames():
    g = torch.Generator().manual_seed(0)
    from equikit.data.atoms import AtomsBatch

    return AtomsBatch.from_arrays(positions=torch.rand(12, 3, generator=g, dtype=torch.float64) * 3,
                                  numbers=[29] * 12, natoms=[3] * 4,
                                  energy=torch.rand(4, generator=g, dtype=torch.float64),
                                  forces=torch.zeros(12, 3, dtype=torch.float64))
