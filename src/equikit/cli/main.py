"""``equikit`` command: one subcommand per capability.

Each subcommand lives in a module exposing ``register(subparsers)``. Only the module of the
command being run is imported (fast start-up, and one capability's import error never breaks
another); ``equikit --help`` imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module exposing register(subparsers)
COMMANDS = {
    "check": "equikit.cli.check",
    "demo": "equikit.cli.demo",
    "cayley": "equikit.groups.cayley._cli",
    "bench": "equikit.cli.bench",
    "train": "equikit.cli.train",
    "md": "equikit.cli.md",
}


def _register(sub, module_name: str) -> bool:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            return False  # that capability is not part of this checkout
        raise
    module.register(sub)
    return True


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equikit", description="Symmetry for deep learning: check, demo and benchmarks."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    modules = [COMMANDS[wanted]] if wanted in COMMANDS else list(COMMANDS.values())
    for name in modules:
        _register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
