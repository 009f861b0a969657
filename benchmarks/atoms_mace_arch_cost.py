"""Cost of an architecture option of the potential: thread-time A/B against the same model without it.

Issue 7, session 8: the options that bring the potential closer to MACE's architecture (docs/potentials.md)
change the cost of a force evaluation and of a training step; this measures by how much. Each candidate is a
variant of an accuracy config (``benchmarks/configs/atoms_mace_accuracy_s8.yaml`` by default: PotentialConfig
fields, and ``grid_options`` that ``atoms_mace_accuracy.py`` installs for prototypes); all are built in one
process and timed interleaved (``_common.interleaved``), one thread, with the thread's CPU time (a loaded
shared machine inflates wall clock, not thread time). Measured per input:

- ``forces``: energy + forces of one structure (neighbour list prepared), inference (no ``create_graph``):
  the MD pattern; ethanol (one 9-atom frame) and a rattled Cu108 cell;
- ``training step``: energy + forces with ``create_graph`` + backward of an energy + force loss on 10 ethanol
  frames (90 atoms) / the Cu108 cell (no optimizer step: the same for all variants up to the parameter count).

    .venv/bin/python benchmarks/atoms_mace_arch_cost.py --variants cg cg_mace_skip --name atoms_mace_arch_cost_s8

Ratios are to the first variant. Writes ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))


def build(settings: dict, variant: str, atomic_numbers: tuple, dtype: str = "float32"):
    """A fresh :class:`~equikit.models.Potential` of ``variant`` (seed 0), its grid options installed."""
    import torch

    import atoms_mace_accuracy as acc
    import equikit.models.potential as pot

    fields, grid, _ = acc.split_variant(settings["variants"][variant])
    acc.use_grid_options(grid)
    cfg = pot.PotentialConfig(**{**settings["model"], **fields, "atomic_numbers": atomic_numbers,
                                 "avg_num_neighbors": 10.0, "dtype": dtype})
    torch.manual_seed(0)
    return pot.Potential(cfg)


def inputs(work: Path) -> dict:
    """``{name: (frames for forces, frames for the training step, atomic numbers)}``."""
    from ase.build import bulk
    from ase.io import read

    eth = read(work / "ethanol" / "test.xyz", index=":10", format="extxyz")
    for a in eth:
        a.calc = None
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    cu.rattle(0.05, seed=0)
    return {"ethanol": (eth[:1], eth, (1, 6, 8)), "Cu108": ([cu], [cu], (29,))}


def measure(settings: dict, variants: list[str], work: Path, repeats: int) -> dict:
    import torch

    from _common import interleaved
    from equikit.data.atoms import AtomsBatch

    cutoff = settings["model"]["cutoff"]
    rows: dict = {}
    for case, (one, many, z) in inputs(work).items():
        models = {v: build(settings, v, z) for v in variants}
        b1, bt = (AtomsBatch.from_atoms([a.copy() for a in f], dtype=torch.float32) for f in (one, many))
        n1, nt = b1.neighbors(cutoff), bt.neighbors(cutoff)

        def forces(model, b1=b1, n1=n1):
            return lambda: model(b1, compute_forces=True, neighbors=n1)

        def train(model, bt=bt, nt=nt):
            def run():
                out = model(bt, compute_forces=True, training=True, neighbors=nt)
                (out["energy"].square().sum() + out["forces"].square().sum()).backward()
            return run

        for what, make in (("forces", forces), ("training step", train)):
            t = interleaved({v: make(models[v]) for v in variants}, repeats=repeats, clock=time.thread_time)
            base = t[variants[0]]["median_s"]
            key = f"{case}: {what}"
            rows[key] = {v: {"median_ms": 1e3 * t[v]["median_s"], "ratio": t[v]["median_s"] / base}
                         for v in variants}
            print(key, {v: round(r["ratio"], 3) for v, r in rows[key].items()}, flush=True)
        rows[f"{case}: parameters"] = {v: models[v].count_parameters() for v in variants}
    return rows


def main(argv=None) -> int:
    import torch

    import atoms_mace_accuracy as acc
    from _common import environment, write_results

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "atoms_mace_accuracy_s8.yaml")
    ap.add_argument("--variants", nargs="+", required=True, help="variants of --config; the first is the reference")
    ap.add_argument("--work", type=Path, default=acc.WORK, help="the accuracy benchmark's work files (ethanol frames)")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--name", default="atoms_mace_arch_cost")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    settings = acc.load_settings(args.config)
    unknown = sorted(set(args.variants) - set(settings["variants"]))
    if unknown:
        raise SystemExit(f"atoms_mace_arch_cost: unknown variants {unknown}; {args.config} has "
                         f"{sorted(settings['variants'])}")
    env0 = environment()
    rows = measure(settings, args.variants, args.work, args.repeats)
    env = environment()
    vs = args.variants
    lines = [f"# Cost of architecture options (thread time, one thread, median of {args.repeats}, interleaved)", "",
             f"`benchmarks/atoms_mace_arch_cost.py --variants {' '.join(vs)}` ({args.config.name}); load average "
             f"{tuple(round(x, 2) for x in env0['loadavg'])} -> {tuple(round(x, 2) for x in env['loadavg'])} "
             "(shared 2-core machine: provisional). forces: energy + forces of one structure (ethanol: 9 atoms), "
             "inference; training step: energy + forces (create_graph) + backward on 10 ethanol frames / Cu108, no "
             "optimizer. Ratio to the first variant.", "",
             "| input: what | " + " | ".join(vs) + " |", "|---|" + "---|" * len(vs)]
    for key, r in rows.items():
        if key.endswith("parameters"):
            lines.append(f"| {key} | " + " | ".join(f"{r[v]:,}" for v in vs) + " |")
        else:
            lines.append(f"| {key} | " + " | ".join(f"{r[v]['median_ms']:.2f} ms ({r[v]['ratio']:.2f}x)"
                                                      for v in vs) + " |")
    payload = {"env": env0, "env_end": env, "config": str(args.config.relative_to(ROOT)),
               "variants": {v: settings["variants"][v] for v in vs}, "repeats": args.repeats, "results": rows}
    write_results(args.name, payload, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
