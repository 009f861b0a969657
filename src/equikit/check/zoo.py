"""A zoo of small example models with known symmetry, each beside a negative control.

Used by the tests, ``equikit demo`` and the docs: the checker must pass every equivariant
entry and flag every control, with orders of magnitude between the two.

Each :class:`ZooEntry` builds a fresh model (seeded) and an input, and carries the input and
output actions. ``expect_equivariant`` says what the checker must find.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from equikit.groups import (
    Action,
    Compose,
    E,
    ImageRot90,
    ImageShift,
    NodePermutation,
    Permutation,
    PointCloud,
    Trivial,
)

N_POINTS = 12
SET_SIZE = 10
IMAGE = 12


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- sets
class DeepSets(nn.Module):
    """Sum-pooled set network ``rho(sum_i phi(x_i))`` (Zaheer et al. 2017): permutation
    invariant. ``positional=True`` adds a learned embedding per slot: the negative control."""

    def __init__(self, d_in: int = 4, hidden: int = 32, d_out: int = 3, positional: bool = False):
        super().__init__()
        self.phi = _mlp([d_in, hidden, hidden])
        self.rho = _mlp([hidden, hidden, d_out])
        self.pos = nn.Parameter(torch.randn(SET_SIZE, d_in)) if positional else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, d_in) -> (B, d_out)
        if self.pos is not None:
            x = x + self.pos
        return self.rho(self.phi(x).sum(dim=-2))


# ----------------------------------------------------------------------------- point clouds
class DistanceInvariant(nn.Module):
    """E(3) x S_n invariant: an MLP on a Gaussian expansion of all pairwise distances,
    summed over pairs."""

    def __init__(self, n_rbf: int = 16, hidden: int = 32, d_out: int = 2):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, 4.0, n_rbf))
        self.phi = _mlp([n_rbf, hidden, hidden])
        self.rho = _mlp([hidden, hidden, d_out])

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, n, 3) -> (B, d_out)
        diff = pos.unsqueeze(-2) - pos.unsqueeze(-3)
        dist = torch.sqrt((diff**2).sum(-1) + 1e-12)
        rbf = torch.exp(-((dist.unsqueeze(-1) - self.centers) ** 2))
        return self.rho(self.phi(rbf).sum(dim=(-2, -3)))


class FlatMLP(nn.Module):
    """MLP on flattened coordinates: the negative control for point-cloud invariants."""

    def __init__(self, n: int = N_POINTS, hidden: int = 32, d_out: int = 2):
        super().__init__()
        self.net = _mlp([3 * n, hidden, hidden, d_out])

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return self.net(pos.flatten(-2))


class WeightedCentroid(nn.Module):
    """E(3)-equivariant, permutation-invariant point: ``c + sum_i w(|x_i - c|) (x_i - c)``
    with ``c`` the centroid and ``w`` a learned invariant weight. ``translation_term`` adds
    ``0.05 |c|^2 c``, which is rotation-equivariant but depends on where the origin is: the
    negative control."""

    def __init__(self, hidden: int = 16, translation_term: bool = False):
        super().__init__()
        self.w = _mlp([1, hidden, 1])
        self.translation_term = translation_term

    def forward(self, pos: torch.Tensor) -> torch.Tensor:  # (B, n, 3) -> (B, 3)
        c = pos.mean(dim=-2, keepdim=True)
        rel = pos - c
        r = rel.norm(dim=-1, keepdim=True)
        out = c.squeeze(-2) + (self.w(r) * rel).mean(dim=-2)
        if self.translation_term:
            c = c.squeeze(-2)
            out = out + 0.05 * (c**2).sum(-1, keepdim=True) * c
        return out


# ----------------------------------------------------------------------------- images
class ShiftConv(nn.Module):
    """Two 3x3 convolutions with circular padding: equivariant to circular image shifts.
    ``padding_mode="zeros"`` is the negative control."""

    def __init__(self, channels: int = 3, hidden: int = 8, padding_mode: str = "circular"):
        super().__init__()
        kw = {"kernel_size": 3, "padding": 1, "padding_mode": padding_mode}
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, **kw), nn.SiLU(), nn.Conv2d(hidden, 2, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2, H, W)
        return self.net(x)


class Rot90CNN(nn.Module):
    """A small CNN classifier averaged over the four quarter turns of its input: C4-invariant
    logits. ``average=False`` (the plain CNN) is the negative control."""

    def __init__(self, channels: int = 3, hidden: int = 8, classes: int = 5, average: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
        )
        self.head = nn.Linear(hidden * 4, classes)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.average = average

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, H) -> (B, classes)
        if not self.average:
            return self._logits(x)
        return torch.stack([self._logits(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)]).mean(0)


# ----------------------------------------------------------------------------- the zoo
@dataclass(frozen=True)
class ZooEntry:
    """One example: model factory, input factory, actions and the expected verdict."""

    name: str
    description: str
    make_model: Callable[[], Callable]
    input_shape: tuple[int, ...]
    in_action: Action
    out_action: Action | None
    expect_equivariant: bool
    control_of: str | None = None
    #: builds a non-tensor input (e.g. a state_dict) from (dtype, generator); else Gaussian
    make_input: Callable[[torch.dtype, torch.Generator], object] | None = None

    def model(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> Callable:
        """A fresh model (seeded); modules are cast to ``dtype`` and put in eval mode."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.make_model()
        return model.to(dtype).eval() if isinstance(model, nn.Module) else model

    def input(self, dtype: torch.dtype = torch.float64, seed: int = 1):
        gen = torch.Generator().manual_seed(seed)
        if self.make_input is not None:
            return self.make_input(dtype, gen)
        return torch.randn(self.input_shape, generator=gen, dtype=torch.float64).to(dtype)

    @property
    def group_name(self) -> str:
        return repr(self.in_action.group)


