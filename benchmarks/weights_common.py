"""Shared plumbing of the weight-space experiments: sklearn's bundled digits (no download),
a seeded training loop, evaluation, and interpolation curves naive vs matched."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, write_results  # noqa: F401
from equikit.weights import interpolation_curve, reset_batchnorm


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def images(self) -> Digits:
        """The same split as ``(N, 1, 8, 8)`` images."""
        return Digits(self.x_train.reshape(-1, 1, 8, 8), self.y_train,
                      self.x_test.reshape(-1, 1, 8, 8), self.y_test)


def load_digits(split_seed: int = 0, test_fraction: float = 0.2) -> Digits:
    """sklearn's digits (1797 8x8 images, pixel values 0..16 scaled to 0..1), split once."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_test = round(test_fraction * len(y))
    te, tr = order[:n_test], order[n_test:]
    return Digits(x[tr], y[tr], x[te], y[te])


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, config: TrainConfig) -> nn.Module:
    """Adam on cross-entropy; ``seed`` fixes the batch order (initialisation is seeded by the
    caller when building ``model``)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    for _ in range(config.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(config.batch_size):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    return {"loss": float(nn.functional.cross_entropy(logits, y)),
            "accuracy": float((logits.argmax(-1) == y).double().mean())}


def curves(model: nn.Module, a, b, data: Digits, bn_batches=None, n_points: int = 25) -> dict:
    """Train and test loss/accuracy along ``(1 - t) a + t b`` (BatchNorm statistics
    recomputed on ``bn_batches`` at every point when given)."""

    def ev(m):
        if bn_batches is not None:
            reset_batchnorm(m, bn_batches)
        tr, te = evaluate(m, data.x_train, data.y_train), evaluate(m, data.x_test, data.y_test)
        return {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                "test_loss": te["loss"], "test_accuracy": te["accuracy"]}

    c = interpolation_curve(model, a, b, ev, n_points)
    out = {"ts": c.ts, **c.metrics}
    for name in ("train_loss", "test_loss"):
        out[f"{name}_barrier"] = c.barrier(name)
    for name in ("train_accuracy", "test_accuracy"):
        out[f"{name}_barrier"] = c.barrier(name, higher_is_better=True)
    return out


class Progress:
    """Timestamped progress lines on stderr."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def mean_std(values) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())
