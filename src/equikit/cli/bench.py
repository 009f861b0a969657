"""``equikit bench NAME``: benchmarks that ship with the package (e.g. ``sh``, ``cg``).

Each capability contributes its benchmarks through ``register_bench(bench_subparsers)`` in
its ``_cli`` module; the full result files and plots are written by the scripts in
``benchmarks/`` (``make bench``).
"""

from __future__ import annotations

import importlib

PROVIDERS = ("equikit.o3._cli", "equikit.tp._cli")


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="run a packaged benchmark (sh, cg, ...)")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue
            raise
        module.register_bench(sub)
