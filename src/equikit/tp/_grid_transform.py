r"""Separable ``O(L^3)`` transforms between harmonic coefficients and the sphere grid.

On the Gauss-Legendre x equiangular grid of :func:`equikit.o3.sphere_grid` (rings
``theta_j``, longitudes ``phi_k = 2 pi k / n_phi``) every real harmonic factors into a
function of the ring and one trigonometric function of the longitude:

.. math:: Y_{lm}(\theta_j, \phi_k) = P_{q, l}(\theta_j)\, T_q(\phi_k),\qquad
          T_0 = 1,\ T_{2m-1} = \cos m\phi,\ T_{2m} = \sin m\phi

(``q = q(l, m)``; equikit's harmonics have the polar axis ``y``, so ``m > 0`` is a cosine and
``m < 0`` a sine, which :func:`ring_factors` finds numerically and checks, rather than
assuming). So the dense evaluation ``f = c @ Y`` (``(L+1)^2 x n_theta n_phi`` multiply-adds per
function, ``O(L^4)``) splits into

1. a Legendre sum per trigonometric index ``q``: ``A[q, j] = sum_l c[q, l] P[q, l, j]``
   (``(2L+1)(L+1) n_theta`` multiply-adds, one ``bmm`` over ``q``);
2. a sum over ``q`` per ring: ``f[k, j] = sum_q T[q, k] A[q, j]`` (``n_phi (2L+1) n_theta``,
   one matmul),

``O(L^3)`` together. The projection back (quadrature) is the transpose, with the weights
folded into ``P``. The layout is *batch last*: coefficients ``(Q, L+1, N)`` with ``N`` the
flattened batch x channels, grid values ``(n_phi, n_theta, N)``, so each step is one large
GEMM or one ``bmm`` over ``q`` without permutes, and autograd differentiates it to any order
(all steps are linear).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from equikit.o3 import sphere_grid, spherical_harmonics


class RingFactors(NamedTuple):
    """The factorisation ``Y_lm(theta_j, phi_k) = legendre[q, l, j] * trig[q, k]`` (float64).

    ``legendre (2L+1, L+1, n_theta)`` (zero where ``l < m(q)``), ``trig (2L+1, n_phi)``,
    ``q_of ((L+1)^2,)`` the index ``q`` of each harmonic (e3nn ``l^2 + l + m`` order),
    ``weights (n_theta,)`` the ring quadrature weights ``w_j 2 pi / n_phi`` (sum ``4 pi``).
    """

    legendre: torch.Tensor
    trig: torch.Tensor
    q_of: np.ndarray
    weights: torch.Tensor


def trig_basis(lmax: int, n_phi: int) -> torch.Tensor:
    """``T (2 lmax + 1, n_phi)``: ``1, cos phi, sin phi, cos 2phi, sin 2phi, ...`` at
    ``phi_k = 2 pi k / n_phi`` (float64).

    >>> trig_basis(1, 4).round(decimals=12)
    tensor([[ 1.,  1.,  1.,  1.],
            [ 1.,  0., -1., -0.],
            [ 0.,  1.,  0., -1.]], dtype=torch.float64)
    """
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    rows = [torch.ones_like(phi)]
    for m in range(1, lmax + 1):
        rows += [torch.cos(m * phi), torch.sin(m * phi)]
    return torch.stack(rows)


@functools.lru_cache(maxsize=64)
def ring_factors(lmax: int, n_theta: int, n_phi: int) -> RingFactors:
    """The separable factors of the component-normalised harmonics ``<= lmax`` on the
    ``(n_theta, n_phi)`` grid (cached). Needs ``n_phi >= 1``; the factorisation itself is
    found on ``2 lmax + 1`` longitudes, where the ``T_q`` are orthogonal.

    >>> f = ring_factors(2, 3, 5)
    >>> tuple(f.legendre.shape), tuple(f.trig.shape), f.q_of.tolist()
    ((5, 3, 3), (5, 5), [0, 2, 0, 1, 4, 2, 0, 1, 3])
    """
    n_fit = 2 * lmax + 1
    g = sphere_grid(0, (n_theta, n_fit), dtype=torch.float64)
    y = spherical_harmonics(lmax, g.points.reshape(-1, 3), backend="torch").reshape(n_theta, n_fit, -1)
    t = trig_basis(lmax, n_fit)  # orthogonal on n_fit points
    coef = torch.einsum("jkd,qk->jqd", y, t) / (t * t).sum(1)[None, :, None]  # (n_theta, Q, D)
    q_of = coef.abs().amax(0).argmax(0).numpy()  # (D,)
    legendre = torch.zeros(n_fit, lmax + 1, n_theta, dtype=torch.float64)
    for l in range(lmax + 1):
        for k in range(2 * l + 1):
            legendre[q_of[l * l + k], l] = coef[:, q_of[l * l + k], l * l + k]
    recon = torch.einsum("qlj,qk->jkql", legendre, t)
    lm_q = torch.from_numpy(q_of)
    ls = torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)])
    err = (recon[:, :, lm_q, ls] - y).abs().max()
    if not err <= 1e-10 * max(1.0, float(y.abs().max())):  # an invariant of the harmonics, not user input
        raise RuntimeError(f"ring_factors: the harmonics do not factor per ring (error {float(err):.2e})")
    w = torch.from_numpy(np.polynomial.legendre.leggauss(n_theta)[1]) * (2 * math.pi / n_phi)
    return RingFactors(legendre, trig_basis(lmax, n_phi), q_of, w)


def coefficient_layout(lmax: int, q_of: np.ndarray) -> np.ndarray:
    """``lm ((2L+1) * (L+1),)``: the harmonic index ``l^2 + l + m`` of each slot ``(q, l)`` of
    the per-``q`` layout, ``-1`` where ``l < m(q)`` (an empty slot, zero in ``legendre``)."""
    slots = np.full((2 * lmax + 1, lmax + 1), -1, dtype=np.int64)
    for l in range(lmax + 1):
        for k in range(2 * l + 1):
            slots[q_of[l * l + k], l] = l * l + k
    return slots.reshape(-1)


def rings_to_grid(coeffs: torch.Tensor, legendre_t: torch.Tensor, trig_t: torch.Tensor) -> torch.Tensor:
    """Grid values ``(n_phi, n_theta, N)`` from per-``q`` coefficients ``(Q, L+1, N)``.

    ``legendre_t (Q, n_theta, L+1)`` is ``legendre`` transposed (optionally scaled per ``l``),
    ``trig_t (n_phi, Q)``: ``f[k, j] = sum_q T[q, k] sum_l P[q, l, j] c[q, l]``.
    """
    a = torch.bmm(legendre_t, coeffs)  # (Q, n_theta, N)
    return (trig_t @ a.reshape(a.shape[0], -1)).reshape(trig_t.shape[0], a.shape[1], a.shape[2])


def grid_to_rings(values: torch.Tensor, trig: torch.Tensor, legendre_w: torch.Tensor) -> torch.Tensor:
    """Per-``q`` coefficients ``(Q, L+1, N)`` from grid values ``(n_phi, n_theta, N)``: the
    transpose of :func:`rings_to_grid` with the quadrature weights in ``legendre_w (Q, L+1,
    n_theta)`` (``P w_j / 4 pi`` projects onto component-normalised coefficients)."""
    n_phi, n_theta, n = values.shape
    h = (trig @ values.reshape(n_phi, -1)).reshape(trig.shape[0], n_theta, n)  # (Q, n_theta, N)
    return torch.bmm(legendre_w, h)


def to_grid(coeffs: torch.Tensor, lmax: int, resolution: tuple[int, int]) -> torch.Tensor:
    """Batch-first convenience: ``(..., (L+1)^2)`` component coefficients -> ``(..., n_theta,
    n_phi)`` values on :func:`equikit.o3.sphere_grid` ``(lmax, resolution)``, by the separable
    transform (equals :func:`equikit.o3.to_grid`).

    >>> c = torch.randn(2, 16, dtype=torch.float64)
    >>> from equikit import o3
    >>> torch.allclose(to_grid(c, 3, (4, 7)), o3.to_grid(c, 3, (4, 7)))
    True
    """
    f = ring_factors(lmax, *resolution)
    slots = torch.from_numpy(coefficient_layout(lmax, f.q_of))
    flat = coeffs.reshape(-1, coeffs.shape[-1])
    padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], 1).T  # column dim = empty slot
    c = padded[torch.where(slots < 0, flat.shape[1], slots)].reshape(2 * lmax + 1, lmax + 1, -1)
    leg_t = f.legendre.transpose(1, 2).to(coeffs.dtype)
    v = rings_to_grid(c, leg_t, f.trig.T.to(coeffs.dtype))  # (n_phi, n_theta, N)
    return v.permute(2, 1, 0).reshape(*coeffs.shape[:-1], *resolution)


def from_grid(values: torch.Tensor, lmax: int) -> torch.Tensor:
    """Batch-first convenience: the quadrature projection of ``(..., n_theta, n_phi)`` onto
    component coefficients ``(..., (L+1)^2)`` by the separable transform (equals
    :func:`equikit.o3.from_grid`).

    >>> c = torch.randn(3, 9, dtype=torch.float64)
    >>> torch.allclose(from_grid(to_grid(c, 2, (3, 5)), 2), c)
    True
    """
    n_theta, n_phi = values.shape[-2:]
    f = ring_factors(lmax, n_theta, n_phi)
    leg_w = (f.legendre * f.weights / (4 * math.pi)).to(values.dtype)
    flat = values.reshape(-1, n_theta, n_phi).permute(2, 1, 0)  # (n_phi, n_theta, N)
    z = grid_to_rings(flat.contiguous(), f.trig.to(values.dtype), leg_w).reshape(-1, flat.shape[2])
    slots = coefficient_layout(lmax, f.q_of)
    order = np.argsort(np.where(slots < 0, np.iinfo(np.int64).max, slots))[: (lmax + 1) ** 2]
    return z[torch.from_numpy(order)].T.reshape(*values.shape[:-2], (lmax + 1) ** 2)
