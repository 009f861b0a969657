"""Benchmarks of the o3 layer (used by ``benchmarks/o3_*.py`` and ``equikit bench sh``).

Protocol (DESIGN section 7): candidates run side by side in one process, interleaved
A B A B after warm-up; we report the median of ``repeats`` calls, with the torch threads and
load average recorded. Inputs are float32, ``n`` random vectors.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from equikit.o3._cg import clear_caches, clebsch_gordan_table
from equikit.o3._sh import _resolve_backend, spherical_harmonics, sphericart_available


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
        "cores": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def interleaved_wall_cpu(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3,
                         cpu_clock: Callable[[], float] = time.process_time) -> tuple[dict, dict]:
    """As :func:`interleaved`, returning the median wall time and the median CPU time of each
    candidate (``cpu_clock``: by default ``time.process_time``, all threads of this process;
    ``time.thread_time`` for the calling thread only). On a shared, oversubscribed machine a call
    is descheduled for whole time slices: its wall time then measures the other tenants, while its
    CPU time still measures the code (one thread)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), cpu_clock()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_clock() - c0)
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}  # noqa: E731
    return med(wall), med(cpu)


def _sh_candidates(lmax: int, x: torch.Tensor, backward: bool) -> dict[str, Callable[[], object]]:
    ls = list(range(lmax + 1))
    fns: dict[str, Callable[[], torch.Tensor]] = {
        # backend="auto": the native kernel on CPU when it builds (else sphericart / torch)
        "equikit": lambda v: spherical_harmonics(lmax, v),
        "equikit_torch": lambda v: spherical_harmonics(lmax, v, backend="torch"),
    }
    if sphericart_available():
        # the previous default: sphericart + input permutation + one scaling pass
        fns["equikit_sphericart"] = lambda v: spherical_harmonics(lmax, v, backend="sphericart")
    try:
        from e3nn import o3 as e3nn_o3

        fns["e3nn"] = lambda v: e3nn_o3.spherical_harmonics(ls, v, True, normalization="component")
    except ImportError:
        pass
    if sphericart_available():
        import sphericart.torch as sct

        calc = sct.SphericalHarmonics(lmax)
        fns["sphericart"] = calc  # raw: its own basis and integral normalisation

    def wrap(fn):
        if not backward:
            return lambda: fn(x)

        def run():
            v = x.detach().requires_grad_(True)
            fn(v).sum().backward()

        return run

    return {k: wrap(f) for k, f in fns.items()}


def bench_sh(lmaxes=(2, 4, 8), n: int = 100_000, repeats: int = 25, threads: int = 2, seed: int = 0) -> dict:
    """Spherical-harmonics throughput: equikit vs e3nn vs sphericart-torch."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench_sh(lmaxes, n, repeats, seed)
    finally:
        torch.set_num_threads(before)


def _bench_sh(lmaxes, n, repeats, seed) -> dict:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()  # first call: loads (or compiles) the native kernel
    spherical_harmonics(max(lmaxes), x[:16])
    first_call = time.perf_counter() - t0
    rows = []
    for lmax in lmaxes:
        for mode in ("forward", "forward+backward"):
            med, cpu = interleaved_wall_cpu(_sh_candidates(lmax, x, mode != "forward"), repeats)
            rows.append({"lmax": lmax, "mode": mode, "median_s": med, "cpu_median_s": cpu})
    return {
        "benchmark": "o3_sh",
        "n": n,
        "dtype": "float32",
        "repeats": repeats,
        "backend_auto": _resolve_backend("auto", x),
        "first_call_s": first_call,
        "env": environment(),
        "rows": rows,
    }


def _sh_rows(payload: dict, key: str) -> str:
    names = list(payload["rows"][0][key])
    head = "| lmax | mode | " + " | ".join(f"{k} (ms)" for k in names)
    head += " | e3nn / equikit | sphericart / equikit |\n"
    head += "|" + "---|" * (len(names) + 4) + "\n"
    lines = []
    for r in payload["rows"]:
        m = r[key]
        ratio = lambda k, ref="equikit", m=m: f"{m[k] / m[ref]:.2f}" if k in m and ref in m else "-"  # noqa: E731
        cells = " | ".join(f"{m[k] * 1e3:.2f}" for k in names)
        lines.append(f"| {r['lmax']} | {r['mode']} | {cells} | {ratio('e3nn')} | {ratio('sphericart')} |")
    return head + "\n".join(lines) + "\n"


def sh_table(payload: dict) -> str:
    env = payload["env"]
    out = "Wall time (median):\n\n" + _sh_rows(payload, "median_s")
    if "cpu_median_s" in payload["rows"][0]:
        out += "\nProcess CPU time (median; all threads of the process):\n\n" + _sh_rows(payload, "cpu_median_s")
    out += (
        f"\n{payload['n']} random float32 vectors, median of {payload['repeats']} interleaved "
        f"calls, torch {env['torch']}, threads={env['threads']}, "
        f"loadavg={[round(v, 2) for v in env['loadavg']]}; `equikit` = backend "
        f"'{payload.get('backend_auto', '?')}' (auto), first call "
        f"{payload.get('first_call_s', float('nan')) * 1e3:.0f} ms.\n"
    )
    return out


def bench_cg(lmaxes=(2, 4, 6, 8), repeats: int = 20, threads: int = 2) -> dict:
    """Cold construction time of every Clebsch-Gordan table up to ``L``: ours (caches cleared
    before each call) vs e3nn's ``wigner_3j`` (its lru cache cleared likewise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench_cg(lmaxes, repeats)
    finally:
        torch.set_num_threads(before)


def _bench_cg(lmaxes, repeats) -> dict:
    from e3nn.o3 import _wigner

    triples = lambda L: [  # noqa: E731
        (a, b, c) for a in range(L + 1) for b in range(L + 1) for c in range(abs(a - b), min(a + b, L) + 1)
    ]

    def ours(L):
        clear_caches()
        clebsch_gordan_table(L, dtype=torch.float32)

    def e3nn(L):
        _wigner._so3_clebsch_gordan.cache_clear()
        for t in triples(L):
            _wigner.wigner_3j(*t)

    rows = []
    for L in lmaxes:
        med = interleaved(
            {"equikit": lambda L=L: ours(L), "e3nn": lambda L=L: e3nn(L)},
            repeats if L <= 6 else max(3, repeats // 4),
            warmup=1,
        )
        rows.append({"L": L, "triples": len(triples(L)), "median_s": med})
    t0 = time.perf_counter()
    clebsch_gordan_table(8)
    warm = time.perf_counter() - t0
    return {"benchmark": "o3_cg", "env": environment(), "rows": rows, "warm_table_L8_s": warm}


def cg_table(payload: dict) -> str:
    out = "| L | triples | equikit (ms) | e3nn (ms) | e3nn / equikit |\n|---|---|---|---|---|\n"
    for r in payload["rows"]:
        m = r["median_s"]
        out += (
            f"| {r['L']} | {r['triples']} | {m['equikit'] * 1e3:.1f} | {m['e3nn'] * 1e3:.1f} | "
            f"{m['e3nn'] / m['equikit']:.1f} |\n"
        )
    env = payload["env"]
    out += (
        f"\nCold construction (caches cleared) of every coupled (l1, l2, l3) with l <= L; "
        f"cached rebuild of L=8: {payload['warm_table_L8_s'] * 1e3:.2f} ms. torch "
        f"{env['torch']}, threads={env['threads']}, "
        f"loadavg={[round(v, 2) for v in env['loadavg']]}.\n"
    )
    return out
