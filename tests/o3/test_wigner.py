import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.o3 import (
    Irreps,
    irrep_D,
    irreps_D,
    random_rotation,
    spherical_harmonics,
    wigner_D,
)

e3nn_o3 = pytest.importorskip("e3nn.o3")
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def e3nn_D(irreps, g):
    """e3nn's D in float64 (it builds float intermediates in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return e3nn_o3.Irreps(irreps).D_from_matrix(g.double())
    finally:
        torch.set_default_dtype(old)


def err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("l", [0, 1, 2, 3, 6, 12])
def test_orthogonal_and_homomorphism(dtype, l):
    R1 = random_rotation(8, generator=1, dtype=dtype)
    R2 = random_rotation(8, generator=2, dtype=dtype)
    D1, D2 = wigner_D(l, R1), wigner_D(l, R2)
    eye = torch.eye(2 * l + 1, dtype=dtype)
    tol = RTOL[dtype] * 10
    assert err(D1 @ D1.transpose(-1, -2), eye.expand_as(D1)) < tol
    assert err(wigner_D(l, R1 @ R2), D1 @ D2) < tol
    assert err(wigner_D(l, R1.transpose(-1, -2)), D1.transpose(-1, -2)) < tol
    assert err(wigner_D(l, torch.eye(3, dtype=dtype)), eye) < tol


def test_D1_is_R(dtype):
    R = random_rotation(5, generator=0, dtype=dtype)
    assert err(wigner_D(1, R), R) < RTOL[dtype]


@pytest.mark.parametrize("l", range(13))
def test_rotates_harmonics_to_1e12(l):
    """Y(R x) = D(R) Y(x) to 1e-12 (relative to max |Y|) in float64, for l <= 12."""
    R = random_rotation(16, generator=l, dtype=torch.float64)
    x = torch.randn(16, 64, 3, dtype=torch.float64)
    lhs = spherical_harmonics([l], torch.einsum("bij,bnj->bni", R, x))
    rhs = torch.einsum("bij,bnj->bni", wigner_D(l, R), spherical_harmonics([l], x))
    assert err(lhs, rhs) / lhs.abs().max().item() < 1e-12


def test_rotates_harmonics_float32():
    R = random_rotation(16, generator=0, dtype=torch.float32)
    x = torch.randn(16, 64, 3, dtype=torch.float32)
    lhs = spherical_harmonics(6, torch.einsum("bij,bnj->bni", R, x))
    rhs = torch.einsum("bij,bnj->bni", irreps_D(Irreps.spherical_harmonics(6), R), spherical_harmonics(6, x))
    assert err(lhs, rhs) / lhs.abs().max().item() < 1e-5


@pytest.mark.parametrize("l", [1, 2, 4, 7])
def test_matches_e3nn(dtype, l):
    R = random_rotation(4, generator=3, dtype=torch.float64)
    ref = e3nn_D(f"{l}e", R)
    assert err(wigner_D(l, R.to(dtype)).double(), ref) < RTOL[dtype] * 10


@given(st.integers(0, 6), st.sampled_from([1, -1]), st.integers(0, 1000))
@settings(max_examples=20)
def test_parity(l, p, seed):
    g = random_rotation(4, generator=seed, improper=True, dtype=torch.float64)
    det = torch.linalg.det(g)
    R = g * det[:, None, None]
    expected = wigner_D(l, R) * torch.where(det < 0, float(p), 1.0)[:, None, None]
    assert err(irrep_D((l, p), g), expected) < 1e-13
    # e3nn's O(3) irreps follow the same rule
    ref = e3nn_D([(1, (l, p))], g)
    assert err(irrep_D((l, p), g), ref) < 1e-12


def test_irreps_D_block_diagonal():
    irreps = Irreps("2x0e + 1x1o + 2x2o")
    g = random_rotation(3, generator=4, improper=True, dtype=torch.float64)
    D = irreps_D(irreps, g)
    assert D.shape == (3, irreps.dim, irreps.dim)
    assert err(D, e3nn_D(irreps.to_e3nn(), g)) < 1e-12
    g2 = random_rotation(3, generator=5, improper=True, dtype=torch.float64)
    assert err(irreps_D(irreps, g @ g2), D @ irreps_D(irreps, g2)) < 1e-12


def test_differentiable_in_R():
    q = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    from equikit.o3 import quaternion_to_matrix

    assert torch.autograd.gradcheck(lambda q: wigner_D(2, quaternion_to_matrix(q)), (q,))


def test_bad_input():
    with pytest.raises(ValueError, match=r"wigner_D: `R` must have determinant \+1"):
        wigner_D(2, -torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"wigner_D: `R` must be orthogonal"):
        wigner_D(2, 2 * torch.eye(3))
    with pytest.raises(ValueError, match=r"wigner_D: `l` must be >= 0, got -1"):
        wigner_D(-1, torch.eye(3))
    with pytest.raises(ValueError, match="parity"):
        irrep_D((1, 2), torch.eye(3))
