"""The C++ kernels behind ``sparse_cg`` on CPU (``equikit.tp._native``): every mode against the
naive oracle, gradients of every order, the pure-PyTorch fallback, equivariance with a negative
control, threads and torch.compile."""

import shutil

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from equikit import tp
from equikit.check import assert_equivariant, equivariance_error
from equikit.groups.actions import OnKeys
from equikit.o3 import Irreps, IrrepsRep
from equikit.tp import _native

from ._helpers import LMAX, irreps_st

needs_native = pytest.mark.skipif(not _native.available(), reason="no C++ compiler: the kernel cannot be built")


def test_kernel_builds_where_a_compiler_exists():
    """Where ``c++`` exists (here and in CI) the library must build, or the fast path is silently lost."""
    if shutil.which("c++") is None:
        pytest.skip("no c++ on PATH")
    assert _native.available()
    assert tp.make_executor(tp.channelwise("2x1o", "0e + 1o"), "sparse_cg").native


@st.composite
def descriptors(draw):
    kind = draw(st.sampled_from(["uvw", "uvu", "uvu_sh", "uuu", "square"]))
    i1 = draw(irreps_st())
    if kind == "uvw":
        return tp.fully_connected(i1, draw(irreps_st()), draw(irreps_st(max_blocks=4)))
    if kind == "uvu":
        return tp.channelwise(i1, draw(irreps_st()), lmax=draw(st.sampled_from([None, 2])))
    if kind == "uvu_sh":
        return tp.channelwise(i1, Irreps.spherical_harmonics(draw(st.integers(1, LMAX))), lmax=LMAX)
    if kind == "uuu":
        return tp.elementwise(i1, draw(irreps_st(muls=[m.mul for m in i1])), weighted=draw(st.booleans()))
    return tp.tensor_square(i1, lmax=2)


def _inputs(d, rows=4, per_sample=False, dtype=torch.float64, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(rows, d.irreps1.dim, dtype=dtype, generator=g)
    x2 = None if d.square else torch.randn(rows, d.irreps2.dim, dtype=dtype, generator=g)
    w = None
    if d.weight_numel:
        w = torch.randn(*((rows,) if per_sample else ()), d.weight_numel, dtype=dtype, generator=g)
    if grad:
        x1, x2, w = (None if t is None else t.requires_grad_(True) for t in (x1, x2, w))
    return x1, x2, w


def _pair(d):
    ex = tp.make_executor(d, "sparse_cg")
    assert ex.native  # the kernel is what is under test
    return ex, tp.make_executor(d, "naive")


@needs_native
@settings(max_examples=20)
@given(d=descriptors(), per_sample=st.booleans())
def test_forward_and_gradients_match_naive_float64(d, per_sample):
    assume(len(d.paths) > 0)
    ex, naive = _pair(d)
    outs = []
    for f in (ex, naive):
        x1, x2, w = _inputs(d, per_sample=per_sample, grad=True)
        z = f(x1, x2, w)
        g = torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(3))
        leaves = [t for t in (x1, x2, w) if t is not None]
        outs.append((z, *torch.autograd.grad(z, leaves, g)))
    for got, want in zip(*outs):
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-12 * want.abs().max().clamp_min(1e-300)


@needs_native
@pytest.mark.parametrize("kind", ["uvw", "uvu", "uuu"])
def test_float32_matches_naive(kind):
    a, b = Irreps("3x0e+2x1o+2x2e+1x3o+1x4e"), Irreps("3x0o+2x1e+2x2o+1x3e+1x4o")
    d = {"uvw": tp.fully_connected(a, b, "2x0e+1x1e+2x3o+1x4e+1x2o"), "uvu": tp.channelwise(a, b, lmax=4),
         "uuu": tp.elementwise(a, b, weighted=True)}[kind]
    ex, naive = _pair(d)
    x1, x2, w = _inputs(d, rows=9, per_sample=True)
    want = naive(x1, x2, w)
    got = ex(x1.float(), x2.float(), w.float())
    assert got.dtype == torch.float32
    # float32 rounding of sums over up to ~50 terms per output component: 1e-5 relative to the max
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


