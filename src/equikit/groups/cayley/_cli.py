"""``equikit cayley ...``: growth tables, diameters and shortest words from the shell.

Wired into the ``equikit`` command by :func:`register`; every subcommand returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from equikit.groups.cayley.engine import growth
from equikit.groups.cayley.generators import FAMILIES
from equikit.groups.cayley.graph import CayleyGraph
from equikit.groups.cayley.words import apply_word, shortest_word

__all__ = ["register"]


class _Progress:
    """tqdm bar when tqdm is installed, plain stderr lines otherwise."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None
        if quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, unit="state", unit_scale=True, file=sys.stderr)

    def __call__(self, layer: int, size: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix(layer=layer, size=size)
            self.bar.update(total - self.bar.n)
        else:
            print(f"layer {layer}: {size} states ({total} in all)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _graph(args) -> CayleyGraph:
    if args.perm:
        gens = [[int(x) for x in p.split(",")] for p in args.perm]
        return CayleyGraph.permutations(gens)
    kw = {"k": args.k} if args.k is not None else {}
    if args.generators == "cube222":
        return CayleyGraph.family("cube222")
    return CayleyGraph.family(args.generators, args.n, **kw)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _plot(sizes: list[int], title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(sizes)), sizes)
    ax.set_yscale("log")
    ax.set_xlabel("distance from identity")
    ax.set_ylabel("states")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _table(sizes: list[int]) -> str:
    lines = ["layer        size     cumulative"]
    total = 0
    for d, s in enumerate(sizes):
        total += s
        lines.append(f"{d:5d} {s:12d} {total:14d}")
    return "\n".join(lines)


def _name(args) -> str:
    if args.perm:
        return "user"
    return args.generators + ("" if args.generators == "cube222" else f"-{args.n}") + (
        f"-k{args.k}" if args.k is not None else "")


def _run_growth(args) -> tuple[CayleyGraph, object]:
    graph = _graph(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    bound = math.factorial(graph.n) if graph.kind == "perm" else None
    bar = _Progress(bound, args.quiet)
    try:
        res = growth(graph, backend=args.backend, max_layers=args.max_layers,
                     device=args.device, stream_dir=args.stream_dir, progress=bar)
    finally:
        bar.close()
    return graph, res


def _growth_cmd(args) -> int:
    try:
        graph, res = _run_growth(args)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = _name(args)
    print(_table(res.layer_sizes))
    print(f"order {res.order}, eccentricity of the identity {res.eccentricity}, "
          f"diameter {res.diameter}; backend {res.backend}, {res.seconds:.3f} s, "
          f"peak {res.peak_bytes / 2**20:.1f} MiB (estimate {res.peak_bytes_estimate / 2**20:.1f} "
          f"MiB, process RSS {res.rss_peak_bytes / 2**20:.1f} MiB)")
    out = Path(args.out or f"cayley_{name}.json")
    data = {"graph": name, "generators": graph.generators.tolist(), "names": list(graph.names),
            "threads": torch.get_num_threads(), "loadavg": os.getloadavg(), **res.to_dict()}
    _write_json(out, data)
    print(f"wrote {out}")
    if not args.no_plot:
        plot = Path(args.plot or out.with_suffix(".png"))
        if _plot(res.layer_sizes, f"growth of {name}", plot):
            print(f"wrote {plot}")
    return 0


def _diameter_cmd(args) -> int:
    args.max_layers = None
    try:
        _, res = _run_growth(args)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(res.diameter if res.diameter is not None else res.eccentricity)
    return 0


def _word_cmd(args) -> int:
    try:
        graph = _graph(args)
        target = torch.tensor([int(x) for x in args.target.split(",")])
        word = shortest_word(graph, target)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if word is None:
        print("unreachable")
        return 1
    assert torch.equal(apply_word(graph, word), target)
    print(f"length {len(word)}: " + " ".join(graph.names[j] for j in word))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generators", default="lrx", choices=sorted([*FAMILIES, "cube222"]),
                   help="generator family (default lrx)")
    p.add_argument("--n", type=int, default=8, help="number of items (default 8)")
    p.add_argument("--k", type=int, default=None, help="family parameter (lrx, top_spin, ...)")
    p.add_argument("--perm", action="append", default=None,
                   help="a user generator as comma-separated images, repeatable")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``cayley`` command (``growth``, ``diameter``, ``word``) to ``subparsers``."""
    cayley = subparsers.add_parser("cayley", help="Cayley graph growth, diameters, words")
    sub = cayley.add_subparsers(dest="cayley_command", required=True)
    for name, func, help_ in [
        ("growth", _growth_cmd, "layer sizes, table, plot and JSON"),
        ("diameter", _diameter_cmd, "print the diameter"),
    ]:
        p = sub.add_parser(name, help=help_)
        _common(p)
        p.add_argument("--backend", default="auto", choices=["auto", "torch", "bitset"])
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--stream-dir", default=None, help="checkpoint folder (resumable)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "growth":
            p.add_argument("--max-layers", type=int, default=None)
            p.add_argument("--out", default=None, help="JSON path (default cayley_<name>.json)")
            p.add_argument("--plot", default=None, help="PNG path (default next to the JSON)")
            p.add_argument("--no-plot", action="store_true")
        p.set_defaults(func=func)
    w = sub.add_parser("word", help="shortest word for a target (meet in the middle)")
    _common(w)
    w.add_argument("--target", required=True, help="comma-separated images of the target")
    w.set_defaults(func=_word_cmd)
    return cayley
