"""equikit's MACE-style potential vs mace-torch on an accelerator, side by side in one process.

The GPU counterpart of ``benchmarks/atoms_mace_speed.py`` (same matched sizes, variants, cases,
checks and measures; see that file): ``forces`` (energy + forces of one structure), ``train``
(one training step on a batch) and ``md`` (velocity Verlet through each code's ASE calculator on
the device), each call followed by ``torch.cuda.synchronize()``, interleaved, medians. On the
device larger Cu cells are added (``cu864``: 6x6x6 cubic cells, ``cu2048``: 8x8x8), where a GPU
starts to pay. The MMFF molecule frames come from ``--frames`` (``<molecule>.npz`` written on a
machine with RDKit by ``--write-frames DIR``), as the device image has no RDKit.

Here (main venv, RDKit)::

    .venv/bin/python benchmarks/atoms_mace_speed_device.py --write-frames benchmarks/device_frames

On the device machine, with mace-torch 0.3.16 and e3nn 0.4.4 on the path (benchmarks/device_run.sh)::

    python3 benchmarks/atoms_mace_speed_device.py --frames benchmarks/device_frames --out $OUT

Writes ``atoms_mace_speed_device.{json,md}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import atoms_mace_speed as base
from _common import RESULTS, environment, interleaved, write_results
from equikit.models.calculator import EquikitCalculator
from equikit.models.potential import average_num_neighbors

CASES = {**base.CASES, "cu864": ("emt", 6, 1), "cu2048": ("emt", 8, 1)}
CHECK_MAX_ATOMS = 256  # the checks run on the CPU (float64 finite differences): the big cells are not checked


def write_frames(out_dir: str) -> None:
    """(main venv) the MMFF frames of every molecule case -> ``out_dir/<molecule>.npz``."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for kind, what, _ in base.CASES.values():
        if kind == "mmff":
            base.write_frames(what, str(Path(out_dir) / f"{what}.npz"))


def frames_atoms(path: Path) -> list:
    return base.atoms_from_arrays(dict(np.load(path)))


def _to(obj, device):
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    return obj


def synced(fn, device):
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize()
    return call


