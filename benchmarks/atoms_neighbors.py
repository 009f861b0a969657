"""Neighbour lists with periodic boundaries: equikit.radius_graph vs ASE's neighbor_list (and
matscipy's neighbour_list when installed), on FCC Cu supercells (a = 3.61 A, atoms rattled by
0.05 A) of 108 / 256 / 2048 / 16384 atoms at cutoff 5 A, "ijS" (+ our edge vectors).

"equikit" uses the C candidate scan (built on first use); "equikit_pytorch" is the
pure-PyTorch fallback. Every candidate's (i, j, S) set is checked equal before timing. Timings are interleaved
(A B C A B C ...), medians after one warm-up call; the first call is reported separately.
Repeats shrink with size (ASE takes seconds at 16k atoms). Writes
results/atoms_neighbors.{json,md,png}.

    python benchmarks/atoms_neighbors.py [--threads 1] [--repeats 20] [--sizes 3,4,8,16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit.data import neighbors
from equikit.data.neighbors import radius_graph

CUTOFF = 5.0


def candidates(atoms) -> dict:
    from ase.neighborlist import neighbor_list

    pos = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    def pytorch_only():
        # the pure-PyTorch fallback (what runs without a C compiler or with EQUIKIT_NO_NATIVE=1)
        saved, neighbors._native = neighbors._native, lambda: None
        try:
            return radius_graph(pos, CUTOFF, cell=cell)
        finally:
            neighbors._native = saved

    out = {
        "equikit": lambda: radius_graph(pos, CUTOFF, cell=cell),
        "equikit_pytorch": pytorch_only,
        "ase": lambda: neighbor_list("ijS", atoms, CUTOFF),
    }
    try:
        from matscipy.neighbours import neighbour_list
    except ImportError:
        pass
    else:
        out["matscipy"] = lambda: neighbour_list("ijS", atoms, CUTOFF)
    return out


def triples(name: str, result) -> set:
    if name.startswith("equikit"):
        i, j, s = result.edge_index[1].numpy(), result.edge_index[0].numpy(), result.shifts.numpy()
    else:
        i, j, s = result
    return set(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(s).tolist())))


def bench_size(rep: int, repeats: int) -> dict:
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(rep)
    atoms.rattle(0.05, seed=0)
    cands = candidates(atoms)
    first, sets = {}, {}
    for name, fn in cands.items():
        t0 = time.perf_counter()
        res = fn()
        first[name] = time.perf_counter() - t0
        sets[name] = triples(name, res)
    ref = sets["ase"]
    agree = {name: s == ref for name, s in sets.items()}
    if not all(agree.values()):
        raise RuntimeError(f"neighbour sets differ at {len(atoms)} atoms: {agree}")
    timing = interleaved(cands, repeats=repeats, warmup=1)
    med = {name: t["median_s"] for name, t in timing.items()}
    return {
        "atoms": len(atoms), "edges": len(ref), "repeats": repeats, "first_call_s": first,
        "median_s": med, "speedup_vs_ase": {n: med["ase"] / m for n, m in med.items()},
        "times_s": {n: t["times_s"] for n, t in timing.items()}, "same_edges_as_ase": agree,
    }


def table(payload: dict) -> str:
    names = list(payload["rows"][0]["median_s"])
    head = "| atoms | edges | " + " | ".join(f"{n} (ms)" for n in names) + " | " + \
        " | ".join(f"ase / {n}" for n in names if n != "ase") + " | repeats |"
    lines = [head, "|" + "---|" * (3 + len(names) + len(names) - 1)]
    for r in payload["rows"]:
        cells = [f"{r['median_s'][n] * 1e3:.1f}" for n in names]
        ratios = [f"{r['speedup_vs_ase'][n]:.1f}x" for n in names if n != "ase"]
        lines.append(f"| {r['atoms']} | {r['edges']} | " + " | ".join(cells + ratios) + f" | {r['repeats']} |")
    env = payload["environment"]
    lines.append("")
    lines.append(f"Cutoff {CUTOFF} A, FCC Cu rattled 0.05 A, 'ijS' quantities; medians of interleaved calls; "
                 f"threads {env['threads']}, load average {tuple(round(x, 2) for x in env['loadavg'])} at start, "
                 f"{payload['loadavg_end']} at end; {env['cpu']}. Edge sets equal to ASE's in every case.")
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(payload["rows"][0]["median_s"])
    xs = [r["atoms"] for r in payload["rows"]]
    for name in names:
        ax.plot(xs, [r["median_s"][name] * 1e3 for r in payload["rows"]], "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (FCC Cu, cutoff 5 A)")
    ax.set_ylabel("median time (ms)")
    ax.set_title(f"periodic neighbour list, {payload['environment']['threads']} thread(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sizes", default="3,4,8,16", help="FCC cubic repeats: 3 -> 108 atoms, 16 -> 16384")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment()
    rows = []
    for rep in (int(s) for s in args.sizes.split(",")):
        # ASE needs ~10 s a call at 16k atoms on this machine: fewer repeats for big cells
        repeats = args.repeats if rep <= 4 else max(3, args.repeats // (4 if rep <= 8 else 7))
        rows.append(bench_size(rep, repeats))
        r = rows[-1]
        print(f"{r['atoms']:6d} atoms: " + ", ".join(f"{n} {m * 1e3:.1f} ms" for n, m in r["median_s"].items()),
              flush=True)
    payload = {"name": "atoms_neighbors", "cutoff": CUTOFF, "environment": env, "rows": rows,
               "loadavg_end": [round(x, 2) for x in __import__("os").getloadavg()]}
    md = "# Periodic neighbour lists: equikit vs ASE (vs matscipy)\n\n" + table(payload)
    write_results("atoms_neighbors", payload, md)
    plot(payload, RESULTS / "atoms_neighbors.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
