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

Phases: ``forward`` (no grad) and ``forward_backward`` (gradient of ``sum(out * g)`` w.r.t.
both operands, and the weights where there are any). Interleaved A B C ..., median of
``--repeats`` calls after one warm-up (the default 7 is below DESIGN's 20: the machine is
shared; raise it on a quiet one). Beside the times: the max relative error of each equikit
candidate against the naive backend on its descriptor (float64, 8 rows), and the expressivity
of each (``tp.expressivity(..., rank=True)`` on the ``C = 1`` case): paths, parity-odd
couplings it could not run, independent weights, bilinear rank.

    python benchmarks/tp_grid.py --threads 1 [--ls 1,2,3,4,5,6] [--channels 32] [--rows 1000]
    python benchmarks/tp_grid.py --threads 1 --ls 6 --rows 10000 --skip gaunt_fourier,e3nn --name tp_grid_rows10k

Writes benchmarks/results/tp_grid.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit import tp
from equikit.o3 import Irreps

METHODS = ("sparse_cg[gaunt]", "sparse_cg[cg]", "gaunt_fourier", "sphere_grid", "e3nn")


def _irreps(mul: int, lmax: int) -> Irreps:
    return Irreps([(mul, (l, (-1) ** l)) for l in range(lmax + 1)])


def descriptors(lmax: int, mul: int):
    """(Gaunt product, the same paths with CG coefficients and per-path weights)."""
    i = _irreps(mul, lmax)
    g = tp.gaunt_product(i, i, lmax=lmax)
    paths = tuple(tp.Path(p.i1, p.i2, p.i_out, "uuu", True) for p in g.paths)
    cg = tp.TensorProductDescriptor(i, i, g.irreps_out, paths, "element", "component")
    return g, cg


def e3nn_module(cg):
    from e3nn import o3 as e3o

    ins = [(p.i1, p.i2, p.i_out, "uuu", True) for p in cg.paths]
    return e3o.TensorProduct(str(cg.irreps1), str(cg.irreps2), str(cg.irreps_out), ins,
                             shared_weights=True, internal_weights=False)


def candidates(lmax: int, mul: int, with_e3nn: bool, skip=()):
    g, cg = descriptors(lmax, mul)
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


def time_case(lmax, mul, rows, repeats, with_e3nn, skip=()):
    g, _, w, fns, native = candidates(lmax, mul, with_e3nn, skip)
    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(rows, g.irreps1.dim, generator=gen), torch.randn(rows, g.irreps2.dim, generator=gen)
    grad = torch.randn(rows, g.irreps_out.dim, generator=gen)
    out = {"native_sparse_cg": native}
    with torch.no_grad():
        out["forward"] = interleaved({k: (lambda f=f: f(x1, x2, w)) for k, f in fns.items()},
                                     repeats=repeats, warmup=1)

    def fb(f):
        a, b, ww = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def run():
            (f(a, b, ww) * grad).sum().backward()
        return run

    out["forward_backward"] = interleaved({k: fb(f) for k, f in fns.items()}, repeats=repeats, warmup=1)
    for ph in ("forward", "forward_backward"):
        for v in out[ph].values():
            v.pop("times_s")
    return out


def errors(lmax: int, mul: int) -> dict:
    """Max relative error vs the naive backend on the same descriptor, float64, 8 rows."""
    g, cg = descriptors(lmax, mul)
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


def expressivity_columns(lmax: int) -> dict:
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
    return {"sparse_cg[gaunt]": row(e_g, odd_total, gaunt_note), "gaunt_fourier": row(e_g, odd_total, gaunt_note),
            "sphere_grid": row(e_g, odd_total, gaunt_note),
            "sparse_cg[cg]": row(e_cg, odd_total, f"parity-odd outputs not requested here ({odd_total} paths)"),
            "e3nn": row(e_cg, odd_total, f"parity-odd outputs not requested here ({odd_total} paths)"),
            "full_cg_product": row(e_full, 0, "-")}


def table(payload) -> str:
    env = payload["env"]
    lines = ["| L | C | rows | phase | " + " | ".join(f"{m} ms" for m in METHODS)
             + " | sparse_cg[cg] / sphere_grid | sparse_cg[gaunt] / sphere_grid | sphere_grid / gaunt_fourier |",
             "|" + "---|" * (4 + len(METHODS) + 3)]
    for c in payload["cases"]:
        for ph in ("forward", "forward_backward"):
            t = {k: v["median_s"] * 1e3 for k, v in c[ph].items()}
            cells = [f"{t[m]:.2f}" if m in t else "" for m in METHODS]
            r = lambda a, b, t=t: f"{t[a] / t[b]:.2f}x" if a in t and b in t else ""  # noqa: E731
            lines.append(f"| {c['L']} | {c['C']} | {c['rows']} | {ph} | " + " | ".join(cells)
                         + f" | {r('sparse_cg[cg]', 'sphere_grid')} | {r('sparse_cg[gaunt]', 'sphere_grid')} | "
                         f"{r('gaunt_fourier', 'sphere_grid')} |")
    lines += ["", "| L | method | paths | independent weights / channel | bilinear rank (C = 1) | "
              "max rel err vs naive (float64) | cannot express |", "|---|---|---|---|---|---|---|"]
    for c in payload["cases"]:
        for m, e in c["expressivity"].items():
            err = c["errors"].get(m)
            lines.append(f"| {c['L']} | {m} | {e['paths']} | {e['independent_weights_per_channel']} | "
                         f"{e['bilinear_rank']} | {'' if err is None else f'{err:.1e}'} | {e['cannot_express']} |")
    lines += ["", f"threads {env['threads']}, load average {tuple(round(x, 2) for x in env['loadavg'])}, "
              f"{env['cpu']}, torch {env['torch']}, {env['time']}; float32; medians of {payload['repeats']} "
              f"interleaved calls after one warm-up; sparse_cg native kernel: {payload['native']}."]
    return "\n".join(lines) + "\n"


def plot(payload, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, ph in zip(axes, ("forward", "forward_backward")):
        for m in METHODS:
            pts = [(c["L"], c[ph][m]["median_s"] * 1e3) for c in payload["cases"] if m in c[ph]]
            if pts:
                ax.semilogy(*zip(*pts), marker="o", label=m)
        ax.set_title(f"{ph}, C={payload['cases'][0]['C']}, rows={payload['cases'][0]['rows']}")
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
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-e3nn", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated methods to leave out, e.g. gaunt_fourier")
    ap.add_argument("--name", default="tp_grid")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = []
    native = None
    for lmax in [int(s) for s in args.ls.split(",")]:
        skip = tuple(m for m in args.skip.split(",") if m)
        t = time_case(lmax, args.channels, args.rows, args.repeats, not args.no_e3nn, skip)
        native = t.pop("native_sparse_cg")
        case = {"L": lmax, "C": args.channels, "rows": args.rows, **t, "errors": errors(lmax, 2),
                "expressivity": expressivity_columns(lmax)}
        cases.append(case)
        f, s = case["forward"], case["forward_backward"]
        print(f"L={lmax}: " + ", ".join(f"{k} {1e3 * v['median_s']:.1f}/{1e3 * s[k]['median_s']:.1f} ms"
                                         for k, v in f.items()), flush=True)
    payload = {"env": environment(), "repeats": args.repeats, "native": native, "cases": cases}
    md = table(payload)
    write_results(args.name, payload, md)
    plot(payload, RESULTS / f"{args.name}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