@needs_native
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("kind", ["uvw", "uvu", "uvu_sh", "uuu", "square"])
def test_gradcheck_and_gradgradcheck(kind, per_sample):
    d = {"uvw": tp.fully_connected("2x0e + 1x1o", "1x1o + 2x2e", "1x0e + 2x1o + 1x2e"),
         "uvu": tp.channelwise("2x1o + 1x2e", "0e + 2x1o", lmax=2),
         "uvu_sh": tp.channelwise("2x0e + 2x1o", Irreps.spherical_harmonics(2)),
         "uuu": tp.elementwise("2x1o + 1x2e", "2x1e + 1x1o", weighted=True),
         "square": tp.tensor_square("2x1o + 1x2e", "2x0e + 1x1e + 1x2e")}[kind]
    ex, _ = _pair(d)
    x1, x2, w = _inputs(d, rows=2, per_sample=per_sample, grad=True, seed=1)
    if d.square:
        def f(a, b):
            return ex(a, None, b)
        args = (x1, w)
    else:
        f, args = ex, (x1, x2, w)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@needs_native
def test_third_derivative_matches_naive():
    """The op is its own backward, so any order works: d/dw of d/dx2 of <g, d/dx2 E>."""
    d = tp.channelwise("3x0e + 2x1o + 1x2e", Irreps.spherical_harmonics(2))
    res = []
    for backend in ("sparse_cg", "naive"):
        x1, x2, w = _inputs(d, rows=3, per_sample=True, grad=True, seed=4)
        e = tp.make_executor(d, backend)(x1, x2, w)[:, :3].pow(2).sum()
        (f,) = torch.autograd.grad(e, x2, create_graph=True)
        (h,) = torch.autograd.grad(f.pow(2).sum(), x2, create_graph=True)
        (gw,) = torch.autograd.grad(h.sin().sum(), w)
        res.append(gw)
    assert res[0].abs().max() > 0
    assert torch.allclose(res[0], res[1], rtol=1e-10, atol=1e-12)


@needs_native
def test_many_rows_and_threads_agree():
    """OpenMP over rows: 2 threads give the 1-thread result and the naive one (shared-weight
    gradients are reduced per thread and per chunk of 16 rows, so up to rounding; 300 rows
    leave partial chunks)."""
    d = tp.fully_connected("4x0e + 4x1o + 2x2e", Irreps.spherical_harmonics(2), "4x0e + 4x1o + 2x2e")
    ex, naive = _pair(d)
    res = []
    for threads, f in ((1, naive), (1, ex), (2, ex)):
        torch.set_num_threads(threads)
        x1, x2, w = _inputs(d, rows=300, grad=True, seed=5)
        z = f(x1, x2, w)
        res.append((z, *torch.autograd.grad(z.pow(2).sum(), (x1, x2, w))))
    for want, one, two in zip(*res):
        assert (one - want).abs().max() <= 1e-12 * want.abs().max()
        assert torch.allclose(one, two, rtol=1e-12, atol=1e-12)


