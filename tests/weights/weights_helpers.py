"""Small instances of every architecture with a permutation spec, in a given dtype, with
non-trivial BatchNorm statistics (one training-mode pass) and put in eval mode."""

import torch
from torch import nn

from equikit.weights import (
    CNN,
    MLP,
    ResNet,
    Transformer,
    cnn_spec,
    mlp_spec,
    resnet_spec,
    transformer_spec,
)

ARCHS = ["mlp", "mlp_tanh", "cnn", "resnet", "transformer", "transformer_relu"]


def build(arch: str, dtype: torch.dtype, seed: int = 0):
    """Return ``(model, spec_builder, input)``."""
    torch.manual_seed(seed)
    if arch == "mlp":
        net, spec, x = MLP(6, (12, 10), 4), mlp_spec, torch.randn(7, 6)
    elif arch == "mlp_tanh":
        net, spec, x = MLP(6, (12, 10), 4, activation=nn.Tanh), mlp_spec, torch.randn(7, 6)
    elif arch == "cnn":
        net, spec, x = CNN(2, (6, 8, 5), 4), cnn_spec, torch.randn(7, 2, 6, 6)
    elif arch == "resnet":
        net, spec, x = ResNet(2, 6, 2, 4, hidden=5), resnet_spec, torch.randn(7, 2, 6, 6)
    elif arch == "transformer":
        net, spec, x = Transformer(5, 8, 3, 4, 12, 2, 4), transformer_spec, torch.randn(3, 6, 5)
    elif arch == "transformer_relu":
        net = Transformer(5, 8, 3, 4, 12, 2, 4, activation=nn.ReLU)
        spec, x = transformer_spec, torch.randn(3, 6, 5)
    else:
        raise KeyError(arch)
    net, x = net.to(dtype), x.to(dtype)
    net.train()
    with torch.no_grad():
        net(x * 2 + 0.5)  # BatchNorm running statistics away from (0, 1)
    net.eval()
    return net, spec, x


def input_dim(x: torch.Tensor) -> int:
    """The feature/channel dim of an input: channels for images, last dim otherwise."""
    return -3 if x.ndim == 4 else -1


RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}  # DESIGN §4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
