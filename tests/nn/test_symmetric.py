"""nn.SymmetricContraction through the public checker: O(3) with reflections on the irreps axis,
node permutations, float32 and float64, and negative controls that must fail."""

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import NodePermutation
from equikit.groups.actions import OnKeys
from equikit.nn import SymmetricContraction
from equikit.o3 import IrrepsRep

IRREPS = "0e + 1o + 2e"
N, C, E = 7, 3, 3


def _module(dtype, backend="recursive", irreps_out="0e + 1o + 2e + 1e"):
    torch.manual_seed(0)
    return SymmetricContraction(IRREPS, irreps_out, correlation=3, num_elements=E, channels=C,
                                backend=backend).to(dtype)


def _data(dtype):
    g = torch.Generator().manual_seed(3)
    return {"x": torch.randn(N, C, 9, generator=g, dtype=dtype), "element": torch.randint(0, E, (N,), generator=g)}


@pytest.mark.parametrize("backend", ["recursive", "monomial", "naive"])
def test_equivariant_under_o3(dtype, backend):
    m = _module(dtype, backend)
    act = OnKeys({"x": IrrepsRep(IRREPS)}, invariant=("element",))
    assert_equivariant(lambda t: m(t["x"], t["element"]), _data(dtype), act, IrrepsRep(m.irreps_out_full))


def test_node_permutation_equivariant(dtype):
    m = _module(dtype)
    act = NodePermutation(N, nodes={"x": -3, "element": -1})
    assert_equivariant(lambda t: m(t["x"], t["element"]), _data(dtype), act, NodePermutation(N, node_dim=-2))


def test_negative_control_perturbed_basis(dtype):
    """One entry of one basis tensor changed: no longer equivariant, and the checker says so."""
    m = _module(dtype, "naive", irreps_out="0e + 1o")
    act = OnKeys({"x": IrrepsRep(IRREPS)}, invariant=("element",))
    f = lambda t: m(t["x"], t["element"])  # noqa: E731
    assert equivariance_error(f, _data(dtype), act, IrrepsRep(m.irreps_out_full)).passed()
    with torch.no_grad():
        m.executor.u1_2[1, 5, 0, 0] += 0.3
    assert not equivariance_error(f, _data(dtype), act, IrrepsRep(m.irreps_out_full)).passed()


def test_negative_control_perturbed_monomial_coefficients(dtype):
    """The monomial executor with one coefficient of its order-2 matrix changed: the checker
    must fail it (the coefficients are what makes the polynomial equivariant)."""
    m = _module(dtype, "monomial", irreps_out="0e + 1o")
    act = OnKeys({"x": IrrepsRep(IRREPS)}, invariant=("element",))
    f = lambda t: m(t["x"], t["element"])  # noqa: E731
    assert equivariance_error(f, _data(dtype), act, IrrepsRep(m.irreps_out_full)).passed()
    with torch.no_grad():
        v = m.executor.v2
        v[v.abs().sum(1).argmax()] += 0.3 * (v.abs().sum(0) > 0)  # the busiest weight row, on every monomial it uses
    assert not equivariance_error(f, _data(dtype), act, IrrepsRep(m.irreps_out_full)).passed()


def test_negative_control_parity(dtype):
    """The 1o output read as 1e is right under rotations, wrong under reflections."""
    m = _module(dtype, irreps_out="1o")
    act = OnKeys({"x": IrrepsRep(IRREPS)}, invariant=("element",))
    f = lambda t: m(t["x"], t["element"])  # noqa: E731
    assert not equivariance_error(f, _data(dtype), act, IrrepsRep(f"{C}x1e")).passed()


def test_one_hot_equals_index_and_init():
    m = _module(torch.float64)
    d = _data(torch.float64)
    onehot = torch.nn.functional.one_hot(d["element"], E).double()
    torch.testing.assert_close(m(d["x"], onehot), m(d["x"], d["element"]), rtol=0, atol=0)
    # MACE's initialisation: N(0, 1) / K per (ir_out, nu) block -> block std ~ 1 / K
    big = SymmetricContraction("0e + 1o + 2e + 3o", "0e", 3, num_elements=10, channels=64)
    for (_, nu), sl in big.descriptor.weight_slices().items():
        k = sl.stop - sl.start
        std = big.weight[:, sl].std().item() * k
        assert 0.85 < std < 1.15, (nu, k, std)


def test_validation_errors():
    m = _module(torch.float64)
    d = _data(torch.float64)
    with pytest.raises(ValueError, match="one-hot"):
        m(d["x"], torch.full((N, E), 1.0 / E, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"one-hot `element` must have shape \({N}, {E}\)"):
        m(d["x"], torch.zeros(N, E + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        m(d["x"], torch.full((N,), 3))
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, 3, 9\)"):
        m(d["x"][:, :2], d["element"])
    with pytest.raises(ValueError, match="`num_elements` must be >= 1"):
        SymmetricContraction(IRREPS, "0e", 2, num_elements=0, channels=2)
    with pytest.raises(ValueError, match="unknown backend"):
        SymmetricContraction(IRREPS, "0e", 2, num_elements=1, channels=2, backend="cuda")


def test_trains_on_forces():
    """A few Adam steps on a force-like target (gradient of the summed invariant output w.r.t.
    x) reduce the loss: the double backward reaches the weights."""
    m = SymmetricContraction(IRREPS, "0e", 3, num_elements=2, channels=2).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, 9, generator=g, dtype=torch.float64, requires_grad=True)
    el = torch.randint(0, 2, (16,), generator=g)
    target = torch.randn(16, 2, 9, generator=g, dtype=torch.float64)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        (f,) = torch.autograd.grad(m(x, el).sum(), x, create_graph=True)
        loss = ((f - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_compiles_fullgraph_on_default_backend():
    """The default executor (``monomial``) traces as one graph under ``torch.compile(fullgraph=
    True)`` (the element range check, which reads values, runs in eager calls only) and gives the
    eager outputs and force-like gradients; out-of-range elements still fail eagerly."""
    m = SymmetricContraction(IRREPS, "0e + 1o", 3, num_elements=2, channels=3).double()
    assert m.backend == "monomial"
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, 9, generator=g, dtype=torch.float64, requires_grad=True)
    el = torch.tensor([0, 1, 1, 0, 1, 0])
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    y, y_ref = compiled(x, el), m(x, el)
    (f,) = torch.autograd.grad(y.pow(2).sum(), x)
    (f_ref,) = torch.autograd.grad(y_ref.pow(2).sum(), x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f, f_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"`element` must lie in \[0, 2\)"):
        m(x, torch.tensor([0, 1, 2, 0, 1, 0]))
