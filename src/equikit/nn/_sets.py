r"""Set layers on padded batches: DeepSets, Set Transformer blocks, superset-aware pooling.

Sets are dense ``x (B, n, C)`` with an optional bool ``mask (B, n)`` (True at real
elements; padding may sit anywhere). Every layer treats each set independently, ignores
padded elements and writes zeros at padded outputs, so it is

- equivariant: ``f(P x, P m) = P f(x, m)`` for every permutation ``P`` of the ``n`` slots
  (padding included), or
- invariant: ``f(P x, P m) = f(x, m)``,

up to float rounding of sums (the order of a floating-point sum changes its last bits).

- :class:`SetLinear`: the equivariant linear layer of DeepSets (Zaheer et al. 2017),
  ``x W + pool(x) V``; :class:`DeepSets`: invariant ``rho(sum phi(x))`` or a stack of
  equivariant layers;
- :class:`SAB`, :class:`ISAB`, :class:`PMA` (Lee et al. 2019, Set Transformer): attention
  over the set (equivariant) and pooling by attention to learned seeds (invariant);
- :class:`INSETPooling`: subset pooling that fuses an invariant summary of the superset
  (Xie et al. 2024, INSET).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from equikit._utils.validate import check_int
from equikit.nn._mlp import make_mlp

__all__ = ["ISAB", "MAB", "PMA", "SAB", "DeepSets", "INSETPooling", "SetLinear", "masked_pool"]

POOLS = ("sum", "mean", "max")


def _check_set(x, mask, where: str, channels: int | None = None):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 3:
        raise ValueError(f"{where}: `x` must be a floating tensor (B, n, C), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(f"{where}: `x` must have {channels} channels (last dim), got {x.shape[-1]}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if not isinstance(mask, torch.Tensor) or mask.shape != x.shape[:2]:
        raise ValueError(f"{where}: `mask` must be a tensor (B, n) = {tuple(x.shape[:2])}, got "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    return mask.bool()


def masked_pool(x: torch.Tensor, mask: torch.Tensor | None = None, reduce: str = "sum") -> torch.Tensor:
    """Pool a padded set ``(B, n, C) -> (B, C)`` over its real elements (``sum``, ``mean``,
    ``max``; an empty set gives 0).

    Example:
        >>> import torch
        >>> from equikit.nn import masked_pool
        >>> x = torch.tensor([[[1.0], [2.0], [9.0]]]); m = torch.tensor([[True, True, False]])
        >>> masked_pool(x, m, "mean").tolist(), masked_pool(x, m, "max").tolist()
        ([[1.5]], [[2.0]])
    """
    mask = _check_set(x, mask, "masked_pool")
    if reduce not in POOLS:
        raise ValueError(f"masked_pool: `reduce` must be one of {POOLS}, got {reduce!r}")
    m = mask.unsqueeze(-1)
    if reduce == "max":
        out = x.masked_fill(~m, float("-inf")).amax(1)
        return torch.where(m.any(1), out, torch.zeros_like(out))
    total = (x * m).sum(1)
    if reduce == "mean":
        return total / m.sum(1).clamp(min=1).to(x.dtype)
    return total


class SetLinear(nn.Module):
    r"""Permutation-equivariant linear layer of DeepSets:

    .. math:: y_i = W x_i + V\, \mathrm{pool}_{j}\, x_j + b

    with ``pool`` ``sum``/``mean``/``max`` over the real elements. Shapes: ``x (B, n, C_in)``,
    ``mask (B, n)`` -> ``(B, n, C_out)`` (zero at padding).

    Example:
        >>> import torch
        >>> from equikit.nn import SetLinear
        >>> SetLinear(3, 5)(torch.randn(2, 4, 3)).shape
        torch.Size([2, 4, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, pool: str = "mean", bias: bool = True) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", "SetLinear", minimum=1)
        check_int(out_channels, "out_channels", "SetLinear", minimum=1)
        if pool not in POOLS:
            raise ValueError(f"SetLinear: `pool` must be one of {POOLS}, got {pool!r}")
        self.pool, self.in_channels = pool, in_channels
        self.self_weight = nn.Linear(in_channels, out_channels, bias=bias)
        self.pool_weight = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_set(x, mask, "SetLinear", self.in_channels)
        pooled = masked_pool(x, mask, self.pool)
        out = self.self_weight(x) + self.pool_weight(pooled).unsqueeze(1)
        return out * mask.unsqueeze(-1).to(x.dtype)


class DeepSets(nn.Module):
    r"""DeepSets (Zaheer et al. 2017).

    - ``equivariant=False``: :math:`f(X) = \rho\big(\mathrm{pool}_i\, \phi(x_i)\big)`, invariant,
      ``(B, n, C_in) -> (B, C_out)``;
    - ``equivariant=True``: ``n_layers`` :class:`SetLinear` layers with activations between,
      equivariant, ``(B, n, C_in) -> (B, n, C_out)``.

    Example:
        >>> import torch
        >>> from equikit.nn import DeepSets
        >>> x = torch.randn(2, 5, 3)
        >>> DeepSets(3, 16, 4)(x).shape, DeepSets(3, 16, 4, equivariant=True)(x).shape
        (torch.Size([2, 4]), torch.Size([2, 5, 4]))
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, *, equivariant: bool = False,
                 n_layers: int = 2, pool: str = "sum", act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        check_int(n_layers, "n_layers", "DeepSets", minimum=1)
        if pool not in POOLS:
            raise ValueError(f"DeepSets: `pool` must be one of {POOLS}, got {pool!r}")
        self.equivariant, self.pool, self.in_channels = equivariant, pool, in_channels
        if equivariant:
            sizes = [in_channels] + [hidden] * (n_layers - 1) + [out_channels]
            self.layers = nn.ModuleList(SetLinear(a, b, pool) for a, b in itertools.pairwise(sizes))
            self.act = act()
        else:
            self.phi = make_mlp([in_channels] + [hidden] * n_layers, act, last_act=True)
            self.rho = make_mlp([hidden, hidden, out_channels], act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_set(x, mask, "DeepSets", self.in_channels)
        if not self.equivariant:
            return self.rho(masked_pool(self.phi(x), mask, self.pool))
        for k, layer in enumerate(self.layers):
            x = layer(x, mask)
            if k < len(self.layers) - 1:
                x = self.act(x) * mask.unsqueeze(-1).to(x.dtype)
        return x


class MAB(nn.Module):
    r"""Multihead attention block of the Set Transformer:
    :math:`H = \mathrm{LN}(Q + \mathrm{MHA}(Q, K, K))`, :math:`\mathrm{MAB}(Q, K) = \mathrm{LN}(H + \mathrm{rFF}(H))`
    (``layer_norm=False`` drops the LNs). Keys with ``key_mask`` False are ignored; a query
    whose keys are all masked attends to nothing (zero attention output).

    Shapes: ``q (B, m, C)``, ``k (B, n, C_k)``, ``key_mask (B, n)`` -> ``(B, m, C)``.
    """

    def __init__(self, channels: int, key_channels: int | None = None, heads: int = 4,
                 layer_norm: bool = True) -> None:
        super().__init__()
        check_int(channels, "channels", "MAB", minimum=1)
        check_int(heads, "heads", "MAB", minimum=1)
        if channels % heads:
            raise ValueError(f"MAB: `channels` ({channels}) must be divisible by `heads` ({heads})")
        key_channels = key_channels or channels
        self.heads = heads
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(key_channels, channels)
        self.v = nn.Linear(key_channels, channels)
        self.o = nn.Linear(channels, channels)
        self.ff = make_mlp([channels, channels, channels], nn.ReLU)
        self.ln1 = nn.LayerNorm(channels) if layer_norm else nn.Identity()
        self.ln2 = nn.LayerNorm(channels) if layer_norm else nn.Identity()

    def forward(self, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, m, c = q.shape
        n, h = k.shape[1], self.heads

        def split(t, length):
            return t.view(b, length, h, c // h).transpose(1, 2)

        qh, kh, vh = split(self.q(q), m), split(self.k(k), n), split(self.v(k), n)
        score = qh @ kh.transpose(-1, -2) / math.sqrt(c // h)  # (B, h, m, n)
        if key_mask is not None:
            km = key_mask[:, None, None, :]
            score = score.masked_fill(~km, float("-inf"))
            w = torch.softmax(score, -1).nan_to_num(0.0)  # all keys masked: no attention
        else:
            w = torch.softmax(score, -1)
        att = (w @ vh).transpose(1, 2).reshape(b, m, c)
        hid = self.ln1(q + self.o(att))
        return self.ln2(hid + self.ff(hid))


class SAB(nn.Module):
    """Set attention block ``SAB(X) = MAB(X, X)``: equivariant, ``O(n^2)``.
    Shapes: ``(B, n, C), mask (B, n) -> (B, n, C)``.

    Example:
        >>> import torch
        >>> from equikit.nn import SAB
        >>> SAB(8, heads=2)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, channels: int, heads: int = 4, layer_norm: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.mab = MAB(channels, heads=heads, layer_norm=layer_norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_set(x, mask, "SAB", self.channels)
        return self.mab(x, x, mask) * mask.unsqueeze(-1).to(x.dtype)


class ISAB(nn.Module):
    """Induced set attention block with ``m`` learned inducing points ``I``:
    ``H = MAB(I, X)``, ``ISAB(X) = MAB(X, H)``: equivariant, ``O(n m)``.
    Shapes: ``(B, n, C), mask (B, n) -> (B, n, C)``.

    Example:
        >>> import torch
        >>> from equikit.nn import ISAB
        >>> ISAB(8, num_inducing=3, heads=2)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, channels: int, num_inducing: int = 16, heads: int = 4, layer_norm: bool = True) -> None:
        super().__init__()
        check_int(num_inducing, "num_inducing", "ISAB", minimum=1)
        self.channels = channels
        self.inducing = nn.Parameter(torch.randn(num_inducing, channels) / math.sqrt(channels))
        self.mab1 = MAB(channels, heads=heads, layer_norm=layer_norm)
        self.mab2 = MAB(channels, heads=heads, layer_norm=layer_norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_set(x, mask, "ISAB", self.channels)
        ind = self.inducing.to(x.dtype).expand(x.shape[0], -1, -1)
        hid = self.mab1(ind, x, mask)
        return self.mab2(x, hid) * mask.unsqueeze(-1).to(x.dtype)


class PMA(nn.Module):
    """Pooling by multihead attention to ``k`` learned seeds ``S``:
    ``PMA(X) = MAB(S, rFF(X))``: invariant, ``(B, n, C), mask (B, n) -> (B, k, C)``.

    Example:
        >>> import torch
        >>> from equikit.nn import PMA
        >>> PMA(8, num_seeds=2, heads=2)(torch.randn(3, 5, 8)).shape
        torch.Size([3, 2, 8])
    """

    def __init__(self, channels: int, num_seeds: int = 1, heads: int = 4, layer_norm: bool = True) -> None:
        super().__init__()
        check_int(num_seeds, "num_seeds", "PMA", minimum=1)
        self.channels = channels
        self.seeds = nn.Parameter(torch.randn(num_seeds, channels) / math.sqrt(channels))
        self.ff = make_mlp([channels, channels, channels], nn.ReLU)
        self.mab = MAB(channels, heads=heads, layer_norm=layer_norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_set(x, mask, "PMA", self.channels)
        seeds = self.seeds.to(x.dtype).expand(x.shape[0], -1, -1)
        return self.mab(seeds, self.ff(x), mask)


class INSETPooling(nn.Module):
    r"""Superset-aware subset pooling (INSET, Xie et al. 2024).

    For a subset ``S`` of a superset ``V`` (both padded in one tensor), an invariant summary
    of the superset is fused into every subset element before pooling:

    .. math::
        z_V = \mathrm{pool}_{j \in V}\, \psi(x_j), \qquad
        h_i = \phi([x_i, z_V]) \;(i \in S), \qquad
        \mathrm{out} = \rho\big([\mathrm{pool}_{i \in S} h_i,\; z_V]\big).

    Invariant under every permutation of the elements (which permutes the subset and the
    superset together), hence under permutations within the subset and within the superset.
    Unlike pooling the subset alone, the output depends on the elements outside the subset.
    ``forward(..., return_scores=True)`` also returns per-element scores ``w^T h_i``
    ``(B, n)`` (equivariant; for subset selection), 0 at padding (mask before a softmax).

    Shapes: ``x (B, n, C)``, ``subset (B, n)`` bool, ``mask (B, n)`` bool (the superset;
    all True when ``None``) -> ``(B, C_out)``.

    Example:
        >>> import torch
        >>> from equikit.nn import INSETPooling
        >>> x, s = torch.randn(2, 6, 3), torch.rand(2, 6) < 0.5
        >>> INSETPooling(3, 16, 4)(x, s).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, pool: str = "sum",
                 act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"INSETPooling: `pool` must be one of {POOLS}, got {pool!r}")
        self.pool, self.in_channels = pool, in_channels
        self.psi = make_mlp([in_channels, hidden, hidden], act, last_act=True)
        self.phi = make_mlp([in_channels + hidden, hidden, hidden], act, last_act=True)
        self.rho = make_mlp([2 * hidden, hidden, out_channels], act)
        self.score = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, subset: torch.Tensor, mask: torch.Tensor | None = None,
                return_scores: bool = False):
        mask = _check_set(x, mask, "INSETPooling", self.in_channels)
        if not isinstance(subset, torch.Tensor) or subset.shape != mask.shape:
            raise ValueError(f"INSETPooling: `subset` must be a bool tensor (B, n) = "
                             f"{tuple(mask.shape)}, got {tuple(getattr(subset, 'shape', ()))}")
        subset = subset.bool() & mask
        z_v = masked_pool(self.psi(x), mask, self.pool)
        h = self.phi(torch.cat([x, z_v.unsqueeze(1).expand(-1, x.shape[1], -1)], -1))
        out = self.rho(torch.cat([masked_pool(h, subset, self.pool), z_v], -1))
        if not return_scores:
            return out
        scores = self.score(h).squeeze(-1) * mask.to(x.dtype)
        return out, scores