@needs_native
def test_empty_batch_and_broadcast():
    d = tp.channelwise("2x1o", "0e + 1o")
    ex, naive = _pair(d)
    z = ex(torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64),
           torch.zeros(0, d.weight_numel, dtype=torch.float64))
    assert z.shape == (0, d.irreps_out.dim)
    x1 = torch.randn(4, 1, 6, dtype=torch.float64)
    x2 = torch.randn(1, 3, 4, dtype=torch.float64)
    w = torch.randn(4, 3, d.weight_numel, dtype=torch.float64)
    assert torch.allclose(ex(x1, x2, w), naive(x1, x2, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["env", "loader"])
def test_fallback_without_the_kernel(monkeypatch, how):
    """EQUIKIT_NO_NATIVE=1 (or a loader that finds no compiler) gives the pure-PyTorch path,
    with the same results."""
    d = tp.channelwise("2x0e + 2x1o", Irreps.spherical_harmonics(2))
    _native._library.cache_clear()
    if how == "env":
        monkeypatch.setenv("EQUIKIT_NO_NATIVE", "1")
    else:
        monkeypatch.setattr(_native, "load_library", lambda *a, **k: None)
    try:
        assert not _native.available()
        ex = tp.make_executor(d, "sparse_cg")
        assert not ex.native
        x1, x2, w = _inputs(d, per_sample=True)
        want = tp.make_executor(d, "naive")(x1, x2, w)
        assert (ex(x1, x2, w) - want).abs().max() <= 1e-12 * want.abs().max()
    finally:
        monkeypatch.undo()
        _native._library.cache_clear()
    assert _native.available() == (shutil.which("c++") is not None)


@needs_native
@pytest.mark.parametrize("kind", ["fully_connected", "channelwise", "elementwise"])
def test_native_product_is_o3_equivariant(dtype, kind):
    i1, i2 = "2x0e + 2x1o + 1x2e + 1x1e", "0e + 1o + 2e + 0o"
    d = {"fully_connected": tp.fully_connected(i1, i2, "2x0e + 2x0o + 2x1o + 2x1e + 1x2e + 1x2o + 1x3o"),
         "channelwise": tp.channelwise(i1, i2),
         "elementwise": tp.elementwise(i1, "2x1o + 2x1e + 1x2o + 1x0e", weighted=True)}[kind]
    i2 = d.irreps2
    ex, _ = _pair(d)
    x = {"x1": torch.randn(6, d.irreps1.dim, dtype=dtype), "x2": torch.randn(6, i2.dim, dtype=dtype),
         "w": torch.randn(6, d.weight_numel, dtype=dtype)}
    act = OnKeys({"x1": IrrepsRep(i1), "x2": IrrepsRep(i2)}, invariant=("w",))
    assert_equivariant(lambda t: ex(t["x1"], t["x2"], t["w"]), x, act, IrrepsRep(d.irreps_out))


@needs_native
def test_negative_control_is_flagged(dtype):
    """The kernel's 1o x 1o -> 1e read as 1o: right under rotations, wrong under reflections."""
    d = tp.channelwise("2x1o", "1o", "2x1e")
    ex, _ = _pair(d)
    x = {"x1": torch.randn(6, 6, dtype=dtype), "x2": torch.randn(6, 3, dtype=dtype)}
    w = torch.randn(d.weight_numel, dtype=dtype)
    act = OnKeys({"x1": IrrepsRep("2x1o"), "x2": IrrepsRep("1o")})
    assert_equivariant(lambda t: ex(t["x1"], t["x2"], w), x, act, IrrepsRep("2x1e"))
    assert not equivariance_error(lambda t: ex(t["x1"], t["x2"], w), x, act, IrrepsRep("2x1o")).passed()


@needs_native
def test_compile_fullgraph_keeps_the_kernel():
    """torch.compile(fullgraph=True) traces the kernel as one custom op (fake impl) and its
    registered autograd, including double backward."""
    d = tp.channelwise("2x0e + 2x1o", Irreps.spherical_harmonics(1))
    ex, naive = _pair(d)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes)
        return gm

    compiled = torch.compile(ex, fullgraph=True, backend=backend)
    x1, x2, w = _inputs(d, rows=5, per_sample=True, dtype=torch.float32, grad=True)
    out = compiled(x1, x2, w)
    assert any("tp_contract" in s for s in seen)
    assert torch.allclose(out, naive(x1, x2, w), rtol=1e-5, atol=1e-6)
    (f,) = torch.autograd.grad(out.pow(2).sum(), x2, create_graph=True)
    (gw,) = torch.autograd.grad(f.pow(2).sum(), w)
    x1r, x2r, wr = (t.detach().requires_grad_(True) for t in (x1, x2, w))
    (fr,) = torch.autograd.grad(naive(x1r, x2r, wr).pow(2).sum(), x2r, create_graph=True)
    (gwr,) = torch.autograd.grad(fr.pow(2).sum(), wr)
    assert torch.allclose(gw, gwr, rtol=1e-4, atol=1e-5)  # float32 through two derivatives


@needs_native
@pytest.mark.parametrize("per_sample", [False, True])
def test_fully_connected_register_blocks_and_tails(per_sample):
    """Multiplicities that fill the kernel's 6 x 16 register blocks and leave tails of 4, 2 and 1
    rows and of columns (17, 20, 33 channels; 5, 6 rows), output l up to 5, against naive."""
    for d in (tp.fully_connected("20x0e+17x1o+3x2e", Irreps.spherical_harmonics(2), "33x0e+16x1o+20x2e"),
              tp.fully_connected("5x0e+6x1o+3x2e", "2x0e+3x1o+1x2e", "16x0e+18x1o+9x2e+3x3o"),
              tp.fully_connected("4x1o+3x4e", "2x4e+3x3o", "17x0e+16x4e+3x1o+9x5o")):
        ex, naive = _pair(d)
        res = []
        for f in (ex, naive):
            x1, x2, w = _inputs(d, rows=7, per_sample=per_sample, grad=True, seed=6)
            z = f(x1, x2, w)
            g = torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(7))
            res.append((z, *torch.autograd.grad(z, (x1, x2, w), g)))
        for got, want in zip(*res):
            assert (got - want).abs().max() <= 1e-12 * want.abs().max()


