"""TinvNN: transformation-invariant initial coordinates by modified MDS
("Revisiting Transformation Invariant Geometric Deep Learning: Are Initial Representations
All You Need?").

Generated 3D shapes (6 classes: ellipsoid, box, cylinder, cone, torus, helix; random
anisotropic sizes, 64 surface points, noise 0.02) are classified by a small PointNet
(per-point MLP, max pooling). Models are trained on shapes in their generated pose and tested
on the same test shapes (a) as generated and (b) under a random rotation/reflection,
translation and scaling (E(3) x scale, scale log-uniform in [1/2, 2]).

- **raw**: PointNet on raw coordinates;
- **raw + augmentation**: the same, trained with random E(3) x scale transforms;
- **TinvNN (MDS coordinates)**: PointNet on ``MDSCanonicalizer(E(3)).coordinates(x, scale=True)``;
- **PCA frame averaging**: ``Symmetrize(PointNet, PCAFrame(E(3)))`` with RMS-radius normalisation,
  trained with one sampled frame element per shape (``mode="sample"``) and evaluated over the
  whole frame (``mode="average"``).

Invariance error: the equikit checker's max relative logit error under E(3) and under scaling.

Run: python benchmarks/symmetrize_tinvnn.py   (a few minutes on 1-2 threads)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results
from equikit.check import equivariance_error
from equikit.groups import E, PointCloud, Scaling
from equikit.symmetrize import MDSCanonicalizer, PCAFrame, Symmetrize

N_POINTS = 64
CLASSES = ["ellipsoid", "box", "cylinder", "cone", "torus", "helix"]


def _shape(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    u, v = torch.rand(n, generator=g) * 2 * math.pi, torch.rand(n, generator=g)
    size = 0.5 + 1.5 * torch.rand(3, generator=g)
    if kind == "ellipsoid":
        p = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    elif kind == "box":
        p = torch.rand(n, 3, generator=g) * 2 - 1
        face = torch.randint(0, 3, (n,), generator=g)
        p[torch.arange(n), face] = torch.sign(torch.randn(n, generator=g))
    elif kind == "cylinder":
        p = torch.stack([u.cos(), u.sin(), 2 * v - 1], -1)
    elif kind == "cone":
        p = torch.stack([(1 - v) * u.cos(), (1 - v) * u.sin(), 2 * v - 1], -1)
    elif kind == "torus":
        w = torch.rand(n, generator=g) * 2 * math.pi
        p = torch.stack([(1 + 0.4 * w.cos()) * u.cos(), (1 + 0.4 * w.cos()) * u.sin(), 0.4 * w.sin()], -1)
    else:  # helix
        t = torch.rand(n, generator=g) * 4 * math.pi
        p = torch.stack([t.cos(), t.sin(), t / (2 * math.pi) - 1], -1)
    p = p * size + 0.02 * torch.randn(n, 3, generator=g)
    return p - p.mean(0)


def make_shapes(per_class: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, kind in enumerate(CLASSES):
        for _ in range(per_class):
            xs.append(_shape(kind, N_POINTS, g))
            ys.append(c)
    return torch.stack(xs).double(), torch.tensor(ys)


def random_similarity(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Random E(3) motion (with reflections) and scaling per shape."""
    g = E(3).sample(len(x), generator=seed, dtype=x.dtype)
    s = Scaling().sample(len(x), generator=seed + 1, dtype=x.dtype)
    return PointCloud(E(3))(g, PointCloud(Scaling())(s, x))


class PointNet(nn.Module):
    def __init__(self, normalise: bool = False):
        super().__init__()
        self.normalise = normalise
        self.point = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 128), nn.SiLU())
        self.head = nn.Sequential(nn.Linear(128, 64), nn.SiLU(), nn.Linear(64, len(CLASSES)))

    def forward(self, x):
        if self.normalise:  # RMS radius about the centroid: scale invariance
            c = x - x.mean(-2, keepdim=True)
            x = x / c.pow(2).sum(-1).mean(-1).sqrt()[:, None, None]
        return self.head(self.point(x).amax(-2))


