"""Speed of equikit's MACE-style potential against mace-torch, side by side in one process.

mace-torch 0.3.16 pins e3nn 0.4.4, so this runs in the SECOND venv (DESIGN §5), where equikit is
imported from ``src/`` (its core needs only torch, numpy and scipy; ASE comes with mace-torch)::

    make .venv-mace/.installed
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 .venv-mace/bin/python benchmarks/atoms_mace_speed.py --threads 1 2

Matched sizes (issue 7): hidden ``32x0e+32x1o`` ("small") and ``64x0e+64x1o+64x2e`` ("large"),
max_ell 3, correlation 3, cutoff 5 A, 2 interactions, 8 Bessel functions with the p=6 polynomial
envelope, radial MLP (64, 64, 64), readout MLP 16, the same elements and ``avg_num_neighbors``
(measured on the structure), float32 for both. mace-torch: ``modules.MACE`` with its default
``RealAgnosticResidualInteractionBlock`` (first layer too). equikit: one
:class:`~equikit.models.potential.Potential` per variant (``VARIANTS``).

Structures: MMFF94 MD frames of the MD17 molecules (``equikit.data.atoms_md.load_mmff``, a short
recipe below; RDKit lives in the main venv, so when it is missing here the frames are written by
``--data-python`` (default ``.venv/bin/python``) running this script with ``--write-frames``), and
rattled EMT Cu cells of 108 and 256 atoms (labels from ASE's EMT).

Measured, interleaved in a rotating order (A B C, B C A, C A B, ...: no candidate always follows the
same one), medians of ``--repeats`` after warm-up, with the minor page faults per call:

- ``forces``: energy + forces of one structure from a prepared batch (neighbour list built
  beforehand for both: mace-torch's ``AtomicData`` holds its graph, ours gets ``neighbors=``);
- ``train``: one training step on a batch of ``train_batch`` structures (energy + force MSE,
  backward through the forces, Adam step), graphs prepared beforehand for both;
- ``md``: velocity Verlet (1 fs, 300 K start) through each code's ASE calculator
  (``MACECalculator(models=...)``, ``EquikitCalculator``), neighbour search included;
  ``--md-steps`` steps per timed call, reported as steps per second.

Before timing, each model is checked: energy invariant and forces equivariant under a random
rotation + reflection + translation (float32, rel. 1e-4), and forces equal to central finite
differences of the energy along a direction ``d`` (the unit force plus a random unit vector,
normalised; a float64 copy, Richardson-extrapolated central differences at h = 1e-4 and 5e-5;
``|FD - F . d| < 1e-6 |F|``, with the error that the energy's float64 rounding noise alone
explains recorded beside it).

Writes benchmarks/results/atoms_mace_speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _common import RESULTS, environment, pyplot, write_results
from equikit.data.atoms import AtomsBatch
from equikit.models.calculator import EquikitCalculator
from equikit.models.potential import Potential, PotentialConfig, average_num_neighbors

ROOT = Path(__file__).resolve().parents[1]

SIZES = {"small": "32x0e+32x1o", "large": "64x0e+64x1o+64x2e"}
CUTOFF = 5.0
#: equikit variants: name -> PotentialConfig fields
VARIANTS = {
    "cg": {"radial": "bessel", "tp_backend": "sparse_cg", "product": "symmetric_contraction"},
    "cg_spline": {"radial": "spline", "tp_backend": "sparse_cg", "product": "symmetric_contraction"},
    "grid_sc": {"radial": "spline", "tp_backend": "sphere_grid", "product": "symmetric_contraction"},
    "facet": {"radial": "spline", "tp_backend": "sphere_grid", "product": "grid_mlp"},
    # the same model as `facet` (spline radial, Gaunt edge product, grid-MLP mixing), its Gaunt
    # product run without the sphere grid (at max_ell 3 the grid quadrature is 2.5-6x slower; it wins
    # from L ~ 6, docs/tp.md): sessions 4-6 by the sparse Gaunt-coefficient kernel, since session 7 as
    # per-edge matrices (gaunt_edge="matrix"); outputs agree to float32 rounding
    "facet_sparse": {"radial": "spline", "tp_backend": "sparse_cg", "tp_product": "gaunt", "product": "grid_mlp",
                     "gaunt_edge": "matrix"},
    # facet_sparse with the grid MLP conditioned on each atom's input scalars (element embedding in
    # the first layer): a per-atom shift of the first hidden layer (session 6, docs/potentials.md)
    "facet_cond": {"radial": "spline", "tp_backend": "sparse_cg", "tp_product": "gaunt", "product": "grid_mlp",
                   "grid_condition": "scalars", "gaunt_edge": "matrix"},
    # facet_cond with the grid MLP's input x 5 / output / 5 and its last layer per output degree and element
    # (session 7, helper B: the variant within 10 % of mace-torch's force MAE, docs/potentials.md)
    "facet_gain_el": {"radial": "spline", "tp_backend": "sparse_cg", "tp_product": "gaunt", "product": "grid_mlp",
                      "grid_condition": "scalars", "gaunt_edge": "matrix", "grid_gain": 5.0,
                      "grid_output": "element"},
    # facet_cond with its Gaunt edge product run as before session 7: the sparse kernel with the fused path
    # weights w_in[l1] w_out[l3] (gaunt_edge="fused"); facet_sparse / facet_cond run the default
    # gaunt_edge="matrix" (per-edge matrices T = Y @ G' and the gather-free edge kernel, docs/potentials.md)
    "facet_cond_fused": {"radial": "spline", "tp_backend": "sparse_cg", "tp_product": "gaunt", "product": "grid_mlp",
                         "grid_condition": "scalars", "gaunt_edge": "fused"},
    # session 8 (helper B): the accurate parametrisations at the longer budget (ethanol, 500 steps, 3
    # seeds: force MAE 0.88x / 1.00x mace-torch's, docs/potentials.md): cg with the radial MLP in
    # e3nn's (MACE's) parametrisation, facet_gain_el with its grid-MLP weights scaled by fan-in
    "cg_e3nn": {"radial": "bessel", "tp_backend": "sparse_cg", "product": "symmetric_contraction",
                "radial_param": "e3nn"},
    "facet_gain_el_fan_in": {"radial": "spline", "tp_backend": "sparse_cg", "tp_product": "gaunt",
                             "product": "grid_mlp", "grid_condition": "scalars", "gaunt_edge": "matrix",
                             "grid_gain": 5.0, "grid_output": "element", "grid_param": "fan_in"},
}
#: case -> (kind, molecule or repeat, structures per training batch)
CASES = {
    "ethanol": ("mmff", "ethanol", 8),
    "aspirin": ("mmff", "aspirin", 8),
    "cu108": ("emt", 3, 2),
    "cu256": ("emt", 4, 1),
}
MMFF_RECIPE = {"temperatures": (300.0,), "frames_per_temperature": 16, "stride": 10, "equilibration_steps": 200}


# --------------------------------------------------------------------------- structures
def write_frames(molecule: str, path: str) -> None:
    """(main venv) MMFF94 frames of ``molecule`` with the short recipe -> ``path`` (.npz)."""
    from equikit.data.atoms_md import MMFFConfig, load_mmff

    frames = load_mmff(MMFFConfig(molecule, **MMFF_RECIPE), progress=False)
    np.savez(path, **frames.to_numpy())


def mmff_atoms(molecule: str, data_python: str) -> list:

    try:
        import rdkit  # noqa: F401
        with tempfile.TemporaryDirectory() as tmp:
            write_frames(molecule, f"{tmp}/f.npz")
            arrays = dict(np.load(f"{tmp}/f.npz"))
    except ImportError:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([data_python, __file__, "--write-frames", molecule, f"{tmp}/f.npz"], check=True)
            arrays = dict(np.load(f"{tmp}/f.npz"))
    return atoms_from_arrays(arrays)


def atoms_from_arrays(arrays: dict) -> list:
    """ASE ``Atoms`` with ``REF_energy`` / ``REF_forces`` from the arrays of an AtomsBatch."""
    from ase import Atoms

    b = AtomsBatch.from_numpy(arrays, dtype=torch.float64)
    out, start = [], 0
    for s, n in enumerate(b.natoms.tolist()):
        a = Atoms(numbers=b.numbers[start:start + n].numpy(), positions=b.positions[start:start + n].numpy())
        a.info["REF_energy"] = float(b.energy[s])
        a.arrays["REF_forces"] = b.forces[start:start + n].numpy().copy()
        out.append(a)
        start += n
    return out


def emt_atoms(repeat: int, count: int) -> list:
    from ase.build import bulk
    from ase.calculators.emt import EMT

    out = []
    for seed in range(count):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        a.rattle(0.05, seed=seed)
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces().copy()
        a.calc = None
        out.append(a)
    return out


def to_batch(atoms_list, dtype) -> AtomsBatch:
    return AtomsBatch.from_arrays(
        positions=np.concatenate([a.positions for a in atoms_list]),
        numbers=np.concatenate([a.numbers for a in atoms_list]), natoms=[len(a) for a in atoms_list],
        cell=np.stack([np.asarray(a.cell) for a in atoms_list]), pbc=np.stack([a.pbc for a in atoms_list]),
        energy=np.array([a.info["REF_energy"] for a in atoms_list]),
        forces=np.concatenate([a.arrays["REF_forces"] for a in atoms_list]), dtype=dtype)


# --------------------------------------------------------------------------- models
def ours_model(size: str, variant: str, elements, avg: float) -> Potential:
    torch.manual_seed(0)
    cfg = PotentialConfig(atomic_numbers=tuple(elements), cutoff=CUTOFF, num_radial=8, envelope_p=6, max_ell=3,
                          hidden_irreps=SIZES[size], correlation=3, num_interactions=2, avg_num_neighbors=avg,
                          radial_mlp=(64, 64, 64), readout_hidden=16, dtype="float32", **VARIANTS[variant])
    return Potential(cfg)


def mace_model(size: str, elements, avg: float):
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.MACE(
        r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=6, max_ell=3, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=len(elements),
        hidden_irreps=o3.Irreps(SIZES[size]), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(elements)), avg_num_neighbors=avg, atomic_numbers=list(elements),
        correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64])
    torch.set_default_dtype(old)
    return model.float()


def mace_batch(atoms_list, elements, dtype) -> dict:
    from mace import data as mdata
    from mace.tools import torch_geometric, utils

    z_table = utils.AtomicNumberTable(list(elements))
    keyspec = mdata.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    graphs = [mdata.AtomicData.from_config(mdata.config_from_atoms(a, key_specification=keyspec), z_table=z_table,
                                           cutoff=CUTOFF, heads=["Default"]) for a in atoms_list]
    torch.set_default_dtype(old)
    loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=len(graphs), shuffle=False)
    return next(iter(loader)).to_dict()


# one call signature for both codes: (model, prepared input) -> energy (B,), forces (N, 3)
def run_ours(model, prep, training=False):
    batch, nb = prep
    out = model(batch, training=training, neighbors=nb)
    return out["energy"], out["forces"]


def run_mace(model, prep, training=False):
    d = dict(prep)
    d["positions"] = d["positions"].detach()
    out = model(d, training=training, compute_force=True)
    return out["energy"], out["forces"]


def prep_ours(atoms_list, dtype):
    b = to_batch(atoms_list, dtype)
    return b, b.neighbors(CUTOFF)


def prep_mace(atoms_list, elements, dtype):
    return mace_batch(atoms_list, elements, dtype)


# --------------------------------------------------------------------------- checks
def _transformed(atoms, seed: int):
    """``atoms`` under a random orthogonal matrix (a reflection when its determinant is -1) and a
    translation; the cell moves with the atoms. Returns (atoms', Q)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    if np.linalg.det(q) > 0:
        q = -q  # include a reflection
    out = atoms.copy()
    out.positions = atoms.positions @ q.T + rng.standard_normal(3)
    out.cell = np.asarray(atoms.cell) @ q.T
    for k in ("REF_forces",):
        out.arrays[k] = atoms.arrays[k] @ q.T
    return out, q


def check_model(run, model, prep_fn, atoms) -> dict:
    """Invariance/equivariance (float32) and forces vs finite differences (float64 copy)."""
    moved, q = _transformed(atoms, 7)
    e1, f1 = run(model, prep_fn([atoms], torch.float32))
    e2, f2 = run(model, prep_fn([moved], torch.float32))
    f1, f2 = f1.detach().double().numpy(), f2.detach().double().numpy()
    e1, e2 = e1.detach(), e2.detach()
    e_err = abs(float(e1) - float(e2)) / max(1.0, abs(float(e1)))
    f_err = np.abs(f1 @ q.T - f2).max() / max(1e-12, np.abs(f1).max())
    m64 = copy.deepcopy(model).double()
    _, f = run(m64, prep_fn([atoms], torch.float64))
    fa = f.detach().numpy()
    fnorm = max(1e-300, float(np.linalg.norm(fa)))
    # the direction: half the unit force (a wrong scale or sign of the forces shows at full size) and
    # half a random unit vector (errors orthogonal to the forces)
    d = np.random.default_rng(3).standard_normal(atoms.positions.shape)
    d = fa / fnorm + d / np.linalg.norm(d)
    d /= np.linalg.norm(d)

    def central(h):
        es = []
        for sgn in (1, -1):
            a = atoms.copy()
            a.arrays["REF_forces"] = atoms.arrays["REF_forces"]
            a.positions = atoms.positions + sgn * h * d
            es.append(float(run(m64, prep_fn([a], torch.float64))[0].detach()))
        return -(es[0] - es[1]) / (2 * h)

    # Richardson: the central difference's O(h^2) term cancels (the grid variants' curvature made
    # the plain h = 1e-4 quotient miss 1e-6 by 7e-6, shrinking as h^2: a quotient error, not a force error)
    fd = (4 * central(5e-5) - central(1e-4)) / 3
    an = float((fa * d).sum())
    # measured against |F| (the largest directional derivative), not against |F . d|: an untrained model
    # on a near-perfect crystal has forces ~1e-4 of its energy's scale (Cu108 large, cg: E = 27 eV,
    # |F| = 2.7e-3 eV/A; along the old purely random d, F . d = 1.3e-4), and the quotient's float64
    # rounding, ~dE / h with dE the energy's rounding noise (2e-14 eV), was 1.4e-6 of that F . d
    # (growing as 1/h below h = 3e-4): the session-4 "cg FAILED" on Cu108 large
    fd_err = abs(fd - an) / fnorm
    # the energy's float64 rounding noise: the spread of E over atom orders (summation order only),
    # and the error it alone can put into the extrapolated quotient, on the same scale
    es = []
    for seed in (1, 2):
        p = np.random.default_rng(seed).permutation(len(atoms))
        a = atoms[p]
        a.arrays["REF_forces"] = atoms.arrays["REF_forces"][p]
        es.append(float(run(m64, prep_fn([a], torch.float64))[0].detach()))
    noise = float(np.ptp([*es, float(run(m64, prep_fn([atoms], torch.float64))[0].detach())]))
    roundoff = (4 / 3 * noise / 1e-4 + 1 / 3 * noise / 2e-4) / fnorm
    ok = e_err < 1e-4 and f_err < 1e-4 and fd_err < 1e-6
    return {"energy_invariance_rel": e_err, "force_equivariance_rel": f_err, "force_fd_rel": fd_err,
            "force_fd_roundoff_rel": roundoff, "force_fd_along_rel": abs(fd - an) / max(1e-300, abs(an)),
            "force_norm": fnorm, "passed": ok}


# --------------------------------------------------------------------------- timing
def rotated(candidates: dict, repeats: int, warmup: int) -> dict:
    """``_common.interleaved`` with the order rotated every repeat (A B C, B C A, C A B, ...), so no
    candidate always runs right after the same one (after mace-torch's large temporaries glibc has
    trimmed its heap, and the next call pays the page faults), plus the minor page faults per call
    (``getrusage``, median)."""
    import resource
    import statistics
    import time

    names = list(candidates)
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict = {n: [] for n in names}
    faults: dict = {n: [] for n in names}
    for k in range(repeats):
        for n in names[k % len(names):] + names[: k % len(names)]:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            candidates[n]()
            times[n].append(time.perf_counter() - t0)
            faults[n].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {n: {"median_s": statistics.median(times[n]), "times_s": times[n],
                "faults": statistics.median(faults[n])} for n in names}


def train_step_fn(run, model, prep, natoms, energy, forces):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        e, f = run(model, prep, training=True)
        loss = (((e - energy) / natoms) ** 2).mean() + 10.0 * ((f - forces) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def md_fn(atoms, calc, steps: int):
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    a = atoms.copy()
    a.calc = calc
    thermalize_momenta(a, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(a, 1.0 * units.fs)
    return lambda: dyn.run(steps)


def make_calculators(models: dict, skin: float):
    from mace.calculators import MACECalculator

    calcs = {}
    for name, m in models.items():
        if name == "mace_torch":
            calcs[name] = MACECalculator(models=m, device="cpu", default_dtype="float32")
        else:
            calcs[name] = EquikitCalculator(m, **({"skin": skin} if skin is not None else {}))
    return calcs


def run_case(case: str, size: str, variants, threads: int, repeats: int, md_steps: int, data_python: str,
             measures) -> dict:
    kind, what, n_train = CASES[case]
    atoms = mmff_atoms(what, data_python)[: max(n_train, 1)] if kind == "mmff" else emt_atoms(what, n_train)
    elements = sorted(set(np.concatenate([a.numbers for a in atoms]).tolist()))
    avg = average_num_neighbors(to_batch(atoms[:1], torch.float64), CUTOFF)
    models = {"mace_torch": mace_model(size, elements, avg)}
    models.update({v: ours_model(size, v, elements, avg) for v in variants})
    runs = {n: (run_mace if n == "mace_torch" else run_ours) for n in models}

    def prep(n, lst, dtype):
        return prep_mace(lst, elements, dtype) if n == "mace_torch" else prep_ours(lst, dtype)

    res = {"case": case, "size": size, "threads": threads, "natoms": len(atoms[0]), "elements": elements,
           "avg_num_neighbors": avg, "train_batch": n_train,
           "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
           "checks": {n: check_model(runs[n], m, lambda lst, dt, n=n: prep(n, lst, dt), atoms[0])
                      for n, m in models.items()},
           "median_s": {}}
    if "forces" in measures:
        one = {n: prep(n, atoms[:1], torch.float32) for n in models}
        r = rotated({n: (lambda n=n: runs[n](models[n], one[n])) for n in models}, repeats=repeats, warmup=2)
        res["median_s"]["forces"] = {n: v["median_s"] for n, v in r.items()}
        res.setdefault("faults", {})["forces"] = {n: v["faults"] for n, v in r.items()}
    if "train" in measures:
        b = to_batch(atoms, torch.float32)
        steps = {}
        for n in models:
            m = copy.deepcopy(models[n])  # training must not change the models timed for MD
            steps[n] = train_step_fn(runs[n], m, prep(n, atoms, torch.float32), b.natoms.float(), b.energy,
                                     b.forces)
        r = rotated(steps, repeats=repeats, warmup=2)
        res["median_s"]["train"] = {n: v["median_s"] for n, v in r.items()}
        res.setdefault("faults", {})["train"] = {n: v["faults"] for n, v in r.items()}
    if "md" in measures:
        calcs = make_calculators(models, skin=None)
        calls = {n: md_fn(atoms[0], c, md_steps) for n, c in calcs.items()}
        calcs0 = make_calculators({v: models[v] for v in variants[:1]}, skin=0.0)
        calls.update({f"{n}_noskin": md_fn(atoms[0], c, md_steps) for n, c in calcs0.items()})
        r = rotated(calls, repeats=max(3, repeats // 3), warmup=1)
        res["median_s"]["md"] = {n: v["median_s"] / md_steps for n, v in r.items()}
        res.setdefault("faults", {})["md"] = {n: v["faults"] / md_steps for n, v in r.items()}
        # neighbour searches per step of each equikit calculator (Verlet skin; skin 0: every step)
        steps_run = (1 + max(3, repeats // 3)) * md_steps
        res["md_rebuilds_per_step"] = {n: c.rebuilds / steps_run for n, c in calcs.items() if n != "mace_torch"}
    if "md_compiled" in measures:
        # ours through EquikitCalculator(compile=True) (torch.compile of the energy, forces by autograd
        # through it); the mace-torch column is its eager calculator, as in "md"
        mace_calc = make_calculators({"mace_torch": models["mace_torch"]}, None)["mace_torch"]
        calls = {"mace_torch": md_fn(atoms[0], mace_calc, md_steps)}
        res["compile_s"] = {}
        for v in variants:
            calc = EquikitCalculator(models[v], compile=True)
            t0 = time.perf_counter()
            md_fn(atoms[0], calc, 2 * md_steps)()  # compiles (and recompiles once the edge count changes)
            res["compile_s"][v] = time.perf_counter() - t0
            calls[v] = md_fn(atoms[0], calc, md_steps)
        r = rotated(calls, repeats=max(3, repeats // 3), warmup=1)
        res["median_s"]["md_compiled"] = {n: v["median_s"] / md_steps for n, v in r.items()}
    return res


# --------------------------------------------------------------------------- report
def table(payload) -> str:
    env, env_end = payload["env"], payload.get("env_end", payload["env"])
    variants = payload["variants"]
    lines = ["# equikit Potential vs mace-torch: speed", "",
             f"`{'`; `'.join(payload.get('commands', [payload['command']]))}` (mace-torch {payload['mace_torch']}, "
             f"e3nn 0.4.4, torch {env['torch']}, "
             f"{env['cpu']}, {env['cores']} cores); load average at start "
             f"{tuple(round(v, 2) for v in env['loadavg'])}, at end {tuple(round(v, 2) for v in env_end['loadavg'])}; "
             f"float32; medians of {payload['repeats']} interleaved calls (MD: of "
             f"{max(3, payload['repeats'] // 3)} calls of {payload['md_steps']} steps).", "",
             "Times in ms per call (`forces`: energy + forces of one structure; `train`: one step on the "
             "training batch; `md`: per velocity-Verlet step through the ASE calculator). `x` = "
             "mace-torch time / equikit time (> 1: equikit faster).", "",
             "| case | atoms | size | threads | measure | mace-torch | " + " | ".join(variants) + " | "
             + " | ".join(f"x {v}" for v in variants) + " |",
             "|---" * (6 + 2 * len(variants)) + "|"]
    for r in payload["runs"]:
        for meas, t in r["median_s"].items():
            mace = t["mace_torch"]
            lines.append(f"| {r['case']} | {r['natoms']} | {r['size']} | {r['threads']} | {meas} | "
                         f"{1e3 * mace:.1f} | " + " | ".join(f"{1e3 * t[v]:.1f}" for v in variants) + " | "
                         + " | ".join(f"{mace / t[v]:.2f}" for v in variants) + " |")
    md_skin = [r for r in payload["runs"] if "md" in r["median_s"]]
    if md_skin:
        v0 = variants[0]
        lines += ["", f"MD without the calculator's Verlet skin (`{v0}`, `skin=0`: neighbour search every step), "
                  "ms per step: " + ", ".join(
                      f"{r['case']}/{r['size']}/{r['threads']}t {1e3 * r['median_s']['md'][v0 + '_noskin']:.1f} "
                      f"(skin {1e3 * r['median_s']['md'][v0]:.1f})" for r in md_skin if v0 + "_noskin" in
                      r["median_s"]["md"]) + "."]
    compiled = [r for r in payload["runs"] if "compile_s" in r]
    if compiled:
        lines += ["", "`md_compiled`: our calculators with `compile=True` (mace-torch column: its eager calculator); "
                  "first calls (compile, 2 x md-steps steps), s: " + "; ".join(
                      f"{r['case']}/{r['size']}/{r['threads']}t " + ", ".join(
                          f"{n} {t:.0f}" for n, t in r["compile_s"].items()) for r in compiled) + "."]
    md_faults = [r for r in md_skin if "md" in r.get("faults", {})]
    if md_faults:
        lines += ["", "MD: minor page faults per step (median), and neighbour searches per step of our calculators: "
                  + "; ".join(f"{r['case']}/{r['size']}/{r['threads']}t " + ", ".join(
                      f"{n} {f:.0f}" for n, f in r["faults"]["md"].items()) + " / " + ", ".join(
                      f"{n} {v:.2f}" for n, v in r.get("md_rebuilds_per_step", {}).items()) for r in md_faults) + "."]
    gits = sorted({r.get("git", "?") for r in payload["runs"]})
    if len(gits) > 1:
        lines += ["", "Commits: " + "; ".join(f"{r['case']}/{r['size']}/{r['threads']}t at {r.get('git', '?')}"
                                             for r in payload["runs"]) + "."]
    lines += ["", "Checks (before timing): " + "; ".join(
        f"{r['case']}/{r['size']}: " + ", ".join(f"{n} {'ok' if c['passed'] else 'FAILED'}"
                                                  for n, c in r["checks"].items())
        for r in payload["runs"] if r["threads"] == payload["threads"][0]) + "."]
    lines += ["", "Parameters: " + "; ".join(
        f"{r['case']}/{r['size']}: " + ", ".join(f"{n} {p}" for n, p in r["parameters"].items())
        for r in payload["runs"] if r["threads"] == payload["threads"][0]) + "."]
    return "\n".join(lines) + "\n"


def plot(payload, out_dir: Path, name: str = "atoms_mace_speed") -> None:
    plt = pyplot()
    runs = payload["runs"]
    measures = [m for m in ("forces", "train", "md", "md_compiled") if any(m in r["median_s"] for r in runs)]
    fig, axes = plt.subplots(1, len(measures), figsize=(5 * len(measures), 4.5), sharey=True)
    variants = payload["variants"]
    for ax, meas in zip(axes, measures):
        rows = [r for r in runs if meas in r["median_s"]]
        labels = [f"{r['case']}\n{r['size']} {r['threads']}t" for r in rows]
        x = np.arange(len(rows))
        width = 0.8 / max(1, len(variants))
        for k, v in enumerate(variants):
            ax.bar(x + k * width, [r["median_s"][meas]["mace_torch"] / r["median_s"][meas][v] for r in rows],
                   width, label=v)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(2.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(x + 0.4 - width / 2, labels, rotation=60, fontsize=7)
        ax.set_title(meas)
    axes[0].set_ylabel("mace-torch time / equikit time")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--measures", nargs="+", default=["forces", "train", "md"],
                    choices=["forces", "train", "md", "md_compiled"])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--md-steps", type=int, default=5)
    ap.add_argument("--data-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--write-frames", nargs=2, metavar=("MOLECULE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="atoms_mace_speed")
    ap.add_argument("--append", action="store_true", help="add these runs to an existing <name>.json")
    args = ap.parse_args(argv)
    if args.write_frames:
        write_frames(*args.write_frames)
        return 0
    import mace

    payload = {"command": "benchmarks/atoms_mace_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "env": environment(), "repeats": args.repeats, "md_steps": args.md_steps,
               "mace_torch": getattr(mace, "__version__", "?"), "variants": args.variants, "threads": args.threads,
               "runs": []}
    old = args.out / f"{args.name}.json"
    if args.append and old.exists():
        prev = json.loads(old.read_text())
        payload["runs"] = prev["runs"]
        payload["commands"] = [*prev.get("commands", [prev["command"]]), payload["command"]]
        payload["env"] = prev["env"]
        payload["variants"] = [v for v in prev["variants"] if v in args.variants]
        payload["threads"] = sorted({*prev["threads"], *args.threads})
    payload["git"] = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                    text=True).stdout.strip()
    # threads outermost, small before large: a run stopped early still has the first-thread table
    for threads in args.threads:
        for size in args.sizes:
            for case in args.cases:
                torch.set_num_threads(threads)
                r = run_case(case, size, args.variants, threads, args.repeats, args.md_steps, args.data_python,
                             args.measures)
                r["git"] = payload["git"]  # appended runs may come from another commit
                payload["runs"].append(r)
                payload["env_end"] = environment()
                md = table(payload)
                write_results(args.name, payload, md, args.out)
                print(md.splitlines()[-5 if "md" in r["median_s"] else -4], flush=True)
    plot(payload, args.out, args.name)
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