def _cloud_action() -> Compose:
    return Compose(NodePermutation(N_POINTS, node_dim=-2), PointCloud(E(3)))


def _point_output() -> Compose:
    return Compose(Trivial(Permutation(N_POINTS)), PointCloud(E(3)))


def zoo() -> list[ZooEntry]:
    """All zoo entries, equivariant models first, each followed by its negative control."""
    sets = NodePermutation(SET_SIZE, node_dim=-2)
    shift = ImageShift((IMAGE, IMAGE))
    return [
        ZooEntry("deepsets", "sum-pooled set network", DeepSets, (16, SET_SIZE, 4), sets, None, True),
        ZooEntry("deepsets+posemb", "set network with a positional embedding",
                 lambda: DeepSets(positional=True), (16, SET_SIZE, 4), sets, None, False, "deepsets"),
        ZooEntry("distance-invariant", "MLP on pairwise distances", DistanceInvariant,
                 (16, N_POINTS, 3), _cloud_action(), None, True),
        ZooEntry("flat-mlp", "MLP on flattened coordinates", FlatMLP, (16, N_POINTS, 3),
                 _cloud_action(), None, False, "distance-invariant"),
        ZooEntry("centroid", "weighted centroid (a point)", WeightedCentroid, (16, N_POINTS, 3),
                 _cloud_action(), _point_output(), True),
        ZooEntry("centroid+translation", "centroid plus a translation-dependent term",
                 lambda: WeightedCentroid(translation_term=True), (16, N_POINTS, 3),
                 _cloud_action(), _point_output(), False, "centroid"),
        ZooEntry("circular-conv", "convolution with circular padding", ShiftConv,
                 (8, 3, IMAGE, IMAGE), shift, shift, True),
        ZooEntry("zero-pad-conv", "convolution with zero padding",
                 lambda: ShiftConv(padding_mode="zeros"), (8, 3, IMAGE, IMAGE), shift, shift,
                 False, "circular-conv"),
        ZooEntry("rot90-cnn", "CNN averaged over quarter turns", Rot90CNN, (8, 3, IMAGE, IMAGE),
                 ImageRot90(), None, True),
        ZooEntry("plain-cnn", "the same CNN without averaging", lambda: Rot90CNN(average=False),
                 (8, 3, IMAGE, IMAGE), ImageRot90(), None, False, "rot90-cnn"),
    ]


def get(name: str) -> ZooEntry:
    entries = {e.name: e for e in zoo()}
    if name not in entries:
        raise ValueError(f"zoo.get: unknown entry {name!r}; choose one of {sorted(entries)}")
    return entries[name]
