"""Equivariant normalisation of irreps features: :class:`BatchNorm` and :class:`LayerNorm`.

Per irrep copy (one ``ir`` of a ``mul x ir`` block): even scalars (``0e``) are centred and
scaled by their standard deviation, every other irrep is scaled by the inverse root mean square
of its norm. No mean is subtracted from the other irreps: a running mean (used at eval time)
is a fixed vector, and subtracting it, or adding a bias, is not equivariant for ``l > 0`` or for
``0o`` pseudoscalars (which flip sign under reflections).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from equikit.o3 import Irreps

NORMALIZATIONS = ("component", "norm")


def _check_common(irreps: Any, eps: Any, normalization: Any, where: str) -> Irreps:
    try:
        irreps = Irreps(irreps)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: `irreps` is not valid irreps ({err})") from None
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{where}: `normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{where}: `eps` must be a number > 0, got {eps!r}")
    return irreps


def _check_x(x: Any, irreps: Irreps, where: str, min_ndim: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{where}: `x` must be a floating tensor, got {got}")
    if x.ndim < min_ndim or x.shape[-1] != irreps.dim:
        lead = "batch, ..., " if min_ndim == 2 else "..., "
        raise ValueError(f"{where}: `x` must have shape ({lead}{irreps.dim}) for irreps '{irreps}', "
                         f"got {tuple(x.shape)}")


def _is_even_scalar(ir) -> bool:
    return ir.l == 0 and ir.p == 1


def _square_norm(field: torch.Tensor, normalization: str) -> torch.Tensor:
    """``(..., mul, d) -> (..., mul)``: squared norm per copy, divided by ``d`` for "component"."""
    return field.pow(2).mean(-1) if normalization == "component" else field.pow(2).sum(-1)


class _IrrepsNorm(nn.Module):
    def __init__(self, irreps: Any, eps: float, affine: bool, normalization: str, where: str) -> None:
        super().__init__()
        self.irreps = _check_common(irreps, eps, normalization, where)
        if not isinstance(affine, bool):
            raise TypeError(f"{where}: `affine` must be a bool, got {affine!r}")
        self.eps, self.affine, self.normalization = float(eps), affine, normalization
        self.num_scalars = sum(m.mul for m in self.irreps if _is_even_scalar(m.ir))
        n = self.irreps.num_irreps
        self.weight = nn.Parameter(torch.ones(n)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_scalars)) if affine and self.num_scalars else None

    def _affine(self, field: torch.Tensor, scale: torch.Tensor, iw: int, ib: int, is_scalar: bool):
        """``field (..., mul, d) * scale (..., mul)`` with the weights of copies ``iw:iw+mul`` and
        the biases of scalars ``ib:ib+mul``."""
        mul = field.shape[-2]
        if self.weight is not None:
            scale = scale * self.weight[iw : iw + mul].to(field.dtype)
        out = field * scale[..., None]
        if is_scalar and self.bias is not None:
            out = out + self.bias[ib : ib + mul, None].to(field.dtype)
        return out

    def extra_repr(self) -> str:
        return f"{self.irreps}, eps={self.eps}, affine={self.affine}, normalization={self.normalization!r}"


class BatchNorm(_IrrepsNorm):
    r"""Batch normalisation of irreps features (e3nn's ``nn.BatchNorm`` semantics).

    Per irrep copy ``u`` of a block ``mul x ir``, with means over the batch (all leading dims):

    .. math:: \text{0e:}\; y_u = w_u \frac{x_u - \mu_u}{\sqrt{\sigma^2_u + \epsilon}} + b_u,
              \qquad \text{other:}\; y_u = w_u \frac{x_u}{\sqrt{\langle |x_u|^2 \rangle + \epsilon}}

    with ``sigma^2_u = <(x_u - mu_u)^2>`` (biased) and ``|x_u|^2`` the squared norm, divided by
    ``2l + 1`` for ``normalization="component"`` (the default). In training the batch statistics
    are used and the running ones updated, ``r <- (1 - momentum) r + momentum * batch``
    (running means start at 0, running mean squares at 1); in eval mode the running statistics
    are used. Equivariant in both modes when the whole batch is transformed by one group
    element.

    Args:
        irreps: irreps of the features.
        eps: added to the mean square.
        momentum: weight of the new batch in the running statistics.
        affine: learn ``w`` (one per irrep copy, init 1) and ``b`` (one per ``0e`` copy, init 0).
        normalization: ``"component"`` or ``"norm"``.

    Shapes: ``x (batch, ..., irreps.dim)`` -> same.

    >>> bn = BatchNorm("4x0e + 2x1o")
    >>> y = bn(torch.randn(32, 10))
    >>> bool(y[:, :4].mean(0).abs().max() < 1e-6), bn.running_var.shape
    (True, torch.Size([6]))
    """

    def __init__(self, irreps: Any, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 normalization: str = "component") -> None:
        super().__init__(irreps, eps, affine, normalization, "BatchNorm")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: `momentum` must be a number in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.register_buffer("running_mean", torch.zeros(self.num_scalars))
        self.register_buffer("running_var", torch.ones(self.irreps.num_irreps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.irreps, "BatchNorm", min_ndim=2)
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.training and x.shape[0] < 2 and self.num_scalars:
            raise ValueError(f"BatchNorm: training needs a batch of at least 2 rows to estimate the scalar "
                             f"variances, got {tuple(shape)}; use eval mode for single samples")
        out, means, sqs = [], [], []
        ix = iw = ib = 0
        for mul, ir in self.irreps:
            field = x[:, ix : ix + mul * ir.dim].reshape(-1, mul, ir.dim)
            ix += mul * ir.dim
            scalar = _is_even_scalar(ir)
            if scalar:
                mean = field.mean((0, 2)) if self.training else self.running_mean[ib : ib + mul].to(x.dtype)
                field = field - mean[:, None]
                means.append(mean)
            if self.training:
                sq = _square_norm(field, self.normalization).mean(0)
                sqs.append(sq)
            else:
                sq = self.running_var[iw : iw + mul].to(x.dtype)
            out.append(self._affine(field, (sq + self.eps).rsqrt(), iw, ib, scalar).reshape(-1, mul * ir.dim))
            iw += mul
            ib += mul if scalar else 0
        if self.training:
            with torch.no_grad():
                m = self.momentum
                if means:
                    self.running_mean.mul_(1 - m).add_(torch.cat(means).detach().to(self.running_mean.dtype), alpha=m)
                if sqs:
                    self.running_var.mul_(1 - m).add_(torch.cat(sqs).detach().to(self.running_var.dtype), alpha=m)
        y = torch.cat(out, dim=-1) if out else x
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", momentum={self.momentum}"


class LayerNorm(_IrrepsNorm):
    r"""Layer normalisation of irreps features: per sample and per block ``mul x ir``, statistics
    over the block's ``mul`` copies (equiformer-style, one block at a time).

    .. math:: \text{0e:}\; y_u = w_u \frac{x_u - \bar x}{\sqrt{\tfrac1{mul}\sum_v (x_v - \bar x)^2 + \epsilon}} + b_u,
              \qquad \text{other:}\; y_u = w_u \frac{x_u}{\sqrt{\tfrac1{mul}\sum_v |x_v|^2 + \epsilon}}

    with ``|x_v|^2`` divided by ``2l + 1`` for ``normalization="component"``. A ``1x0e`` block is
    centred to zero (its output is its bias): give scalars a multiplicity > 1. No running
    statistics; train and eval modes are the same.

    Args:
        irreps: irreps of the features.
        eps: added to the mean square.
        affine: learn ``w`` (one per irrep copy, init 1) and ``b`` (one per ``0e`` copy, init 0).
        normalization: ``"component"`` or ``"norm"``.

    Shapes: ``x (..., irreps.dim)`` -> same.

    >>> ln = LayerNorm("8x0e + 4x1o")
    >>> y = ln(torch.randn(5, 20))
    >>> bool(y[:, :8].mean(-1).abs().max() < 1e-6), torch.allclose(y[:, 8:].pow(2).mean(-1), torch.ones(5), atol=1e-4)
    (True, True)
    """

    def __init__(self, irreps: Any, *, eps: float = 1e-5, affine: bool = True,
                 normalization: str = "component") -> None:
        super().__init__(irreps, eps, affine, normalization, "LayerNorm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.irreps, "LayerNorm", min_ndim=1)
        batch = x.shape[:-1]
        out = []
        ix = iw = ib = 0
        for mul, ir in self.irreps:
            field = x[..., ix : ix + mul * ir.dim].reshape(*batch, mul, ir.dim)
            ix += mul * ir.dim
            scalar = _is_even_scalar(ir)
            if scalar:
                field = field - field.mean((-2, -1), keepdim=True)
            sq = _square_norm(field, self.normalization).mean(-1, keepdim=True)
            out.append(self._affine(field, (sq + self.eps).rsqrt(), iw, ib, scalar).reshape(*batch, mul * ir.dim))
            iw += mul
            ib += mul if scalar else 0
        return torch.cat(out, dim=-1) if out else x