class MDSNet(nn.Module):
    """TinvNN: PointNet on modified-MDS coordinates (E(3)- and scale-invariant)."""

    def __init__(self):
        super().__init__()
        self.mds, self.net = MDSCanonicalizer(E(3)), PointNet()

    def forward(self, x):
        return self.net(self.mds.coordinates(x, scale=True))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("raw"):
        return PointNet().double()
    if name.startswith("TinvNN"):
        return MDSNet().double()
    if name.startswith("PCA frame"):
        return Symmetrize(PointNet(normalise=True).double(), PCAFrame(E(3)), PointCloud(E(3)))
    raise ValueError(name)


def train(model, x, y, epochs, augment):
    if isinstance(model, Symmetrize):
        model.mode = "sample"  # one frame element per shape in training (Monte Carlo frame averaging)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        tot = 0.0
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            xb = random_similarity(x[idx], 1000 * ep + i) if augment else x[idx]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        if ep % 10 == 0 or ep == epochs - 1:
            print(f"    epoch {ep:3d} loss {tot / len(y):.4f}", flush=True)


@torch.no_grad()
def evaluate(model, x, y):
    model.eval()
    if isinstance(model, Symmetrize):
        model.mode = "average"  # the whole frame: exact
    acc = float((model(x).argmax(-1) == y).float().mean())
    acc_t = float((model(random_similarity(x, 99)).argmax(-1) == y).float().mean())
    sub = x[::10]
    e3 = equivariance_error(model, sub, PointCloud(E(3)), n_samples=8)
    sc = equivariance_error(model, sub, PointCloud(Scaling()), n_samples=8)
    deg = None
    if isinstance(model, MDSNet):
        deg = int(model.mds.canonical(x).degenerate.sum())
    elif isinstance(model, Symmetrize):
        model(x)
        deg = int(model.last_degenerate.sum())
    return {"accuracy": acc, "accuracy_transformed": acc_t, "e3_rel_error": e3.rel_max, "e3_passed": e3.passed(),
            "scale_rel_error": sc.rel_max, "scale_passed": sc.passed(), "degenerate_test_inputs": deg}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_tr, y_tr = make_shapes(args.per_class, seed=0)
    x_te, y_te = make_shapes(args.per_class // 2, seed=1)
    rows = []
    for name in ["raw", "raw + augmentation", "TinvNN (MDS coordinates)", "PCA frame averaging"]:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        model = build(name)
        train(model, x_tr, y_tr, args.epochs, augment="augmentation" in name)
        row = {"model": name, **evaluate(model, x_te, y_te), "seconds": time.perf_counter() - t0}
        print("   ", row, flush=True)
        rows.append(row)
    env = environment()
    payload = {"experiment": "symmetrize_tinvnn", "epochs": args.epochs, "train": len(y_tr), "test": len(y_te),
               "rows": rows, "env": env}
    md = ["# TinvNN: invariant initial coordinates on generated 3D shapes", "",
          f"{len(CLASSES)} classes, {len(y_tr)} train / {len(y_te)} test shapes of {N_POINTS} points, {args.epochs} "
          f"epochs, float64; threads {env['threads']}, load {env['loadavg']}.",
          "Transformed test: random rotation/reflection + translation + scale in [1/2, 2]. Invariance: equikit "
          "checker, max relative logit error over 8 elements x 60 shapes (pass = within 1e-10).", "",
          "| model | test acc | transformed test acc | E(3) inv. error | scale inv. error | degenerate inputs |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {100 * r['accuracy']:.1f}% | {100 * r['accuracy_transformed']:.1f}% | "
           f"{r['e3_rel_error']:.2g} | {r['scale_rel_error']:.2g} | "
           f"{'-' if r['degenerate_test_inputs'] is None else r['degenerate_test_inputs']} |" for r in rows]
    write_results("symmetrize_tinvnn", payload, "\n".join(md) + "\n")
    plot(rows)
    print("\n".join(md))
    return 0


def plot(rows):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    w = 0.38
    ax.bar([i - w / 2 for i in range(len(rows))], [100 * r["accuracy"] for r in rows], w, label="test")
    ax.bar([i + w / 2 for i in range(len(rows))], [100 * r["accuracy_transformed"] for r in rows], w,
           label="transformed test")
    ax.set_xticks(range(len(rows)), [r["model"].replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_ylabel("accuracy %")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "symmetrize_tinvnn.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
