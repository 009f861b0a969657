import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.o3 import Irreps, IrrepsRep, IrrepsTensor, concatenate

IR = Irreps("2x0e + 2x1o + 1e + 2e")  # dim 2 + 6 + 3 + 5 = 16, 6 irrep copies
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def copy_index(irreps: Irreps) -> torch.Tensor:
    """Index of the irrep copy that owns each component (independent of the class)."""
    return torch.repeat_interleave(torch.arange(irreps.num_irreps), torch.tensor([2 * l + 1 for l in irreps.ls]))


def test_construction_access_and_immutability(dtype):
    a = torch.randn(4, 16, dtype=dtype)
    x = IrrepsTensor("2x0e + 2x1o + 1e + 2e", a)
    assert x.irreps == IR and x.array is a
    assert x.shape == (4, 16) and x.batch_shape == (4,) and x.ndim == 2 and x.dtype == dtype
    with pytest.raises(AttributeError, match="immutable"):
        x.irreps = Irreps("16x0e")
    with pytest.raises(ValueError, match=r"IrrepsTensor: `array` must have shape \(\.\.\., 16\).*got \(4, 15\)"):
        IrrepsTensor(IR, torch.randn(4, 15))
    with pytest.raises(TypeError, match=r"`array` must be a torch\.Tensor"):
        IrrepsTensor(IR, [0.0] * 16)
    with pytest.raises(ValueError, match="Irreps"):
        IrrepsTensor("2x", torch.randn(2))


def test_linear_arithmetic_matches_the_arrays(dtype):
    a, b = torch.randn(2, 3, 16, dtype=dtype)
    x, y = IrrepsTensor(IR, a), IrrepsTensor(IR, b)
    c = torch.tensor(0.7, dtype=dtype)
    assert torch.equal((x + y).array, a + b) and torch.equal((x - y).array, a - b)
    assert torch.equal((-x).array, -a) and torch.equal((2.5 * x).array, 2.5 * a)
    assert torch.equal((x * c).array, a * c) and torch.equal((x / 4).array, a / 4)
    assert torch.equal((x + 0).array, a) and (x + y).irreps == IR
    # the same representation grouped differently is addable; the result keeps x's irreps
    z = x + IrrepsTensor("0e + 0e + 1o + 1o + 1e + 2e", b)
    assert z.irreps == IR and torch.equal(z.array, a + b)


def test_gates_per_copy_and_for_all(dtype):
    a = torch.randn(5, 16, dtype=dtype)
    g = torch.randn(5, 6, dtype=dtype)
    out = IrrepsTensor(IR, a) * IrrepsTensor("6x0e", g)
    assert out.irreps == IR
    assert torch.allclose(out.array, a * g[:, copy_index(IR)], rtol=RTOL[dtype], atol=0)
    one = IrrepsTensor("0e", g[:, :1]) * IrrepsTensor(IR, a)
    assert torch.allclose(one.array, a * g[:, :1], rtol=RTOL[dtype], atol=0)
    div = IrrepsTensor(IR, a) / IrrepsTensor("6x0e", g)
    assert torch.allclose(div.array, a / g[:, copy_index(IR)], rtol=RTOL[dtype], atol=0)


def test_pseudoscalar_gates_flip_parity():
    v = IrrepsTensor("2x1o + 0e", torch.randn(7))
    assert (v * IrrepsTensor("0o", torch.randn(1))).irreps == Irreps("2x1e + 0o")
    # per-copy parities split a block where they change
    out = v * IrrepsTensor("0e + 0o + 0e", torch.randn(3))
    assert out.irreps == Irreps("1o + 1e + 0e")


def test_selecting_irreps_and_batch_dims(dtype):
    a = torch.randn(6, 16, dtype=dtype)
    x = IrrepsTensor(IR, a)
    assert x.filter("0e").irreps == Irreps("2x0e") and torch.equal(x.filter("0e").array, a[:, :2])
    f = x.filter(drop="1o")
    assert f.irreps == Irreps("2x0e + 1e + 2e") and torch.equal(f.array, torch.cat([a[:, :2], a[:, 8:]], -1))
    assert x.filter(lmax=0).irreps == Irreps("2x0e")
    s = x.slice_irreps(slice(1, 3))
    assert s.irreps == Irreps("2x1o + 1e") and torch.equal(s.array, a[:, 2:11])
    assert torch.equal(x.slice_irreps(-1).array, a[:, 11:])
    assert [c.shape for c in x.chunks] == [(6, 2, 1), (6, 2, 3), (6, 1, 3), (6, 1, 5)]
    r = x.reshape(2, 3)
    assert r.shape == (2, 3, 16) and torch.equal(r.array, a.reshape(2, 3, 16))
    assert torch.equal(r[1].array, a[3:6]) and torch.equal(r[:, 0].array, a[::3])
    assert x.to(torch.float16).dtype == torch.float16 and x.to(torch.float16).irreps == IR
    cat = concatenate([x.filter("1o"), x.filter("0e")])
    assert cat.irreps == Irreps("2x1o + 2x0e") and torch.equal(cat.array, torch.cat([a[:, 2:8], a[:, :2]], -1))
    assert torch.equal(torch.cat([x, x], dim=-1).array, torch.cat([a, a], -1))
    norms = x.norms()
    assert norms.irreps == Irreps("2x0e + 2x0e + 0e + 0e")
    assert torch.allclose(norms.array[:, 2], a[:, 2:5].norm(dim=-1), rtol=RTOL[dtype])


