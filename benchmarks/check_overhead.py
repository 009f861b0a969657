"""Overhead of the equivariance checker.

Ratio = time of ``equivariance_error(model, x, PointCloud(E(3)), n_samples=16)`` divided by
the time of 16 plain forward passes of the same model on the same input (target: < 1.2).
Model: a ~1M-parameter MLP on flattened coordinates of 64 point clouds of 100 points (a fast
model, so that the checker's own work is as visible as it can be). Both the default loop
mode and ``vectorize=True`` are measured.

Run: ``make bench-check`` (writes benchmarks/results/check_overhead.{json,md,png}).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit.check import equivariance_error
from equikit.groups import E, PointCloud


def make_model(n_points: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(3 * n_points, 1024), nn.SiLU(), nn.Linear(1024, 512), nn.SiLU(),
        nn.Linear(512, 256), nn.SiLU(), nn.Linear(256, 16),
    )


class Flat(nn.Module):
    def __init__(self, n_points: int):
        super().__init__()
        self.mlp = make_model(n_points)

    def forward(self, pos):
        return self.mlp(pos.flatten(-2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = Flat(100).to(dtype=dtype, device=device).eval()
    n_params = sum(q.numel() for q in model.parameters())
    x = torch.randn(64, 100, 3, dtype=dtype, device=device)
    action = PointCloud(E(3))
    n = args.samples

    def plain():
        with torch.no_grad():
            for _ in range(n):
                model(x)
        sync()

    def check_loop():
        return equivariance_error(model, x, action, n_samples=n)  # ends with .cpu(): synchronises

    def check_vec():
        return equivariance_error(model, x, action, n_samples=n, vectorize=True)

    t0 = time.perf_counter()
    check_loop()
    first_call = time.perf_counter() - t0
    res = interleaved({"plain": plain, "check": check_loop, "check_vectorized": check_vec}, repeats=args.repeats)
    # ratio per interleaved round (each run against the plain run beside it), then the median:
    # robust to load that drifts during the benchmark on a shared machine
    per_run = {k: [t / b for t, b in zip(v["times_s"], res["plain"]["times_s"])] for k, v in res.items()}
    ratios = {k: statistics.median(v) for k, v in per_run.items()}
    payload = {
        "benchmark": "check_overhead",
        "command": "python benchmarks/check_overhead.py " + " ".join(argv or sys.argv[1:]),
        "model": f"MLP on flattened coordinates, {n_params} parameters",
        "input": list(x.shape),
        "dtype": args.dtype,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "n_samples": n,
        "first_call_s": first_call,
        "results": {k: {"median_s": v["median_s"], "ratio_vs_plain": ratios[k]} for k, v in res.items()},
        "target_ratio": 1.2,
        "environment": environment(),
    }
    env = payload["environment"]
    md = "\n".join([
        "# Checker overhead",
        "",
        f"`equivariance_error` with {n} elements of E(3) vs {n} plain forward passes; {payload['model']}, "
        f"input {tuple(x.shape)} {args.dtype} on {payload['device']}; median of {args.repeats} interleaved runs.",
        f"torch {env['torch']}, {env['threads']} threads, load average {env['loadavg'][0]:.2f}, {env['cpu']}.",
        "",
        "| mode | median time (ms) | ratio vs plain forwards (median over rounds) |",
        "|---|---|---|",
        *[f"| {k} | {1e3 * v['median_s']:.2f} | {ratios[k]:.3f} |" for k, v in res.items()],
        "",
        f"Target: ratio < 1.2. The check makes {n + 1} forward passes ({(n + 1) / n:.3f}x by construction).",
        "",
    ])
    name = "check_overhead" if device.type == "cpu" else "check_overhead_cuda"
    out_dir = Path(args.out) if args.out else RESULTS
    json_path, md_path = write_results(name, payload, md, out_dir)
    try:
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(5, 3.2))
        names = ["check", "check_vectorized"]
        ax.boxplot([per_run[k] for k in names], tick_labels=names)
        ax.axhline(1.2, color="red", ls="--", label="target 1.2")
        ax.axhline((n + 1) / n, color="gray", ls=":", label=f"{n + 1}/{n} forwards")
        ax.set_ylabel("time / plain forwards")
        ax.set_title(f"checker overhead ({env['threads']} threads)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=120)
    except ImportError:
        print("matplotlib missing: no plot (pip install 'equikit[bench]')")
    print(md)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
