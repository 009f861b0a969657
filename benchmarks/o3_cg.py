"""Clebsch-Gordan table construction time: equikit vs e3nn's wigner_3j (cold caches).

Writes results/o3_cg_threads<N>.json, .md and .png.

    python benchmarks/o3_cg.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, pyplot, write_results
from equikit.o3._bench import bench_cg, cg_table


def plot(payload: dict, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 4))
    Ls = [r["L"] for r in payload["rows"]]
    for name in ("equikit", "e3nn"):
        ax.plot(Ls, [r["median_s"][name] for r in payload["rows"]], "o-", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("L (all coupled triples with l <= L)")
    ax.set_ylabel("cold construction time (s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    payload = bench_cg(repeats=args.repeats, threads=args.threads)
    table = cg_table(payload)
    stem = f"o3_cg_threads{args.threads}"  # one result file per thread count
    write_results(stem, payload, "# Clebsch-Gordan table construction\n\n" + table)
    plot(payload, RESULTS / f"{stem}.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
