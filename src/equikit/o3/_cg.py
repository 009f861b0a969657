r"""Clebsch-Gordan and Gaunt coefficients in the real equikit basis.

Clebsch-Gordan: ``C^{l1 l2 l3}`` is the ``(2l1+1, 2l2+1, 2l3+1)`` real tensor that couples
``l1 x l2 -> l3`` equivariantly:

.. math:: \sum_{ijk} C_{ijk}\, D_{l1}(R)_{ia} D_{l2}(R)_{jb} D_{l3}(R)_{kc} = C_{abc}

normalised so that the coupling is orthogonal, ``sum_ab C_abc C_abc' = delta_cc'``
(``||C||_F^2 = 2 l3 + 1``; e3nn's ``wigner_3j`` is ``+-C / sqrt(2 l3 + 1)``). It is zero unless
``|l1 - l2| <= l3 <= l1 + l2``.

Construction: the complex Condon-Shortley coefficients from Racah's closed formula (float64,
vectorised over ``m1, m2``), carried into the real basis by the unitary ``U_l`` with
``Y_real = U_l Y_complex``: ``C = U1 (x) U2 (x) conj(U3) . C_complex``, which is real when
``l1 + l2 + l3`` is even and purely imaginary otherwise (then divided by ``i``). The tensor is
the same in the textbook z-polar basis and in the equikit basis, because the two differ by a
rotation and ``C`` is invariant.

Gaunt: ``G_abc = int Y_{l1,a} Y_{l2,b} Y_{l3,c} dx`` with orthonormal real harmonics;

.. math:: G^{l1 l2 l3} = \sqrt{\frac{(2l1+1)(2l2+1)}{4\pi(2l3+1)}}\,
          \langle l1\,0\,l2\,0 | l3\,0\rangle\, C^{l1 l2 l3}

so Gaunt coefficients vanish for odd ``l1 + l2 + l3`` (they only couple parity-preserving
paths), while Clebsch-Gordan coefficients do not (e.g. the cross product ``1 x 1 -> 1``).

Tables are cached per ``(l1, l2, l3)`` with ``functools.lru_cache``; building every triple up
to ``L = 8`` takes milliseconds (see ``benchmarks/o3_cg.py``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from equikit._utils import check_int, default_dtype

_FACT = np.array([float(math.factorial(n)) for n in range(171)])


def _check_triple(l1, l2, l3, where: str) -> None:
    for name, l in (("l1", l1), ("l2", l2), ("l3", l3)):
        check_int(l, name, where, minimum=0)


def is_coupled(l1: int, l2: int, l3: int) -> bool:
    """Triangle condition ``|l1 - l2| <= l3 <= l1 + l2``."""
    return abs(l1 - l2) <= l3 <= l1 + l2


def _inv_fact(n: np.ndarray) -> np.ndarray:
    out = np.zeros(n.shape)
    ok = n >= 0
    out[ok] = 1.0 / _FACT[n[ok]]
    return out


@functools.cache
def _complex_cg64(l1: int, l2: int, l3: int) -> np.ndarray:
    """Condon-Shortley ``<l1 m1 l2 m2 | l3 m3>`` as an array ``[m1 + l1, m2 + l2, m3 + l3]``."""
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    if not is_coupled(l1, l2, l3):
        return out
    m1 = np.arange(-l1, l1 + 1)[:, None]
    m2 = np.arange(-l2, l2 + 1)[None, :]
    m3 = m1 + m2
    valid = np.abs(m3) <= l3
    m3c = np.clip(m3, -l3, l3)
    pre = (2 * l3 + 1) * _FACT[l3 + l1 - l2] * _FACT[l3 - l1 + l2] * _FACT[l1 + l2 - l3]
    pre /= _FACT[l1 + l2 + l3 + 1]
    pre = np.sqrt(
        pre * _FACT[l3 + m3c] * _FACT[l3 - m3c] * _FACT[l1 - m1] * _FACT[l1 + m1] * _FACT[l2 - m2] * _FACT[l2 + m2]
    )
    k = np.arange(0, l1 + l2 - l3 + 1)[:, None, None]
    terms = (
        (-1.0) ** k
        * _inv_fact(k + 0 * m1)
        * _inv_fact(l1 + l2 - l3 - k + 0 * m1)
        * _inv_fact(l1 - m1 - k)
        * _inv_fact(l2 + m2 - k)
        * _inv_fact(l3 - l2 + m1 + k)
        * _inv_fact(l3 - l1 - m2 + k)
    )
    values = pre * terms.sum(0)
    i1, i2 = np.nonzero(valid)
    out[i1, i2, (m3 + l3)[i1, i2]] = values[i1, i2]
    return out


@functools.cache
def real_from_complex(l: int) -> np.ndarray:
    """Unitary ``U_l`` with ``Y_real = U_l Y_complex`` (rows ``m = -l..l`` real, columns
    ``m = -l..l`` complex with the Condon-Shortley phase)."""
    u = np.zeros((2 * l + 1, 2 * l + 1), dtype=complex)
    s = 1 / math.sqrt(2)
    u[l, l] = 1.0
    for m in range(1, l + 1):
        u[l + m, l - m] = s
        u[l + m, l + m] = s * (-1) ** m
        u[l - m, l - m] = 1j * s
        u[l - m, l + m] = -1j * s * (-1) ** m
    return u


@functools.cache
def _real_cg64(l1: int, l2: int, l3: int) -> np.ndarray:
    c = _complex_cg64(l1, l2, l3)
    if not is_coupled(l1, l2, l3):
        return c
    u1, u2, u3 = real_from_complex(l1), real_from_complex(l2), real_from_complex(l3)
    r = np.einsum("ai,bj,ck,ijk->abc", u1, u2, u3.conj(), c, optimize=True)
    r = r.real if (l1 + l2 + l3) % 2 == 0 else r.imag
    r[np.abs(r) < 1e-14] = 0.0
    r.setflags(write=False)
    return r


def clebsch_gordan(
    l1: int,
    l2: int,
    l3: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Real Clebsch-Gordan tensor ``(2l1+1, 2l2+1, 2l3+1)`` coupling ``l1 x l2 -> l3``.

    ``z_c = sum_ab C_abc x_a y_b`` is equivariant: ``x -> D_l1 x, y -> D_l2 y`` gives
    ``z -> D_l3 z``. All zeros when the triangle condition fails. Cached.

    >>> C = clebsch_gordan(1, 1, 0, dtype=torch.float64)  # minus the dot product / sqrt(3)
    >>> torch.allclose(C[..., 0], -torch.eye(3, dtype=torch.float64) / 3**0.5)
    True
    """
    _check_triple(l1, l2, l3, "clebsch_gordan")
    return torch.tensor(_real_cg64(l1, l2, l3), dtype=default_dtype(dtype), device=device)


