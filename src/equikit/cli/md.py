"""``equikit md``: molecular dynamics with a trained :class:`~equikit.models.Potential`
through :class:`~equikit.models.calculator.EquikitCalculator` and ASE's integrators.

    equikit md --model runs/cu/model.pt --recipe cu-fcc --repeat 3 --ensemble nve \\
        --temperature 300 --timestep 2 --steps 1000 --traj md.extxyz --log-every 10
    equikit md --model model.pt --structure in.xyz --ensemble langevin --temperature 600 --friction 0.01

Velocities start from a Maxwell-Boltzmann distribution at ``--init-temperature`` (default:
``--temperature``; seeded by ``--seed``), centre-of-mass motion removed. ``nve`` runs
velocity Verlet, ``langevin`` ASE's Langevin thermostat at ``--temperature`` with
``--friction`` (1/fs). Every ``--log-every`` steps (and at step 0) a frame goes to the
``--traj`` extxyz file (positions, momenta, energy, forces) and the potential, kinetic and
total energy are recorded. At the end a JSON summary (stdout, and ``--summary``, default
next to the trajectory) reports the mean temperature and, for NVE, the total-energy drift:
the slope of a least-squares line through the total energy per atom against time, in
eV/atom/ps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENSEMBLES = ("nve", "langevin")
#: ``--recipe`` structures: cubic FCC cells (4 atoms) of the element at its lattice constant (A)
RECIPES = {"cu-fcc": ("Cu", 3.61), "ni-fcc": ("Ni", 3.52), "al-fcc": ("Al", 4.05)}


def build_structure(recipe: str, repeat=(1, 1, 1)):
    """The ``recipe`` crystal (:data:`RECIPES`) repeated ``repeat`` times (an int or 3 ints).

    Example:
        >>> len(build_structure("cu-fcc", (2, 1, 1)))
        8
    """
    if recipe not in RECIPES:
        raise ValueError(f"build_structure: `recipe` must be one of {sorted(RECIPES)}, got {recipe!r}")
    reps = (int(repeat),) * 3 if np.isscalar(repeat) else tuple(int(r) for r in repeat)
    if len(reps) == 1:
        reps = reps * 3
    if len(reps) != 3 or min(reps) < 1:
        raise ValueError(f"build_structure: `repeat` must be one int or three ints >= 1, got {repeat!r}")
    from ase.build import bulk

    element, a = RECIPES[recipe]
    return bulk(element, "fcc", a=a, cubic=True).repeat(reps)


def energy_drift(times_ps, total_per_atom) -> float:
    """Slope (eV/atom/ps) of the least-squares line through ``total_per_atom`` vs ``times_ps``.

    Example:
        >>> round(energy_drift([0.0, 0.1, 0.2], [1.0, 1.2, 1.4]), 12)
        2.0
    """
    t, e = np.asarray(times_ps, dtype=np.float64), np.asarray(total_per_atom, dtype=np.float64)
    if t.shape != e.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"energy_drift: need two 1-d arrays of equal length >= 2, got {t.shape} and {e.shape}")
    return float(np.polyfit(t, e, 1)[0])


def run_md(model, atoms, *, ensemble: str = "nve", temperature_K: float = 300.0,
           init_temperature_K: float | None = None, timestep_fs: float = 1.0, steps: int = 100,
           friction_per_fs: float = 0.01, traj: str | Path | None = None, log_every: int = 10, seed: int = 0,
           progress: bool | None = None, compile: bool = False) -> dict[str, Any]:
    """Run ``steps`` MD steps of ``atoms`` (an ASE ``Atoms``, changed in place) with ``model``
    (a :class:`Potential` or a ``model.pt`` path); returns the summary (see the module docstring).
    ``compile``: the calculator's ``compile=True`` (torch.compile of the energy; the first step
    compiles, and its time counts in ``seconds``).

    Example:
        >>> from equikit.models.potential import Potential, PotentialConfig
        >>> m = Potential(PotentialConfig(hidden_irreps="2x0e + 2x1o", max_ell=1, correlation=1,
        ...                               radial_mlp=(4,), num_interactions=1, cutoff=3.0))
        >>> out = run_md(m, build_structure("cu-fcc"), steps=4, log_every=2, timestep_fs=1.0)
        >>> out["frames"], out["ensemble"], bool(np.isfinite(out["energy_drift_ev_per_atom_per_ps"]))
        (3, 'nve', True)
    """
    where = "run_md"
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from equikit.models.calculator import EquikitCalculator

    if ensemble not in ENSEMBLES:
        raise ValueError(f"{where}: `ensemble` must be one of {list(ENSEMBLES)}, got {ensemble!r}")
    for name, v in (("steps", steps), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}: `{name}` must be an int >= 1, got {v!r}")
    for name, v in (("timestep_fs", timestep_fs), ("friction_per_fs", friction_per_fs)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            raise ValueError(f"{where}: `{name}` must be a number > 0, got {v!r}")
    init_t = temperature_K if init_temperature_K is None else init_temperature_K
    for name, v in (("temperature_K", temperature_K), ("init_temperature_K", init_t)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"{where}: `{name}` must be a number >= 0, got {v!r}")
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise ValueError(f"{where}: `model` {str(model)!r} is not a file (write one with "
                         "`equikit train potential --out DIR`: DIR/model.pt)")
    atoms.calc = EquikitCalculator(model, compile=compile)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=init_t, rng=rng)
    Stationary(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt)
    else:
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())  # no centre-of-mass drift (ASE's recommended way)
        dyn = Langevin(atoms, dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, fixcm=False,
                       rng=rng)
    traj = Path(traj) if traj is not None else None
    if traj is not None:
        traj.parent.mkdir(parents=True, exist_ok=True)
        traj.unlink(missing_ok=True)
    n = len(atoms)
    rows: list[tuple[int, float, float, float, float]] = []  # step, t_ps, epot, ekin, T

    def record(step: int) -> None:
        from ase.io import write

        epot, ekin = float(atoms.get_potential_energy()), float(atoms.get_kinetic_energy())
        rows.append((step, step * timestep_fs / 1000.0, epot, ekin, float(atoms.get_temperature())))
        if traj is not None:
            write(traj, atoms, format="extxyz", append=True)

    from tqdm.auto import tqdm

    enabled = progress if progress is not None else sys.stderr.isatty()
    t0 = time.perf_counter()
    record(0)
    done = 0
    with tqdm(total=steps, disable=not enabled, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        while done < steps:
            k = min(log_every, steps - done)
            dyn.run(k)
            done += k
            record(done)
            bar.update(k)
            bar.set_postfix({"T": f"{rows[-1][4]:.0f} K", "Etot/atom": f"{(rows[-1][2] + rows[-1][3]) / n:.5f}"})
    seconds = time.perf_counter() - t0
    t = np.array([r[1] for r in rows])
    etot = np.array([(r[2] + r[3]) / n for r in rows])
    temps = np.array([r[4] for r in rows])
    summary: dict[str, Any] = {
        "ensemble": ensemble, "natoms": n, "steps": steps, "timestep_fs": timestep_fs, "frames": len(rows),
        "temperature_target_K": temperature_K, "temperature_mean_K": float(temps[1:].mean()),
        "temperature_final_K": float(temps[-1]), "epot_final_ev": rows[-1][2],
        "etot_per_atom_first_ev": float(etot[0]), "etot_per_atom_last_ev": float(etot[-1]),
        "seconds": round(seconds, 3), "steps_per_second": round(steps / seconds, 3) if seconds > 0 else None,
        "traj": str(traj) if traj is not None else None}
    if ensemble == "nve":
        summary["energy_drift_ev_per_atom_per_ps"] = energy_drift(t, etot)
        summary["etot_per_atom_max_deviation_ev"] = float(np.abs(etot - etot[0]).max())
    return summary


# --------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    p = subparsers.add_parser("md", help="molecular dynamics (NVE / Langevin) with a trained potential",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model.pt written by `equikit train potential`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--structure", type=Path, help="starting structure (extxyz or any ASE-readable file)")
    src.add_argument("--recipe", choices=sorted(RECIPES), help="a built-in crystal")
    p.add_argument("--repeat", type=int, nargs="+", default=[1], help="supercell of --recipe: N or NX NY NZ")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="nve")
    p.add_argument("--temperature", type=float, default=300.0, help="K (thermostat, and the initial velocities)")
    p.add_argument("--init-temperature", type=float, default=None, help="K of the initial velocities")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    p.add_argument("--traj", type=Path, default=None, help="trajectory file (extxyz)")
    p.add_argument("--log-every", type=int, default=10, help="steps between trajectory frames / energy records")
    p.add_argument("--summary", type=Path, default=None, help="JSON summary (default: TRAJ with .json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model's energy (first step compiles: tens of seconds on CPU)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.structure is not None:
        from ase.io import read

        if not args.structure.is_file():
            raise ValueError(f"equikit md: `--structure` {str(args.structure)!r} is not a file")
        atoms = read(args.structure, index=-1)
    else:
        atoms = build_structure(args.recipe, args.repeat)
    out = run_md(str(args.model), atoms, ensemble=args.ensemble, temperature_K=args.temperature,
                 init_temperature_K=args.init_temperature, timestep_fs=args.timestep, steps=args.steps,
                 friction_per_fs=args.friction, traj=args.traj, log_every=args.log_every, seed=args.seed,
                 progress=args.progress, compile=args.compile)
    path = args.summary or (args.traj.with_suffix(".json") if args.traj is not None else None)
    if path is not None:
        from equikit.train import write_summary

        write_summary(path, out)
    print(json.dumps(out), file=sys.stdout, flush=True)
    return 0
