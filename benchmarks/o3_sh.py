"""Spherical harmonics throughput: equikit vs e3nn vs sphericart-torch (DESIGN section 7).

lmax 2, 4, 8; 100k float32 vectors; forward and forward+backward; interleaved, median of
>= 20 calls after warm-up; threads set explicitly and recorded with the load average.
Candidates: `equikit` (backend="auto": the native C++ kernel on CPU), `equikit_torch` (pure
PyTorch), `equikit_sphericart` (sphericart + permutation + scaling, the previous default),
`e3nn` (component normalisation, as ours) and raw `sphericart` (its own basis, orthonormal).
The first call (loading, or on a fresh machine compiling, the kernel) is timed separately.
Writes results/o3_sh_threads<N>.json, .md and .png.

    python benchmarks/o3_sh.py [--threads 2] [--repeats 25] [--n 100000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, pyplot, write_results
from equikit.o3._bench import bench_sh, sh_table


def plot(payload: dict, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, mode in zip(axes, ("forward", "forward+backward")):
        rows = [r for r in payload["rows"] if r["mode"] == mode]
        names = list(rows[0]["median_s"])
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + i * width for j in range(len(rows))]
            ax.bar(xs, [r["median_s"][name] * 1e3 for r in rows], width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
        ax.set_xticklabels([f"lmax={r['lmax']}" for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("median time (ms), log scale")
        ax.set_title(f"{mode}, {payload['n']} vectors")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args(argv)
    payload = bench_sh(n=args.n, repeats=args.repeats, threads=args.threads)
    table = sh_table(payload)
    stem = f"o3_sh_threads{args.threads}"  # one result file per thread count
    write_results(stem, payload, "# Spherical harmonics throughput\n\n" + table)
    plot(payload, RESULTS / f"{stem}.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
