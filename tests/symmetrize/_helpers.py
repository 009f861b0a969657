"""Small backbones and a sign-dropping frame shared by the symmetrize tests."""

import torch
from torch import nn

from equikit.symmetrize import Frame, FrameOutput, PCAFrame


def mlp(n_in: int, n_out: int, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """A generic (non-equivariant) MLP on flattened inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 32), nn.Tanh(), nn.Linear(32, n_out)).to(dtype)


class Reshape(nn.Module):
    def __init__(self, net: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.net, self.shape = net, shape

    def forward(self, x):
        return self.net(x).reshape(-1, *self.shape)


class DictMLP(nn.Module):
    """Flattens every leaf of a dict input and concatenates them."""

    def __init__(self, n_in: int, n_out: int, dtype: torch.dtype):
        super().__init__()
        self.net = mlp(n_in, n_out, dtype)

    def forward(self, x):
        return self.net(torch.cat([x[k].flatten(1) for k in sorted(x)], dim=1))


class HalfSigns(Frame):
    """Negative control: a PCA frame that keeps only the first half of its sign choices."""

    def __init__(self, group):
        super().__init__()
        self.inner, self.group = PCAFrame(group), group

    def forward(self, x):
        fr = self.inner(x)
        k = fr.weights.shape[0] // 2
        return FrameOutput(fr.elements[:k], fr.weights[:k] * 2, fr.degenerate)
