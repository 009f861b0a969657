"""Soft equivariance under mixed symmetries (Kim et al. 2023 protocol, our synthetic task).

Target on 4 points in the plane, X (4, 2):

    f(X) = sum_i tanh(|x_i|^2 / 2) + 0.5 sum_{i<j} exp(-|x_i - x_j|^2 / 2) + alpha sum_i (x_i0^2 - x_i1^2)

(standardised by the train set's mean and standard deviation, so MSEs are relative)

- permutations of the points: an **exact** symmetry;
- rotations/reflections O(2): **approximate** (broken by the alpha term, alpha = 0.015);
- scalings: **absent**.

Models: an unconstrained MLP; the MLP with one projection regulariser per symmetry and
automatically tuned strengths (ProjectionRegularizer); hard models made exactly invariant by
frames (S4 only; S4 x O(2)). We report test MSE, the tuned strengths and discovered levels, and
each model's measured invariance error per symmetry (checker, float64).

Run: python benchmarks/symmetrize_soft.py   (about 1-2 min on 1-2 threads)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results
from equikit.check import equivariance_error
from equikit.groups import NodePermutation, O, PointCloud, Scaling
from equikit.symmetrize import PCAFrame, ProjectionRegularizer, SortFrame, Symmetrize

N, ALPHA = 4, 0.015
SYMS = {
    "permutation (exact)": (NodePermutation(N), None),
    "rotation O(2) (approximate)": (PointCloud(O(2)), None),
    "scaling (absent)": (PointCloud(Scaling()), None),
}


def target(x: torch.Tensor) -> torch.Tensor:
    r2 = x.pow(2).sum(-1)
    d2 = torch.cdist(x, x).pow(2)
    iu = torch.triu_indices(N, N, 1)
    pair = torch.exp(-d2[:, iu[0], iu[1]] / 2).sum(-1)
    aniso = (x[..., 0].pow(2) - x[..., 1].pow(2)).sum(-1)
    return (torch.tanh(0.5 * r2).sum(-1) + 0.5 * pair + ALPHA * aniso)[:, None]


def invariance_gap(f, x: torch.Tensor, action, seed: int = 5) -> float:
    """``sqrt(E (f(g x) - f(x))^2 / Var f(x))`` with one random element per input: the share
    of the output's spread that the transformation changes (0: exact invariance)."""
    g = action.group.sample(x.shape[0], generator=seed, dtype=x.dtype)
    with torch.no_grad():
        y, gy = f(x), f(action(g, x))
    return float(((gy - y).pow(2).mean() / y.var()).sqrt())


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * N, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(),
                         nn.Linear(128, 1)).double()


def build(name: str, weight: float, floor: float) -> tuple[nn.Module, ProjectionRegularizer | None]:
    torch.manual_seed(0)
    if name == "unconstrained MLP":
        return mlp(), None
    if name == "soft: projection regularisers (auto strengths)":
        return mlp(), ProjectionRegularizer(SYMS, n_samples=2, weight=weight, floor=floor, generator=1)
    if name == "hard: S4 (sort frame)":
        return Symmetrize(mlp(), SortFrame(N), NodePermutation(N)), None
    if name == "hard: S4 x O(2) (sort frame inside PCA frame)":
        inner = Symmetrize(mlp(), SortFrame(N), NodePermutation(N))
        return Symmetrize(inner, PCAFrame(O(2)), PointCloud(O(2))), None
    raise ValueError(name)


