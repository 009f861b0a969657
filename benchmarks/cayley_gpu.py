"""Cayley graph growth on a GPU: equikit's torch backend (and CayleyPy where importable).

Runs the full breadth-first growth of LRX and pancake graphs of S_n with
``growth(..., backend="torch", device=...)`` for each requested n, and the same with
CayleyPy on the same device when ``import cayleypy`` works (optional: it is not needed).
The layer sizes are checked against every other implementation that ran (CayleyPy, and the
bitset C kernel on the CPU for n <= --reference-max-n when it compiles), against the group
order n! and against the published diameters (LRX n(n-1)/2, OEIS A186783; pancake numbers,
OEIS A058986). Times are wall times with the device synchronised, after one warm-up run at
n = 7; peak device memory from torch.cuda.max_memory_allocated (CUDA only). A case that
runs out of memory, or would start after --time-budget seconds, is recorded and skipped.

    python benchmarks/cayley_gpu.py --out $OUT                       # cuda, n = 10 11 12
    python benchmarks/cayley_gpu.py --device cpu --n 8 --out /tmp/g   # CPU smoke test

Writes <out>/cayley_gpu.json and <out>/cayley_gpu.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from equikit.groups.cayley import CayleyGraph, growth, native

FAMILIES = ("lrx", "pancake")
PANCAKE_NUMBERS = dict(enumerate(
    [0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 22], start=1))


def known_diameter(family: str, n: int) -> int | None:
    if family == "lrx":
        return n * (n - 1) // 2 if n > 3 else None
    return PANCAKE_NUMBERS.get(n)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def run_equikit(family: str, n: int, device: str, chunk_size: int) -> dict:
    graph = CayleyGraph.family(family, n)
    _reset_peak(device)
    _sync(device)
    t = time.perf_counter()
    res = growth(graph, backend="torch", device=device, chunk_size=chunk_size)
    _sync(device)
    return {"seconds": time.perf_counter() - t, "layer_sizes": res.layer_sizes,
            "peak_device_mb": _peak_mb(device), "engine_peak_mb": res.peak_bytes / 2**20}


def cayleypy_or_reason():
    try:
        import cayleypy
    except Exception as exc:  # optional dependency: any import failure is reported
        return None, f"not importable: {type(exc).__name__}: {exc}"
    return cayleypy, None


def run_cayleypy(cayleypy, family: str, n: int, device: str) -> dict:
    graph = cayleypy.CayleyGraph(getattr(cayleypy.PermutationGroups, family)(n), device=device)
    _reset_peak(device)
    _sync(device)
    t = time.perf_counter()
    sizes = [int(x) for x in graph.bfs(max_layer_size_to_store=0).layer_sizes]
    _sync(device)
    return {"seconds": time.perf_counter() - t, "layer_sizes": sizes,
            "peak_device_mb": _peak_mb(device)}


def run_bitset(family: str, n: int) -> dict:
    t = time.perf_counter()
    res = growth(CayleyGraph.family(family, n), backend="bitset")
    return {"seconds": time.perf_counter() - t, "layer_sizes": res.layer_sizes}


def guarded(fn, *args, optional: bool = False) -> dict:
    """Run one implementation; out-of-memory (and, for the optional CayleyPy, any error)
    becomes a recorded result, not a crash."""
    try:
        return fn(*args)
    except torch.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    except Exception as exc:
        if not optional:
            raise
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def check(row: dict) -> list[str]:
    """Disagreements between the implementations and with n! and the known diameter."""
    family, n = row["family"], row["n"]
    problems = []
    ref = row["equikit_torch"].get("layer_sizes")
    if ref is None:
        return ["equikit torch did not finish"]
    if sum(ref) != math.factorial(n):
        problems.append(f"order {sum(ref)} != n! = {math.factorial(n)}")
    want = known_diameter(family, n)
    if want is not None and len(ref) - 1 != want:
        problems.append(f"diameter {len(ref) - 1} != published {want}")
    for other in ("cayleypy", "equikit_bitset_cpu"):
        sizes = row.get(other, {}).get("layer_sizes")
        if sizes is not None and sizes != ref:
            problems.append(f"{other} layer sizes differ from equikit torch")
    return problems


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def environment(device: str) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "cores": os.cpu_count(),
           "loadavg": os.getloadavg(), "device": device,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2**30,
                   cuda=torch.version.cuda)
    return env


def markdown(payload: dict) -> str:
    env = payload["environment"]
    gpu = f"{env['gpu']} ({env['gpu_memory_gb']:.0f} GB), CUDA {env['cuda']}" if "gpu" in env \
        else f"device {env['device']}"
    lines = [
        "# Cayley graph growth on a GPU",
        "",
        f"{gpu}; torch {env['torch']}, {env['threads']} CPU threads, load {env['loadavg'][0]:.1f}; "
        f"cayleypy: {payload['cayleypy']}; bitset reference on CPU: {payload['bitset']}.",
        "Wall seconds (device synchronised) after a warm-up at n = 7; MB = peak device memory "
        "allocated by torch.",
        "",
        "| graph | n | diameter | equikit torch s | MB | cayleypy s | MB | cayleypy / equikit "
        "| bitset CPU s | checks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict, key: str, spec: str) -> str:
        if "error" in r:
            return r["error"][:40]
        v = r.get(key)
        return "-" if v is None else format(v, spec)

    for row in payload["rows"]:
        et, cp = row["equikit_torch"], row.get("cayleypy", {})
        bs = row.get("equikit_bitset_cpu", {})
        sizes = et.get("layer_sizes")
        ratio = (f"{cp['seconds'] / et['seconds']:.2f}" if "seconds" in cp and "seconds" in et
                 else "-")
        lines.append(
            f"| {row['family']} | {row['n']} | {len(sizes) - 1 if sizes else '-'} | "
            f"{cell(et, 'seconds', '.2f')} | {cell(et, 'peak_device_mb', '.0f')} | "
            f"{cell(cp, 'seconds', '.2f') if cp else '-'} | "
            f"{cell(cp, 'peak_device_mb', '.0f') if cp else '-'} | {ratio} | "
            f"{cell(bs, 'seconds', '.2f') if bs else '-'} | "
            f"{'ok' if not row['problems'] else '; '.join(row['problems'])} |")
    for s in payload["skipped"]:
        lines.append(f"\nSkipped: {s}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--chunk-size", type=int, default=1 << 26)
    parser.add_argument("--reference-max-n", type=int, default=11,
                        help="run the CPU bitset kernel as a reference up to this n")
    parser.add_argument("--no-cayleypy", action="store_true")
    parser.add_argument("--time-budget", type=float, default=420.0,
                        help="start no new case after this many seconds")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cayley_gpu: --device cuda requested but torch sees no CUDA device; "
                         "use --device cpu for a CPU run")
    cp, reason = (None, "disabled (--no-cayleypy)") if args.no_cayleypy else cayleypy_or_reason()
    payload = {"environment": environment(args.device), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cayleypy": reason or f"version {_version('cayleypy')}",
        "bitset": "available" if native.available() else "no C compiler", "rows": [],
        "skipped": []}
    for family in args.families:  # warm-up: kernels, allocator, CayleyPy's first call
        run_equikit(family, 7, args.device, args.chunk_size)
        if cp is not None:
            guarded(run_cayleypy, cp, family, 7, args.device, optional=True)
    t0 = time.perf_counter()
    for n in sorted(args.n):
        for family in args.families:
            if time.perf_counter() - t0 > args.time_budget:
                payload["skipped"].append(f"{family} n={n}: past the time budget")
                continue
            row = {"family": family, "n": n,
                   "equikit_torch": guarded(run_equikit, family, n, args.device,
                                            args.chunk_size)}
            if cp is not None:
                row["cayleypy"] = guarded(run_cayleypy, cp, family, n, args.device,
                                          optional=True)
            if native.available() and n <= args.reference_max_n:
                row["equikit_bitset_cpu"] = run_bitset(family, n)
            row["problems"] = check(row)
            payload["rows"].append(row)
            print(family, n, {k: round(v["seconds"], 2) for k, v in row.items()
                              if isinstance(v, dict) and "seconds" in v}, row["problems"],
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cayley_gpu.json").write_text(json.dumps(payload, indent=1))
    (args.out / "cayley_gpu.md").write_text(markdown(payload))
    print(markdown(payload))
    if any(row["problems"] for row in payload["rows"]):
        raise SystemExit("cayley_gpu: some checks failed (see the table)")


if __name__ == "__main__":
    main()
