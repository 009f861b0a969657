import math
import time
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.check import assert_equivariant, equivariance_error
from equikit.o3 import (
    IrrepsRep,
    clebsch_gordan,
    clebsch_gordan_table,
    count_nonzero,
    gaunt,
    random_rotation,
    real_from_complex,
    sphere_grid,
    spherical_harmonics,
    wigner_D,
)
from equikit.o3._cg import clear_caches

e3nn_o3 = pytest.importorskip("e3nn.o3")
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}

triples = st.tuples(st.integers(0, 6), st.integers(0, 6)).flatmap(
    lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(abs(t[0] - t[1]), t[0] + t[1]))
)


def intertwining_error(C, l1, l2, l3, R):
    D1, D2, D3 = (wigner_D(l, R) for l in (l1, l2, l3))
    return (torch.einsum("ijk,ia,jb,kc->abc", C, D1, D2, D3) - C).abs().max().item()


@given(triples, st.integers(0, 100))
@settings(max_examples=25)
def test_intertwines(t, seed):
    R = random_rotation(1, generator=seed, dtype=torch.float64)[0]
    C = clebsch_gordan(*t, dtype=torch.float64)
    assert intertwining_error(C, *t, R) < 1e-13
    # orthogonal coupling: sum_ab C_abc C_abc' = delta
    gram = torch.einsum("abc,abd->cd", C, C)
    assert (gram - torch.eye(2 * t[2] + 1, dtype=torch.float64)).abs().max() < 1e-13


@pytest.mark.parametrize("t", [(12, 12, 12), (12, 11, 5), (6, 6, 12), (12, 12, 0), (9, 12, 21)])
def test_intertwines_high_l(dtype, t):
    R = random_rotation(1, generator=7, dtype=dtype)[0]
    C = clebsch_gordan(*t, dtype=dtype)
    assert intertwining_error(C, *t, R) < RTOL[dtype] * 10


def _racah_exact(j1, m1, j2, m2, J, M):
    """Condon-Shortley CG squared-sign form in exact rational arithmetic (test oracle)."""
    if m1 + m2 != M or abs(M) > J:
        return 0.0
    f = math.factorial
    pre = (
        Fraction((2 * J + 1) * f(J + j1 - j2) * f(J - j1 + j2) * f(j1 + j2 - J), f(j1 + j2 + J + 1))
        * f(J + M)
        * f(J - M)
        * f(j1 - m1)
        * f(j1 + m1)
        * f(j2 - m2)
        * f(j2 + m2)
    )
    s = Fraction(0)
    for k in range(0, j1 + j2 - J + 1):
        args = [k, j1 + j2 - J - k, j1 - m1 - k, j2 + m2 - k, J - j2 + m1 + k, J - j1 - m2 + k]
        if min(args) < 0:
            continue
        den = 1
        for a in args:
            den *= f(a)
        s += Fraction((-1) ** k, den)
    return float(s) * math.sqrt(pre)


@pytest.mark.parametrize("t", [(1, 1, 1), (2, 3, 4), (12, 12, 12), (12, 10, 7)])
def test_against_exact_racah(t):
    import numpy as np

    l1, l2, l3 = t
    c = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            if abs(m1 + m2) <= l3:
                c[m1 + l1, m2 + l2, m1 + m2 + l3] = _racah_exact(l1, m1, l2, m2, l3, m1 + m2)
    u = [real_from_complex(l) for l in t]
    r = np.einsum("ai,bj,ck,ijk->abc", u[0], u[1], u[2].conj(), c)
    r = r.real if sum(t) % 2 == 0 else r.imag
    assert np.abs(clebsch_gordan(*t, dtype=torch.float64).numpy() - r).max() < 1e-13


@given(triples)
@settings(max_examples=25)
def test_matches_e3nn_wigner_3j(t):
    """e3nn's wigner_3j = sign * C / sqrt(2 l3 + 1), one sign per triple."""
    C = clebsch_gordan(*t, dtype=torch.float64) / math.sqrt(2 * t[2] + 1)
    W = e3nn_o3.wigner_3j(*t, dtype=torch.float64)
    sign = torch.sign((C * W).sum())
    assert (W - sign * C).abs().max() < 1e-12
    assert count_nonzero(*t) == int((W.abs() > 1e-12).sum())


