"""Sphere grids and the transforms between harmonic coefficients and grid values.

Grid: Gauss-Legendre nodes in ``cos(theta)`` (``n_theta`` of them) times ``n_phi``
equiangular longitudes, with the polar axis ``y`` (the polar axis of the equikit harmonics):
``point = (sin t sin f, cos t, sin t cos f)``, ``f = 2 pi k / n_phi``. Quadrature weights sum
to ``4 pi``.

Exactness: a function of band limit ``L`` (degrees ``<= L``) has its coefficients recovered
exactly by :func:`from_grid` when ``n_theta >= L + 1`` and ``n_phi >= 2 L + 1`` (the integrand
``f Y_l^m`` has degree ``<= 2L``; Gauss-Legendre with ``n`` nodes is exact to degree
``2n - 1``, ``n_phi`` equispaced points are exact for trigonometric degree ``< n_phi``). That
minimal resolution is the default. Products of two band-``L`` functions (degree ``2L``) need
``(2L + 1, 4L + 1)``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from equikit._utils import check_int, default_dtype
from equikit.o3._sh import _NORMALIZATIONS, _solid_harmonics_std, normalization_factors


class SphereGrid(NamedTuple):
    """``points (n_theta, n_phi, 3)`` on the unit sphere and ``weights (n_theta, n_phi)``."""

    points: torch.Tensor
    weights: torch.Tensor


def default_resolution(lmax: int) -> tuple[int, int]:
    """Smallest grid ``(lmax + 1, 2 lmax + 1)`` on which the transforms are exact."""
    return lmax + 1, 2 * lmax + 1


def _check_resolution(lmax: int, resolution, where: str) -> tuple[int, int]:
    check_int(lmax, "lmax", where, minimum=0)
    if resolution is None:
        return default_resolution(lmax)
    if not (isinstance(resolution, (tuple, list)) and len(resolution) == 2):
        raise TypeError(f"{where}: `resolution` must be (n_theta, n_phi), got {resolution!r}")
    n_theta = check_int(resolution[0], "resolution[0]", where, minimum=1)
    n_phi = check_int(resolution[1], "resolution[1]", where, minimum=1)
    if n_theta < lmax + 1 or n_phi < 2 * lmax + 1:
        raise ValueError(
            f"{where}: resolution {(n_theta, n_phi)} is too coarse for lmax={lmax}; the "
            f"transforms are exact from ({lmax + 1}, {2 * lmax + 1}) on (the default)"
        )
    return n_theta, n_phi


@functools.lru_cache(maxsize=64)
def _grid64(n_theta: int, n_phi: int) -> SphereGrid:
    nodes, w = np.polynomial.legendre.leggauss(n_theta)
    cos_t = torch.from_numpy(nodes)
    sin_t = torch.sqrt(torch.clamp(1 - cos_t**2, min=0))
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * torch.pi / n_phi)
    pts = torch.stack(
        [
            sin_t[:, None] * torch.sin(phi)[None, :],
            cos_t[:, None].expand(n_theta, n_phi),
            sin_t[:, None] * torch.cos(phi)[None, :],
        ],
        -1,
    )
    weights = torch.from_numpy(w)[:, None].expand(n_theta, n_phi) * (2 * torch.pi / n_phi)
    return SphereGrid(pts, weights.contiguous())


def sphere_grid(
    lmax: int,
    resolution: tuple[int, int] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SphereGrid:
    """The Gauss-Legendre x equiangular grid for band limit ``lmax`` (see the module doc).

    >>> g = sphere_grid(4, dtype=torch.float64)
    >>> g.points.shape, round(float(g.weights.sum()), 10)
    (torch.Size([5, 9, 3]), 12.5663706144)
    """
    n_theta, n_phi = _check_resolution(lmax, resolution, "sphere_grid")
    g = _grid64(n_theta, n_phi)
    dtype = default_dtype(dtype)
    return SphereGrid(g.points.to(dtype=dtype, device=device), g.weights.to(dtype=dtype, device=device))


@functools.lru_cache(maxsize=64)
def _grid_sh64(lmax: int, n_theta: int, n_phi: int, normalization: str) -> torch.Tensor:
    """Harmonics on the grid, ``(n_theta * n_phi, (lmax + 1)^2)``, float64."""
    pts = _grid64(n_theta, n_phi).points.reshape(-1, 3)
    blocks = _solid_harmonics_std(pts[:, [2, 0, 1]], lmax)
    factors = normalization_factors(lmax, normalization)
    return torch.cat([b * f for b, f in zip(blocks, factors)], -1)


def _check_normalization(normalization: str, where: str) -> None:
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"{where}: `normalization` must be one of {_NORMALIZATIONS}, got {normalization!r}")


def to_grid(
    coeffs: torch.Tensor,
    lmax: int,
    resolution: tuple[int, int] | None = None,
    normalization: str = "component",
) -> torch.Tensor:
    r"""Evaluate ``f(x) = sum_lm c_lm Y_l^m(x)`` on the grid.

    Args:
        coeffs: ``(..., (lmax + 1)^2)``, harmonics in ``normalization``.
        lmax: band limit. resolution: ``(n_theta, n_phi)``, default ``(lmax + 1, 2 lmax + 1)``.

    Returns:
        ``(..., n_theta, n_phi)`` values at :func:`sphere_grid` ``(lmax, resolution).points``.

    >>> c = torch.zeros(4, dtype=torch.float64); c[0] = 1.0
    >>> to_grid(c, 1, normalization="component").round(decimals=12).unique()
    tensor([1.], dtype=torch.float64)
    """
    where = "to_grid"
    n_theta, n_phi = _check_resolution(lmax, resolution, where)
    _check_normalization(normalization, where)
    dim = (lmax + 1) ** 2
    if not isinstance(coeffs, torch.Tensor) or coeffs.ndim == 0 or coeffs.shape[-1] != dim:
        shape = tuple(coeffs.shape) if isinstance(coeffs, torch.Tensor) else type(coeffs).__name__
        raise ValueError(f"{where}: `coeffs` must have shape (..., {dim}) for lmax={lmax}, got {shape}")
    y = _grid_sh64(lmax, n_theta, n_phi, normalization).to(coeffs.dtype).to(coeffs.device)
    return (coeffs @ y.T).reshape(*coeffs.shape[:-1], n_theta, n_phi)


def from_grid(
    values: torch.Tensor,
    lmax: int,
    normalization: str = "component",
) -> torch.Tensor:
    r"""Project grid values onto harmonics of degree ``<= lmax`` by quadrature:
    ``c_lm = int f Y_l^m dx / int (Y_l^m)^2 dx``.

    Exact (to rounding) when ``f`` has band limit ``<= lmax`` and the grid satisfies
    ``n_theta >= lmax + 1``, ``n_phi >= 2 lmax + 1``; for other ``f`` it is the least-squares
    projection up to aliasing of degrees above ``n_theta``.

    Args:
        values: ``(..., n_theta, n_phi)`` on :func:`sphere_grid` points.

    Returns:
        ``(..., (lmax + 1)^2)``.

    >>> c = torch.randn(3, 16, dtype=torch.float64)
    >>> torch.allclose(from_grid(to_grid(c, 3), 3), c)
    True
    """
    where = "from_grid"
    if not isinstance(values, torch.Tensor) or values.ndim < 2:
        raise ValueError(f"{where}: `values` must be a tensor (..., n_theta, n_phi)")
    n_theta, n_phi = _check_resolution(lmax, tuple(values.shape[-2:]), where)
    _check_normalization(normalization, where)
    y = _grid_sh64(lmax, n_theta, n_phi, normalization)
    w = _grid64(n_theta, n_phi).weights.reshape(-1, 1)
    factors = normalization_factors(lmax, normalization)
    inv_sq = torch.cat([torch.full((2 * l + 1,), 1 / f**2, dtype=torch.float64) for l, f in enumerate(factors)])
    proj = (y * w * inv_sq).to(values.dtype).to(values.device)  # (G, dim)
    return values.reshape(*values.shape[:-2], -1) @ proj
