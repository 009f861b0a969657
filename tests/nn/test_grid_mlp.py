"""SphereGridMLP (Facet-style grid mixing): exact O(3) equivariance with a polynomial
activation on the exact grid, error falling with the resolution for SiLU, negative controls."""

import itertools

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.nn import SphereGridMLP
from equikit.o3 import Irreps, IrrepsRep, spherical_harmonics
from equikit.tp import gaunt_product, make_executor

I, O = "4x0e + 4x1o + 4x2e", "3x0e + 3x1o + 3x2e"


def test_polynomial_activation_is_exactly_equivariant(dtype):
    """act = t^2, one hidden layer: band limit 2 L_in, the default grid is exact."""
    m = SphereGridMLP(I, O, hidden=(16,), act=torch.square).to(dtype)
    x = torch.randn(6, Irreps(I).dim, dtype=dtype)
    assert_equivariant(m, x, IrrepsRep(I), IrrepsRep(O))  # default tolerances: 1e-10 / 1e-5 relative
    # negative control: the same weights on a grid one node too coarse (aliasing) are not equivariant
    n_theta, n_phi = m.resolution
    coarse = SphereGridMLP(I, O, hidden=(16,), act=torch.square, resolution=(n_theta - 1, n_phi)).to(dtype)
    coarse.load_state_dict(m.state_dict())
    assert not equivariance_error(coarse, x, IrrepsRep(I), IrrepsRep(O)).passed()


def test_negative_control_direction_dependent_term(dtype):
    """A field that depends on the grid direction (here + x-coordinate) breaks rotations."""
    m = SphereGridMLP(I, O, hidden=(16,), act=torch.square).to(dtype)
    pts_x = torch.linspace(-1, 1, m.y.shape[1], dtype=dtype)[:, None]

    def bad(x):
        v = m.mlp(m.to_grid(x) + pts_x)
        z = (v.transpose(1, 2) @ m.proj.to(dtype)).reshape(v.shape[0], -1)
        return z.index_select(1, m.idx_out)

    x = torch.randn(6, Irreps(I).dim, dtype=dtype)
    assert not equivariance_error(bad, x, IrrepsRep(I), IrrepsRep(O)).passed()


def test_silu_error_decreases_with_resolution():
    """Non-polynomial activation: equivariance only up to quadrature (aliasing) error, which
    falls as the grid is refined (measured numbers in docs/tp.md)."""
    x = torch.randn(6, Irreps(I).dim, dtype=torch.float64)
    ref = SphereGridMLP(I, O, hidden=(16,)).double()
    errors = []
    for res in [(4, 7), (8, 15), (16, 31), (24, 47)]:
        m = SphereGridMLP(I, O, hidden=(16,), resolution=res).double()
        m.load_state_dict(ref.state_dict())
        errors.append(equivariance_error(m, x, IrrepsRep(I), IrrepsRep(O), n_samples=8).rel_max)
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-4 * errors[0] and errors[0] > 1e-3, errors


def test_identity_mlp_with_square_is_the_gaunt_square():
    """Independent check of the plumbing: one channel, no hidden layer is a linear map of the
    function values; with a hand-built square `act` path (hidden=(1,), weights 1, bias 0) the
    output is the projection of f^2, i.e. the Gaunt product of x with itself."""
    i = "1x0e + 1x1o + 1x2e"
    m = SphereGridMLP(i, "1x0e + 1x1o + 1x2e + 1x3o + 1x4e", hidden=(1,), act=torch.square).double()
    with torch.no_grad():
        for layer in m.layers:
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    x = torch.randn(3, 9, dtype=torch.float64)
    d = gaunt_product(i, i)
    want = make_executor(d, "naive")(x, x)
    assert torch.allclose(m(x), want, rtol=1e-10, atol=1e-12)
    # and pointwise: f(x)^2 at random points
    pts = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    f = spherical_harmonics(2, pts, backend="torch") @ x[0]
    assert torch.allclose(spherical_harmonics(4, pts, backend="torch") @ m(x)[0], f**2, rtol=1e-10, atol=1e-12)


def test_gradients_and_shapes():
    m = SphereGridMLP("2x0e + 2x1o", "2x0e + 2x1o", hidden=(4,)).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert m(x).shape == (2, 3, 8)
    assert torch.autograd.gradcheck(m, (x,))
    assert torch.autograd.gradgradcheck(m, (x,))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"SphereGridMLP: `irreps_in` must be C x .*natural parity.*got '2x1e'"):
        SphereGridMLP("2x1e", "2x0e")
    with pytest.raises(ValueError, match="one multiplicity"):
        SphereGridMLP("2x0e + 3x1o", "2x0e")
    with pytest.raises(TypeError, match="`resolution` must be"):
        SphereGridMLP("2x0e", "2x0e", resolution=4)
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., 2\)"):
        SphereGridMLP("2x0e", "2x0e")(torch.randn(3, 5))