def train(model, reg, x, y, steps, log_every=100):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(2)
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=gen)
        xb, yb = x[idx], y[idx]
        pred = model(xb)
        loss = (pred - yb).pow(2).mean()
        if reg is not None:
            loss = loss + reg(model, xb, pred)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0:
            print(f"    step {step:5d} loss {loss.item():.5f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weight", type=float, default=0.01)
    ap.add_argument("--floor", type=float, default=0.05)
    ap.add_argument("--only", default=None, help="run only the models whose name contains this")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON results")
    args = ap.parse_args()
    if args.replot:
        import json

        plot(json.loads((RESULTS / "symmetrize_soft.json").read_text())["rows"])
        return 0
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x_tr = torch.randn(1000, N, 2, generator=g, dtype=torch.float64)
    x_te = torch.randn(2000, N, 2, generator=g, dtype=torch.float64)
    y_tr, y_te = target(x_tr), target(x_te)
    mu, sd = y_tr.mean(), y_tr.std()
    y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    data_err = {k: invariance_gap(target, x_te, a) for k, (a, _) in SYMS.items()}
    print("target's own invariance gap:", data_err)
    rows = []
    names = ["unconstrained MLP", "soft: projection regularisers (auto strengths)", "hard: S4 (sort frame)",
             "hard: S4 x O(2) (sort frame inside PCA frame)"]
    for name in [n for n in names if args.only is None or args.only in n]:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        model, reg = build(name, args.weight, args.floor)
        train(model, reg, x_tr, y_tr, args.steps)
        model.eval()
        with torch.no_grad():
            mse = float((model(x_te) - y_te).pow(2).mean())
        errs = {k: invariance_gap(model, x_te, a) for k, (a, _) in SYMS.items()}
        checks = {k: equivariance_error(model, x_te[:64], a, n_samples=8).passed() for k, (a, _) in SYMS.items()}
        row = {"model": name, "test_mse": mse, "invariance_error": errs, "checker_passed": checks,
               "seconds": time.perf_counter() - t0}
        if reg is not None:
            row["strengths"], row["levels"] = reg.strengths(), reg.levels()
        print("   ", row, flush=True)
        rows.append(row)
    payload = {"experiment": "symmetrize_soft", "alpha": ALPHA, "steps": args.steps, "weight": args.weight,
               "floor": args.floor,
               "target_invariance_error": data_err,
               "rows": rows, "env": environment()}
    md = ["# Soft equivariance under mixed symmetries", "",
          f"Synthetic target on 4 planar points, alpha={ALPHA}, {args.steps} Adam steps, 1000 train / 2000 test, "
          f"regulariser weight {args.weight}, floor {args.floor}; "
          f"threads {torch.get_num_threads()}, load {payload['env']['loadavg']}.", "",
          "Invariance gap: sqrt(E(f(gx) - f(x))^2 / Var f), one random element per test input; "
          "'exact' marks a pass of the equivariance checker (float64, rtol 1e-10).", "",
          "| model | test MSE | " + " | ".join(f"gap: {k}" for k in SYMS) + " |",
          "|---|---|" + "---|" * len(SYMS)]
    md.append("| target function itself | 0 | " + " | ".join(f"{data_err[k]:.3g}" for k in SYMS) + " |")
    for r in rows:
        cells = [f"{r['invariance_error'][k]:.3g}" + (" (exact)" if r["checker_passed"][k] else "") for k in SYMS]
        md.append(f"| {r['model']} | {r['test_mse']:.5f} | " + " | ".join(cells) + " |")
    soft = next(r for r in rows if "strengths" in r)
    md += ["", "Tuned strengths lambda and discovered levels r (mean squared distance of the model to its "
           "projection, in units of the target variance):", "",
           "| symmetry | lambda | r |", "|---|---|---|"]
    md += [f"| {k} | {soft['strengths'][k]:.3g} | {soft['levels'][k]:.3g} |" for k in SYMS]
    write_results("symmetrize_soft", payload, "\n".join(md) + "\n")
    plot(rows)
    print("\n".join(md))
    return 0


def plot(rows):
    plt = pyplot()

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].barh([r["model"] for r in rows], [r["test_mse"] for r in rows])
    ax[0].set_xscale("log")
    ax[0].set_xlabel("test MSE")
    soft = next(r for r in rows if "strengths" in r)
    names = list(soft["levels"])
    ax[1].bar(range(len(names)), [max(soft["levels"][k], 1e-12) for k in names])
    ax[1].set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names])
    ax[1].set_ylim(0, None)
    ax[1].set_ylabel("discovered level r")
    fig.tight_layout()
    fig.savefig(RESULTS / "symmetrize_soft.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
