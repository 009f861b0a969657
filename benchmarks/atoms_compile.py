"""What ``torch.compile`` gives for a full potential force evaluation: eager ``Potential.node_energies`` +
``torch.autograd.grad`` forces against ``torch.compile(model.node_energies)`` (inductor, default options)
+ the same ``autograd.grad`` (the compiled graph's backward), on ``benchmarks/atoms_mace_speed.py``'s
models and structures, parameters frozen (``requires_grad`` False, as ``EquikitCalculator`` does)::

    .venv/bin/python benchmarks/atoms_compile.py --variants cg facet_gain_el --cases ethanol cu108 --repeats 30

Per case and variant: the dynamo graphs and graph breaks of ``node_energies`` (``torch._dynamo.explain``),
the first compiled call (compile + run, wall clock, reported apart; inductor's caches disabled unless
``--warm-cache``, so it is a cold compile), the largest deviation of the compiled
energies / forces from eager (float32), and medians of thread CPU time of eager vs compiled force
evaluations interleaved in a rotating order, one thread, one structure with its prepared neighbour list.
Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import atoms_mace_speed as amb
from _common import environment, interleaved, write_results

ROOT = Path(__file__).resolve().parents[1]


def forces_fn(node_energies, batch, nb):
    """``() -> (energy, forces)`` of one structure through ``node_energies`` (eager or compiled)."""

    def run():
        pos = batch.positions.detach().requires_grad_(True)
        e = node_energies(pos, batch.cell, batch.batch, batch.numbers, batch.pbc, nb.edge_index, nb.shifts)
        energy = e.sum()
        (g,) = torch.autograd.grad(energy, pos)
        return energy.detach(), -g

    return run


def graph_breaks(model, batch, nb) -> dict:
    """Dynamo's view of ``node_energies``: graphs, breaks and their reasons."""
    torch._dynamo.reset()
    pos = batch.positions.detach().requires_grad_(True)
    ex = torch._dynamo.explain(model.node_energies)(pos, batch.cell, batch.batch, batch.numbers, batch.pbc,
                                                    nb.edge_index, nb.shifts)
    torch._dynamo.reset()
    reasons = []
    for r in ex.break_reasons:
        frame = r.user_stack[-1] if r.user_stack else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame is not None else "?"
        reasons.append(f"{where}: {r.reason.splitlines()[0][:200]}")
    return {"graphs": ex.graph_count, "breaks": ex.graph_break_count, "ops": ex.op_count, "reasons": reasons}


def run(case: str, variant: str, repeats: int, data_python: str) -> dict:
    kind, what, _ = amb.CASES[case]
    atoms = amb.mmff_atoms(what, data_python)[:1] if kind == "mmff" else amb.emt_atoms(what, 1)
    elements = sorted({int(z) for z in atoms[0].numbers})
    avg = amb.average_num_neighbors(amb.to_batch(atoms, torch.float64), amb.CUTOFF)
    model = amb.ours_model("small", variant, elements, avg)
    for p in model.parameters():  # frozen, as EquikitCalculator runs the model
        p.requires_grad_(False)
    batch, nb = amb.prep_ours(atoms, torch.float32)
    res = {"case": case, "variant": variant, "natoms": len(atoms[0]), "edges": int(nb.edge_index.shape[1]),
           "dynamo": graph_breaks(model, batch, nb)}
    eager = forces_fn(model.node_energies, batch, nb)
    compiled_fn = torch.compile(model.node_energies)
    compiled = forces_fn(compiled_fn, batch, nb)
    t0 = time.perf_counter()
    got = compiled()
    res["first_call_s"] = time.perf_counter() - t0  # compile (dynamo + inductor) and the first run
    ref = eager()
    res["max_rel_dev"] = {k: float((a - b).abs().max() / b.abs().max()) for k, a, b in
                          zip(("energy", "forces"), got, ref)}
    timed = interleaved({"eager": eager, "compiled": compiled}, repeats, warmup=3, clock=time.thread_time, rotate=True)
    res["median_ms"] = {k: 1e3 * v["median_s"] for k, v in timed.items()}
    res["times_s"] = {k: v["times_s"] for k, v in timed.items()}
    torch._dynamo.reset()
    print(f"{case} {variant}: eager {res['median_ms']['eager']:.2f} ms, compiled {res['median_ms']['compiled']:.2f} "
          f"ms, first call {res['first_call_s']:.1f} s, breaks {res['dynamo']['breaks']}", flush=True)
    return res


def table(payload: dict) -> str:
    env, end = payload["env"], payload["env_end"]
    lines = ["# torch.compile of the potential's force evaluation (thread time, one thread, float32)", "",
             f"`{payload['command']}`; torch {env['torch']}, {env['cpu']}; load average "
             f"{tuple(round(v, 2) for v in env['loadavg'])} at start, {tuple(round(v, 2) for v in end['loadavg'])} "
             f"at end; medians of {payload['repeats']} interleaved calls (rotating order), thread CPU time; "
             "parameters frozen; `torch.compile(model.node_energies)` (inductor) + `torch.autograd.grad` forces; "
             "first call = compile + first run (wall clock; inductor caches "
             f"{'on' if payload.get('inductor_caches') else 'off: a cold compile'}).", "",
             "| case | variant | atoms | edges | eager (ms) | compiled (ms) | eager / compiled | first call (s) "
             "| graphs | breaks | max rel. dev. E / F |", "|---" * 11 + "|"]
    for r in payload["runs"]:
        t, d = r["median_ms"], r["dynamo"]
        lines.append(f"| {r['case']} | {r['variant']} | {r['natoms']} | {r['edges']} | {t['eager']:.2f} | "
                     f"{t['compiled']:.2f} | {t['eager'] / t['compiled']:.2f} | {r['first_call_s']:.1f} | "
                     f"{d['graphs']} | {d['breaks']} | {r['max_rel_dev']['energy']:.1e} / "
                     f"{r['max_rel_dev']['forces']:.1e} |")
    lines += ["", "Graph breaks (dynamo explain of `node_energies`):", ""]
    for r in payload["runs"]:
        for reason in r["dynamo"]["reasons"]:
            lines.append(f"- {r['case']} / {r['variant']}: {reason}")
    if not any(r["dynamo"]["reasons"] for r in payload["runs"]):
        lines.append("- none: one graph per case and variant, the edge-matrix op inside it")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["cg", "facet_gain_el"], choices=list(amb.VARIANTS))
    ap.add_argument("--cases", nargs="+", default=["ethanol", "cu108"], choices=["ethanol", "cu108"])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--data-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--name", default="atoms_compile")
    ap.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk caches (first call not cold)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch._inductor.config.force_disable_caches = not args.warm_cache
    payload = {"command": "benchmarks/atoms_compile.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "env": environment(), "repeats": args.repeats, "inductor_caches": args.warm_cache, "runs": []}
    for case in args.cases:
        for variant in args.variants:
            payload["runs"].append(run(case, variant, args.repeats, args.data_python))
            payload["env_end"] = environment()
            write_results(args.name, payload, table(payload))
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