def test_zero_outside_triangle():
    assert not clebsch_gordan(1, 1, 3).any()
    assert not gaunt(1, 1, 1).any()  # odd l1 + l2 + l3
    assert count_nonzero(2, 2, 5) == 0


@pytest.mark.parametrize("t", [(1, 1, 2), (2, 2, 2), (3, 4, 5), (6, 6, 8), (2, 3, 1)])
def test_gaunt_is_integral_of_three_harmonics(dtype, t):
    """G_abc = int Y_a Y_b Y_c by exact quadrature (degree l1 + l2 + l3)."""
    g = sphere_grid(sum(t) // 2 + 1, dtype=dtype)
    y = spherical_harmonics(max(t), g.points, normalization="integral")
    ya, yb, yc = (y[..., l * l : (l + 1) ** 2] for l in t)
    q = torch.einsum("tpi,tpj,tpk,tp->ijk", ya, yb, yc, g.weights)
    assert (gaunt(*t, dtype=dtype) - q).abs().max() < RTOL[dtype] * 10
    for norm, f in [("component", math.sqrt(4 * math.pi))]:
        assert (gaunt(*t, normalization=norm, dtype=dtype) - q * f**3).abs().max() < 1e-4


@given(triples)
@settings(max_examples=20)
def test_gaunt_cg_relation(t):
    l1, l2, l3 = t
    if sum(t) % 2:
        return
    cg000 = _racah_exact(l1, 0, l2, 0, l3, 0)
    f = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) / (4 * math.pi * (2 * l3 + 1))) * cg000
    G = gaunt(*t, dtype=torch.float64)
    assert (G - f * clebsch_gordan(*t, dtype=torch.float64)).abs().max() < 1e-13


def test_coupling_is_equivariant_through_checker(dtype):
    """x (l1, p1), y (l2, p2) -> z (l3, p1 p2), including the odd path 1o x 1o -> 1e."""
    for (l1, p1), (l2, p2), l3 in [((1, -1), (1, -1), 1), ((2, 1), (1, -1), 3), ((3, -1), (2, -1), 2)]:
        C = clebsch_gordan(l1, l2, l3, dtype=dtype)
        d1 = 2 * l1 + 1
        irreps_in = f"{l1}{'e' if p1 == 1 else 'o'}+{l2}{'e' if p2 == 1 else 'o'}"
        irreps_out = f"{l3}{'e' if p1 * p2 == 1 else 'o'}"
        f = lambda v, C=C, d1=d1: torch.einsum("ijk,...i,...j->...k", C, v[..., :d1], v[..., d1:])  # noqa: E731
        x = torch.randn(10, d1 + 2 * l2 + 1, dtype=dtype)
        assert_equivariant(f, x, IrrepsRep(irreps_in), IrrepsRep(irreps_out))
        wrong = f"{l3}{'o' if p1 * p2 == 1 else 'e'}"
        assert not equivariance_error(f, x, IrrepsRep(irreps_in), IrrepsRep(wrong)).passed()


def test_cached_and_fast():
    clear_caches()
    t0 = time.perf_counter()
    table = clebsch_gordan_table(8, dtype=torch.float64)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = clebsch_gordan_table(8, dtype=torch.float64)
    warm = time.perf_counter() - t0
    assert len(table) == sum(1 for a in range(9) for b in range(9) for c in range(abs(a - b), min(a + b, 8) + 1))
    assert all(torch.equal(table[k], again[k]) for k in table)
    assert cold < 2.0 and warm < cold
    table[(1, 1, 1)].zero_()  # callers get copies: mutating one does not poison the cache
    assert clebsch_gordan(1, 1, 1).any()


def test_bad_input():
    with pytest.raises(ValueError, match=r"clebsch_gordan: `l2` must be >= 0, got -1"):
        clebsch_gordan(1, -1, 1)
    with pytest.raises(TypeError, match=r"gaunt: `l1` must be an int"):
        gaunt(1.0, 1, 1)
    with pytest.raises(ValueError, match="normalization"):
        gaunt(1, 1, 2, normalization="unit")
