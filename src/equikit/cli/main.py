"""``equikit`` command: one subcommand per capability.

Subcommands register themselves through a ``register(subparsers)`` function; capabilities
that are not installed in this checkout are skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module paths exposing register(subparsers); imported lazily so a missing one never breaks
# the others
SUBCOMMANDS = (
    "equikit.cli.check",
    "equikit.cli.demo",
    "equikit.groups.cayley._cli",
    "equikit.o3._cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equikit", description="Symmetry for deep learning: check, demo and benchmarks."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that capability is not part of this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
