"""Shift-equivariant ViT on sklearn digits ("Reviving Shift Equivariance in Vision Transformers").

Digits (8x8) are zero-padded to 16x16 and classified by a small ViT (patch 4 -> 4x4 tokens,
width 48, 2 blocks, 3 heads, mean pooling). Variants:

- **plain**: strided patch embedding + learned absolute position embedding;
- **anchored**: polyphase-anchored patch embedding (:class:`AnchoredPatchEmbed`) + circular
  relative position bias in attention, so the whole network is exactly invariant to circular
  shifts of the 16x16 input;
- **plain + PolyphaseFrame canonicalisation**: the plain ViT wrapped in
  ``Symmetrize(..., PolyphaseFrame((16, 16)), mode="canonicalize")``.

No shift augmentation in training. We report accuracy on the test set, accuracy on randomly
circularly shifted test images, and shift consistency (share of (image, shift) pairs whose
predicted class does not change; 16 random shifts per image, measured by the equikit checker).

Run: python benchmarks/symmetrize_vit.py   (a few minutes on 1-2 threads)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results
from equikit.check import equivariance_error
from equikit.groups import ImageShift
from equikit.symmetrize import AnchoredPatchEmbed, PolyphaseFrame, Symmetrize

SIZE, PATCH = 16, 4
GRID = SIZE // PATCH


def load_digits(seed: int = 0):
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0
    x = F.pad(x, (4, 4, 4, 4))[:, None]  # (n, 1, 16, 16)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_tr = int(0.8 * len(y))
    return x[perm[:n_tr]], y[perm[:n_tr]], x[perm[n_tr:]], y[perm[n_tr:]]


class Attention(nn.Module):
    """Multi-head self-attention on a token grid with an optional circular relative bias."""

    def __init__(self, dim: int, heads: int, relative: bool):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative = relative
        if relative:
            self.bias = nn.Parameter(torch.zeros(heads, GRID, GRID))
            t = torch.arange(GRID * GRID)  # token t sits at (t // GRID, t % GRID)
            self.register_buffer("dr", (t[None, :] // GRID - t[:, None] // GRID) % GRID)
            self.register_buffer("dc", (t[None, :] % GRID - t[:, None] % GRID) % GRID)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5
        if self.relative:
            att = att + self.bias[:, self.dr, self.dc]
        return self.out((att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, heads, relative):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.att = Attention(dim, heads, relative)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.att(self.n1(x))
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    def __init__(self, anchored: bool, dim: int = 48, depth: int = 2, heads: int = 3):
        super().__init__()
        self.embed = AnchoredPatchEmbed(1, dim, PATCH, anchoring=anchored)
        self.pos = None if anchored else nn.Parameter(0.02 * torch.randn(GRID * GRID, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, relative=anchored) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 10))

    def forward(self, x):
        t = self.embed(x).flatten(1, 2)  # (B, 16, dim), row-major token grid
        if self.pos is not None:
            t = t + self.pos
        return self.head(self.blocks(t).mean(1))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "plain ViT":
        return ViT(anchored=False)
    if name == "anchored ViT (polyphase anchoring + circular rel. bias)":
        return ViT(anchored=True)
    if name == "plain ViT + PolyphaseFrame canonicalisation":
        act = ImageShift((SIZE, SIZE))
        return Symmetrize(ViT(anchored=False), PolyphaseFrame((SIZE, SIZE)), act, mode="canonicalize")
    raise ValueError(name)


def train(model, x, y, epochs):
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(y) + 63) // 64))
    gen = torch.Generator().manual_seed(1)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        tot = 0.0
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        if ep % 5 == 0 or ep == epochs - 1:
            print(f"    epoch {ep:3d} loss {tot / len(y):.4f}", flush=True)


@torch.no_grad()
def evaluate(model, x, y):
    model.eval()
    acc = float((model(x).argmax(-1) == y).float().mean())
    act = ImageShift((SIZE, SIZE))
    s = act.group.sample(len(y), generator=7)
    acc_shift = float((model(act(s, x)).argmax(-1) == y).float().mean())
    rep = equivariance_error(model, x, act, n_samples=16, generator=3, transform_dtype=torch.float32)
    return {"accuracy": acc, "accuracy_shifted": acc_shift, "shift_consistency": rep.consistency,
            "logit_rel_error_max": rep.rel_max}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_tr, y_tr, x_te, y_te = load_digits()
    rows = []
    for name in ["plain ViT", "anchored ViT (polyphase anchoring + circular rel. bias)",
                 "plain ViT + PolyphaseFrame canonicalisation"]:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        model = build(name)
        train(model, x_tr, y_tr, args.epochs)
        row = {"model": name, **evaluate(model, x_te, y_te), "params": sum(p.numel() for p in model.parameters()),
               "seconds": time.perf_counter() - t0}
        print("   ", row, flush=True)
        rows.append(row)
    env = environment()
    payload = {"experiment": "symmetrize_vit", "epochs": args.epochs, "rows": rows, "env": env,
               "data": f"sklearn digits padded to {SIZE}x{SIZE}, {len(y_tr)} train / {len(y_te)} test"}
    md = ["# Shift-equivariant ViT on digits", "",
          f"{payload['data']}; {args.epochs} epochs, no augmentation; threads {env['threads']}, load {env['loadavg']}.",
          "Consistency: share of (test image, random circular shift) pairs with unchanged predicted class "
          "(16 shifts per image).", "",
          "| model | params | test acc | acc. on shifted test | shift consistency | max rel. logit change |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['params']} | {100 * r['accuracy']:.1f}% | {100 * r['accuracy_shifted']:.1f}% | "
           f"{100 * r['shift_consistency']:.2f}% | {r['logit_rel_error_max']:.2g} |" for r in rows]
    write_results("symmetrize_vit", payload, "\n".join(md) + "\n")
    plot(rows)
    print("\n".join(md))
    return 0


def plot(rows):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["model"].replace(" (", "\n(").replace(" + ", "\n+ ") for r in rows]
    w = 0.27
    for i, (key, label) in enumerate([("accuracy", "test acc"), ("accuracy_shifted", "shifted test acc"),
                                      ("shift_consistency", "shift consistency")]):
        ax.bar([j + (i - 1) * w for j in range(len(rows))], [100 * r[key] for r in rows], w, label=label)
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "symmetrize_vit.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
