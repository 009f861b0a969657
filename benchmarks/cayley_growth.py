"""Growth of permutation Cayley graphs: equikit vs CayleyPy, side by side in one process.

For each case the calls are interleaved (CayleyPy, equikit bitset, equikit torch, repeat)
after one warm-up call each (which also covers compilation: the C kernel build / numba);
the median wall time and the peak resident-memory increase during the call (sampled from
/proc every 2 ms by a thread) are recorded, with torch threads and the load average. The
growth tables of all implementations must agree (asserted). GAP is not installed here, so no
GAP column. Writes benchmarks/results/cayley_growth.{json,md,png}.

    .venv/bin/python benchmarks/cayley_growth.py            # ~5-8 min on 2 cores
    .venv/bin/python benchmarks/cayley_growth.py --quick    # n <= 9, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from equikit.groups.cayley import CayleyGraph, growth, native

RESULTS = Path(__file__).parent / "results"
CASES = [  # (family, n, repeats)
    ("lrx", 10, 2),
    ("coxeter", 10, 2),
    ("pancake", 10, 2),
    ("all_transpositions", 9, 3),
]
FULL = [("all_transpositions", 10, 1), ("lrx", 11, 1), ("pancake", 11, 1), ("coxeter", 11, 1)]
QUICK = [("lrx", 9, 3), ("coxeter", 9, 3), ("pancake", 9, 3), ("all_transpositions", 8, 3)]


class PeakRSS:
    """Peak RSS increase (bytes) over the baseline while the block runs."""

    def __init__(self, period: float = 0.002) -> None:
        self.period, self.peak, self._stop = period, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.base)
            time.sleep(self.period)

    def __enter__(self):
        self.base = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.base)


def run_cayleypy(family: str, n: int) -> list[int]:
    from cayleypy import CayleyGraph as CPGraph
    from cayleypy import PermutationGroups

    graph = CPGraph(getattr(PermutationGroups, family)(n), device="cpu")
    return list(graph.bfs(max_layer_size_to_store=0).layer_sizes)


def run_equikit(family: str, n: int, backend: str) -> list[int]:
    return growth(CayleyGraph.family(family, n), backend=backend).layer_sizes


def timed(fn) -> tuple[float, int, list[int]]:
    with PeakRSS() as mem:
        t = time.perf_counter()
        sizes = fn()
        dt = time.perf_counter() - t
    return dt, mem.peak, sizes


_MEMORY_SCRIPT = """
import resource, sys, torch
torch.set_num_threads({threads})
sys.path[:0] = {path!r}
import cayley_growth as b
import cayleypy, equikit.groups.cayley
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
base = rss()
{call}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
"""


def fresh_peak_mb(call: str) -> float:
    """Peak RSS above the post-import baseline of a fresh process running ``call``."""
    import subprocess
    import sys

    code = _MEMORY_SCRIPT.format(threads=torch.get_num_threads(), call=call,
                                 path=[str(Path(__file__).parent), *sys.path])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1]) / 2**20


def bench_case(family: str, n: int, repeats: int) -> dict:
    impls = {"cayleypy": lambda: run_cayleypy(family, n)}
    if native.available():
        impls["equikit_bitset"] = lambda: run_equikit(family, n, "bitset")
    impls["equikit_torch"] = lambda: run_equikit(family, n, "torch")
    first = {}
    for name, fn in impls.items():  # warm-up: first call incl. compile/import
        first[name] = timed(fn)
    tables = {name: first[name][2] for name in impls}
    assert all(t == tables["cayleypy"] for t in tables.values()), (family, n, tables)
    times = {name: [] for name in impls}
    mems = {name: [] for name in impls}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        for name, fn in impls.items():  # interleaved A B C A B C
            dt, peak, sizes = timed(fn)
            assert sizes == tables["cayleypy"]
            times[name].append(dt)
            mems[name].append(peak)
        load.append(os.getloadavg()[0])
    row = {"family": family, "n": n, "repeats": repeats, "layer_sizes": tables["cayleypy"],
           "diameter": len(tables["cayleypy"]) - 1, "loadavg_1min": load,
           "threads": torch.get_num_threads()}
    for name in impls:
        row[name] = {"median_s": statistics.median(times[name]), "times_s": times[name],
                     "first_call_s": first[name][0],
                     "peak_rss_increase_mb": max(mems[name]) / 2**20}
    calls = {"cayleypy": f"b.run_cayleypy({family!r}, {n})",
             "equikit_bitset": f"b.run_equikit({family!r}, {n}, 'bitset')",
             "equikit_torch": f"b.run_equikit({family!r}, {n}, 'torch')"}
    for name in impls:  # fresh process each: the allocator of a warm one hides the peak
        row[name]["peak_rss_fresh_mb"] = fresh_peak_mb(calls[name])
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Cayley graph growth: equikit vs CayleyPy",
        "",
        f"Machine: {meta['cpu_count']} CPUs, torch {meta['torch']} (threads {meta['threads']}), "
        f"cayleypy {meta['cayleypy']}. GAP: {meta['gap']}.",
        "Median wall time of the interleaved repeats after one warm-up call (first call, "
        "with compilation, in the JSON); MB = peak RSS above the post-import baseline of a "
        "fresh process running one call; load average "
        "(1 min) during the case. All implementations produced identical growth tables.",
        "",
        "| graph | n | diameter | cayleypy s | bitset s | torch s | speedup bitset | speedup "
        "torch | cayleypy MB | bitset MB | torch MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cp, bs, tt = r["cayleypy"], r.get("equikit_bitset"), r["equikit_torch"]
        bs_t = f"{bs['median_s']:.3f}" if bs else "-"
        bs_x = f"{cp['median_s'] / bs['median_s']:.1f}x" if bs else "-"
        bs_m = f"{bs['peak_rss_fresh_mb']:.0f}" if bs else "-"
        lines.append(
            f"| {r['family']} | {r['n']} | {r['diameter']} | {cp['median_s']:.3f} | {bs_t} | "
            f"{tt['median_s']:.3f} | {bs_x} | {cp['median_s'] / tt['median_s']:.1f}x | "
            f"{cp['peak_rss_fresh_mb']:.0f} | {bs_m} | {tt['peak_rss_fresh_mb']:.0f} | "
            f"{min(r['loadavg_1min']):.1f}-{max(r['loadavg_1min']):.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("cayleypy", "equikit_bitset", "equikit_torch") if n in rows[0]]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar([j + i * width for j in range(len(rows))], [r[name]["median_s"] for r in rows],
               width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{r['family']}\nn={r['n']}" for r in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median wall time (s)")
    ax.set_title("Full BFS growth of S_n Cayley graphs (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full", action="store_true", help="also n = 11 (and transpositions 10)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import cayleypy

    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cayleypy": getattr(cayleypy, "__version__", "0.2.0"),
            "gap": "not installed on this machine (no GAP column)",
            "native_available": native.available()}
    rows = []
    cases = QUICK if args.quick else CASES + (FULL if args.full else [])
    for family, n, repeats in cases:
        row = bench_case(family, n, repeats)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("family", "n", "diameter")}),
              {k: round(v["median_s"], 3) for k, v in row.items() if isinstance(v, dict)},
              flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    tmp = RESULTS / f"cayley_growth{suffix}.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    os.replace(tmp, RESULTS / f"cayley_growth{suffix}.json")
    (RESULTS / f"cayley_growth{suffix}.md").write_text(markdown(rows, meta))
    plot(rows, RESULTS / f"cayley_growth{suffix}.png")
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
