"""Learned equivariance: latent alignment vs data augmentation (TransIP, "Learning
Inter-Atomic Potentials without Explicit Equivariance"; split invariant/equivariant latents
as in SIE).

Task: a rotation-, reflection- and permutation-invariant "energy" of 8 points in 3D,
``E(X) = sum_{i<j} exp(-|x_i - x_j|^2 / 2) - 0.1 sum_i |x_i - c|^2``, learned by a
non-equivariant transformer (tokens = linear embeddings of the points, no positional
encoding, mean pooling; the 32-wide pooled embedding ``z`` is the latent, the energy head reads
its first 16 "invariant" entries).

- **augmentation**: every batch randomly rotated/reflected (O(3));
- **augmentation + latent alignment**: the same plus
  ``LatentAlignmentLoss(PointCloud(O(3)), LearnedLatentAction(9, 16), invariant_dim=16)``.
- **no augmentation**: reference.

Reported against the training-set size: test MSE on randomly rotated test sets and the
invariance gap ``sqrt(E (f(gx) - f(x))^2 / Var f)`` (one random O(3) element per test input).

Run: python benchmarks/symmetrize_latent.py   (a few minutes on 1-2 threads)
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
from equikit.groups import O, PointCloud
from equikit.symmetrize import LatentAlignmentLoss, LearnedLatentAction

N, DIM, INV = 8, 32, 16
SIZES = [100, 300, 1000]
METHODS = ["no augmentation", "augmentation", "augmentation + latent alignment"]


def energy(x: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(x, x).pow(2)
    iu = torch.triu_indices(N, N, 1)
    pair = torch.exp(-d2[:, iu[0], iu[1]] / 2).sum(-1)
    c = x - x.mean(-2, keepdim=True)
    return (pair - 0.1 * c.pow(2).sum((-1, -2)))[:, None]


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, DIM)
        layer = nn.TransformerEncoderLayer(DIM, 4, 2 * DIM, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.body(self.embed(x)).mean(1)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Sequential(nn.Linear(INV, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, x, return_z=False):
        z = self.encoder(x)
        y = self.head(z[:, :INV])
        return (y, z) if return_z else y


def rotate(x: torch.Tensor, seed: int) -> torch.Tensor:
    return PointCloud(O(3))(O(3).sample(len(x), generator=seed), x)


def train(method: str, x, y, steps: int, mu: float, sd: float):
    torch.manual_seed(0)
    model = Model()
    align = None
    if "alignment" in method:
        align = LatentAlignmentLoss(PointCloud(O(3)), LearnedLatentAction(9, DIM - INV), invariant_dim=INV,
                                    weight=1.0, generator=3)
        params = list(model.parameters()) + list(align.parameters())
    else:
        params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        idx = torch.randint(0, len(y), (min(64, len(y)),), generator=gen)
        xb = rotate(x[idx], 10_000 + step) if "augmentation" in method and method != "no augmentation" else x[idx]
        pred, z = model(xb, return_z=True)
        loss = (pred - (y[idx] - mu) / sd).pow(2).mean()
        if align is not None:
            loss = loss + align(model.encoder, xb, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def evaluate(model, x, y, mu, sd):
    pred = model(rotate(x, 77)) * sd + mu
    mse = float((pred - y).pow(2).mean())
    f0 = model(x)
    f1 = model(rotate(x, 78))
    gap = float(((f1 - f0).pow(2).mean() / f0.var()).sqrt())
    return mse, gap


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(max(SIZES), N, 3, generator=g)
    x_te = torch.randn(1000, N, 3, generator=g)
    y_all, y_te = energy(x_all), energy(x_te)
    rows = []
    for n in SIZES:
        x, y = x_all[:n], y_all[:n]
        mu, sd = float(y.mean()), float(y.std())
        for method in METHODS:
            t0 = time.perf_counter()
            model = train(method, x, y, args.steps, mu, sd)
            mse, gap = evaluate(model, x_te, y_te, mu, sd)
            row = {"train_size": n, "method": method, "test_mse": mse, "relative_mse": mse / float(y_te.var()),
                   "invariance_gap": gap, "seconds": time.perf_counter() - t0}
            print(row, flush=True)
            rows.append(row)
    env = environment()
    payload = {"experiment": "symmetrize_latent", "steps": args.steps, "rows": rows, "env": env}
    md = ["# Learned equivariance: latent alignment vs augmentation", "",
          f"Invariant energy of {N} points, non-equivariant transformer, {args.steps} Adam steps; test on 1000 "
          f"randomly rotated/reflected inputs; threads {env['threads']}, load {env['loadavg']}.", "",
          "| train size | method | test MSE / Var(E) | invariance gap |", "|---|---|---|---|"]
    md += [f"| {r['train_size']} | {r['method']} | {r['relative_mse']:.4f} | {r['invariance_gap']:.4f} |" for r in rows]
    write_results("symmetrize_latent", payload, "\n".join(md) + "\n")
    plot(rows)
    print("\n".join(md))
    return 0


def plot(rows):
    plt = pyplot()

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in METHODS:
        pts = [r for r in rows if r["method"] == method]
        ax[0].plot([p["train_size"] for p in pts], [p["relative_mse"] for p in pts], "o-", label=method)
        ax[1].plot([p["train_size"] for p in pts], [p["invariance_gap"] for p in pts], "o-", label=method)
    for a, lab in zip(ax, ["test MSE / Var(E)", "invariance gap"]):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("training-set size")
        a.set_ylabel(lab)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "symmetrize_latent.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
