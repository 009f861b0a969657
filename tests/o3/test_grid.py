import math

import pytest
import torch

from equikit.o3 import (
    default_resolution,
    from_grid,
    gaunt,
    random_rotation,
    sphere_grid,
    spherical_harmonics,
    to_grid,
    wigner_D,
)

RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}
NORMS = ["integral", "component", "norm"]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("lmax", [0, 3, 12])
def test_round_trip_exact_at_minimal_resolution(dtype, normalization, lmax):
    c = torch.randn(4, (lmax + 1) ** 2, dtype=dtype)
    values = to_grid(c, lmax, normalization=normalization)
    assert values.shape == (4, *default_resolution(lmax))
    assert rel(from_grid(values, lmax, normalization=normalization), c) < RTOL[dtype] * 10


def test_grid_values_are_the_harmonic_expansion(dtype):
    lmax = 5
    c = torch.randn(2, 36, dtype=dtype)
    g = sphere_grid(lmax, (9, 14), dtype=dtype)
    assert abs(g.weights.sum().item() - 4 * math.pi) < RTOL[dtype] * 10
    assert rel(g.points.norm(dim=-1), torch.ones(9, 14, dtype=dtype)) < RTOL[dtype]
    direct = spherical_harmonics(lmax, g.points) @ c.T  # (9, 14, 2)
    assert rel(to_grid(c, lmax, (9, 14)), direct.permute(2, 0, 1)) < RTOL[dtype] * 10
    # finer grids are exact too, and from_grid of a finer grid still recovers c
    assert rel(from_grid(to_grid(c, lmax, (9, 14)), lmax), c) < RTOL[dtype] * 10


def test_rotating_coefficients_rotates_the_function(dtype):
    """f(R^T x) has coefficients D(R) c: equivariance of to_grid/from_grid."""
    lmax = 6
    R = random_rotation(1, generator=0, dtype=dtype)[0]
    c = torch.randn((lmax + 1) ** 2, dtype=dtype)
    D = torch.block_diag(*(wigner_D(l, R) for l in range(lmax + 1)))
    g = sphere_grid(lmax, dtype=dtype)
    rotated_values = spherical_harmonics(lmax, g.points @ R) @ c  # f(R^T x)
    assert rel(from_grid(rotated_values, lmax), D @ c) < RTOL[dtype] * 10


def test_pointwise_product_is_the_gaunt_product():
    """Product of two band-L functions on a (2L+1, 4L+1) grid, projected to band 2L, equals
    the Gaunt contraction: the sphere-grid tensor product is exact at that resolution."""
    L = 3
    a = torch.randn(16, dtype=torch.float64)
    b = torch.randn(16, dtype=torch.float64)
    res = default_resolution(2 * L)
    prod = to_grid(a, L, res, "integral") * to_grid(b, L, res, "integral")
    c = from_grid(prod, 2 * L, "integral")
    ref = torch.zeros(49, dtype=torch.float64)
    for l1 in range(L + 1):
        for l2 in range(L + 1):
            for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                G = gaunt(l1, l2, l3, dtype=torch.float64)
                ref[l3 * l3 : (l3 + 1) ** 2] += torch.einsum(
                    "ijk,i,j->k", G, a[l1 * l1 : (l1 + 1) ** 2], b[l2 * l2 : (l2 + 1) ** 2]
                )
    assert rel(c, ref) < 1e-12


def test_too_coarse_is_an_error():
    with pytest.raises(ValueError, match=r"to_grid: resolution \(3, 9\) is too coarse for lmax=4"):
        to_grid(torch.zeros(25), 4, (3, 9))
    with pytest.raises(ValueError, match=r"from_grid: resolution .* too coarse"):
        from_grid(torch.zeros(4, 8), 4)
    with pytest.raises(ValueError, match=r"to_grid: `coeffs` must have shape \(\.\.\., 25\)"):
        to_grid(torch.zeros(24), 4)
    with pytest.raises(ValueError, match=r"sphere_grid: `lmax` must be >= 0"):
        sphere_grid(-1)
