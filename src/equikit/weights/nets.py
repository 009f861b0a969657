"""Reference networks and their permutation specifications.

Four families, each with a spec builder that reads sizes off the module:

- :class:`MLP` / :func:`mlp_spec`: one group per hidden layer (``"h0", "h1", ...``),
  scalable when the activation is ReLU.
- :class:`CNN` / :func:`cnn_spec`: conv -> BatchNorm -> ReLU blocks, global average
  pooling, linear head; one group of channels per block. BatchNorm parameters *and running
  statistics* move with the channels; BatchNorm forbids scaling.
- :class:`ResNet` / :func:`resnet_spec`: a residual stream ``"res"`` shared by the stem, every
  block's output and the head (a skip connection adds two tensors, so both must be permuted
  alike), plus one group inside each block (``"b0", ...``).
- :class:`Transformer` / :func:`transformer_spec`: residual stream ``"res"`` (LayerNorm is
  permutation-equivariant), per block attention heads ``"b{i}.heads"``, the query/key dims of
  every head ``"b{i}.qk"`` (permuted alike in ``q`` and ``k``, so ``q . k`` is unchanged),
  the value dims ``"b{i}.vo"`` and the MLP hidden units ``"b{i}.mlp"``.

``io=True`` adds the groups ``"input"`` and ``"output"`` on the first layer's inputs and the
last layer's outputs. Those change the function (inputs and outputs are relabelled): they are
what :func:`equikit.weights.encrypt` uses to hide inputs and outputs, and must not be used for
matching.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from equikit._utils import check_int
from equikit.weights.spec import PermutationSpec, Site, Units, in_axis, out_axis, plain_axis


def _io_units(spec_units: dict, in_features: int, out_features: int, io: bool) -> None:
    if io:
        spec_units["input"] = Units(in_features, scalable=True)
        spec_units["output"] = Units(out_features, scalable=True)


def _io(io: bool, name: str, side) -> object:
    return side(name) if io else None


# --------------------------------------------------------------------------- MLP
class MLP(nn.Module):
    """``Linear -> act -> ... -> Linear`` with hidden widths ``hidden``.

    Shapes: ``(B, in_features) -> (B, out_features)``.

    Example:
        >>> import torch
        >>> MLP(64, (32, 32), 10)(torch.randn(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], out_features: int,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        sizes = (in_features, *hidden, out_features)
        for i, s in enumerate(sizes):
            check_int(s, f"sizes[{i}]", "MLP", minimum=1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.acts = nn.ModuleList(activation() for _ in hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, act in zip(self.layers[:-1], self.acts):
            x = act(layer(x))
        return self.layers[-1](x)


def mlp_spec(model: MLP, io: bool = False) -> PermutationSpec:
    """The :class:`PermutationSpec` of an :class:`MLP`: group ``"h{l}"`` for hidden layer ``l``.

    Example:
        >>> sorted(mlp_spec(MLP(4, (8, 8), 2)).units)
        ['h0', 'h1']
    """
    if not isinstance(model, MLP):
        raise TypeError(f"mlp_spec: `model` must be an equikit.weights.MLP, got {type(model).__name__}")
    n = len(model.layers)
    scalable = all(isinstance(a, (nn.ReLU, nn.Identity)) for a in model.acts)
    units = {f"h{i}": Units(model.layers[i].out_features, scalable) for i in range(n - 1)}
    _io_units(units, model.layers[0].in_features, model.layers[-1].out_features, io)
    axes, sites = {}, {}
    for i in range(n):
        out = out_axis(f"h{i}") if i < n - 1 else _io(io, "output", out_axis)
        inp = in_axis(f"h{i - 1}") if i > 0 else _io(io, "input", in_axis)
        axes[f"layers.{i}.weight"] = (out, inp)
        axes[f"layers.{i}.bias"] = (out,)
        if i < n - 1:
            sites[f"h{i}"] = Site(f"acts.{i}", 1)
    return PermutationSpec(units, axes, sites)


# --------------------------------------------------------------------------- CNN
class CNN(nn.Module):
    """Conv(3x3) -> BatchNorm -> ReLU blocks (a 2x2 average pool after every other block),
    global average pooling, a linear head.

    Shapes: ``(B, in_channels, H, W) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> CNN(1, (8, 16), 10)(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        sizes = (in_channels, *channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in pairwise(sizes))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in channels)
        self.acts = nn.ModuleList(nn.ReLU() for _ in channels)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm, act) in enumerate(zip(self.convs, self.norms, self.acts)):
            x = act(norm(conv(x)))
            if i % 2 == 1:
                x = nn.functional.avg_pool2d(x, 2)
        return self.head(x.mean(dim=(-2, -1)))


def _batchnorm_axes(prefix: str, perm: str) -> dict:
    ax = plain_axis(perm)
    return {f"{prefix}.weight": (ax,), f"{prefix}.bias": (ax,), f"{prefix}.running_mean": (ax,),
            f"{prefix}.running_var": (ax,), f"{prefix}.num_batches_tracked": ()}


def cnn_spec(model: CNN, io: bool = False) -> PermutationSpec:
    """The :class:`PermutationSpec` of a :class:`CNN`: group ``"c{l}"`` for block ``l``'s
    channels (not scalable: BatchNorm normalises them)."""
    if not isinstance(model, CNN):
        raise TypeError(f"cnn_spec: `model` must be an equikit.weights.CNN, got {type(model).__name__}")
    n = len(model.convs)
    units = {f"c{i}": Units(conv.out_channels) for i, conv in enumerate(model.convs)}
    _io_units(units, model.convs[0].in_channels, model.head.out_features, io)
    axes, sites = {}, {}
    for i in range(n):
        inp = plain_axis(f"c{i - 1}") if i > 0 else _io(io, "input", in_axis)
        axes[f"convs.{i}.weight"] = (plain_axis(f"c{i}"), inp, None, None)
        axes[f"convs.{i}.bias"] = (plain_axis(f"c{i}"),)
        axes.update(_batchnorm_axes(f"norms.{i}", f"c{i}"))
        sites[f"c{i}"] = Site(f"acts.{i}", 1)
    out = _io(io, "output", out_axis)
    axes["head.weight"] = (out, plain_axis(f"c{n - 1}"))
    axes["head.bias"] = (out,)
    return PermutationSpec(units, axes, sites)


# --------------------------------------------------------------------------- ResNet
class ResidualBlock(nn.Module):
    """``x -> relu(x + bn2(conv2(relu(bn1(conv1(x))))))``, width ``channels``, hidden ``hidden``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """Stem conv+BN+ReLU, ``n_blocks`` residual blocks, global average pooling, linear head.

    Shapes: ``(B, in_channels, H, W) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> ResNet(1, 8, 2, 10)(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, width: int, n_blocks: int, num_classes: int,
                 hidden: int | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(width)
        self.blocks = nn.ModuleList(ResidualBlock(width, hidden or width) for _ in range(n_blocks))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(-2, -1)))


def resnet_spec(model: ResNet, io: bool = False) -> PermutationSpec:
    """The :class:`PermutationSpec` of a :class:`ResNet`: ``"res"`` for the residual stream,
    ``"b{i}"`` inside block ``i``."""
    if not isinstance(model, ResNet):
        raise TypeError(f"resnet_spec: `model` must be an equikit.weights.ResNet, got {type(model).__name__}")
    res = plain_axis("res")
    units = {"res": Units(model.stem.out_channels)}
    units.update({f"b{i}": Units(b.conv1.out_channels) for i, b in enumerate(model.blocks)})
    _io_units(units, model.stem.in_channels, model.head.out_features, io)
    axes = {"stem.weight": (res, _io(io, "input", in_axis), None, None), "stem.bias": (res,)}
    axes.update(_batchnorm_axes("stem_bn", "res"))
    sites = {}
    for i in range(len(model.blocks)):
        b, h = f"blocks.{i}", plain_axis(f"b{i}")
        axes[f"{b}.conv1.weight"] = (h, res, None, None)
        axes[f"{b}.conv1.bias"] = (h,)
        axes.update(_batchnorm_axes(f"{b}.bn1", f"b{i}"))
        axes[f"{b}.conv2.weight"] = (res, h, None, None)
        axes[f"{b}.conv2.bias"] = (res,)
        axes.update(_batchnorm_axes(f"{b}.bn2", "res"))
        sites[f"b{i}"] = Site(f"{b}.act1", 1)
    out = _io(io, "output", out_axis)
    axes["head.weight"] = (out, res)
    axes["head.bias"] = (out,)
    return PermutationSpec(units, axes, sites)


# --------------------------------------------------------------------------- Transformer
class Attention(nn.Module):
    """Multi-head self-attention with separate ``q, k, v, o`` projections.

    ``softmax(q_h k_h^T / sqrt(d)) v_h`` per head ``h``, heads concatenated, then ``o``.
    Shapes: ``(B, L, d_model) -> (B, L, d_model)``.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.q = nn.Linear(d_model, n_heads * d_head)
        self.k = nn.Linear(d_model, n_heads * d_head)
        self.v = nn.Linear(d_model, n_heads * d_head)
        self.o = nn.Linear(n_heads * d_head, d_model)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape[:-1], self.n_heads, self.d_head).transpose(-2, -3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_head), dim=-1)
        out = (w @ v).transpose(-2, -3)
        return self.o(out.reshape(*out.shape[:-2], -1))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_ff: int,
                 activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, d_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.act = activation()
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    """Token embedding (linear), ``n_blocks`` :class:`TransformerBlock`, final LayerNorm and
    linear head, applied per token. Shapes: ``(B, L, in_features) -> (B, L, out_features)``.

    Example:
        >>> import torch
        >>> Transformer(6, 16, 2, 8, 32, 2, 3)(torch.randn(2, 5, 6)).shape
        torch.Size([2, 5, 3])
    """

    def __init__(self, in_features: int, d_model: int, n_heads: int, d_head: int, d_ff: int,
                 n_blocks: int, out_features: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_head, d_ff, activation) for _ in range(n_blocks)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def transformer_spec(model: Transformer, io: bool = False) -> PermutationSpec:
    """The :class:`PermutationSpec` of a :class:`Transformer` (see the module docstring)."""
    if not isinstance(model, Transformer):
        raise TypeError(
            f"transformer_spec: `model` must be an equikit.weights.Transformer, got {type(model).__name__}"
        )
    res = plain_axis("res")
    units = {"res": Units(model.embed.out_features)}
    _io_units(units, model.embed.in_features, model.head.out_features, io)
    axes = {"embed.weight": (res, _io(io, "input", in_axis)), "embed.bias": (res,)}
    sites = {}
    for i, block in enumerate(model.blocks):
        b, a = f"blocks.{i}", block.attn
        relu = isinstance(block.act, nn.ReLU)
        units.update({f"b{i}.heads": Units(a.n_heads), f"b{i}.qk": Units(a.d_head),
                      f"b{i}.vo": Units(a.d_head), f"b{i}.mlp": Units(block.fc1.out_features, relu)})
        qk, vo = plain_axis(f"b{i}.heads", f"b{i}.qk"), plain_axis(f"b{i}.heads", f"b{i}.vo")
        for ln in ("ln1", "ln2"):
            axes[f"{b}.{ln}.weight"], axes[f"{b}.{ln}.bias"] = (res,), (res,)
        for name, ax in (("q", qk), ("k", qk), ("v", vo)):
            axes[f"{b}.attn.{name}.weight"], axes[f"{b}.attn.{name}.bias"] = (ax, res), (ax,)
        axes[f"{b}.attn.o.weight"], axes[f"{b}.attn.o.bias"] = (res, vo), (res,)
        axes[f"{b}.fc1.weight"] = (out_axis(f"b{i}.mlp"), res)
        axes[f"{b}.fc1.bias"] = (out_axis(f"b{i}.mlp"),)
        axes[f"{b}.fc2.weight"], axes[f"{b}.fc2.bias"] = (res, in_axis(f"b{i}.mlp")), (res,)
        sites[f"b{i}.mlp"] = Site(f"{b}.act", -1)
    axes["norm.weight"], axes["norm.bias"] = (res,), (res,)
    out = _io(io, "output", out_axis)
    axes["head.weight"], axes["head.bias"] = (out, res), (out,)
    return PermutationSpec(units, axes, sites)
