"""Fairness by distance-covariance regularisation with multitype protected attributes
("Machine Learning with Multitype Protected Attributes: Intersectional Fairness through
Regularisation", Lee et al. 2025), on synthetic data.

Protected attributes: age (continuous), gender (binary), group (3 categories). The five
features are proxies of them (and of legitimate signal); the target depends on the protected
attributes, including an intersectional term (gender 1 and group 2). An MLP regressor sees
only the features. ``loss = MSE + weight * D(pred, attributes)`` with D one of

- dCov: sum of marginal ``dCov^2(pred, s_i)``;
- JdCov: joint distance covariance of ``(pred, age, gender, group)``;
- CCdCov: ``dCov^2(pred, [age, gender, group])`` (concatenated).

Swept weights trace the demographic-parity gap vs accuracy curve. DP gaps are in units of the
target's standard deviation: the intersectional gap is the range of mean predictions over the
6 gender x group subgroups, the marginal gap the largest range over gender or group alone, and
the age dependence is ``|corr(pred, age)|``.

Run: python benchmarks/symmetrize_fairness.py   (about 2-4 min on 1-2 threads)
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
from equikit.symmetrize import DependenceRegularizer, one_hot

WEIGHTS = [0.0, 0.3, 1.0, 3.0, 10.0, 30.0]
KINDS = ["dcov", "jdcov", "ccdcov"]


def make_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    age = 20 + 50 * torch.rand(n, generator=g)
    gender = torch.randint(0, 2, (n,), generator=g)
    group = torch.randint(0, 3, (n,), generator=g)
    inter = ((gender == 1) & (group == 2)).float()
    z = torch.randn(n, 3, generator=g)  # legitimate signal
    a = (age - 45) / 15
    feats = torch.stack([
        a + 0.5 * torch.randn(n, generator=g),
        gender.float() + 0.5 * torch.randn(n, generator=g),
        inter + 0.3 * group.float() + 0.4 * torch.randn(n, generator=g),
        z[:, 0], z[:, 1] + 0.3 * z[:, 2],
    ], dim=1)
    y = z[:, 0] + 0.5 * z[:, 1] + 0.5 * a + 0.4 * gender.float() + 1.0 * inter + 0.2 * torch.randn(n, generator=g)
    y = (y - y.mean()) / y.std()
    return feats, y[:, None], age, gender, group


def attributes(age, gender, group):
    return [((age - 45) / 15)[:, None], one_hot(gender, 2), one_hot(group, 3)]


def train(kind: str, weight: float, data, steps: int):
    feats, y, age, gender, group = data
    attrs = attributes(age, gender, group)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
    reg = DependenceRegularizer(kind, weight)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (256,), generator=gen)
        pred = model(feats[idx])
        loss = (pred - y[idx]).pow(2).mean() + reg(pred, [a[idx] for a in attrs])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def metrics(model, data):
    feats, y, age, gender, group = data
    pred = model(feats)[:, 0]
    sub = gender * 3 + group
    means = torch.stack([pred[sub == k].mean() for k in range(6)])
    gaps = [torch.stack([pred[gender == k].mean() for k in range(2)]),
            torch.stack([pred[group == k].mean() for k in range(3)])]
    corr = torch.corrcoef(torch.stack([pred, age]))[0, 1]
    return {"mse": float((pred - y[:, 0]).pow(2).mean()),
            "dp_gap_intersectional": float(means.max() - means.min()),
            "dp_gap_marginal": float(max(g.max() - g.min() for g in gaps)),
            "age_corr": float(corr.abs())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_data, test_data = make_data(3000, 0), make_data(2000, 1)
    rows = []
    t_all = time.perf_counter()
    for kind in KINDS:
        for w in WEIGHTS:
            if w == 0 and kind != KINDS[0]:
                continue
            t0 = time.perf_counter()
            model = train(kind, w, train_data, args.steps)
            row = {"kind": "none" if w == 0 else kind, "weight": w, **metrics(model, test_data),
                   "seconds": time.perf_counter() - t0}
            print(row, flush=True)
            rows.append(row)
    env = environment()
    payload = {"experiment": "symmetrize_fairness", "steps": args.steps, "rows": rows, "env": env,
               "seconds": time.perf_counter() - t_all}
    md = ["# Fairness: distance-covariance regularisers", "",
          f"Synthetic regression, 3000 train / 2000 test, {args.steps} Adam steps of batch 256; threads "
          f"{env['threads']}, load {env['loadavg']}. Gaps in target standard deviations.", "",
          "| regulariser | weight | test MSE | intersectional DP gap | marginal DP gap | abs corr(pred, age) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['kind']} | {r['weight']:g} | {r['mse']:.3f} | {r['dp_gap_intersectional']:.3f} | "
           f"{r['dp_gap_marginal']:.3f} | {r['age_corr']:.3f} |" for r in rows]
    write_results("symmetrize_fairness", payload, "\n".join(md) + "\n")
    plot(rows)
    print("\n".join(md))
    return 0


def plot(rows):
    plt = pyplot()

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    base = next(r for r in rows if r["kind"] == "none")
    for kind in KINDS:
        pts = [base] + [r for r in rows if r["kind"] == kind]
        for a, key in zip(ax, ["dp_gap_intersectional", "age_corr"]):
            a.plot([p[key] for p in pts], [p["mse"] for p in pts], "o-", label=kind)
    ax[0].set_xlabel("intersectional DP gap (target std)")
    ax[1].set_xlabel("|corr(pred, age)|")
    for a in ax:
        a.set_ylabel("test MSE")
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "symmetrize_fairness.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
