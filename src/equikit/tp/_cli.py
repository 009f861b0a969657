"""``equikit bench tp``: a small tensor-product benchmark from the command line.

``register_bench(bench_subparsers)`` adds ``tp`` to an existing ``bench`` command. It times the
``sparse_cg`` backend (the C++ kernels where they build), its pure-PyTorch path and, when
installed, e3nn 0.6, on the MACE/NequIP edge convolution (channelwise) and the fully connected
product, interleaved, median of ``--repeats`` calls, outputs allocated per call, and prints a
markdown table; ``--out DIR`` also writes ``tp.json`` and ``tp.md`` there. The full grid
(double backward, peak memory, 100k rows, cuEquivariance) is ``benchmarks/tp.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _case(kind: str, lmax: int, mul: int):
    from equikit import tp
    from equikit.o3 import Irreps

    i1 = Irreps([(mul, (l, (-1) ** l)) for l in range(lmax + 1)])
    i2 = Irreps.spherical_harmonics(lmax)
    if kind == "channelwise":
        return tp.channelwise(i1, i2, lmax=lmax)
    return tp.fully_connected(i1, i2, i1)


def _e3nn(kind: str, d):
    try:
        from e3nn import o3 as e3o
    except ImportError:
        return None
    if kind == "channelwise":
        ins = [(p.i1, p.i2, p.i_out, "uvu", True) for p in d.paths]
        return e3o.TensorProduct(str(d.irreps1), str(d.irreps2), str(d.irreps_out), ins, shared_weights=False,
                                 internal_weights=False)
    return e3o.FullyConnectedTensorProduct(str(d.irreps1), str(d.irreps2), str(d.irreps_out), shared_weights=True,
                                           internal_weights=False)


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _forward(f, x1, x2, w):
    def run():
        with torch.no_grad():
            f(x1, x2, w)
    return run


def _forward_backward(f, x1, x2, w):
    def run():
        out = f(x1, x2, w)
        out.backward(torch.ones_like(out))
        x1.grad = x2.grad = w.grad = None
    return run


def bench_tp(kinds=("channelwise", "fully_connected"), lmaxes=(1, 2), mul: int = 32, rows: int = 1000,
             repeats: int = 21, threads: int = 1) -> dict:
    """Median seconds per (kind, L, phase, candidate); see the module docs."""
    from equikit import tp

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = []
        for kind in kinds:
            for lmax in lmaxes:
                d = _case(kind, lmax, mul)
                native = tp.make_executor(d, "sparse_cg")
                torch_path = tp.make_executor(d, "sparse_cg")
                torch_path.native = False
                fns = {"sparse_cg": native, "sparse_cg_torch": torch_path}
                ref = _e3nn(kind, d)
                if ref is not None:
                    fns["e3nn"] = ref
                g = torch.Generator().manual_seed(0)
                x1 = torch.randn(rows, d.irreps1.dim, generator=g, requires_grad=True)
                x2 = torch.randn(rows, d.irreps2.dim, generator=g, requires_grad=True)
                w = torch.randn(*((rows,) if kind == "channelwise" else ()), d.weight_numel, generator=g,
                                requires_grad=True)
                times = {"forward": _interleaved({k: _forward(f, x1, x2, w) for k, f in fns.items()}, repeats),
                         "forward_backward": _interleaved({k: _forward_backward(f, x1, x2, w)
                                                           for k, f in fns.items()}, repeats)}
                runs.append({"kind": kind, "lmax": lmax, "mul": mul, "rows": rows, "native": native.native,
                             "times": times})
        return {"threads": threads, "repeats": repeats, "runs": runs}
    finally:
        torch.set_num_threads(before)


def tp_table(payload: dict) -> str:
    """Markdown table of :func:`bench_tp`'s result."""
    lines = ["| case | L | C | rows | phase | sparse_cg ms | sparse_cg_torch ms | e3nn ms | e3nn / sparse_cg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        for phase, t in r["times"].items():
            e, s = t.get("e3nn"), t["sparse_cg"]
            e_ms = "" if e is None else f"{1e3 * e:.2f}"
            ratio = "" if e is None else f"{e / s:.2f}x"
            lines.append(f"| {r['kind']} | {r['lmax']} | {r['mul']} | {r['rows']} | {phase} | {1e3 * s:.2f} | "
                         f"{1e3 * t['sparse_cg_torch']:.2f} | {e_ms} | {ratio} |")
    native = all(r["native"] for r in payload["runs"])
    lines += ["", f"threads {payload['threads']}, float32, medians of {payload['repeats']} interleaved calls, "
              f"outputs allocated per call; C++ kernels {'on' if native else 'OFF (PyTorch fallback)'}."]
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    payload = bench_tp(kinds=tuple(args.kind), lmaxes=tuple(args.lmax), mul=args.mul, rows=args.rows,
                       repeats=args.repeats, threads=args.threads)
    table = tp_table(payload)
    print(table)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tp.json").write_text(json.dumps(payload, indent=2))
        (out / "tp.md").write_text(table)
    return 0


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return n


def register_bench(bench_subparsers) -> None:
    """Add ``tp`` to an existing ``bench`` subparsers object."""
    p = bench_subparsers.add_parser("tp", help="tensor products: sparse_cg (C++ kernels) vs its PyTorch path vs e3nn")
    p.add_argument("--kind", nargs="+", choices=["channelwise", "fully_connected"],
                   default=["channelwise", "fully_connected"])
    p.add_argument("--lmax", type=int, nargs="+", default=[1, 2])
    p.add_argument("--mul", type=_positive, default=32, help="channels per irrep")
    p.add_argument("--rows", type=_positive, default=1000, help="rows (edges)")
    p.add_argument("--repeats", type=_positive, default=21)
    p.add_argument("--threads", type=_positive, default=1)
    p.add_argument("--out", default=None, help="directory for tp.json / tp.md")
    p.set_defaults(func=_run)
