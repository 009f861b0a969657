"""Symmetric contraction (MACE's product basis) and spline radial benchmark, DESIGN §7 protocol.

Symmetric contraction, ``irreps_in = 0e+1o+2e+3o`` (max_ell 3), correlation 3, 3 elements,
float32: equikit's ``recursive`` executor vs ``naive`` (the dense einsum oracle) vs
``mace_order``: MACE's algorithm re-implemented here (not mace-torch itself): MACE's
unsymmetrised basis (all iterated CG paths, as ``U_matrix_real`` stacks them, e.g. 23 instead of
8 tensors for ``0e`` at order 3), contracted with the weights selected per node by the one-hot
attributes (``...ik,ekc,bci,be->bc...``), then multiplied by the features and the next order
added, with ``torch.einsum`` (opt_einsum path) as MACE's optimised einsums do. mace-torch 0.3.16
itself needs e3nn 0.4.4 in a second venv (DESIGN §5); it was not installed for this run.
Forward and forward+backward (gradients w.r.t. features and weights); outputs allocated on every
call; interleaved A B C, median of ``--repeats`` after warm-up. Basis construction (cold caches)
is timed separately; accuracy: max error of ``recursive`` vs ``naive`` in float64.

Radial functions, ``E`` edges, float32: :class:`equikit.nn.SplineRadial` (16 and 64 intervals)
vs MACE's default radial MLP (8 Bessel functions times the polynomial cutoff, then
``[64, 64, 64]`` SiLU layers, linear output), ``num_outputs`` per edge; forward and
forward+backward (gradients w.r.t. the distances, as for forces, and the parameters).

    python benchmarks/tp_symmetric.py --threads 1 [--quick]

Writes benchmarks/results/tp_symmetric.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit import tp
from equikit.nn import BesselBasis, PolynomialCutoff, SplineRadial
from equikit.o3 import Irreps
from equikit.o3._cg import clear_caches
from equikit.tp._symmetric import _couplings, _symmetric_basis64

IRREPS_IN = Irreps("0e + 1o + 2e + 3o")
CORRELATION = 3
ELEMENTS = 3


# ---------------------------------------------------------------------------------- MACE order
class MaceOrder(torch.nn.Module):
    """MACE's contraction order on MACE's (unsymmetrised, redundant) basis; see the module docs."""

    def __init__(self, irreps_out: Irreps, channels: int, dtype) -> None:
        super().__init__()
        self.blocks = []
        for _, ir in irreps_out:
            us, ws = [], []
            for nu in range(1, CORRELATION + 1):
                paths = [t for ir2, t in _couplings(IRREPS_IN, nu, ir.l) if ir2 == ir]
                u = torch.tensor(np.stack(paths, -1), dtype=dtype).movedim(-2, 0)  # (m, d.., K)
                us.append(u)
                ws.append(torch.randn(ELEMENTS, u.shape[-1], channels, dtype=dtype) / u.shape[-1])
            self.blocks.append((us, [torch.nn.Parameter(w) for w in ws]))
        self.params = torch.nn.ParameterList([w for _, ws in self.blocks for w in ws])

    def forward(self, x, onehot):
        outs = []
        for us, ws in self.blocks:
            # U (m, i, j, l, k); weights (e, k, c); x (b, c, i); onehot (b, e)
            o = torch.einsum("mijlk,ekc,bcl,be->bcmij", us[2], ws[2], x, onehot)
            c = torch.einsum("mijk,ekc,be->bcmij", us[1], ws[1], onehot) + o
            o = torch.einsum("bcmij,bcj->bcmi", c, x)
            c = torch.einsum("mik,ekc,be->bcmi", us[0], ws[0], onehot) + o
            o = torch.einsum("bcmi,bci->bcm", c, x)
            outs.append(o.reshape(x.shape[0], -1))
        return torch.cat(outs, dim=-1)


# ---------------------------------------------------------------------------------- symmetric
def construction_time(irreps_out: str) -> float:
    clear_caches()
    _couplings.cache_clear()
    _symmetric_basis64.cache_clear()
    t0 = time.perf_counter()
    d = tp.symmetric_contraction(IRREPS_IN, irreps_out, CORRELATION)
    tp.make_symmetric_executor(d, "recursive")
    return time.perf_counter() - t0


def accuracy(irreps_out: str) -> float:
    d = tp.symmetric_contraction(IRREPS_IN, irreps_out, CORRELATION)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, IRREPS_IN.dim, generator=g, dtype=torch.float64)
    el = torch.randint(0, ELEMENTS, (200,), generator=g)
    w = torch.randn(ELEMENTS, d.weight_numel, 8, generator=g, dtype=torch.float64)
    ref = tp.make_symmetric_executor(d, "naive")(x, el, w)
    out = tp.make_symmetric_executor(d, "recursive")(x, el, w)
    return float((out - ref).abs().max() / ref.abs().max())


def time_symmetric(irreps_out: str, channels: int, nodes: int, repeats: int, with_naive: bool) -> dict:
    d = tp.symmetric_contraction(IRREPS_IN, irreps_out, CORRELATION)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(nodes, channels, IRREPS_IN.dim, generator=g).requires_grad_(True)
    el = torch.randint(0, ELEMENTS, (nodes,), generator=g)
    onehot = torch.nn.functional.one_hot(el, ELEMENTS).float()
    w = (torch.randn(ELEMENTS, d.weight_numel, channels, generator=g) / 10).requires_grad_(True)
    cands = {"recursive": lambda: tp.make_symmetric_executor(d, "recursive")}
    if with_naive:
        cands["naive"] = lambda: tp.make_symmetric_executor(d, "naive")
    mace = MaceOrder(Irreps(irreps_out), channels, torch.float32)
    mods = {name: make() for name, make in cands.items()}

    def fwd(name):
        if name == "mace_order":
            return lambda: mace(x.detach(), onehot)
        return lambda: mods[name](x.detach(), el, w.detach())

    def fwd_bwd(name):
        if name == "mace_order":
            def run():
                out = mace(x, onehot)
                torch.autograd.grad(out.sum(), [x, *mace.parameters()])
        else:
            def run():
                out = mods[name](x, el, w)
                torch.autograd.grad(out.sum(), [x, w])
        return run

    names = [*mods, "mace_order"]
    res = {}
    for phase, make in (("forward", fwd), ("forward_backward", fwd_bwd)):
        r = interleaved({n: make(n) for n in names}, repeats=repeats, warmup=2)
        res[phase] = {n: v["median_s"] for n, v in r.items()}
    return {"weights_ours": d.weight_numel,
            "weights_mace": sum(tp.count_coupling_paths(IRREPS_IN, ir, nu)
                                for _, ir in Irreps(irreps_out) for nu in range(1, CORRELATION + 1)),
            "times": res}


# ---------------------------------------------------------------------------------- radial
class RadialMLP(torch.nn.Module):
    """MACE's default radial network: Bessel(8) * cutoff -> [64, 64, 64] SiLU -> outputs."""

    def __init__(self, cutoff: float, num_outputs: int) -> None:
        super().__init__()
        self.basis, self.env = BesselBasis(cutoff, 8), PolynomialCutoff(cutoff)
        layers, width = [], 8
        for h in (64, 64, 64):
            layers += [torch.nn.Linear(width, h, bias=False), torch.nn.SiLU()]
            width = h
        layers.append(torch.nn.Linear(width, num_outputs, bias=False))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, r):
        return self.mlp(self.basis(r) * self.env(r)[..., None])


