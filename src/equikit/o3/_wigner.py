r"""Wigner D matrices in the equikit harmonics basis, with parity for O(3).

``D_l(R)`` is defined by ``Y_l(R x) = D_l(R) Y_l(x)`` and computed exactly by quadrature:

.. math:: D_l(R) = \int_{S^2} Y_l(R x)\, Y_l(x)^T \, dx

with orthonormal ``Y`` on the Gauss-Legendre grid of band limit ``l`` (the integrand has
degree ``2l``, which that grid integrates exactly). This works for any ``l``, is batched
over rotations, differentiable in ``R`` to any order, and is consistent with the harmonics by
construction; the tests check orthogonality, the homomorphism property and agreement with
e3nn (whose basis is the same: ``D_1(R) = R``).

For an irrep ``(l, p)`` and ``g in O(3)``: ``D_{l,p}(g) = p^{[det g < 0]} D_l(det(g) g)``.
"""

from __future__ import annotations

import functools

import torch

from equikit._utils import check_int
from equikit.o3._grid import _grid64
from equikit.o3._irreps import Irrep, Irreps, irrep
from equikit.o3._rotations import check_rotation
from equikit.o3._sh import _solid_harmonics_std


@functools.lru_cache(maxsize=32)
def _weighted_grid_sh64(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid points ``(G, 3)`` and ``w * Y(x)`` ``(G, (lmax + 1)^2)`` (orthonormal Y)."""
    g = _grid64(lmax + 1, 2 * lmax + 1)
    pts = g.points.reshape(-1, 3)
    y = torch.cat(_solid_harmonics_std(pts[:, [2, 0, 1]], lmax), -1)
    return pts, y * g.weights.reshape(-1, 1)


def _wigner_blocks(lmax: int, R: torch.Tensor) -> list[torch.Tensor]:
    """``[D_0(R), ..., D_lmax(R)]`` for rotations ``R (..., 3, 3)`` (not validated)."""
    pts, yw = _weighted_grid_sh64(lmax)
    pts = pts.to(R.dtype).to(R.device)
    yw = yw.to(R.dtype).to(R.device)
    rx = torch.einsum("...ij,gj->...gi", R, pts)  # (..., G, 3)
    blocks = _solid_harmonics_std(rx[..., [2, 0, 1]], lmax)
    start, out = 0, []
    for l, b in enumerate(blocks):
        out.append(torch.einsum("...gi,gj->...ij", b, yw[:, start : start + 2 * l + 1]))
        start += 2 * l + 1
    return out


def wigner_D(l: int, R: torch.Tensor) -> torch.Tensor:
    r"""Wigner D matrix of degree ``l`` for rotations ``R``: ``Y_l(R x) = D_l(R) Y_l(x)``.

    Args:
        l: degree ``>= 0``.
        R: rotation matrices ``(..., 3, 3)`` with ``det = +1`` (use :func:`irrep_D` for O(3)).

    Returns:
        ``(..., 2l + 1, 2l + 1)``, orthogonal, ``D_l(R1 R2) = D_l(R1) D_l(R2)``, ``D_1(R) = R``.

    >>> from equikit.o3 import random_rotation
    >>> R = random_rotation(1, generator=0, dtype=torch.float64)[0]
    >>> torch.allclose(wigner_D(1, R), R)
    True
    """
    check_int(l, "l", "wigner_D", minimum=0)
    check_rotation(R, "R", "wigner_D", proper=True)
    return _wigner_blocks(l, R)[l]


def _split_improper(g: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``g = s R`` with ``s = det g = +-1`` and ``R`` a rotation."""
    check_rotation(g, "g", where, proper=None)
    s = torch.sign(torch.linalg.det(g))
    return s, g * s[..., None, None]


def irrep_D(ir, g: torch.Tensor) -> torch.Tensor:
    r"""Representation matrix of the O(3) irrep ``ir = (l, p)`` at ``g`` (``(..., 3, 3)``,
    orthogonal, ``det = +-1``): ``p^{[det g < 0]} D_l(det(g) g)``.

    >>> g = -torch.eye(3, dtype=torch.float64)
    >>> round(irrep_D("1o", g)[0, 0].item(), 12), round(irrep_D("1e", g)[0, 0].item(), 12)
    (-1.0, 1.0)
    """
    ir = irrep(ir)
    s, R = _split_improper(g, "irrep_D")
    d = _wigner_blocks(ir.l, R)[ir.l]
    if ir.p == -1:
        d = d * s[..., None, None]
    return d


def irreps_D(irreps, g: torch.Tensor) -> torch.Tensor:
    """Block-diagonal representation matrix ``(..., irreps.dim, irreps.dim)`` of ``g in O(3)``
    on features with the given irreps (``mul`` copies of each ``irrep_D``).

    >>> irreps_D("2x0e + 1o", -torch.eye(3, dtype=torch.float64)).diagonal().round(decimals=12)
    tensor([ 1.,  1., -1., -1., -1.], dtype=torch.float64)
    """
    irreps = Irreps(irreps)
    s, R = _split_improper(g, "irreps_D")
    batch = g.shape[:-2]
    out = torch.zeros(*batch, irreps.dim, irreps.dim, dtype=g.dtype, device=g.device)
    if irreps.dim == 0:
        return out
    blocks = _wigner_blocks(max(m.ir.l for m in irreps), R)
    start = 0
    for mul, ir in irreps:
        d = blocks[ir.l] * (s[..., None, None] if ir.p == -1 else 1)
        eye = torch.eye(mul, dtype=g.dtype, device=g.device)
        block = torch.einsum("uv,...ij->...uivj", eye, d).reshape(*batch, mul * ir.dim, -1)
        out[..., start : start + mul * ir.dim, start : start + mul * ir.dim] = block
        start += mul * ir.dim
    return out


__all__ = ["Irrep", "irrep_D", "irreps_D", "wigner_D"]