@functools.cache
def _gaunt64(l1: int, l2: int, l3: int) -> np.ndarray:
    if (l1 + l2 + l3) % 2 or not is_coupled(l1, l2, l3):
        return np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    cg000 = _complex_cg64(l1, l2, l3)[l1, l2, l3]
    f = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) / (4 * math.pi * (2 * l3 + 1))) * cg000
    out = f * _real_cg64(l1, l2, l3)
    out.setflags(write=False)
    return out


def gaunt(
    l1: int,
    l2: int,
    l3: int,
    *,
    normalization: str = "integral",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Real Gaunt coefficients ``G_abc = int Y_{l1,a} Y_{l2,b} Y_{l3,c} dx``, shape
    ``(2l1+1, 2l2+1, 2l3+1)``, for harmonics in ``normalization`` (default orthonormal).

    They expand products of harmonics: ``Y_{l1,a} Y_{l2,b} = sum_{l3,c} G_abc Y_{l3,c} / n_l3``
    with ``n_l = int (Y_l^c)^2``. Zero when ``l1 + l2 + l3`` is odd.

    >>> G = gaunt(1, 1, 0, dtype=torch.float64)
    >>> round(float(G[0, 0, 0]) * (4 * math.pi) ** 0.5, 12)  # int Y1 Y1 Y0 = 1 / sqrt(4 pi)
    1.0
    """
    _check_triple(l1, l2, l3, "gaunt")
    from equikit.o3._sh import _NORMALIZATIONS, normalization_factors

    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"gaunt: `normalization` must be one of {_NORMALIZATIONS}, got {normalization!r}")
    f = normalization_factors(max(l1, l2, l3), normalization)
    scale = f[l1] * f[l2] * f[l3]
    return torch.tensor(_gaunt64(l1, l2, l3) * scale, dtype=default_dtype(dtype), device=device)


def count_nonzero(l1: int, l2: int, l3: int, kind: str = "clebsch_gordan") -> int:
    """Number of nonzero entries of the real Clebsch-Gordan (or ``kind="gaunt"``) tensor;
    compare with the dense size ``(2l1+1)(2l2+1)(2l3+1)``.

    >>> count_nonzero(1, 1, 1), 27
    (6, 27)
    """
    _check_triple(l1, l2, l3, "count_nonzero")
    if kind not in ("clebsch_gordan", "gaunt"):
        raise ValueError(f"count_nonzero: `kind` must be 'clebsch_gordan' or 'gaunt', got {kind!r}")
    table = _real_cg64(l1, l2, l3) if kind == "clebsch_gordan" else _gaunt64(l1, l2, l3)
    return int(np.count_nonzero(table))


def clebsch_gordan_table(
    lmax: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict[tuple[int, int, int], torch.Tensor]:
    """Every coupled triple with ``l1, l2, l3 <= lmax``: ``{(l1, l2, l3): C}`` (cached
    building blocks; the dict itself is new each call).
    """
    check_int(lmax, "lmax", "clebsch_gordan_table", minimum=0)
    return {
        (a, b, c): clebsch_gordan(a, b, c, dtype=dtype, device=device)
        for a in range(lmax + 1)
        for b in range(lmax + 1)
        for c in range(abs(a - b), min(a + b, lmax) + 1)
    }


def clear_caches() -> None:
    """Forget every cached coefficient table (for benchmarking cold construction)."""
    for f in (_complex_cg64, _real_cg64, _gaunt64, real_from_complex):
        f.cache_clear()
