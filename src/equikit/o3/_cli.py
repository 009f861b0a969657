"""``equikit bench sh`` / ``equikit bench cg``: the o3 benchmarks from the command line.

Two entry points for wiring: ``register(subparsers)`` adds a ``bench`` command with ``sh``
and ``cg`` under it; ``register_bench(bench_subparsers)`` adds just ``sh`` and ``cg`` to a
``bench`` command that already exists (when other layers add their own benchmarks).
Prints the markdown table; ``--out DIR`` also writes ``o3_<name>.json`` and ``.md`` there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from equikit.o3 import _bench

    if args.o3_bench == "sh":
        payload = _bench.bench_sh(lmaxes=tuple(args.lmax), n=args.n, repeats=args.repeats, threads=args.threads)
        table = _bench.sh_table(payload)
    else:
        payload = _bench.bench_cg(repeats=args.repeats, threads=args.threads)
        table = _bench.cg_table(payload)
    print(table)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"o3_{args.o3_bench}.json").write_text(json.dumps(payload, indent=2))
        (out / f"o3_{args.o3_bench}.md").write_text(table)
    return 0


def register_bench(bench_subparsers) -> None:
    """Add ``sh`` and ``cg`` to an existing ``bench`` subparsers object."""
    sh = bench_subparsers.add_parser("sh", help="spherical harmonics: equikit vs e3nn vs sphericart-torch")
    sh.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 8])
    sh.add_argument("--n", type=int, default=100_000, help="number of vectors")
    sh.add_argument("--repeats", type=int, default=25)
    sh.add_argument("--threads", type=int, default=2)
    sh.add_argument("--out", default=None, help="directory for json/md results")
    sh.set_defaults(func=_run, o3_bench="sh")
    cg = bench_subparsers.add_parser("cg", help="Clebsch-Gordan table construction vs e3nn wigner_3j")
    cg.add_argument("--repeats", type=int, default=20)
    cg.add_argument("--threads", type=int, default=2)
    cg.add_argument("--out", default=None)
    cg.set_defaults(func=_run, o3_bench="cg")


def register(subparsers) -> None:
    """Add ``bench`` with the o3 benchmarks under it."""
    bench = subparsers.add_parser("bench", help="benchmarks (o3: sh, cg)")
    register_bench(bench.add_subparsers(dest="bench_command", required=True))
