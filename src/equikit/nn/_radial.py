"""Radial bases and cutoff envelopes: invariant functions of an edge length ``r``."""

from __future__ import annotations

import math

import torch
from torch import nn

from equikit._utils.validate import check_int, check_positive


def _check_r(r, where: str) -> torch.Tensor:
    if not isinstance(r, torch.Tensor) or not r.is_floating_point():
        raise TypeError(f"{where}: `r` must be a floating tensor of distances (...,), got "
                        f"{type(r).__name__ if not isinstance(r, torch.Tensor) else r.dtype}")
    return r


class BesselBasis(nn.Module):
    r"""Bessel radial basis (DimeNet / NequIP / MACE):

    .. math:: e_n(r) = \sqrt{2 / r_c}\; \frac{\sin(n \pi r / r_c)}{r}, \quad n = 1..N

    computed as ``sqrt(2/r_c) (n pi / r_c) sinc(n r / r_c)`` so it is smooth at ``r = 0``.
    ``trainable=True`` learns the frequencies ``n pi / r_c``.

    Shapes: ``r (...)`` -> ``(..., num_basis)``.

    >>> BesselBasis(5.0, 8)(torch.tensor([0.0, 1.0, 5.0])).shape
    torch.Size([3, 8])
    """

    def __init__(self, r_max: float, num_basis: int = 8, *, trainable: bool = False) -> None:
        super().__init__()
        self.r_max = check_positive(r_max, "r_max", "BesselBasis")
        check_int(num_basis, "num_basis", "BesselBasis", minimum=1)
        self.num_basis = num_basis
        freq = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.r_max
        self.freq = nn.Parameter(freq) if trainable else None  # fixed: built in the input's dtype

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = _check_r(r, "BesselBasis")
        if self.freq is None:
            f = torch.arange(1, self.num_basis + 1, dtype=r.dtype, device=r.device) * (math.pi / self.r_max)
        else:
            f = self.freq.to(r.dtype)
        return math.sqrt(2 / self.r_max) * f * torch.sinc(r[..., None] * f / math.pi)


class GaussianBasis(nn.Module):
    r"""Gaussians on evenly spaced centres ``mu_n`` in ``[r_min, r_max]``:

    .. math:: e_n(r) = \exp\!\big(-\tfrac12 ((r - \mu_n) / w)^2\big)

    with width ``w`` the centre spacing unless given (SchNet's smearing).

    Shapes: ``r (...)`` -> ``(..., num_basis)``.

    >>> GaussianBasis(0.0, 5.0, 16)(torch.rand(7)).shape
    torch.Size([7, 16])
    """

    def __init__(self, r_min: float, r_max: float, num_basis: int = 16, *, width: float | None = None) -> None:
        super().__init__()
        check_int(num_basis, "num_basis", "GaussianBasis", minimum=2)
        if not r_max > r_min:
            raise ValueError(f"GaussianBasis: need r_max > r_min, got r_min={r_min}, r_max={r_max}")
        self.r_min, self.r_max, self.num_basis = float(r_min), float(r_max), num_basis
        self.width = check_positive(width, "width", "GaussianBasis") if width is not None else \
            (r_max - r_min) / (num_basis - 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = _check_r(r, "GaussianBasis")
        centers = torch.linspace(self.r_min, self.r_max, self.num_basis, dtype=r.dtype, device=r.device)
        return torch.exp(-0.5 * ((r[..., None] - centers) / self.width) ** 2)


class PolynomialCutoff(nn.Module):
    r"""Smooth polynomial cutoff envelope (DimeNet's, order ``p``), with ``u = r / r_c``:

    .. math:: f(u) = 1 - \tfrac{(p+1)(p+2)}{2} u^p + p(p+2) u^{p+1} - \tfrac{p(p+1)}{2} u^{p+2}
              \quad (u < 1), \qquad 0 \quad (u \ge 1)

    ``f(0) = 1`` and ``f``, ``f'``, ``f''`` vanish at ``r_c``.

    Shapes: ``r (...)`` -> ``(...)``.

    >>> PolynomialCutoff(5.0)(torch.tensor([0.0, 5.0, 6.0]))
    tensor([1., 0., 0.])
    """

    def __init__(self, r_max: float, p: int = 6) -> None:
        super().__init__()
        self.r_max = check_positive(r_max, "r_max", "PolynomialCutoff")
        self.p = check_int(p, "p", "PolynomialCutoff", minimum=1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = _check_r(r, "PolynomialCutoff")
        p, u = self.p, r / self.r_max
        f = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
        return torch.where(u < 1, f, torch.zeros_like(f))
