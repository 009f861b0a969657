"""``equikit md``: a tiny potential runs NVE and Langevin dynamics from the command line,
writes the trajectory (frames at step 0 and every ``--log-every`` steps) and a JSON summary
with a finite NVE energy drift; velocity Verlet's energy error shrinks with the time step;
the Langevin thermostat heats a crystal from 0 K to about the target (NVE does not);
bad arguments raise."""

import json

import numpy as np
import pytest
import torch
from ase.io import read

from equikit.cli import md
from equikit.cli.main import main
from equikit.models.calculator import save_potential
from equikit.models.potential import Potential, PotentialConfig


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    cfg = PotentialConfig(hidden_irreps="4x0e + 4x1o", max_ell=1, correlation=2, radial_mlp=(8,),
                          num_interactions=1, cutoff=3.0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_potential(Potential(cfg), path)
    return path


def test_nve_writes_trajectory_and_summary_with_a_finite_drift(model_path, tmp_path, capsys):
    traj = tmp_path / "out.extxyz"
    code = main(["md", "--model", str(model_path), "--recipe", "cu-fcc", "--repeat", "2", "1", "1",
                 "--ensemble", "nve", "--temperature", "300", "--timestep", "4", "--steps", "20",
                 "--log-every", "5", "--traj", str(traj), "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    frames = read(traj, index=":")
    assert len(frames) == 20 // 5 + 1 == printed["frames"]
    assert all(len(a) == 8 and set(a.get_chemical_symbols()) == {"Cu"} for a in frames)
    assert frames[0].get_momenta().std() > 0  # velocities were drawn
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    summary = json.loads(traj.with_suffix(".json").read_text())
    assert summary == printed
    assert summary["natoms"] == 8 and summary["steps"] == 20 and summary["ensemble"] == "nve"
    assert np.isfinite(summary["energy_drift_ev_per_atom_per_ps"])
    # the drift is the slope through the total energies stored in the trajectory (as text: a
    # 4 fs step makes the drift large against the file's rounding; with this untrained model the
    # drift is ~5e-7 eV/atom/ps and the text rounding moves the slope by ~2e-4 of it, hence 1e-3)
    t = np.arange(len(frames)) * 5 * 4.0 / 1000
    e = np.array([(a.get_potential_energy() + a.get_kinetic_energy()) / 8 for a in frames])
    assert summary["energy_drift_ev_per_atom_per_ps"] == pytest.approx(np.polyfit(t, e, 1)[0], rel=1e-3)


def test_nve_energy_error_shrinks_with_the_time_step(model_path):
    dev = {dt: md.run_md(model_path, md.build_structure("cu-fcc", (2, 1, 1)), timestep_fs=dt, steps=20,
                         log_every=1, temperature_K=300.0)["etot_per_atom_max_deviation_ev"] for dt in (0.5, 2.0)}
    assert 0 < dev[0.5] < dev[2.0] / 4  # velocity Verlet: error ~ dt^2


def test_langevin_heats_to_about_the_target_temperature(model_path, tmp_path):
    """8 atoms fluctuate (~30% per frame), so the band is wide: mean of the last 10 frames
    within 0.5-1.5 x the target. NVE from a perfect crystal at 0 K stays there (forces vanish
    by symmetry): the heat comes from the thermostat."""
    runs = {}
    for ensemble in ("langevin", "nve"):
        traj = tmp_path / f"{ensemble}.extxyz"
        md.run_md(model_path, md.build_structure("cu-fcc", (2, 1, 1)), ensemble=ensemble, temperature_K=1000.0,
                  init_temperature_K=0.0, timestep_fs=2.0, steps=30, friction_per_fs=0.2, log_every=1, traj=traj,
                  seed=1)
        runs[ensemble] = np.array([a.get_temperature() for a in read(traj, index=":")])
    assert 500 < runs["langevin"][-10:].mean() < 1500
    assert runs["nve"].max() < 1.0


def test_bad_arguments_raise(model_path, tmp_path):
    atoms = md.build_structure("cu-fcc")
    with pytest.raises(ValueError, match=r"run_md: `model` '.*missing.pt' is not a file"):
        md.run_md(tmp_path / "missing.pt", atoms, steps=2)
    with pytest.raises(ValueError, match=r"run_md: `ensemble` must be one of \['nve', 'langevin'\], got 'npt'"):
        md.run_md(model_path, atoms, ensemble="npt", steps=2)
    with pytest.raises(ValueError, match=r"run_md: `timestep_fs` must be a number > 0"):
        md.run_md(model_path, atoms, timestep_fs=0.0, steps=2)
    with pytest.raises(ValueError, match=r"build_structure: `recipe` must be one of"):
        md.build_structure("cu-bcc")
    with pytest.raises(SystemExit):  # argparse rejects an unknown ensemble
        main(["md", "--model", str(model_path), "--recipe", "cu-fcc", "--ensemble", "npt"])
    with pytest.raises(ValueError, match=r"run_md: `model` .* is not a file"):
        main(["md", "--model", str(tmp_path / "none.pt"), "--recipe", "cu-fcc", "--steps", "2"])


def test_compile_flag_reaches_the_calculator(model_path, monkeypatch, capsys):
    """``--compile`` builds the calculator with ``compile=True`` (the compiled run itself is
    tested in tests/models/test_calculator.py, marked slow); without it, eager."""
    import equikit.models.calculator as calc_module

    seen = []
    real = calc_module.EquikitCalculator

    class Spy(real):
        def __init__(self, model, *args, compile=False, **kw):
            seen.append(compile)
            super().__init__(model, *args, **kw)  # eager underneath: only the flag is under test

    monkeypatch.setattr(calc_module, "EquikitCalculator", Spy)
    for flags in (["--compile"], []):
        assert main(["md", "--model", str(model_path), "--recipe", "cu-fcc", "--steps", "2", "--log-every", "1",
                     "--no-progress", *flags]) == 0
    assert seen == [True, False]
    capsys.readouterr()
