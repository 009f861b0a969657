r"""``gaunt_fourier`` backend: the Gaunt product in the 2D Fourier basis (Luo et al. 2024).

Write a point of the sphere as ``p(t, f) = (sin t sin f, cos t, sin t cos f)`` for *all*
``(t, f)`` on the torus ``[0, 2 pi)^2`` (it covers the sphere twice). A harmonic of degree
``l`` is a polynomial of degree ``l`` in ``p``, so ``Y_lm(p(t, f))`` is a trigonometric
polynomial with frequencies ``|u|, |v| <= l``:

.. math:: Y_{lm}(p(t, f)) = \sum_{u, v} E^{lm}_{uv}\, e^{i(u t + v f)}

and the product of two spherical functions is the product of their torus functions, i.e. the
2D convolution of their Fourier coefficients. Steps per channel:

1. irreps -> Fourier: ``F1 = sum_lm x_lm E^lm`` (a precomputed change of basis, cached per
   ``L``; only ``v >= 0`` is kept, the functions are real);
2. product by FFT: both spectra zero-padded to ``N = 2 (L1 + L2) + 1`` points per axis,
   ``irfft2`` -> pointwise product -> ``rfft2`` (``torch.fft``): the exact coefficients of the
   product (frequencies ``<= L1 + L2``, no aliasing at this ``N``);
3. Fourier -> irreps: ``z_lm = (1 / 4 pi) int_0^pi int_0^2pi F Y_lm sin t df dt`` in closed
   form, ``z = Re sum_uv F_uv K^lm_uv`` with ``K^lm_uv = (2 pi / 4 pi) sum_u' S^lm_{u', -v}
   I(u + u')``, ``S`` the coefficients of ``Y_lm sin t`` and ``I(k) = int_0^pi e^{ikt} dt``
   (``pi`` for ``k = 0``, ``2i/k`` for odd ``k``, 0 otherwise). Precomputed, cached.

Every step is linear algebra or an FFT, so it is exact to rounding (tested against the naive
backend on the Gaunt descriptor to 1e-10 in float64) and twice differentiable. What it can run:
the descriptors of :mod:`equikit.tp._function_product` (``tp.gaunt_product``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from equikit.o3 import spherical_harmonics
from equikit.tp._backends import _prepare, register_backend
from equikit.tp._descriptor import TensorProductDescriptor
from equikit.tp._function_product import ProductExecutor, assemble, operands


def _torus_samples(lmax: int, n: int, times_sin: bool) -> np.ndarray:
    """Harmonics ``<= lmax`` at the ``n x n`` torus points, ``(n, n, (lmax+1)^2)``, float64."""
    t = 2 * np.pi * np.arange(n) / n
    tt, ff = np.meshgrid(t, t, indexing="ij")
    pts = np.stack([np.sin(tt) * np.sin(ff), np.cos(tt), np.sin(tt) * np.cos(ff)], -1)
    y = spherical_harmonics(lmax, torch.from_numpy(pts), backend="torch").numpy()
    return y * np.sin(tt)[..., None] if times_sin else y


@functools.lru_cache(maxsize=64)
def sh_to_fourier(lmax: int) -> np.ndarray:
    """``E ((lmax+1)^2, 2 lmax + 1, lmax + 1)`` complex: the coefficients of every harmonic on
    the torus, ``u = -lmax..lmax`` (centred), ``v = 0..lmax``.

    >>> E = sh_to_fourier(1)  # Y_1 = sqrt(3) (x, y, z); y = cos t = (e^{it} + e^{-it}) / 2
    >>> np.round(E[2, :, 0].real / 3**0.5, 12).tolist()
    [0.5, 0.0, 0.5]
    """
    n = 2 * lmax + 1
    c = np.fft.fft2(_torus_samples(lmax, n, False), axes=(0, 1)) / n**2
    c = np.fft.fftshift(c, axes=(0, 1))  # centred u, v in [-lmax, lmax]
    c[np.abs(c) < 1e-15] = 0
    return np.ascontiguousarray(c[:, lmax:, :].transpose(2, 0, 1))


@functools.lru_cache(maxsize=64)
def fourier_to_sh(lmax_out: int, n: int) -> np.ndarray:
    """``K ((lmax_out+1)^2, n, lmax_out + 1)`` complex with ``z_lm = Re sum_{u, v} F_uv K_uv``
    over the full spectrum of a real ``F`` given on ``u`` in FFT order (``n`` points) and
    ``v = 0..lmax_out``, the ``v > 0`` columns already doubled (they stand for ``-v`` too)."""
    m = 2 * (lmax_out + 1) + 1
    s = np.fft.fftshift(np.fft.fft2(_torus_samples(lmax_out, m, True), axes=(0, 1)) / m**2, axes=(0, 1))
    half = lmax_out + 1  # s[u' + half, v' + half, lm] for u', v' in [-half, half]
    u = np.fft.fftfreq(n, 1 / n).astype(np.int64)  # FFT order
    up = np.arange(-half, half + 1)
    k = u[:, None] + up[None, :]
    integral = np.where(k == 0, np.pi, np.where(k % 2 == 1, 2j / np.where(k == 0, 1, k), 0))
    out = np.zeros(((lmax_out + 1) ** 2, n, lmax_out + 1), dtype=complex)
    for v in range(lmax_out + 1):
        sv = s[:, half - v, :]  # (u', lm) at v' = -v
        out[:, :, v] = 0.5 * (integral @ sv).T
    out[:, :, 1:] *= 2
    return out


def _as_real_matrix(c: np.ndarray) -> torch.Tensor:
    """``(rows, ...)`` complex -> ``(rows, 2 * prod(...))`` float64 so that ``x @ M`` viewed as
    complex is ``x @ c`` for a real ``x``."""
    return torch.from_numpy(np.stack([c.real, c.imag], -1).reshape(c.shape[0], -1).copy())


@register_backend
class GauntFourierExecutor(ProductExecutor):
    """The Gaunt product by 2D FFT in the Fourier basis of the torus (see the module docs)."""

    name = "gaunt_fourier"

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__(descriptor)
        plan = self.plan
        self.n = 2 * (plan.lmax1 + plan.lmax2) + 1
        self.register_buffer("e1", _as_real_matrix(sh_to_fourier(plan.lmax1)), persistent=False)
        self.register_buffer("e2", _as_real_matrix(sh_to_fourier(plan.lmax2)), persistent=False)
        k = fourier_to_sh(plan.lmax_out, self.n)  # Re(F K) = F.re K.re - F.im K.im
        kr = np.stack([k.real, -k.imag], -1).reshape(k.shape[0], -1).T.copy()
        self.register_buffer("k", torch.from_numpy(kr), persistent=False)

    def _spectrum(self, coeffs: torch.Tensor, e: torch.Tensor, lmax: int) -> torch.Tensor:
        """Half spectrum ``(B, U, n, n // 2 + 1)`` in FFT order from coefficients ``(B, U, (lmax+1)^2)``."""
        f = torch.view_as_complex((coeffs @ e.to(coeffs.dtype)).reshape(*coeffs.shape[:2], 2 * lmax + 1, lmax + 1, 2))
        f = torch.nn.functional.pad(f, (0, self.n // 2 - lmax, 0, self.n - 2 * lmax - 1))
        return torch.roll(f, -lmax, dims=2)

    def forward(self, x1, x2=None, weight=None):
        d, plan, n = self.descriptor, self.plan, self.n
        x1, x2, _, batch, _ = _prepare(d, x1, x2, weight, "tp backend 'gaunt_fourier'")
        a, b = operands(self, plan, x1, x2)
        v1 = torch.fft.irfft2(self._spectrum(a, self.e1, plan.lmax1), s=(n, n), norm="forward")
        v2 = torch.fft.irfft2(self._spectrum(b, self.e2, plan.lmax2), s=(n, n), norm="forward")
        spec = torch.fft.rfft2(v1 * v2, norm="forward")[..., : plan.lmax_out + 1]  # (B, U, n, L3 + 1)
        prod = torch.view_as_real(spec).reshape(*spec.shape[:2], -1) @ self.k.to(a.dtype)
        return assemble(self, plan, prod).reshape(*batch, d.irreps_out.dim)
