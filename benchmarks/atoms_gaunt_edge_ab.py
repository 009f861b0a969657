"""In-process A/B of the potential's Gaunt edge product: ``gaunt_edge="matrix"`` (per-edge matrices and the
gather-free edge kernel, session 7) against ``gaunt_edge="fused"`` (the sparse Clebsch-Gordan kernel with
fused path weights, sessions 5-6), beside ``cg``, by THREAD time (robust to other processes on a shared
machine), on the inputs of ``atoms_mace_speed.py`` (same structures, models and training step)::

    .venv/bin/python benchmarks/atoms_gaunt_edge_ab.py --cases ethanol cu108 --sizes small --repeats 15

Measures: ``train`` (one Adam step on energy + force MSE, backward through the forces, on the benchmark's
training batch), ``forces`` (energy + forces of one structure, prepared neighbour list) and ``md`` (5
velocity-Verlet steps through ``EquikitCalculator``, skin 0.5 A, reported per step). Candidates run
interleaved in a rotating order; medians of thread CPU time. Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import atoms_mace_speed as amb
from _common import environment, interleaved, write_results
from equikit.models.calculator import EquikitCalculator

MD_STEPS = 5

CANDIDATES = {
    "cg": amb.VARIANTS["cg"],
    "facet_cond (matrix)": {**amb.VARIANTS["facet_cond"], "gaunt_edge": "matrix"},
    "facet_cond (fused)": {**amb.VARIANTS["facet_cond"], "gaunt_edge": "fused"},
}


def run(case: str, size: str, repeats: int, data_python: str) -> dict:
    kind, what, n_train = amb.CASES[case]
    atoms = amb.mmff_atoms(what, data_python)[:n_train] if kind == "mmff" else amb.emt_atoms(what, n_train)
    elements = sorted({int(z) for a in atoms for z in a.numbers})
    avg = amb.average_num_neighbors(amb.to_batch(atoms[:1], torch.float64), amb.CUTOFF)
    batch = amb.to_batch(atoms, torch.float32)
    prep, one = amb.prep_ours(atoms, torch.float32), amb.prep_ours(atoms[:1], torch.float32)
    calls = {}
    for name, fields in CANDIDATES.items():
        amb.VARIANTS["_ab"] = fields
        model = amb.ours_model(size, "_ab", elements, avg)
        calls[f"train/{name}"] = amb.train_step_fn(amb.run_ours, copy.deepcopy(model), prep, batch.natoms.float(),
                                                   batch.energy, batch.forces)
        calls[f"forces/{name}"] = lambda m=model: amb.run_ours(m, one)
        calls[f"md/{name}"] = amb.md_fn(atoms[0], EquikitCalculator(model), MD_STEPS)
    # two warm-up calls each (kernels compiled, caches filled), then rotated rounds
    timed = interleaved(calls, repeats, warmup=2, clock=time.thread_time, rotate=True)
    times = {k: v["times_s"] for k, v in timed.items()}
    return {"case": case, "size": size, "edges_train": int(prep[1].edge_index.shape[1]),
            "edges_forces": int(one[1].edge_index.shape[1]),
            "median_ms": {k: 1e3 * statistics.median(v) / (MD_STEPS if k.startswith("md/") else 1)
                          for k, v in times.items()}, "times_s": times}


def table(payload: dict) -> str:
    lines = ["# Gaunt edge product: matrix vs fused (thread time, one thread, float32)", "",
             f"`{payload['command']}`; torch {payload['env']['torch']}, {payload['env']['cpu']}; load average "
             f"{tuple(round(v, 2) for v in payload['env']['loadavg'])} at start, "
             f"{tuple(round(v, 2) for v in payload['env_end']['loadavg'])} at end; medians of {payload['repeats']} "
             "interleaved calls, thread CPU time.", "",
             "| case | size | measure | edges | cg (ms) | matrix (ms) | fused (ms) | fused / matrix | cg / matrix "
             "| cg / fused |", "|---" * 10 + "|"]
    for r in payload["runs"]:
        t = r["median_ms"]
        for meas in ("forces", "train", "md"):
            if f"{meas}/cg" not in t:
                continue
            cg, mx, fu = t[f"{meas}/cg"], t[f"{meas}/facet_cond (matrix)"], t[f"{meas}/facet_cond (fused)"]
            edges = r["edges_train"] if meas == "train" else r["edges_forces"]  # md: one structure
            lines.append(f"| {r['case']} | {r['size']} | {meas} | {edges} | {cg:.1f} | {mx:.1f} | {fu:.1f} | "
                         f"{fu / mx:.2f} | {cg / mx:.2f} | {cg / fu:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["ethanol", "cu108"], choices=list(amb.CASES))
    ap.add_argument("--sizes", nargs="+", default=["small"], choices=list(amb.SIZES))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--data-python", default=str(amb.ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--name", default="atoms_gaunt_edge_ab")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    payload = {"command": "benchmarks/atoms_gaunt_edge_ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "env": environment(), "repeats": args.repeats, "runs": []}
    for size in args.sizes:
        for case in args.cases:
            payload["runs"].append(run(case, size, args.repeats, args.data_python))
            payload["env_end"] = environment()
            write_results(args.name, payload, table(payload))
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
