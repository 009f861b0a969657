"""Tensor-product benchmark: equikit (sparse_cg, naive) vs e3nn 0.6.0, DESIGN §7 protocol.

Cases: channelwise ``uvu`` (MACE/NequIP edge convolution: ``C x (0e + 1o + ... + L)`` times the
harmonics up to ``L``, outputs up to ``L``, per-row weights) at L = 1..3 with C = 32 channels
and 1k / 10k rows; fully connected ``uvw`` (``C x (0e..L) x sh(L) -> C x (0e..L)``, shared
weights) at L = 1..3 with C = 16 and 1k rows. Forward and forward+backward (gradients w.r.t. both
operands and the weights), interleaved A B C A B C, median of ``--repeats`` (>= 20) after
warm-up; outputs are allocated on every call, as in training (fresh large outputs cost page
faults on this platform; they are included). Construction time (cold CG caches for equikit;
e3nn's codegen + compile of its fx graph) is timed separately. Accuracy beside speed: max error
of each candidate against the naive backend in float64 (e3nn with weights sign-matched).

    python benchmarks/tp.py --threads 1 [--quick]

Writes benchmarks/results/tp.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, write_results
from equikit import tp
from equikit.o3 import Irreps, clebsch_gordan
from equikit.o3._cg import clear_caches


def _layer_irreps(mul: int, lmax: int) -> Irreps:
    return Irreps([(mul, (l, (-1) ** l)) for l in range(lmax + 1)])


def _signs(d):
    from e3nn import o3 as e3o

    out = []
    for p in d.paths:
        l1, l2, l3 = (ir.l for ir in d.irreps_of(p))
        c = clebsch_gordan(l1, l2, l3, dtype=torch.float64)
        out.append(float(torch.sign((c * e3o.wigner_3j(l1, l2, l3, dtype=torch.float64)).sum())))
    return out


def build(kind: str, lmax: int, mul: int):
    """(descriptor, e3nn module factory) for one case."""
    from e3nn import o3 as e3o

    i1, i2 = _layer_irreps(mul, lmax), Irreps.spherical_harmonics(lmax)
    if kind == "channelwise":
        d = tp.channelwise(i1, i2, lmax=lmax)
        ins = [(p.i1, p.i2, p.i_out, "uvu", True) for p in d.paths]
        make = lambda: e3o.TensorProduct(str(i1), str(i2), str(d.irreps_out), ins,  # noqa: E731
                                         shared_weights=False, internal_weights=False)
    else:
        d = tp.fully_connected(i1, i2, i1)
        make = lambda: e3o.FullyConnectedTensorProduct(str(i1), str(i2), str(i1),  # noqa: E731
                                                       shared_weights=True, internal_weights=False)
    return d, make


def construction_times(kind, lmax, mul):
    import e3nn.o3  # noqa: F401  (imported before timing)

    clear_caches()
    tp._functional._executor.cache_clear()
    t0 = time.perf_counter()
    d, make = build(kind, lmax, mul)
    tp.make_executor(d, "sparse_cg")
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    make()
    t_e3nn = time.perf_counter() - t0
    return t_ours, t_e3nn


def accuracy(d, make):
    """Max |candidate - naive| / max |naive| in float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ref_mod = make()
    finally:
        torch.set_default_dtype(before)
    x1 = torch.randn(64, d.irreps1.dim, dtype=torch.float64)
    x2 = torch.randn(64, d.irreps2.dim, dtype=torch.float64)
    per_row = d.paths[0].mode == tp.Mode.UVU
    w = torch.randn(*((64,) if per_row else ()), d.weight_numel, dtype=torch.float64)
    naive = tp.make_executor(d, "naive")(x1, x2, w)
    we = w.clone()
    for s, sl in zip(_signs(d), d.weight_slices()):
        we[..., sl] *= s
    scale = naive.abs().max()
    return {"sparse_cg": float((tp.make_executor(d, "sparse_cg")(x1, x2, w) - naive).abs().max() / scale),
            "e3nn": float((ref_mod(x1, x2, we) - naive).abs().max() / scale)}


def time_case(kind, lmax, mul, rows, repeats, with_naive):
    d, make = build(kind, lmax, mul)
    ref = make()
    ex = {"sparse_cg": tp.make_executor(d, "sparse_cg")}
    if with_naive:
        ex["naive"] = tp.make_executor(d, "naive")
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(rows, d.irreps1.dim, generator=g)
    x2 = torch.randn(rows, d.irreps2.dim, generator=g)
    w = torch.randn(*((rows,) if kind == "channelwise" else ()), d.weight_numel, generator=g)
    x1g, x2g, wg = (t.clone().requires_grad_(True) for t in (x1, x2, w))

    def fwd(f):
        def run():
            with torch.no_grad():
                return f(x1, x2, w)
        return run

    def fwd_bwd(f):
        def run():
            out = f(x1g, x2g, wg)
            out.backward(torch.ones_like(out))
            x1g.grad = x2g.grad = wg.grad = None
        return run

    cands = {"e3nn": ref, **ex}
    res = {}
    for phase, wrap in (("forward", fwd), ("forward_backward", fwd_bwd)):
        t = interleaved({k: wrap(f) for k, f in cands.items()}, repeats=repeats, warmup=3)
        res[phase] = {k: v["median_s"] for k, v in t.items()}
    return d, res


