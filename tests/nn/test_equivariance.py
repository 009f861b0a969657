"""Every module through the public checker under O(3) (reflections included), float32 and
float64, each with a negative control the checker must flag."""

import pytest
import torch

from equikit import tp
from equikit.check import assert_equivariant, equivariance_error
from equikit.groups.actions import OnKeys
from equikit.nn import BesselBasis, Gate, GaussianBasis, Linear, NormActivation, PolynomialCutoff, TensorProduct
from equikit.o3 import Irreps, IrrepsRep


def _x(irreps, dtype, n=6):
    return torch.randn(n, Irreps(irreps).dim, dtype=dtype)


@pytest.mark.parametrize("backend", ["sparse_cg", "naive"])
@pytest.mark.parametrize("kind", ["fully_connected", "channelwise", "square"])
def test_tensor_product_equivariant(dtype, backend, kind):
    i1, i2 = "2x0e + 2x1o + 1x2e + 1x1e", "0e + 1o + 2e + 0o"
    d = {"fully_connected": tp.fully_connected(i1, i2, "2x0e + 2x0o + 2x1o + 2x1e + 1x2e + 1x2o + 1x3o"),
         "channelwise": tp.channelwise(i1, i2),
         "square": tp.tensor_square(i1, lmax=2)}[kind]
    m = TensorProduct(d, backend=backend, internal_weights=False).to(dtype)
    if d.square:
        x = _x(i1, dtype)
        w = torch.randn(d.weight_numel, dtype=dtype)
        assert_equivariant(lambda a: m(a, None, w), x, IrrepsRep(i1), IrrepsRep(d.irreps_out))
        return
    x = {"x1": _x(i1, dtype), "x2": _x(i2, dtype), "w": torch.randn(6, d.weight_numel, dtype=dtype)}
    act = OnKeys({"x1": IrrepsRep(i1), "x2": IrrepsRep(i2)}, invariant=("w",))
    assert_equivariant(lambda t: m(t["x1"], t["x2"], t["w"]), x, act, IrrepsRep(d.irreps_out))


def test_tensor_product_negative_control(dtype):
    """1o x 1o -> 1e read as 1o: right under rotations, wrong under reflections."""
    m = TensorProduct(tp.fully_connected("2x1o", "2x1o", "2x1e")).to(dtype)
    x = {"x1": _x("2x1o", dtype), "x2": _x("2x1o", dtype)}
    act = OnKeys({"x1": IrrepsRep("2x1o"), "x2": IrrepsRep("2x1o")})
    assert_equivariant(lambda t: m(t["x1"], t["x2"]), x, act, IrrepsRep("2x1e"))
    assert not equivariance_error(lambda t: m(t["x1"], t["x2"]), x, act, IrrepsRep("2x1o")).passed()


def test_linear_equivariant_and_negative_control(dtype):
    i, o = "3x0e + 2x0o + 2x1o + 1x1e + 1x2e", "2x0e + 1x0o + 3x1o + 2x1e + 2x2o"
    lin = Linear(i, o, bias=True).to(dtype)
    with torch.no_grad():
        lin.bias.normal_()
    x = _x(i, dtype)
    assert_equivariant(lin, x, IrrepsRep(i), IrrepsRep(o))
    # negative control: a dense matrix mixing 0e with 0o (same shape, not equivariant)
    mix = torch.randn(2, 2, dtype=dtype)
    assert not equivariance_error(lambda v: v @ mix, _x("0e + 0o", dtype), IrrepsRep("0e + 0o"),
                                  IrrepsRep("0e + 0o")).passed()
    # and the module itself with a bias on a 0o output would break parity
    assert not equivariance_error(lambda v: lin(v)[..., 2:3] + 1.0, x, IrrepsRep(i), IrrepsRep("0o")).passed()


def test_gate_equivariant_and_negative_control(dtype):
    gate = Gate("3x0e + 1x0o", "2x1o + 1x2e + 1x1e", act=torch.tanh)
    x = _x(gate.irreps_in, dtype)
    assert_equivariant(gate, x, IrrepsRep(gate.irreps_in), IrrepsRep(gate.irreps_out))
    # negative control: a gate applied to a vector's components
    v = _x("2x1o", dtype)
    assert not equivariance_error(lambda t: torch.sigmoid(t) * t, v, IrrepsRep("2x1o"), IrrepsRep("2x1o")).passed()
    # and an even activation on 0o scalars is refused at construction
    with pytest.raises(ValueError, match="0o irreps, so `act` must be odd"):
        Gate("1x0o", "1o", act=torch.nn.functional.silu)


def test_norm_activation_equivariant_and_negative_control(dtype):
    irreps = "2x0e + 1x0o + 2x1o + 1x2e"
    m = NormActivation(irreps).to(dtype)
    with torch.no_grad():
        m.bias.normal_()
    x = _x(irreps, dtype)
    assert_equivariant(m, x, IrrepsRep(irreps), IrrepsRep(irreps))
    # negative control: the max-abs component instead of the norm is not invariant
    def bad(t):
        blk = t[..., 3:9].unflatten(-1, (2, 3))
        return (blk * torch.sigmoid(blk.abs().amax(-1, keepdim=True))).flatten(-2)
    assert not equivariance_error(bad, x, IrrepsRep(irreps), IrrepsRep("2x1o")).passed()


@pytest.mark.parametrize("basis", [lambda: BesselBasis(4.0, 6), lambda: GaussianBasis(0.0, 4.0, 8),
                                   lambda: PolynomialCutoff(4.0)])
def test_radial_functions_invariant(dtype, basis):
    f = basis().to(dtype)
    v = torch.randn(10, 3, dtype=dtype)
    assert_equivariant(lambda t: f(t.norm(dim=-1)), v, IrrepsRep("1o"), None)
    # negative control: the x component is not a distance
    assert not equivariance_error(lambda t: f(t[..., 0].abs()), v, IrrepsRep("1o"), None).passed()



def test_linear_frozen_dense_equivariant_and_negative_control(dtype):
    """The dense-matrix path of frozen weights (``Linear.DENSE_LIMIT``) is equivariant; a matrix
    with one entry moved off the block structure is not."""
    i, o = "3x0e + 2x0o + 2x1o + 1x1e + 1x2e", "2x0e + 1x0o + 3x1o + 2x1e + 2x2o"
    lin = Linear(i, o, bias=True).to(dtype).requires_grad_(False)
    lin.bias.normal_()
    x = _x(i, dtype)
    assert lin._frozen_dense(x) is not None  # the dense path is the one checked
    assert_equivariant(lin, x, IrrepsRep(i), IrrepsRep(o))
    m, b = lin.dense(dtype)
    bad = m.clone()
    bad[5, 4] += 0.5  # component m=-1 of a 1o input into component m=0 of a 1o output
    assert float(m[5, 4]) == 0.0
    assert not equivariance_error(lambda v: v @ bad + b, x, IrrepsRep(i), IrrepsRep(o)).passed()