def time_radial(edges: int, num_outputs: int, repeats: int) -> dict:
    cutoff = 5.0
    r = (torch.rand(edges, generator=torch.Generator().manual_seed(0)) * cutoff).requires_grad_(True)
    mods = {"mlp_64x3": RadialMLP(cutoff, num_outputs), "spline_16": SplineRadial(cutoff, num_outputs, 16),
            "spline_64": SplineRadial(cutoff, num_outputs, 64)}

    def fwd(m):
        return lambda: m(r.detach())

    def fwd_bwd(m):
        def run():
            out = m(r)
            torch.autograd.grad(out.sum(), [r, *m.parameters()])
        return run

    res = {}
    for phase, make in (("forward", fwd), ("forward_backward", fwd_bwd)):
        out = interleaved({n: make(m) for n, m in mods.items()}, repeats=repeats, warmup=3)
        res[phase] = {n: v["median_s"] for n, v in out.items()}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in mods.items()}
    return {"edges": edges, "num_outputs": num_outputs, "params": params, "times": res}


# ---------------------------------------------------------------------------------- report
def table(payload) -> str:
    env = payload["env"]
    lines = [
        "# Symmetric contraction and spline radial benchmark", "",
        f"`python benchmarks/tp_symmetric.py --threads {env['threads']}` — torch {env['torch']}, "
        f"{env['threads']} thread(s), {env['cpu']}, load average at start {tuple(round(v, 2) for v in env['loadavg'])}"
        f", at end {tuple(round(v, 2) for v in payload['env_end']['loadavg'])}; float32, median of "
        f"{payload['repeats']} interleaved calls. Provisional where the load average exceeds the threads.", "",
        "## Symmetric contraction (irreps_in 0e+1o+2e+3o, correlation 3, 3 elements)", "",
        "| irreps_out | channels | nodes | weights ours / MACE | phase | recursive ms | naive ms | mace_order ms "
        "| mace_order / recursive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in payload["symmetric"]:
        for phase, t in run["times"].items():
            naive = f"{1e3 * t['naive']:.1f}" if "naive" in t else "-"
            lines.append(
                f"| {run['irreps_out']} | {run['channels']} | {run['nodes']} | {run['weights_ours']} / "
                f"{run['weights_mace']} | {phase} | {1e3 * t['recursive']:.1f} | {naive} | "
                f"{1e3 * t['mace_order']:.1f} | {t['mace_order'] / t['recursive']:.2f}x |")
    lines += ["", "| irreps_out | basis construction, cold caches (s) | max rel. error recursive vs naive, float64 |",
              "|---|---|---|"]
    for c in payload["construction"]:
        lines.append(f"| {c['irreps_out']} | {c['seconds']:.3f} | {c['err']:.1e} |")
    lines += ["", "## Radial functions", "",
              "| edges | outputs | phase | mlp_64x3 ms | spline_16 ms | spline_64 ms | mlp / spline_16 |",
              "|---|---|---|---|---|---|---|"]
    for run in payload["radial"]:
        for phase, t in run["times"].items():
            lines.append(f"| {run['edges']} | {run['num_outputs']} | {phase} | {1e3 * t['mlp_64x3']:.2f} | "
                         f"{1e3 * t['spline_16']:.2f} | {1e3 * t['spline_64']:.2f} | "
                         f"{t['mlp_64x3'] / t['spline_16']:.2f}x |")
    p = payload["radial"][0]["params"] if payload["radial"] else {"mlp_64x3": 0, "spline_16": 0, "spline_64": 0}
    lines += ["", f"Parameters: mlp_64x3 {p['mlp_64x3']}, spline_16 {p['spline_16']}, spline_64 {p['spline_64']}.",
              ""]
    return "\n".join(lines)


def plot(payload, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    runs = payload["symmetric"]
    labels = [f"{r['irreps_out']}\nC={r['channels']} N={r['nodes']}" for r in runs]
    xs = np.arange(len(runs))
    for j, (name, phase) in enumerate([(n, p) for p in ("forward", "forward_backward")
                                       for n in ("recursive", "mace_order")]):
        vals = [1e3 * r["times"][phase][name] for r in runs]
        axes[0].bar(xs + (j - 1.5) * 0.2, vals, 0.2, label=f"{name} {phase}")
    axes[0].set_xticks(xs, labels, fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("median ms")
    axes[0].set_title("symmetric contraction (float32, 1 thread)")
    axes[0].legend(fontsize=6)
    rad = payload["radial"]
    labels = [f"E={r['edges']}" for r in rad]
    xs = np.arange(len(rad))
    names = ("mlp_64x3", "spline_16", "spline_64")
    for j, name in enumerate(names):
        axes[1].bar(xs + (j - 1) * 0.25, [1e3 * r["times"]["forward_backward"][name] for r in rad], 0.25, label=name)
    axes[1].set_xticks(xs, labels)
    axes[1].set_ylabel("median ms, forward+backward")
    axes[1].set_title("radial functions")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--quick", action="store_true", help="small sizes, repeats 3 (smoke test, not for results)")
    ap.add_argument("--max-cases", type=int, default=3, help="run only the first symmetric cases")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.repeats < 20 and not args.quick:
        ap.error("--repeats must be >= 20 (DESIGN §7); use --quick for a smoke run")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # (irreps_out, channels, nodes, with naive)
    cases = [("0e + 1o", 32, 1000, True), ("0e", 128, 1000, False), ("0e", 32, 10000, False)]  # run in this order
    radial = [(20000, 256), (100000, 256)]
    if args.quick:
        cases, radial, args.repeats = [("0e + 1o", 8, 200, True)], [(2000, 64)], 3
    payload = {"env": environment(), "repeats": args.repeats, "symmetric": [], "radial": [], "construction": []}
    for irreps_out in ("0e", "0e + 1o"):
        payload["construction"].append({"irreps_out": irreps_out, "seconds": construction_time(irreps_out),
                                        "err": accuracy(irreps_out)})
    name = "tp_symmetric_quick" if args.quick else "tp_symmetric"

    def save():  # after every case, so that a run cut short by its time budget still leaves results
        payload["env_end"] = environment()
        write_results(name, payload, table(payload), args.out)
        if payload["symmetric"]:
            plot(payload, args.out / f"{name}.png")

    for edges, outputs in radial:
        run = time_radial(edges, outputs, args.repeats)
        payload["radial"].append(run)
        print("radial", edges, {p: {k: f"{1e3 * v:.2f}ms" for k, v in t.items()} for p, t in run["times"].items()},
              flush=True)
        save()
    for irreps_out, channels, nodes, with_naive in cases[: args.max_cases]:
        run = time_symmetric(irreps_out, channels, nodes, args.repeats, with_naive)
        payload["symmetric"].append({"irreps_out": irreps_out, "channels": channels, "nodes": nodes, **run})
        print(irreps_out, channels, nodes, {p: {k: f"{1e3 * v:.1f}ms" for k, v in t.items()}
                                            for p, t in run["times"].items()}, flush=True)
        save()
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
