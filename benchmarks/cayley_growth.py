"""Growth of permutation Cayley graphs: equikit (bitset C kernel, torch) vs CayleyPy.

Each implementation runs in its own long-lived worker process (CayleyPy, equikit bitset,
equikit torch), warmed up once per family at n = 6 (numba / kernel load, ``warmup_s``). For
each call the worker returns freed heap to the OS (``malloc_trim``, fixed mmap threshold),
resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), times one full breadth-first
growth and reports its peak RSS above the RSS just before it, which is what a fresh
process would show without paying 10-15 s of imports per call on this loaded machine.
Calls are interleaved (CayleyPy, bitset, torch, CayleyPy, ...); we quote medians over the
repeats and the ratio of the medians, with the torch/OpenMP threads and the 1-minute load
average before and after every call. The growth tables of all implementations must agree.
The C kernel's one-off build time (cached per machine afterwards) is measured separately
in a throw-away cache folder. GAP is compared separately, in benchmarks/cayley_gap.py
(needs `apt-get install gap-core`).

    .venv/bin/python benchmarks/cayley_growth.py           # ~8-10 min on 2 loaded cores
    .venv/bin/python benchmarks/cayley_growth.py --quick   # n <= 9, a few minutes
    .venv/bin/python benchmarks/cayley_growth.py --full    # + coxeter 10/11, pancake 11, ...

Writes benchmarks/results/cayley_growth{,_quick,_full}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import pyplot

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ("cayleypy", "equikit_bitset", "equikit_torch")
NO_TORCH = ("cayleypy", "equikit_bitset")
# (family, n, repeats, implementations)
DEFAULT = [
    ("lrx", 10, 2, ALL),
    ("pancake", 10, 2, ALL),
    ("all_transpositions", 9, 2, ALL),
    ("lrx", 11, 1, NO_TORCH),
]
FULL = [*DEFAULT, ("coxeter", 10, 2, ALL), ("pancake", 11, 1, NO_TORCH),
        ("coxeter", 11, 1, NO_TORCH), ("all_transpositions", 10, 1, NO_TORCH)]
QUICK = [("lrx", 9, 3, ALL), ("pancake", 9, 3, ALL), ("coxeter", 9, 3, ALL),
         ("all_transpositions", 8, 3, ALL)]


# ---- workers: one long-lived process per implementation --------------------------------------
def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _reset_peak() -> int:
    """Give freed heap back to the OS, reset the peak-RSS mark (VmHWM); return RSS bytes."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss_kb("VmRSS:") * 1024


def _call(impl: str, family: str, n: int) -> list[int]:
    if impl == "cayleypy":
        from cayleypy import CayleyGraph as CPGraph
        from cayleypy import PermutationGroups

        graph = CPGraph(getattr(PermutationGroups, family)(n), device="cpu")
        return [int(x) for x in graph.bfs(max_layer_size_to_store=0).layer_sizes]
    from equikit.groups.cayley import CayleyGraph, growth

    backend = impl.removeprefix("equikit_")
    return growth(CayleyGraph.family(family, n), backend=backend).layer_sizes


def measure(impl: str, family: str, n: int, warmed: set) -> dict:
    """One timed call; its peak RSS above the RSS just before it (fresh-process equivalent:
    the workers run with a fixed mmap threshold, so large blocks go back to the OS)."""
    warmup = None
    if family not in warmed:
        t = time.perf_counter()
        _call(impl, family, 6)
        warmup = time.perf_counter() - t
        warmed.add(family)
    load0 = os.getloadavg()[0]
    base = _reset_peak()
    t = time.perf_counter()
    sizes = _call(impl, family, n)
    seconds = time.perf_counter() - t
    peak = _rss_kb("VmHWM:") * 1024 - base
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "warmup_s": warmup,
            "layer_sizes": sizes, "loadavg": [load0, os.getloadavg()[0]],
            "threads": torch.get_num_threads()}


