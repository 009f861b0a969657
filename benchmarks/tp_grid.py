"""Gaunt-product benchmark: sphere_grid and gaunt_fourier vs the Clebsch-Gordan backends, with
what each can express beside the times (DESIGN §7 protocol, float32, one thread by default).

Case per ``L``: ``C x (0e + 1o + ... + L)`` times ``C x (0e + 1o + ... + L)``, channel by
channel (``uuu``), every pair of blocks into every output ``l3 <= L`` (natural parity):

- ``sparse_cg[gaunt]``: the default backend on ``tp.gaunt_product`` (the same map as the grid
  backends, Gaunt coefficients, no weights); the C++ kernel when it is built, else PyTorch;
- ``sparse_cg[cg]``: the same paths with Clebsch-Gordan coefficients and one weight per path
  and channel (what a CG product can do and a Gaunt product cannot);
- ``gaunt_fourier``, ``sphere_grid``: the Gaunt backends on ``tp.gaunt_product``;
- ``e3nn``: ``e3nn.o3.TensorProduct`` with the same ``uuu`` instructions, weighted (reference).

Cases (``--cases``, the full-product protocol of "The Price of Freedom"):

- ``multi_input``: ``z = x1 (x) x2`` with two independent inputs (the case above);
- ``single_input``: ``z = x (x) x`` (one input passed twice; the backward sums both gradients);
- ``multi_output``: the CG products (``sparse_cg[cg]``, ``e3nn``) produce every output of both
  parities (``0e, 0o, 1e, 1o, ...``: 175 paths at ``L = 6``); the Gaunt backends cannot produce
  the parity-odd part and still run their natural-parity product, labelled so in the table.

Phases: ``forward`` (no grad) and ``forward_backward`` (gradient of ``sum(out * g)`` w.r.t.
both operands, and the weights where there are any). Interleaved A B C ..., median of
``--repeats`` calls after one warm-up (the default 7 is below DESIGN's 20: the machine is
shared; raise it on a quiet one). Beside the times: the max relative error of each equikit
candidate against the naive backend on its descriptor (float64, 8 rows), and the expressivity
of each (``tp.expressivity(..., rank=True)`` on the ``C = 1`` case): paths, parity-odd
couplings it could not run, independent weights, bilinear rank.

    python benchmarks/tp_grid.py --threads 1 [--ls 1,2,3,4,5,6] [--channels 32] [--rows 1000]
    python benchmarks/tp_grid.py --threads 1 --ls 2,4,6,8 --channels 32,128 --rows 1000,10000 \
        --cases multi_input,single_input,multi_output --budget 30      # the full protocol

``--budget`` seconds: a candidate whose first (warm-up) call times ``--repeats`` exceeds it is
left out of that phase and listed. The log-log slope of time vs ``L`` is fitted per case,
channels, rows, phase and method over the ``L >= 2`` that ran.
    python benchmarks/tp_grid.py --threads 1 --ls 6 --rows 10000 --skip gaunt_fourier,e3nn --name tp_grid_rows10k

Writes benchmarks/results/tp_grid.{json,md,png}.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit import tp
from equikit.o3 import Irreps

METHODS = ("sparse_cg[gaunt]", "sparse_cg[cg]", "gaunt_fourier", "sphere_grid", "e3nn")


def _irreps(mul: int, lmax: int) -> Irreps:
    return Irreps([(mul, (l, (-1) ** l)) for l in range(lmax + 1)])


def descriptors(lmax: int, mul: int, case: str = "multi_input"):
    """(Gaunt product, the CG product with per-path weights: on the same paths, or for
    ``multi_output`` on every coupling into outputs of both parities)."""
    i = _irreps(mul, lmax)
    g = tp.gaunt_product(i, i, lmax=lmax)
    if case == "multi_output":
        out = Irreps([(mul, (l, p)) for l in range(lmax + 1) for p in (1, -1)])
        paths = tuple(tp.Path(a, b, c, "uuu", True) for a, (_, i1) in enumerate(i) for b, (_, i2) in enumerate(i)
                      for c, (_, io) in enumerate(out) if io in list(i1 * i2))
        return g, tp.TensorProductDescriptor(i, i, out, paths, "element", "component")
    paths = tuple(tp.Path(p.i1, p.i2, p.i_out, "uuu", True) for p in g.paths)
    cg = tp.TensorProductDescriptor(i, i, g.irreps_out, paths, "element", "component")
    return g, cg


def e3nn_module(cg):
    from e3nn import o3 as e3o

    ins = [(p.i1, p.i2, p.i_out, "uuu", True) for p in cg.paths]
    return e3o.TensorProduct(str(cg.irreps1), str(cg.irreps2), str(cg.irreps_out), ins,
                             shared_weights=True, internal_weights=False)


def candidates(lmax: int, mul: int, with_e3nn: bool, skip=(), case: str = "multi_input"):
    g, cg = descriptors(lmax, mul, case)
    w = torch.randn(cg.weight_numel)
    ex = {"sparse_cg[gaunt]": tp.make_executor(g, "sparse_cg"), "sparse_cg[cg]": tp.make_executor(cg, "sparse_cg"),
          "gaunt_fourier": tp.make_executor(g, "gaunt_fourier"), "sphere_grid": tp.make_executor(g, "sphere_grid")}
    fns = {k: (lambda a, b, ww, e=e: e(a, b)) for k, e in ex.items() if k != "sparse_cg[cg]"}
    fns["sparse_cg[cg]"] = lambda a, b, ww: ex["sparse_cg[cg]"](a, b, ww)
    if with_e3nn:
        m = e3nn_module(cg)
        fns["e3nn"] = lambda a, b, ww: m(a, b, ww)
    native = getattr(ex["sparse_cg[gaunt]"], "native", None)
    return g, cg, w, {k: fns[k] for k in METHODS if k in fns and k not in skip}, native


def _within_budget(fns: dict, repeats: int, budget: float, phase: str, left_out: list) -> dict:
    """Run each candidate once (its warm-up); keep those whose call x repeats fits ``budget``."""
    kept = {}
    for k, f in fns.items():
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        if dt * repeats > budget:
            left_out.append(f"{k}/{phase} (one call {dt:.2f} s)")
        else:
            kept[k] = f
    return kept


def time_case(lmax, mul, rows, repeats, with_e3nn, skip=(), case="multi_input", budget=float("inf")):
    g, _, w, fns, native = candidates(lmax, mul, with_e3nn, skip, case)
    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(rows, g.irreps1.dim, generator=gen), torch.randn(rows, g.irreps2.dim, generator=gen)
    out = {"native_sparse_cg": native, "left_out": []}
    single = case == "single_input"
    with torch.no_grad():
        fwd = {k: (lambda f=f: f(x1, x1 if single else x2, w)) for k, f in fns.items()}
        fwd = _within_budget(fwd, repeats, budget, "forward", out["left_out"])
        out["forward"] = interleaved(fwd, repeats=repeats, warmup=0)

    def fb(f):
        a, b, ww = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def run():
            z = f(a, a if single else b, ww)
            grad = torch.ones_like(z)
            (z * grad).sum().backward()
        return run

    fbs = _within_budget({k: fb(f) for k, f in fns.items()}, repeats, budget, "forward_backward", out["left_out"])
    out["forward_backward"] = interleaved(fbs, repeats=repeats, warmup=0)
    for ph in ("forward", "forward_backward"):
        for v in out[ph].values():
            v.pop("times_s")
    return out


@functools.cache
def errors(lmax: int, mul: int, case: str = "multi_input") -> dict:
    """Max relative error vs the naive backend on the same descriptor, float64, 8 rows."""
    g, cg = descriptors(lmax, mul, case)
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(8, g.irreps1.dim, dtype=torch.float64, generator=gen)
    x2 = torch.randn(8, g.irreps2.dim, dtype=torch.float64, generator=gen)
    w = torch.randn(cg.weight_numel, dtype=torch.float64, generator=gen)
    ref_g, ref_cg = tp.make_executor(g, "naive")(x1, x2), tp.make_executor(cg, "naive")(x1, x2, w)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    return {"sparse_cg[gaunt]": rel(tp.make_executor(g, "sparse_cg")(x1, x2), ref_g),
            "sparse_cg[cg]": rel(tp.make_executor(cg, "sparse_cg")(x1, x2, w), ref_cg),
            "gaunt_fourier": rel(tp.make_executor(g, "gaunt_fourier")(x1, x2), ref_g),
            "sphere_grid": rel(tp.make_executor(g, "sphere_grid")(x1, x2), ref_g)}


@functools.cache
def expressivity_columns(lmax: int, case: str = "multi_input") -> dict:
    """Per method, on the C = 1 case: paths, independent weights, bilinear rank, and the
    parity-odd couplings of the full CG product (outputs of both parities) it cannot run."""
    g, cg = descriptors(lmax, 1)
    i = g.irreps1
    full_out = Irreps([(1, (l, p)) for l in range(lmax + 1) for p in (1, -1)])
    full = tp.TensorProductDescriptor(i, i, full_out, tuple(
        tp.Path(a, b, c, "uuu", True) for a, (_, i1) in enumerate(i) for b, (_, i2) in enumerate(i)
        for c, (_, io) in enumerate(full_out) if io in list(i1 * i2)))
    odd_total = sum(1 for p in full.paths if sum(ir.l for ir in full.irreps_of(p)) % 2)
    e_g = tp.expressivity(g, "sphere_grid", rank=True)
    e_cg = tp.expressivity(cg, "sparse_cg", rank=True)
    e_full = tp.expressivity(full, "sparse_cg", rank=True)
    row = lambda e, odd_missing, note: {"paths": len(g.paths) if e is not e_full else len(full.paths),  # noqa: E731
                                        "independent_weights_per_channel": e.independent_weights,
                                        "bilinear_rank": e.bilinear_rank, "parity_odd_missing": odd_missing,
                                        "cannot_express": note}
    gaunt_note = (f"parity-odd paths ({odd_total} of the full CG product), independent path weights "
                  f"({e_cg.independent_weights} per channel on the same paths)")
    cg_row = (row(e_full, 0, "-") if case == "multi_output"
              else row(e_cg, odd_total, f"parity-odd outputs not requested here ({odd_total} paths)"))
    return {"sparse_cg[gaunt]": row(e_g, odd_total, gaunt_note), "gaunt_fourier": row(e_g, odd_total, gaunt_note),
            "sphere_grid": row(e_g, odd_total, gaunt_note), "sparse_cg[cg]": cg_row, "e3nn": cg_row,
            "full_cg_product": row(e_full, 0, "-")}


RATIOS = (("e3nn", "sphere_grid"), ("sparse_cg[cg]", "sphere_grid"), ("sparse_cg[gaunt]", "sphere_grid"),
          ("gaunt_fourier", "sphere_grid"))


def slopes(cases) -> list[dict]:
    """Least-squares slope of log time vs log L per (case, C, rows, phase, method), L >= 2."""
    groups: dict[tuple, list[tuple[int, float]]] = {}
    for c in cases:
        for ph in ("forward", "forward_backward"):
            for m, v in c[ph].items():
                if c["L"] >= 2:
                    groups.setdefault((c["case"], c["C"], c["rows"], ph, m), []).append((c["L"], v["median_s"]))
    out = []
    for (case, C, rows, ph, m), pts in sorted(groups.items()):
        if len(pts) < 2:
            continue
        xs, ys = [math.log(p[0]) for p in pts], [math.log(p[1]) for p in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        out.append({"case": case, "C": C, "rows": rows, "phase": ph, "method": m, "slope": k,
                    "L": [p[0] for p in pts]})
    return out


def table(payload) -> str:
    env = payload["env"]
    lines = ["| case | L | C | rows | phase | " + " | ".join(f"{m} ms" for m in METHODS) + " | "
             + " | ".join(f"{a} / {b}" for a, b in RATIOS) + " |",
             "|" + "---|" * (5 + len(METHODS) + len(RATIOS))]
    for c in payload["cases"]:
        for ph in ("forward", "forward_backward"):
            t = {k: v["median_s"] * 1e3 for k, v in c[ph].items()}
            cells = [f"{t[m]:.2f}" if m in t else "" for m in METHODS]
            r = [f"{t[a] / t[b]:.2f}x" if a in t and b in t else "" for a, b in RATIOS]
            lines.append(f"| {c['case']} | {c['L']} | {c['C']} | {c['rows']} | {ph} | " + " | ".join(cells)
                         + " | " + " | ".join(r) + " |")
    lines += ["", "Slope of log time vs log L (fitted over the L >= 2 that ran):", "",
              "| case | C | rows | phase | method | slope | L |", "|---|---|---|---|---|---|---|"]
    for k in payload["slopes"]:
        lines.append(f"| {k['case']} | {k['C']} | {k['rows']} | {k['phase']} | {k['method']} | {k['slope']:.2f} | "
                     f"{', '.join(map(str, k['L']))} |")
    lines += ["", "| case | L | method | paths | independent weights / channel | bilinear rank (C = 1) | "
              "max rel err vs naive (float64) | cannot express |", "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for c in payload["cases"]:
        if (c["case"], c["L"]) in seen:
            continue
        seen.add((c["case"], c["L"]))
        for m, e in c["expressivity"].items():
            err = c["errors"].get(m)
            lines.append(f"| {c['case']} | {c['L']} | {m} | {e['paths']} | {e['independent_weights_per_channel']} | "
                         f"{e['bilinear_rank']} | {'' if err is None else f'{err:.1e}'} | {e['cannot_express']} |")
    left = [f"{c['case']} L={c['L']} C={c['C']} rows={c['rows']}: {x}" for c in payload["cases"] for x in c["left_out"]]
    if left:
        lines += ["", f"Left out (one call x repeats over the {payload['budget']} s budget): " + "; ".join(left) + "."]
    lines += ["", f"threads {env['threads']}, load average {tuple(round(x, 2) for x in env['loadavg'])} at the end "
              f"({tuple(round(x, 2) for x in payload['loadavg_start'])} at the start), "
              f"{env['cpu']}, torch {env['torch']}, {env['time']}; float32; medians of {payload['repeats']} "
              f"interleaved calls after one warm-up; outputs allocated per call; sparse_cg native kernel: "
              f"{payload['native']}; sphere_grid native kernel: {payload['native_grid']}; "
              f"wall time {payload['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(payload, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    first = payload["cases"][0]
    key = (first["case"], first["C"], first["rows"])
    for ax, ph in zip(axes, ("forward", "forward_backward")):
        for m in METHODS:
            pts = [(c["L"], c[ph][m]["median_s"] * 1e3) for c in payload["cases"]
                   if m in c[ph] and (c["case"], c["C"], c["rows"]) == key]
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=m)
        ax.set_title(f"{ph}, {key[0]}, C={key[1]}, rows={key[2]}")
        ax.set_xlabel("L")
        ax.set_ylabel("ms (median)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ls", default="1,2,3,4,5,6")
    ap.add_argument("--channels", default="32", help="comma-separated, e.g. 32,128")
    ap.add_argument("--rows", default="1000", help="comma-separated, e.g. 1000,10000")
    ap.add_argument("--cases", default="multi_input", help="multi_input,single_input,multi_output")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds per candidate and phase")
    ap.add_argument("--no-e3nn", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated methods to leave out, e.g. gaunt_fourier")
    ap.add_argument("--name", default="tp_grid")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from equikit.tp import _grid_native

    t_start, load_start = time.perf_counter(), environment()["loadavg"]
    cases, native = [], None
    skip = tuple(m for m in args.skip.split(",") if m)
    ints = lambda v: [int(x) for x in v.split(",") if x]  # noqa: E731
    for case in [c for c in args.cases.split(",") if c]:
        for mul in ints(args.channels):
            for rows in ints(args.rows):
                for lmax in ints(args.ls):
                    t = time_case(lmax, mul, rows, args.repeats, not args.no_e3nn, skip, case, args.budget)
                    native = t.pop("native_sparse_cg")
                    c = {"case": case, "L": lmax, "C": mul, "rows": rows, **t, "errors": errors(lmax, 2, case),
                         "expressivity": expressivity_columns(lmax, case)}
                    cases.append(c)
                    f, b = c["forward"], c["forward_backward"]
                    print(f"{case} L={lmax} C={mul} rows={rows}: " + ", ".join(
                        f"{k} {1e3 * v['median_s']:.1f}/{1e3 * b[k]['median_s']:.1f} ms" if k in b else
                        f"{k} {1e3 * v['median_s']:.1f}/- ms" for k, v in f.items()), flush=True)
    payload = {"env": environment(), "loadavg_start": load_start, "repeats": args.repeats, "budget": args.budget,
               "native": native, "native_grid": _grid_native.library() is not None, "cases": cases,
               "slopes": slopes(cases), "wall_s": time.perf_counter() - t_start}
    md = table(payload)
    write_results(args.name, payload, md)
    plot(payload, RESULTS / f"{args.name}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