def table(payload) -> str:
    lines = ["| case | L | C | rows | phase | e3nn ms | sparse_cg ms | naive ms | e3nn / sparse_cg | "
             "e3nn / naive |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        for phase, t in r["times"].items():
            naive = t.get("naive")
            ratio_naive = "" if naive is None else f"{t['e3nn'] / naive:.2f}x"
            lines.append(
                f"| {r['kind']} | {r['lmax']} | {r['mul']} | {r['rows']} | {phase} | {1e3 * t['e3nn']:.2f} | "
                f"{1e3 * t['sparse_cg']:.2f} | {'' if naive is None else f'{1e3 * naive:.2f}'} | "
                f"{t['e3nn'] / t['sparse_cg']:.2f}x | {ratio_naive} |"
            )
    lines += ["", "| case | L | C | paths | weights | sparse / dense CG terms | construction ours ms | "
              "construction e3nn ms | max rel err sparse_cg | max rel err e3nn |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in payload["cases"]:
        lines.append(
            f"| {c['kind']} | {c['lmax']} | {c['mul']} | {c['paths']} | {c['weights']} | "
            f"{c['sparse_flops'] / c['dense_flops']:.2f} | {1e3 * c['construct_ours_s']:.1f} | "
            f"{1e3 * c['construct_e3nn_s']:.1f} | {c['err']['sparse_cg']:.1e} | {c['err']['e3nn']:.1e} |"
        )
    env = payload["env"]
    lines += ["", f"threads {env['threads']}, load average {env['loadavg']}, {env['cpu']}, torch {env['torch']}, "
              f"{env['time']}; float32; medians of {payload['repeats']} interleaved calls; outputs allocated per call."]
    return "\n".join(lines) + "\n"


def plot(payload, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, phase in zip(axes, ("forward", "forward_backward")):
        groups = sorted({(r["kind"], r["rows"]) for r in payload["runs"]})
        for kind, rows in groups:
            runs = [r for r in payload["runs"] if r["kind"] == kind and r["rows"] == rows]
            runs.sort(key=lambda r: r["lmax"])
            ls = [r["lmax"] for r in runs]
            for name, style in (("e3nn", "o--"), ("sparse_cg", "s-"), ("naive", "^:")):
                ts = [r["times"][phase].get(name) for r in runs]
                if all(t is not None for t in ts):
                    ax.loglog(ls, [1e3 * t for t in ts], style, label=f"{name} {kind} {rows}")
        ax.set_xlabel("L")
        ax.set_ylabel("median ms")
        ax.set_title(phase)
        ax.set_xticks([1, 2, 3], ["1", "2", "3"])
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--lmax", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--quick", action="store_true", help="rows 1000 only, repeats 5 (smoke test, not for results)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.repeats < 20 and not args.quick:
        ap.error("--repeats must be >= 20 (DESIGN §7); use --quick for a smoke run")
    if args.quick:
        args.rows, args.repeats = [1000], 5
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    payload = {"env": environment(), "repeats": args.repeats, "runs": [], "cases": []}
    for kind, mul, rows_list in (("channelwise", 32, args.rows), ("fully_connected", 16, [1000])):
        for lmax in args.lmax:
            t_ours, t_e3nn = construction_times(kind, lmax, mul)
            d, make = build(kind, lmax, mul)
            payload["cases"].append({
                "kind": kind, "lmax": lmax, "mul": mul, "paths": len(d.paths), "weights": d.weight_numel,
                "dense_flops": tp.dense_flops(d), "sparse_flops": tp.sparse_flops(d),
                "construct_ours_s": t_ours, "construct_e3nn_s": t_e3nn, "err": accuracy(d, make),
                "expressivity": tp.expressivity(d).to_dict() | {"paths": len(d.paths)},
            })
            for rows in rows_list:
                _, res = time_case(kind, lmax, mul, rows, args.repeats, with_naive=rows <= 1000)
                payload["runs"].append({"kind": kind, "lmax": lmax, "mul": mul, "rows": rows, "times": res})
                print(kind, lmax, rows, {ph: {k: f"{1e3 * v:.2f}ms" for k, v in t.items()} for ph, t in res.items()},
                      flush=True)
    payload["env_end"] = environment()
    md = table(payload)
    name = "tp_quick" if args.quick else "tp"
    write_results(name, payload, md, args.out)
    plot(payload, args.out / f"{name}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