def serve(impl: str, threads: int) -> None:
    """Worker loop: read ``family n`` lines from stdin, answer ``RESULT <json>`` lines."""
    torch.set_num_threads(threads)
    if impl == "cayleypy":
        import cayleypy  # noqa: F401
    else:
        import equikit.groups.cayley  # noqa: F401
    warmed: set = set()
    print("READY", flush=True)
    for line in sys.stdin:
        family, n = line.split()
        print("RESULT " + json.dumps(measure(impl, family, int(n), warmed)), flush=True)


class Worker:
    """A ``serve`` process for one implementation, driven line by line."""

    def __init__(self, impl: str, threads: int) -> None:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        cmd = [sys.executable, __file__, "--serve", impl, "--threads", str(threads)]
        self.impl = impl
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self._read("READY")

    def _read(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise RuntimeError(f"worker {self.impl} exited with {self.proc.wait()}")

    def run(self, family: str, n: int) -> dict:
        self.proc.stdin.write(f"{family} {n}\n")
        self.proc.stdin.flush()
        return json.loads(self._read("RESULT "))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def kernel_build_seconds() -> float | None:
    """Wall time of one build of the C kernel into an empty cache folder."""
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return None
    code = ("import time; t = time.perf_counter(); from equikit.groups.cayley import native; "
            "ok = native.available(); print(time.perf_counter() - t if ok else -1)")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EQUIKIT_CACHE": tmp}
        env.pop("EQUIKIT_NO_NATIVE", None)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True)
    value = float(out.stdout.split()[-1])
    return None if value < 0 else value


# ---- driver -------------------------------------------------------------------------------------
def bench_case(family: str, n: int, repeats: int, impls: tuple[str, ...], threads: int,
               workers: dict[str, Worker]) -> dict:
    runs = {name: [] for name in impls}
    for _ in range(repeats):
        for name in impls:  # interleaved A B C A B C
            runs[name].append(workers[name].run(family, n))
    tables = {name: r[0]["layer_sizes"] for name, r in runs.items()}
    for name, rs in runs.items():
        for r in rs:
            if r["layer_sizes"] != tables["cayleypy"]:
                raise AssertionError(f"{family} n={n}: {name} growth differs from cayleypy")
    row = {"family": family, "n": n, "repeats": repeats, "threads": threads,
           "layer_sizes": tables["cayleypy"], "diameter": len(tables["cayleypy"]) - 1,
           "order": sum(tables["cayleypy"]),
           "loadavg_1min": [x for rs in runs.values() for r in rs for x in r["loadavg"]]}
    for name, rs in runs.items():
        row[name] = {"median_s": statistics.median(r["seconds"] for r in rs),
                     "times_s": [r["seconds"] for r in rs],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                     "warmup_s": rs[0]["warmup_s"]}
    cp = row["cayleypy"]
    for name in impls[1:]:
        row[name]["speedup_vs_cayleypy"] = cp["median_s"] / row[name]["median_s"]
        row[name]["memory_ratio_vs_cayleypy"] = row[name]["peak_rss_mb"] / cp["peak_rss_mb"]
    return row


def _fmt(row: dict, name: str, key: str, spec: str) -> str:
    return format(row[name][key], spec) if name in row else "-"