@needs_native
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("kind", ["uvw", "uvu", "uuu"])
def test_fused_gradients_equal_one_slot_calls(kind, per_sample):
    """The backward asks the kernel for all gradients in one pass (``tp_contract_multi``, a bit
    mask of slots); every mask gives, slot by slot, what separate one-slot calls give (37 rows:
    two full 16-row chunks and a tail), and its own derivatives (double backward) match too."""
    d = {"uvw": tp.fully_connected("4x0e + 3x1o + 2x2e", "2x0e + 1x1o + 1x2e", "5x0e + 2x1o + 3x2e"),
         "uvu": tp.channelwise("4x0e + 3x1o", Irreps.spherical_harmonics(2), lmax=2),
         "uuu": tp.elementwise("3x0e + 3x1o", "3x1o + 3x0e")}[kind]
    key = _native.plan(d).key
    g = torch.Generator().manual_seed(11)
    rows, n = 37, d.weight_numel

    def rnd(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)

    x1, x2, z = rnd(rows, d.irreps1.dim), rnd(rows, d.irreps2.dim), rnd(rows, d.irreps_out.dim)
    w = rnd(rows, n) if per_sample else rnd(n)
    shared = not per_sample
    for mask in range(1, 16):
        if (mask & 1 and mask != 1) or (mask & 8 and n == 0):
            continue  # slot 0 (the product) is only asked for alone; no weights, no slot 3
        outs = _native._tp_contract_multi(x1, x2, z, w, key, mask, shared)
        for s in range(4):
            if not mask >> s & 1:
                assert outs[s].numel() == 0
                continue
            ops = [x1, x2, z, w]
            ops[_native.ORDER[s]] = x1.new_empty(0)
            one = _native._tp_contract(*ops, key, s, shared)
            assert one.shape == outs[s].shape and one.abs().max() > 0
            assert torch.allclose(outs[s], one, rtol=1e-12, atol=1e-12)
    # double backward through the fused op = through the one-slot ops
    slots = (1, 2, 3) if n else (1, 2)
    outs = _native._tp_contract_multi(x1, x2, z, w, key, sum(1 << s for s in slots), shared)
    inputs = (x1, x2, z, w) if n else (x1, x2, z)
    fused = torch.autograd.grad(sum((outs[s] ** 2).sum() for s in slots), inputs)
    loss1 = sum((_native._tp_contract(*[x1.new_empty(0) if i == _native.ORDER[s] else t
                                        for i, t in enumerate((x1, x2, z, w))], key, s, shared) ** 2).sum()
                for s in slots)
    single = torch.autograd.grad(loss1, inputs)
    for a, b in zip(fused, single):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-11)
    # only the x2 gradient used (a force loss): the unused outputs get no gradient terms
    outs = _native._tp_contract_multi(x1, x2, z, w, key, sum(1 << s for s in slots), shared)
    fused = torch.autograd.grad((outs[2] ** 2).sum(), inputs, allow_unused=True)
    one = _native._tp_contract(x1, x2.new_empty(0), z, w, key, 2, shared)
    single = torch.autograd.grad((one ** 2).sum(), inputs, allow_unused=True)
    for a, b in zip(fused, single):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-11, atol=1e-11)


@needs_native
@pytest.mark.parametrize("lmax", [6, 7])
def test_every_block_dimension_of_the_transposes(lmax):
    """The operand transposes are unrolled per block dimension (3 .. 13, a loop beyond): blocks of
    every l up to 6 (and l = 7, the generic loop) with several channels, in all three operands,
    forward and every gradient against the oracle in float64."""
    i1 = Irreps([(3, (l, (-1) ** l)) for l in range(lmax + 1)])
    i2 = Irreps([(2, (l, 1)) for l in (0, lmax)])
    d = tp.channelwise(i1, i2, lmax=lmax)
    assert {ir.dim for _, ir in d.irreps_out} >= {2 * l + 1 for l in range(lmax + 1)}
    ex, naive = _pair(d)
    outs = []
    for f in (ex, naive):
        x1, x2, w = _inputs(d, rows=3, per_sample=True, grad=True, seed=lmax)
        z = f(x1, x2, w)
        g = torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(5))
        outs.append((z, *torch.autograd.grad(z, (x1, x2, w), g)))
    for got, want in zip(*outs):
        assert (got - want).abs().max() <= 1e-12 * want.abs().max()