def run_case(case: str, size: str, variants, repeats: int, md_steps: int, frames: Path, device, measures) -> dict:
    kind, what, n_train = CASES[case]
    atoms = frames_atoms(frames / f"{what}.npz")[:n_train] if kind == "mmff" else base.emt_atoms(what, n_train)
    elements = sorted(set(np.concatenate([a.numbers for a in atoms]).tolist()))
    avg = average_num_neighbors(base.to_batch(atoms[:1], torch.float64), base.CUTOFF)
    models = {"mace_torch": base.mace_model(size, elements, avg)}
    models.update({v: base.ours_model(size, v, elements, avg) for v in variants})
    runs = {n: (base.run_mace if n == "mace_torch" else base.run_ours) for n in models}

    def prep(n, lst, dtype, dev=device):
        if n == "mace_torch":
            return _to(base.prep_mace(lst, elements, dtype), dev)
        b = base.to_batch(lst, dtype).to(device=dev)
        return b, b.neighbors(base.CUTOFF)

    res = {"case": case, "size": size, "natoms": len(atoms[0]), "train_batch": n_train,
           "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
           "checks": {n: base.check_model(runs[n], m, lambda lst, dt, n=n: prep(n, lst, dt, torch.device("cpu")),
                                          atoms[0]) for n, m in models.items()} if len(atoms[0]) <= CHECK_MAX_ATOMS
           else {},
           "median_s": {}, "first_call_s": {}}
    models = {n: m.to(device) for n, m in models.items()}
    if "forces" in measures:
        one = {n: prep(n, atoms[:1], torch.float32) for n in models}
        calls = {n: synced(lambda n=n: runs[n](models[n], one[n]), device) for n in models}
        res["median_s"]["forces"] = _time(calls, repeats, res["first_call_s"], "forces")
    if "train" in measures:
        b = base.to_batch(atoms, torch.float32).to(device=device)
        steps = {}
        for n in models:
            m = copy.deepcopy(models[n])
            steps[n] = synced(base.train_step_fn(runs[n], m, prep(n, atoms, torch.float32), b.natoms.float(),
                                                 b.energy, b.forces), device)
        res["median_s"]["train"] = _time(steps, repeats, res["first_call_s"], "train")
    if "md" in measures:
        from mace.calculators import MACECalculator

        calcs = {n: (MACECalculator(models=m, device=str(device), default_dtype="float32") if n == "mace_torch"
                     else EquikitCalculator(m, device=device)) for n, m in models.items()}
        calls = {n: base.md_fn(atoms[0], c, md_steps) for n, c in calcs.items()}
        res["median_s"]["md"] = {n: v / md_steps for n, v in
                                 _time(calls, max(3, repeats // 3), res["first_call_s"], "md").items()}
    return res


def _time(calls: dict, repeats: int, first: dict, measure: str) -> dict:
    for n, fn in calls.items():
        t0 = time.perf_counter()
        fn()
        first[f"{measure}/{n}"] = time.perf_counter() - t0
    return {n: v["median_s"] for n, v in interleaved(calls, repeats=repeats, warmup=1).items()}


def table(payload) -> str:
    env = payload["env"]
    variants = payload["variants"]
    lines = [f"# equikit Potential vs mace-torch on {env['device']}", "",
             f"`python benchmarks/atoms_mace_speed_device.py {' '.join(payload['argv'])}` (mace-torch "
             f"{payload['mace_torch']}, e3nn {payload['e3nn']}, torch {env['torch']}); float32; medians of "
             f"{payload['repeats']} interleaved calls, each followed by torch.cuda.synchronize() (MD: of "
             f"{max(3, payload['repeats'] // 3)} calls of {payload['md_steps']} steps, per step). Times in ms; "
             "`x` = mace-torch / equikit (> 1: equikit faster).", "",
             "| case | atoms | size | measure | mace-torch | " + " | ".join(variants) + " | "
             + " | ".join(f"x {v}" for v in variants) + " |",
             "|---|---|---|---|---|" + "---|" * (2 * len(variants))]
    for r in payload["runs"]:
        for measure, t in r["median_s"].items():
            m = t.get("mace_torch")
            cells = " | ".join(f"{1e3 * t[v]:.2f}" if v in t else "" for v in variants)
            xs = " | ".join(f"{m / t[v]:.2f}" if v in t and m else "" for v in variants)
            lines.append(f"| {r['case']} | {r['natoms']} | {r['size']} | {measure} | "
                         f"{'' if m is None else f'{1e3 * m:.2f}'} | {cells} | {xs} |")
    lines += ["", "Checks before timing (on the CPU: E(3) invariance/equivariance float32 rel. 1e-4, forces vs "
              "finite differences float64 rel. 1e-6): " + "; ".join(
                  f"{r['case']}/{r['size']}: " + ", ".join(f"{n} {'ok' if c['passed'] else 'FAILED'}"
                                                          for n, c in r["checks"].items()) for r in payload["runs"]),
              f"Cells over {CHECK_MAX_ATOMS} atoms are not checked (the CPU-side float64 checks would take minutes).",
              "", "Errors: " + ("; ".join(payload["errors"]) if payload["errors"] else "none") + ".",
              "", f"{env['cpu']}, {env['cores']} cores, {env['threads']} torch threads, load {env['loadavg']}; "
              f"{env['time']}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cases", nargs="+", default=["ethanol", "cu108", "cu864", "aspirin", "cu2048"],
                    choices=list(CASES))
    ap.add_argument("--sizes", nargs="+", default=list(base.SIZES), choices=list(base.SIZES))
    ap.add_argument("--variants", nargs="+", default=["cg", "facet"], choices=list(base.VARIANTS))
    ap.add_argument("--measures", nargs="+", default=["forces", "train", "md"], choices=["forces", "train", "md"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=4, help="torch CPU threads (the checks; launches are one thread)")
    ap.add_argument("--md-steps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=240.0, help="seconds; later cases are left out")
    ap.add_argument("--frames", type=Path, default=Path(__file__).resolve().parent / "device_frames")
    ap.add_argument("--write-frames", default=None, metavar="DIR", help="(main venv) write the MMFF frames and exit")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="atoms_mace_speed_device")
    args = ap.parse_args(argv)
    if args.write_frames:
        write_frames(args.write_frames)
        return 0
    import e3nn
    import mace

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    payload = {"argv": sys.argv[1:] if argv is None else list(argv), "env": environment(), "repeats": args.repeats,
               "md_steps": args.md_steps, "mace_torch": getattr(mace, "__version__", "?"), "e3nn": e3nn.__version__,
               "variants": args.variants, "runs": [], "errors": []}
    t0 = time.perf_counter()
    for case in args.cases:  # both sizes of a case before the next case: a run cut by the budget keeps pairs
        for size in args.sizes:
            if time.perf_counter() - t0 > args.budget:
                payload["errors"].append(f"{case}/{size}: left out (time budget)")
                continue
            try:
                r = run_case(case, size, args.variants, args.repeats, args.md_steps, args.frames, device,
                             args.measures)
                payload["runs"].append(r)
            except Exception as exc:
                payload["errors"].append(f"{case}/{size}: {type(exc).__name__}: {str(exc)[:300]}")
            payload["env_end"] = environment()
            md = table(payload)
            write_results(args.name, payload, md, args.out)
            print(md.splitlines()[-7:-5], payload["errors"][-1:], flush=True)
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
