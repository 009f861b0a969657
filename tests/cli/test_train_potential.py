"""``equikit train potential``: runs from a YAML file end to end (files, metrics, plots),
flags override the file, the loss goes down, an interrupted run resumes bit for bit (float64),
the saved model holds the EMA weights (which differ from the raw ones), the trained model is
E(3) x permutation equivariant, bad settings raise errors naming the field."""

import json

import numpy as np
import pytest
import torch
import yaml

from equikit.cli import train as train_cli
from equikit.cli import train_potential as tp
from equikit.cli.main import main
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


def test_cli_runs_from_a_yaml_file_and_flags_override_it(xyz, tmp_path, capsys):
    assert train_cli.TASKS["potential"] is tp.POTENTIAL_TASK
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 5, "batch_size": 2, "lr": 0.01, "seed": 1,
                                   "extra": _extra(data=str(xyz))}))
    out = tmp_path / "run"
    code = main(["train", "potential", "--config", str(cfg), "--epochs", "2", "--forces-weight", "5",
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
    # the EMA recursion itself, from identical weights: d_1 = min(0.9, 1/10), d_2 = min(0.9, 2/11)
    s = tp.PotentialTrainConfig(model=dict(TINY_MODEL))
    w = tp.EMAPotential(tp.Potential(tp.build_model_config(s, frames)), decay=0.9)
    opt = torch.optim.SGD(w.model.parameters(), lr=0.1)
    opt.register_step_post_hook(lambda *_: w.update())
    expected = w.model.embedding.detach().clone()
    for k, d in ((0, 0.1), (2, 2 / 11)):
        opt.zero_grad()
        tp.potential_loss(w.model, frames[[k, k + 1]], s).backward()
        opt.step()
        expected = d * expected + (1 - d) * w.model.embedding.detach()
    assert int(w.ema_updates) == 2
    torch.testing.assert_close(w.ema.embedding, expected, rtol=1e-12, atol=0)
    assert not torch.equal(w.ema.embedding, w.model.embedding)


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


class _XComponentPotential(tp.Potential):
    """Negative control: the trained weights, but the edge length gets the raw x-component of
    the edge vector added."""

    def edge_features(self, vec):
        r, sh = super().edge_features(vec)
        return r + 0.3 * vec[:, 0], sh


def test_trained_model_is_e3_and_permutation_equivariant(frames, tmp_path, dtype):
    """The EMA model the task saves (trained in ``dtype``) through the public checker on a
    rattled periodic cell: energy invariant, forces equivariant under rotations, reflections
    and translations (cell rotated with the atoms) and atom permutations; the negative control
    with the same weights fails."""
    from equikit.check import assert_equivariant, equivariance_error
    from equikit.data.atoms import AtomsBatch
    from equikit.groups import E, NodePermutation, PointCloud

    rtol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    model_cfg = {**TINY_MODEL, "dtype": str(dtype).split(".")[-1]}
    tp.train_potential(_cfg(epochs=1, model=model_cfg), tmp_path, frames=frames)
    model = load_potential(tmp_path / "model.pt")
    assert model.e0.dtype == dtype
    broken = _XComponentPotential(model.config)
    broken.load_state_dict(model.state_dict())
    x = {"pos": frames.positions[:4].to(dtype), "cell": frames.cell[0].to(dtype), "numbers": frames.numbers[:4]}

    def f(m):
        def run(d):
            b = AtomsBatch.from_arrays(positions=d["pos"], numbers=d["numbers"], natoms=[len(d["numbers"])],
                                       cell=d["cell"][None], pbc=torch.ones(1, 3, dtype=torch.bool))
            out = m(b)
            return {"energy": out["energy"].detach(), "forces": out["forces"].detach()}

        return run

    e3_in = PointCloud(E(3), vectors=("cell",), scalars=("numbers",))
    e3_out = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))
    assert_equivariant(f(model), x, e3_in, e3_out, n_samples=6, generator=4, rtol=rtol)
    perm_in = NodePermutation(4, nodes={"pos": -2, "numbers": -1}, invariant=("cell",))
    perm_out = NodePermutation(4, nodes={"forces": -2}, invariant=("energy",))
    assert_equivariant(f(model), x, perm_in, perm_out, n_samples=4, generator=5, rtol=rtol)
    bad = equivariance_error(f(broken), x, e3_in, e3_out, n_samples=6, generator=4)
    assert not bad.passed(rtol=rtol) and bad.rel_max > 1e-3
