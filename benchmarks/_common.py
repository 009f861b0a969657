"""Shared benchmark plumbing: interleaved timing, environment record, result files.

Performance is a ratio measured side by side in one process: candidates run interleaved
(A B A B ...) after warm-up, and we report medians. Every result records the torch threads,
the load average and the machine, because the machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    """What a reader needs to judge a timing: threads, load, CPU, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 25, warmup: int = 3,
                clock: Callable[[], float] = time.perf_counter, rotate: bool = False) -> dict:
    """Time each candidate ``repeats`` times, interleaved; return per-candidate lists and medians.
    ``clock=time.thread_time`` measures the calling thread's CPU time instead of the wall clock
    (one-thread runs on a loaded machine); ``rotate=True`` starts each round at the next candidate
    (A B C, B C A, ...), so no candidate always runs right after the same one."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(repeats):
        k = r % len(names) if rotate and names else 0
        for name in names[k:] + names[:k]:
            t0 = clock()
            candidates[name]()
            times[name].append(clock() - t0)
    return {name: {"median_s": statistics.median(ts), "times_s": ts} for name, ts in times.items()}


def write_results(name: str, payload: dict, table_md: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    for path, text in ((json_path, json.dumps(payload, indent=2)), (md_path, table_md)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (benchmarks only write PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
