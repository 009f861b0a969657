import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import SO, O
from equikit.groups.actions import MatrixRep
from equikit.o3 import Irreps, IrrepsRep, irreps_D, random_rotation

IRREPS = "3x0e + 2x1o + 1e + 2x2e + 3o"


def test_homomorphism_and_identity(dtype):
    act = IrrepsRep(IRREPS)
    d = Irreps(IRREPS).dim
    x = torch.randn(5, d, dtype=dtype)
    g, h = O(3).sample(2, generator=1, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    gh = O(3).compose(g, h)
    assert (act(gh, x) - act(g, act(h, x))).abs().max() < tol * 10
    assert (act(O(3).identity(None, dtype=dtype), x) - x).abs().max() < tol
    # norms of each irrep copy are invariant (D orthogonal)
    y = act(g, x)
    assert (y.norm(dim=-1) - x.norm(dim=-1)).abs().max() < tol * 10


def test_vectors_and_pseudovectors(dtype):
    """1o is a plain vector (D = g), 1e a pseudovector (D = det(g) g)."""
    g = O(3).sample(4, generator=2, dtype=dtype)
    v = torch.randn(4, 3, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert (IrrepsRep("1o")(g, v) - MatrixRep(O(3))(g, v)).abs().max() < tol
    det = torch.linalg.det(g)[:, None]
    assert (IrrepsRep("1e")(g, v) - det * MatrixRep(O(3))(g, v)).abs().max() < tol


def test_batching_rule():
    act = IrrepsRep("2x1o + 2e")
    g = random_rotation(4, generator=3, dtype=torch.float64)
    x = torch.randn(4, 6, 11, dtype=torch.float64)
    out = act(g, x)
    for b in range(4):
        assert torch.allclose(out[b], act(g[b], x[b]), atol=1e-13)
    assert torch.allclose(act(g[0], x), x @ irreps_D("2x1o + 2e", g[0]).T, atol=1e-13)
    with pytest.raises(ValueError, match="batch"):
        act(g, torch.randn(3, 11, dtype=torch.float64))


def test_so3_group_and_checker(dtype):
    x = torch.randn(8, Irreps(IRREPS).dim, dtype=dtype)
    lin = torch.randn(Irreps(IRREPS).dim, Irreps(IRREPS).dim, dtype=dtype)

    def norms(v):  # invariant: the norm of each irrep copy
        return torch.stack([v[..., s].norm(dim=-1) for s in Irreps(IRREPS).slices()], -1)

    assert_equivariant(norms, x, IrrepsRep(IRREPS), None)
    assert_equivariant(lambda v: v * 2.0, x, IrrepsRep(IRREPS, SO(3)), IrrepsRep(IRREPS, SO(3)))
    # negative control: a generic linear map is not equivariant
    bad = equivariance_error(lambda v: v @ lin, x, IrrepsRep(IRREPS), IrrepsRep(IRREPS))
    assert not bad.passed()
    # 1e and 1o differ only under reflections: identity 1o -> 1e is SO(3)- but not O(3)-equivariant
    v = torch.randn(8, 3, dtype=dtype)
    assert_equivariant(lambda t: t, v, IrrepsRep("1o", SO(3)), IrrepsRep("1e", SO(3)))
    assert not equivariance_error(lambda t: t, v, IrrepsRep("1o"), IrrepsRep("1e")).passed()


def test_bad_input():
    with pytest.raises(ValueError, match=r"IrrepsRep: features must have shape \(\.\.\., 4\)"):
        IrrepsRep("0e+1o")(torch.eye(3), torch.randn(2, 5))
    with pytest.raises(ValueError, match="O\\(3\\) or SO\\(3\\)"):
        IrrepsRep("1o", SO(2))
    with pytest.raises(ValueError, match="Irreps"):
        IrrepsRep("1x")
    with pytest.raises(ValueError, match=r"determinant \+1"):
        IrrepsRep("1o", SO(3))(-torch.eye(3), torch.randn(3))
