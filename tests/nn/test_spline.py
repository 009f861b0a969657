"""SplineRadial: exact cubic reproduction, C2 at the knots, envelope at the cutoff, autograd to
second order, invariance through the checker, out-of-range behaviour."""

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.nn import SplineRadial
from equikit.nn._spline import bspline_weights
from equikit.o3 import IrrepsRep


def _design(cutoff, n, r):
    """The spline is linear in its coefficients: with identity coefficients the outputs are the
    basis functions, the design matrix ``(len(r), n + 3)``."""
    f = SplineRadial(cutoff, n + 3, n, envelope=False).double()
    with torch.no_grad():
        f.coefficients.copy_(torch.eye(n + 3, dtype=torch.float64))
    return f(r)


def test_bspline_weights_partition_of_unity():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    b = bspline_weights(u)
    torch.testing.assert_close(b.sum(-1), torch.ones_like(u), rtol=1e-14, atol=1e-14)
    assert (b >= 0).all()


def test_reproduces_a_cubic_exactly():
    cutoff, n = 4.0, 7
    p = lambda r: 0.3 - 1.2 * r + 0.7 * r**2 - 0.11 * r**3  # noqa: E731
    r_fit = torch.linspace(0, cutoff, 60, dtype=torch.float64)
    coef = torch.linalg.lstsq(_design(cutoff, n, r_fit), p(r_fit)[:, None]).solution
    f = SplineRadial(cutoff, 1, n, envelope=False).double()
    with torch.no_grad():
        f.coefficients.copy_(coef)
    r = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * cutoff
    torch.testing.assert_close(f(r)[:, 0], p(r), rtol=1e-10, atol=1e-10)
    # negative control: a quartic is not reproduced
    q = lambda r: r**4  # noqa: E731
    coef4 = torch.linalg.lstsq(_design(cutoff, n, r_fit), q(r_fit)[:, None]).solution
    with torch.no_grad():
        f.coefficients.copy_(coef4)
    assert (f(r)[:, 0] - q(r)).abs().max() > 1e-4


def _derivatives(f, r):
    r = r.clone().requires_grad_(True)
    y = f(r).sum()
    (d1,) = torch.autograd.grad(y, r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r, create_graph=True)
    (d3,) = torch.autograd.grad(d2.sum(), r)
    return f(r.detach())[..., 0], d1, d2, d3


@pytest.mark.parametrize("envelope", [False, True])
def test_c2_at_the_knots(envelope):
    cutoff, n = 3.0, 6
    torch.manual_seed(0)
    f = SplineRadial(cutoff, 1, n, envelope=envelope).double()
    knots = torch.arange(1, n, dtype=torch.float64) * cutoff / n
    eps = 1e-7
    lo = _derivatives(f, knots - eps)
    hi = _derivatives(f, knots + eps)
    for k, (a, b) in enumerate(zip(lo[:3], hi[:3])):  # value, f', f'' continuous (up to O(eps))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"derivative {k}")
    if not envelope:  # the third derivative jumps: a spline, not one polynomial (negative control)
        assert (lo[3] - hi[3]).abs().max() > 1e-3


def test_envelope_vanishes_to_second_order_at_cutoff():
    f = SplineRadial(2.5, 4, 5).double()
    r = torch.tensor([2.5 - 1e-9, 2.5, 2.6, 10.0], dtype=torch.float64, requires_grad=True)
    y = f(r)
    assert y[1:].abs().max() == 0 and y[0].abs().max() < 1e-12
    (d1,) = torch.autograd.grad(y.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    assert d1.abs().max() < 1e-6 and d2[1:].abs().max() < 1e-6


def test_gradcheck_and_gradgradcheck():
    torch.manual_seed(0)
    f = SplineRadial(3.0, 2, 5).double()
    r = torch.tensor([0.05, 0.2, 0.9, 1.5, 2.3, 2.99], dtype=torch.float64, requires_grad=True)
    c = f.coefficients
    g = lambda rr, cc: torch.func.functional_call(f, {"coefficients": cc}, (rr,))  # noqa: E731
    assert torch.autograd.gradcheck(g, (r, c))
    assert torch.autograd.gradgradcheck(g, (r, c))


def test_invariant_through_checker(dtype):
    f = SplineRadial(4.0, 8, 10).to(dtype)
    v = torch.randn(20, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    assert_equivariant(lambda t: f(t.norm(dim=-1)), v, IrrepsRep("1o"), None)
    assert not equivariance_error(lambda t: f(t[..., 0].abs()), v, IrrepsRep("1o"), None).passed()


def test_shapes_dtype_and_errors():
    f = SplineRadial(5.0, 3, 4)
    assert f(torch.rand(2, 7) * 5).shape == (2, 7, 3)
    assert f(torch.zeros(0)).shape == (0, 3)
    with pytest.raises(ValueError, match="must be >= 0"):
        f(torch.tensor([1.0, -0.1]))
    with pytest.raises(TypeError, match="floating tensor"):
        f(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="`num_intervals` must be >= 1"):
        SplineRadial(5.0, 3, 0)
    with pytest.raises(ValueError, match="`cutoff` must be > 0"):
        SplineRadial(0.0, 3)