def markdown(rows: list[dict], meta: dict) -> str:
    build = meta["kernel_build_s"]
    lines = [
        "# Cayley graph growth: equikit vs CayleyPy",
        "",
        f"Machine: {meta['cpu']} ({meta['cores']} cores, shared), torch {meta['torch']}, "
        f"threads {meta['threads']} (torch and OpenMP), cayleypy {meta['cayleypy']}, load "
        f"average (1 min) {meta['loadavg_start']:.1f} at the start, "
        f"{meta['loadavg_end']:.1f} at the end; total {meta['total_s']:.0f} s. "
        f"GAP: {meta['gap']}.",
        "",
        "One worker process per implementation, warmed up at n = 6; calls interleaved; "
        "s = median wall time over the repeats, x = cayleypy median / equikit median, "
        "MB = peak RSS of the call above the RSS just before it (largest over the repeats), "
        "mem = equikit MB / cayleypy MB. All implementations produced identical growth "
        "tables. C kernel build (once per machine, then cached): "
        + (f"{build:.1f} s." if build is not None else "no compiler."),
        "",
        "| graph | n | diam. | reps | cayleypy s | bitset s | torch s | bitset x | torch x "
        "| cayleypy MB | bitset MB | torch MB | bitset mem | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        load = r["loadavg_1min"]
        lines.append(
            f"| {r['family']} | {r['n']} | {r['diameter']} | {r['repeats']} | "
            f"{r['cayleypy']['median_s']:.2f} | {_fmt(r, 'equikit_bitset', 'median_s', '.2f')} | "
            f"{_fmt(r, 'equikit_torch', 'median_s', '.2f')} | "
            f"{_fmt(r, 'equikit_bitset', 'speedup_vs_cayleypy', '.1f')} | "
            f"{_fmt(r, 'equikit_torch', 'speedup_vs_cayleypy', '.1f')} | "
            f"{r['cayleypy']['peak_rss_mb']:.0f} | {_fmt(r, 'equikit_bitset', 'peak_rss_mb', '.0f')} | "
            f"{_fmt(r, 'equikit_torch', 'peak_rss_mb', '.0f')} | "
            f"{_fmt(r, 'equikit_bitset', 'memory_ratio_vs_cayleypy', '.2f')} | "
            f"{min(load):.1f}-{max(load):.1f} |"
        )
    lines += ["", "Targets of issue 9: bitset >= 10x faster than cayleypy with <= 1/3 of its "
              "peak memory at n = 10-11; >= 100x faster than GAP at n = 10 (not testable: no "
              "GAP here).", ""]
    for r in rows:
        if "equikit_bitset" in r:
            b = r["equikit_bitset"]
            ok = b["speedup_vs_cayleypy"] >= 10 and b["memory_ratio_vs_cayleypy"] <= 1 / 3
            lines.append(f"- {r['family']} n={r['n']}: {b['speedup_vs_cayleypy']:.1f}x, "
                         f"memory {b['memory_ratio_vs_cayleypy']:.2f} of cayleypy -> "
                         f"{'meets' if ok else 'misses'} the target")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(ALL)
    for i, name in enumerate(ALL):
        xs = [j + i * width for j, r in enumerate(rows) if name in r]
        ax.bar(xs, [r[name]["median_s"] for r in rows if name in r], width, label=name)
        bx.bar(xs, [max(r[name]["peak_rss_mb"], 0.1) for r in rows if name in r], width,
               label=name)
    for a, label in ((ax, "median wall time (s)"), (bx, "peak RSS of the call (MB)")):
        a.set_xticks([j + width for j in range(len(rows))])
        a.set_xticklabels([f"{r['family']}\nn={r['n']}" for r in rows], fontsize=7)
        a.set_yscale("log")
        a.set_ylabel(label)
    ax.legend(fontsize=8)
    fig.suptitle(f"Full BFS growth of S_n Cayley graphs, CPU, {rows[0]['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--serve", metavar="IMPL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads)
        return
    t0 = time.perf_counter()
    meta = {"torch": torch.__version__, "threads": args.threads, "cores": os.cpu_count(),
            "cpu": _cpu_name(), "cayleypy": _dist_version("cayleypy"),
            "loadavg_start": os.getloadavg()[0],
            "gap": "not installed on this machine (no `gap` executable), no GAP column"
            if shutil.which("gap") is None else "installed: see benchmarks/cayley_gap.py",
            "kernel_build_s": kernel_build_seconds()}
    cases = QUICK if args.quick else FULL if args.full else DEFAULT
    workers = {name: Worker(name, args.threads) for name in ALL}
    rows = []
    try:
        for family, n, repeats, impls in cases:
            row = bench_case(family, n, repeats, impls, args.threads, workers)
            rows.append(row)
            print(family, n, {k: round(v["median_s"], 2) for k, v in row.items()
                              if isinstance(v, dict)}, flush=True)
    finally:
        for w in workers.values():
            w.close()
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["total_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "cayley_growth" + ("_quick" if args.quick else "_full" if args.full else "")
    tmp = RESULTS / f"{stem}.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    os.replace(tmp, RESULTS / f"{stem}.json")
    (RESULTS / f"{stem}.md").write_text(markdown(rows, meta))
    plot(rows, RESULTS / f"{stem}.png")
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