def test_scalar_only_elementwise_functions(dtype):
    s = torch.randn(3, 4, dtype=dtype)
    x = IrrepsTensor("4x0e", s)
    assert torch.equal(torch.tanh(x).array, torch.tanh(s))
    assert torch.equal(torch.nn.functional.silu(x).array, torch.nn.functional.silu(s))
    assert torch.equal((x**2).array, s**2) and torch.equal((x + 1.5).array, s + 1.5)
    assert torch.equal(torch.tanh(IrrepsTensor("4x0o", s)).array, torch.tanh(s))  # odd: keeps 0o


def gated_block(v: torch.Tensor) -> torch.Tensor:
    """A gate nonlinearity written with IrrepsTensor arithmetic, on plain tensors in and out."""
    x = IrrepsTensor(IR, v)
    y = 2.0 * x - x / 3.0 + x
    scalars = torch.tanh(y.filter("0e"))
    rest = y.filter(drop="0e")
    gates = torch.sigmoid(rest.norms())
    return concatenate([scalars, rest * gates]).array


def test_gate_is_equivariant_through_checker(dtype):
    v = torch.randn(8, IR.dim, dtype=dtype)
    out_irreps = Irreps("2x0e + 2x1o + 1e + 2e")
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    assert_equivariant(gated_block, v, IrrepsRep(IR), IrrepsRep(out_irreps), rtol=rtol)
    # a pseudoscalar gate turns 1o into 1e: equivariant only with the irreps it computes
    w = torch.randn(8, 4, dtype=dtype)

    def pseudo(t):
        x = IrrepsTensor("0o + 1o", t)
        return (x.filter("1o") * x.filter("0o")).array

    assert_equivariant(pseudo, w, IrrepsRep("0o + 1o"), IrrepsRep("1e"), rtol=rtol)
    assert not equivariance_error(pseudo, w, IrrepsRep("0o + 1o"), IrrepsRep("1o")).passed()


def test_checker_flags_the_refused_operations_done_on_raw_arrays(dtype):
    """Negative controls: what IrrepsTensor refuses is what the checker catches on plain tensors."""
    v = torch.randn(8, 3, dtype=dtype)
    rep = IrrepsRep("1o")
    assert not equivariance_error(torch.tanh, v, rep, rep).passed()  # elementwise tanh on 1o
    assert not equivariance_error(lambda t: t + 1.0, v, rep, rep).passed()  # bias on 1o
    assert not equivariance_error(lambda t: t * t, v, rep, rep).passed()  # 1o * 1o elementwise
    s = torch.randn(8, 2, dtype=dtype)
    assert not equivariance_error(torch.exp, s, IrrepsRep("2x0o"), IrrepsRep("2x0o")).passed()  # even fn on 0o


def test_refuses_non_equivariant_arithmetic_with_a_reason():
    x = IrrepsTensor(IR, torch.randn(3, 16))
    v = IrrepsTensor("1o", torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"cannot combine irreps .*'1x1o'.*same irreps.*linear layer"):
        x + v
    with pytest.raises(ValueError, match="cannot combine"):
        v - IrrepsTensor("1e", torch.randn(3, 3))
    with pytest.raises(TypeError, match=r"adding a constant to irreps '1x1o' is not equivariant.*0e channels"):
        v + 1.0
    with pytest.raises(TypeError, match="adding a constant"):
        1.0 - v
    with pytest.raises(TypeError, match=r"cannot add a Tensor .*wrap it as IrrepsTensor"):
        v + torch.randn(3, 3)
    with pytest.raises(TypeError, match=r"torch\.tanh on irreps '1x1o' is not equivariant.*gate"):
        torch.tanh(v)
    with pytest.raises(TypeError, match=r"torch\.relu on irreps .*not equivariant"):
        torch.nn.functional.relu(x)
    with pytest.raises(TypeError, match=r"torch\.exp on irreps '1x0o'.*parity of 0o"):
        torch.exp(IrrepsTensor("0o", torch.randn(1)))
    with pytest.raises(TypeError, match=r"__pow__ on irreps '1x1o'"):
        v**2
    with pytest.raises(TypeError, match=r"elementwise product of irreps '1x1o' and '1x1o'.*tensor product"):
        v * v
    with pytest.raises(TypeError, match=r"plain Tensor of shape \(3, 3\) is ambiguous"):
        v * torch.randn(3, 3)
    with pytest.raises(ValueError, match=r"cannot broadcast 2 scalars over the 6 irrep copies"):
        x * IrrepsTensor("2x0e", torch.randn(3, 2))
    with pytest.raises(TypeError, match="equivariant linear map"):
        v @ torch.eye(3)
    with pytest.raises(TypeError, match=r"torch\.sum on an IrrepsTensor: .*refuses.*x\.array"):
        torch.sum(v)
    with pytest.raises(IndexError, match="irreps dimension"):
        v[:, 0]
    with pytest.raises(ValueError, match="only dim=-1"):
        torch.cat([v, v], dim=0)
    with pytest.raises(TypeError, match="non-empty sequence of IrrepsTensor"):
        concatenate([v, torch.randn(3, 3)])


def test_compiles_fullgraph_from_plain_tensors():
    """STYLE 4: a forward on plain tensors that uses IrrepsTensor inside compiles without breaks."""
    torch._dynamo.reset()
    compiled = torch.compile(gated_block, fullgraph=True, backend="eager")
    v = torch.randn(4, IR.dim, dtype=torch.float64)
    assert torch.equal(compiled(v), gated_block(v))
