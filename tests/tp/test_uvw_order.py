"""Contraction orders of the shared-weight fully connected (uvw) kernel paths
(``equikit.tp._native.uvw_order``): the choice by cost, and every order (forward and each
gradient) against the naive oracle, in float64 and float32, with gradcheck / gradgradcheck and
an equivariance check with a negative control."""

import itertools

import pytest
import torch

from equikit import tp
from equikit.check import assert_equivariant, equivariance_error
from equikit.groups.actions import OnKeys
from equikit.o3 import Irreps, IrrepsRep, count_nonzero
from equikit.tp import _native

needs_native = pytest.mark.skipif(not _native.available(), reason="no C++ compiler: the kernel cannot be built")

# every gradient set off the output-first order: forward "x1" / "x2" and all three gradients through
# Q / Y, with the operands as they are / exchanged
ALL_X1 = 1 | sum(7 << (2 + 4 * g) for g in range(8))
ALL_X2 = 2 | sum(15 << (2 + 4 * g) for g in range(8))
# the wanted-gradient subsets (argument positions x1, x2, w) that the backward asks the kernel for
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(range(3), r)]


def _mixed():
    """Paths with different chosen orders: V = 1 (spherical harmonics), V > 1 (the kernel's
    separate [v w][u] weight copy) and V >> U (x2 first), 33 / 17 channels (GEMM tails)."""
    return (tp.fully_connected("17x0e + 33x1o + 5x2e", Irreps.spherical_harmonics(2), "19x0e + 17x1o + 6x2e"),
            tp.fully_connected("6x0e + 5x1o + 4x2e", "3x0e + 2x1o + 2x2e", "5x0e + 7x1o + 3x2e"),
            tp.fully_connected("3x0e + 2x1o", "20x0e + 17x1o", "18x0e + 16x1o"))


def _inputs(d, rows, dtype, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    ts = (torch.randn(rows, d.irreps1.dim, dtype=torch.float64, generator=g),
          torch.randn(rows, d.irreps2.dim, dtype=torch.float64, generator=g),
          torch.randn(d.weight_numel, dtype=torch.float64, generator=g))
    return [t.to(dtype).requires_grad_(grad) for t in ts]


def _codes(d, how):
    n = len(d.paths)
    if how == "out":
        return [0] * n
    if how == "x1":
        return [ALL_X1] * n
    if how == "x2":
        return [ALL_X2] * n
    if how == "chosen":
        return None
    # "scrambled": a different forward and bit pattern per path and per gradient set (deterministic)
    return [q % 3 | ((1 + 7919 * q) * 2654435761 % (1 << 32)) << 2 for q in range(n)]


def test_uvw_order_follows_the_flop_count():
    """Hand-counted multiply-adds per row (U = Wo = 128, V = 1) decide the order."""
    nnz = count_nonzero(0, 1, 1)
    assert nnz == 3
    # 0e x 1o -> 1o: out first 3*128 + 3*128^2, x1 first 128^2 + 3*128, x2 first 3*128^2 + 3*128^2
    assert _native.uvw_order(128, 1, 128, 1, 3, 3, nnz).forward == "x1"
    # 1o x 1o -> 0e: out first 3*128 + 128^2, x1 first 3*128^2 + 3*128
    assert _native.uvw_order(128, 1, 128, 3, 3, 1, count_nonzero(1, 1, 0)).forward == "out"
    # 0e x 0e -> 0e: all 128^2 + 128, a tie keeps the output-first order
    assert _native.uvw_order(128, 1, 128, 1, 1, 1, 1).forward == "out"
    # 64x1o x 64x0e -> 64x1o: out first 3*64^3 + 3*64^2, x1 first 3*64^3 + 3*64^2, x2 first 64^3 + 3*64^2
    assert _native.uvw_order(64, 64, 64, 3, 1, 3, 3).forward == "x2"
    # and all its gradients with the operands exchanged (8 | 7), each 64^3 instead of 3 * 64^3
    assert _native.uvw_order(64, 64, 64, 3, 1, 3, 3).gradients[7] == 15
    o = _native.uvw_order(128, 1, 128, 1, 3, 3, nnz)
    # all gradients of 0e x 1o -> 1o: Q W^T, Y . h, x1^T Q (3 GEMMs of 128^2) beat G and T (2 of 3*128^2)
    assert o.gradients[7] == 7
    # only the x2 gradient (forces): Y (128^2) beats G (3*128^2)
    assert o.gradients[2] == 2
    # 1o x 1o -> 2e (nnz 11), all gradients: W through Q (3*128^2) and the inputs through one
    # shared G (5*128^2): 8*128^2 against 10 (old) and 9 (everything through Q / Y)
    o = _native.uvw_order(128, 1, 128, 3, 3, 5, count_nonzero(1, 1, 2))
    assert (o.forward, o.gradients[7]) == ("x1", 4)
    # no bit for a gradient that is not wanted (bits 1, 2 name the exchanged operands under bit 8)
    for g, bits in enumerate(_native.uvw_order(128, 64, 128, 1, 5, 5, 5).gradients + o.gradients):
        g %= 8
        if bits & 8:
            g = (g & 4) | (g & 1) << 1 | (g & 2) >> 1
        assert bits & 7 & ~g == 0


def test_plan_carries_the_chosen_codes_and_paths_differ():
    d = _mixed()[0]
    pl = _native.plan(d)
    want = []
    for p in d.paths:
        (m1, ir1), (m2, ir2), (mo, iro) = d.irreps1[p.i1], d.irreps2[p.i2], d.irreps_out[p.i_out]
        nnz = count_nonzero(ir1.l, ir2.l, iro.l)
        want.append(_native.uvw_order(m1, m2, mo, ir1.dim, ir2.dim, iro.dim, nnz).code)
    assert pl.paths[:, 13].tolist() == want
    forwards = {c & 3 for c in want}
    assert forwards == {0, 1}  # both forward orders occur in this descriptor
    grads = {(c >> (2 + 4 * 7)) & 15 for c in want}
    assert len(grads) >= 2  # and several backward orders
    # and x2 first in the third
    assert {c & 3 for c in _native.plan(_mixed()[2]).paths[:, 13].tolist()} >= {2}
    # channelwise paths carry no order
    assert not _native.plan(tp.channelwise("2x1o", "1o + 0e")).paths[:, 13].any()


@needs_native
@pytest.mark.parametrize("how", ["out", "x1", "x2", "chosen", "scrambled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_order_matches_naive(how, dtype):
    """Forward and every subset of gradients (each a different kernel mask, so a different
    backward order) against naive in float64; 70 rows = two full 32-row chunks and a tail."""
    rtol = 1e-12 if dtype == torch.float64 else 1e-5  # float32: sums of up to ~500 terms
    for d in _mixed():
        key = _native._build(d, _codes(d, how)).key
        naive = tp.make_executor(d, "naive")
        x = _inputs(d, 70, dtype)
        xr = [t.detach().double().requires_grad_(True) for t in x]
        out, ref = _native.contract(key, *x, True), naive(*xr)
        assert out.dtype == dtype
        assert (out.double() - ref).abs().max() <= rtol * ref.abs().max()
        h = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for sub in SUBSETS:
            out = _native.contract(key, *x, True)
            got = torch.autograd.grad(out, [x[i] for i in sub], h.to(dtype))
            want = torch.autograd.grad(ref, [xr[i] for i in sub], h, retain_graph=True)
            for a, b in zip(got, want):
                assert (a.double() - b).abs().max() <= rtol * b.abs().max(), (how, sub)


@needs_native
@pytest.mark.parametrize("how", ["x1", "x2", "chosen", "scrambled"])
def test_gradcheck_and_gradgradcheck_through_the_orders(how):
    d = tp.fully_connected("2x0e + 2x1o", "0e + 1o + 2x2e", "2x0e + 3x1o + 1x2e")
    key = _native._build(d, _codes(d, how)).key
    x = _inputs(d, 3, torch.float64, seed=2)

    def f(a, b, w):
        return _native.contract(key, a, b, w, True)

    assert torch.autograd.gradcheck(f, x)
    assert torch.autograd.gradgradcheck(f, x)


@needs_native
def test_forces_double_backward_agrees_between_orders():
    """The force-like second derivative d/dw |dE/dx2|^2 is the same in every order."""
    d = _mixed()[0]
    res = []
    for how in ("out", "x1", "x2", "scrambled"):
        key = _native._build(d, _codes(d, how)).key
        x1, x2, w = _inputs(d, 40, torch.float64, seed=3)
        e = _native.contract(key, x1, x2, w, True).pow(2).sum()
        (f,) = torch.autograd.grad(e, x2, create_graph=True)
        res.append(torch.autograd.grad(f.pow(2).sum(), (w, x1)))
    for other in res[1:]:
        for a, b in zip(other, res[0]):
            assert (a - b).abs().max() <= 1e-10 * b.abs().max()


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("how", ["x1", "x2"])
def test_reordered_product_is_equivariant_with_a_negative_control(dtype, how):
    """O(3) equivariance of the product in the x1-first / x2-first orders; the same kernel with its
    1e output read as 1o must fail under reflections."""
    i1, i2, io = "2x0e + 2x1o + 1x2e", "0e + 1o + 2e", "2x0e + 2x1o + 2x1e + 1x2e"
    d = tp.fully_connected(i1, i2, io)
    key = _native._build(d, _codes(d, how)).key
    w = torch.randn(d.weight_numel, dtype=dtype)
    x = {"x1": torch.randn(6, d.irreps1.dim, dtype=dtype), "x2": torch.randn(6, d.irreps2.dim, dtype=dtype)}
    act = OnKeys({"x1": IrrepsRep(i1), "x2": IrrepsRep(i2)})

    def f(t):
        return _native.contract(key, t["x1"], t["x2"], w, True)

    assert_equivariant(f, x, act, IrrepsRep(d.irreps_out))
    assert not equivariance_error(f, x, act, IrrepsRep("2x0e + 2x1o + 2x1o + 1x2e")).passed()


@needs_native
@pytest.mark.parametrize("how", ["chosen", "x2"])
def test_two_threads_agree_with_one(how):
    d = _mixed()[0]
    key = _native._build(d, _codes(d, how)).key
    x = _inputs(d, 300, torch.float64, seed=5)
    res = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = _native.contract(key, *x, True)
        res.append((out, *torch.autograd.grad(out.sin().sum(), x)))
    for a, b in zip(*res):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()


# ------------------------------------------------------------------ the forward's saved Y
# every path x1 first, all gradients through Q / Y, with and without the saved-Y codes (bit 50;
# the saved-Y gradient codes at bits 34 + 4 n say "all through Q / Y" as well)
ALL_X1_Y = ALL_X1 | sum(7 << (_native.Y_CODES + 4 * n) for n in range(4)) | 1 << _native.Y_SAVE
# x1 first, scrambled ordinary codes, and saved-Y codes that differ per path and set (bit 8 never)
SCRAMBLED_Y = [1 | (((1 + 7919 * q) * 2654435761 % (1 << 32)) << 2)
               | sum(((q + 3 * n) % 8) << (_native.Y_CODES + 4 * n) for n in range(4)) | 1 << _native.Y_SAVE
               for q in range(16)]


def _y_plan(d, how):
    if how == "chosen":
        return _native.plan(d)
    codes = [ALL_X1_Y] * len(d.paths) if how == "all" else SCRAMBLED_Y[:len(d.paths)]
    return _native._build(d, codes)


def _spy(monkeypatch):
    """Record the ``ymode`` of every kernel call (0: no saved Y, 1: written, 2: read)."""
    calls, run = [], _native._run

    def spy(ops, plan_key, mask, w_shared, ysave=None, ymode=0):
        calls.append((mask, ymode if ysave is not None else 0, None if ysave is None else ysave.numel()))
        return run(ops, plan_key, mask, w_shared, ysave, ymode)

    monkeypatch.setattr(_native, "_run", spy)
    return calls


def test_saved_y_changes_the_orders_by_the_flop_count():
    """Hand-counted multiply-adds per row (U = Wo = 128, V = 1, one GEMM = 128^2)."""
    # 0e x 1o -> 1o (x1 first): x2 through Y costs a GEMM (128^2 + 3*128) without the saved Y,
    # 3*128 with it; the orders stay (Q W^T, Y . h, x1^T Q), only cheaper: the forward keeps Y
    o = _native.uvw_order(128, 1, 128, 1, 3, 3, 3)
    assert (o.forward, o.gradients[7], o.gradients_y[3], o.save_y) == ("x1", 7, 7, True)
    # 1o x 1o -> 2e (nnz 11): all gradients 8*128^2 (G 5 + W through Q 3) without Y; with Y the x2
    # gradient is the dots alone, and x1 through Q (3*128^2) beats the G it no longer shares
    o = _native.uvw_order(128, 1, 128, 3, 3, 5, count_nonzero(1, 1, 2))
    assert (o.gradients[7], o.gradients_y[3]) == (4, 7)
    # ... but with only the x2 and weight gradients wanted (set 6): x2 from Y, W through Q
    assert o.gradients_y[Y_SET_INDEX[6]] == 6
    # 1o x 1o -> 0e and 0e x 0e -> 0e (output first): no Y in the forward, nothing to keep
    for args in ((128, 1, 128, 3, 3, 1, count_nonzero(1, 1, 0)), (128, 1, 128, 1, 1, 1, 1)):
        o = _native.uvw_order(*args)
        assert o.forward == "out" and not o.save_y and o.gradients_y == tuple(o.gradients[g] for g in _native.Y_SETS)
    # 2e x 2e -> 0e: output first (128 + 128^2 against 5*128^2), nothing to keep
    o = _native.uvw_order(128, 1, 128, 5, 5, 1, 5)
    assert o.forward == "out" and not o.save_y
    # the code: bit 50 and the saved-Y sets at bits 34 + 4 n; each set either keeps its ordinary
    # code or reads Y in the operands' own frame (bit 2 set, bit 8 clear)
    o = _native.uvw_order(128, 1, 128, 3, 3, 5, count_nonzero(1, 1, 2))
    assert o.code >> 50 == 1 and [(o.code >> (34 + 4 * n)) & 15 for n in range(4)] == list(o.gradients_y)
    for args in ((128, 1, 128, 1, 3, 3, 3), (64, 64, 64, 3, 1, 3, 3), (128, 64, 128, 1, 5, 5, 5)):
        o = _native.uvw_order(*args)
        for g, b in zip(_native.Y_SETS, o.gradients_y):
            assert b == o.gradients[g] or (b & 2 and not b & 8 and o.save_y)
    assert not _native.uvw_order(64, 64, 64, 3, 1, 3, 3).save_y  # x2 first: no Y of x1


Y_SET_INDEX = {g: n for n, g in enumerate(_native.Y_SETS)}


def test_plan_sizes_the_saved_y():
    """``y_row`` = the sum of ``d1 V Wo`` over the paths that keep ``Y`` (memory: rows * y_row numbers)."""
    d = tp.fully_connected("16x0e + 16x1o", Irreps.spherical_harmonics(2), "16x0e + 16x1o + 16x2e")
    pl = _native.plan(d)
    want = 0
    for p, code in zip(d.paths, pl.paths[:, 13].tolist()):
        (m1, ir1), (m2, ir2), (mo, iro) = d.irreps1[p.i1], d.irreps2[p.i2], d.irreps_out[p.i_out]
        o = _native.uvw_order(m1, m2, mo, ir1.dim, ir2.dim, iro.dim, count_nonzero(ir1.l, ir2.l, iro.l))
        assert code == o.code
        want += ir1.dim * m2 * mo if o.save_y else 0
    # 0e x 1o -> 1o, 0e x 2e -> 2e, 1o x 1o -> 2e keep Y: 16 + 16 + 3 * 16
    assert pl.y_row == want == 80
    assert _native.plan(tp.channelwise("2x1o", "1o + 0e")).y_row == 0


@needs_native
@pytest.mark.parametrize("how", ["chosen", "all", "scrambled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_saved_y_matches_naive_for_every_gradient_subset(monkeypatch, how, dtype):
    """With x2 requiring a gradient the forward keeps Y and the first backward reads it (the spy
    sees it written once and read); every subset of gradients against naive in float64."""
    rtol = 1e-12 if dtype == torch.float64 else 1e-5  # float32: sums of up to ~500 terms
    for d in _mixed()[:2]:
        pl = _y_plan(d, how)
        assert pl.y_row > 0
        naive = tp.make_executor(d, "naive")
        x = _inputs(d, 70, dtype)
        xr = [t.detach().double().requires_grad_(True) for t in x]
        ref = naive(*xr)
        h = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for sub in SUBSETS:
            calls = _spy(monkeypatch)
            out = _native.contract(pl.key, *x, True)
            assert (out.double() - ref).abs().max() <= rtol * ref.abs().max()
            got = torch.autograd.grad(out, [x[i] for i in sub], h.to(dtype))
            want = torch.autograd.grad(ref, [xr[i] for i in sub], h, retain_graph=True)
            for a, b in zip(got, want):
                assert (a.double() - b).abs().max() <= rtol * b.abs().max(), (how, sub)
            assert calls[0] == (1, 1, 70 * pl.y_row)  # the forward writes Y
            assert calls[1][1:] == (2, 70 * pl.y_row) and len(calls) == 2  # one backward call reads it
            monkeypatch.undo()


@needs_native
def test_saved_y_only_when_x2_needs_a_gradient(monkeypatch):
    """No grad mode, or x2 without requires_grad: the ordinary op, nothing kept; create_graph:
    Y is kept but that backward takes the differentiable route (it recomputes); the results equal
    those of a plan that never keeps Y."""
    d = _mixed()[0]
    key = _native.plan(d).key
    x1, x2, w = _inputs(d, 40, torch.float64)
    calls = _spy(monkeypatch)
    with torch.no_grad():
        _native.contract(key, x1, x2, w, True)
    out = _native.contract(key, x1, x2.detach(), w, True)
    torch.autograd.grad(out.sum(), (x1, w))
    assert all(c[1] == 0 for c in calls) and len(calls) == 3
    calls.clear()
    out = _native.contract(key, x1, x2, w, True)
    (g2,) = torch.autograd.grad(out.pow(2).sum(), x2, create_graph=True)
    assert [c[1] for c in calls] == [1, 0]  # the forward writes Y; the gradient (create_graph) does not read it
    calls.clear()
    (g1,) = torch.autograd.grad(g2.pow(2).sum(), x1)
    # the second pass reaches the product's own backward once more, now without create_graph:
    # that one reads Y (still the forward's x1 W), the gradient op's backward does not
    assert [c[1] for c in calls].count(2) == 1
    monkeypatch.undo()
    # the same numbers as a plan that never keeps Y
    plain = _native._build(d, [c & ((1 << 34) - 1) for c in _native.plan(d).paths[:, 13].tolist()]).key
    assert _native._PLANS[plain].y_row == 0
    out = _native.contract(plain, x1, x2, w, True)
    (g2p,) = torch.autograd.grad(out.pow(2).sum(), x2, create_graph=True)
    (g1p,) = torch.autograd.grad(g2p.pow(2).sum(), x1)
    assert (g2 - g2p).abs().max() <= 1e-12 * g2p.abs().max()
    assert (g1 - g1p).abs().max() <= 1e-10 * g1p.abs().max()


@needs_native
@pytest.mark.parametrize("how", ["chosen", "all", "scrambled"])
def test_gradcheck_and_gradgradcheck_with_saved_y(how):
    d = tp.fully_connected("2x0e + 2x1o", "0e + 1o + 2x2e", "2x0e + 3x1o + 1x2e")
    pl = _y_plan(d, how) if how != "chosen" else _native._build(d, [ALL_X1_Y if c & 3 == 1 else c for c in
                                                                  _native.plan(d).paths[:, 13].tolist()])
    assert pl.y_row > 0
    x = _inputs(d, 3, torch.float64, seed=2)

    def f(a, b, w):
        return _native.contract(pl.key, a, b, w, True)

    assert torch.autograd.gradcheck(f, x)
    assert torch.autograd.gradgradcheck(f, x)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_saved_y_gradient_is_equivariant_with_a_negative_control(dtype):
    """The x2 gradient read from the saved Y transforms like x2 (O(3), reflections included); the
    same gradient taken as if x2 were the 1e-for-1o relabelled input must fail under reflections."""
    i1, i2, io = "2x0e + 2x1o + 1x2e", "0e + 1o + 2e", "2x0e + 2x1o + 2x1e + 1x2e"
    d = tp.fully_connected(i1, i2, io)
    pl = _y_plan(d, "all")
    w = torch.randn(d.weight_numel, dtype=dtype, generator=torch.Generator().manual_seed(4))
    x = {"x1": torch.randn(6, d.irreps1.dim, dtype=dtype), "x2": torch.randn(6, d.irreps2.dim, dtype=dtype)}
    act = OnKeys({"x1": IrrepsRep(i1), "x2": IrrepsRep(i2)})

    def grad_x2(t):
        with torch.enable_grad():  # the checker runs f under no_grad
            b = t["x2"].detach().requires_grad_(True)
            out = _native.contract(pl.key, t["x1"], b, w, True)
            return torch.autograd.grad(out.pow(2).sum(), b)[0]  # an invariant loss

    assert_equivariant(grad_x2, x, act, IrrepsRep(i2))
    assert not equivariance_error(grad_x2, x, act, IrrepsRep("0e + 1e + 2e")).passed()


@needs_native
def test_compile_fullgraph_with_saved_y():
    """torch.compile(fullgraph=True) traces the Y-keeping forward as one custom op; first and
    second derivatives through the compiled function agree with naive."""
    d = tp.fully_connected("4x0e + 3x1o", Irreps.spherical_harmonics(2), "3x0e + 4x1o + 2x2e")
    pl = _y_plan(d, "all")
    naive = tp.make_executor(d, "naive")
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes)
        return gm

    compiled = torch.compile(lambda a, b, w: _native.contract(pl.key, a, b, w, True), fullgraph=True,
                             backend=backend)
    x1, x2, w = _inputs(d, 5, torch.float64, seed=6)
    out = compiled(x1, x2, w)
    assert any("tp_forward_keep_y" in s for s in seen)
    xr = [t.detach().requires_grad_(True) for t in (x1, x2, w)]
    ref = naive(*xr)
    assert (out - ref).abs().max() <= 1e-12 * ref.abs().max()
    for a, b in zip(torch.autograd.grad(out.pow(2).sum(), (x1, x2, w)),
                    torch.autograd.grad(ref.pow(2).sum(), xr)):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()
    (f,) = torch.autograd.grad(compiled(x1, x2, w).pow(2).sum(), x2, create_graph=True)
    (fr,) = torch.autograd.grad(naive(*xr).pow(2).sum(), xr[1], create_graph=True)
    for a, b in zip(torch.autograd.grad(f.pow(2).sum(), (x1, w)), torch.autograd.grad(fr.pow(2).sum(), (xr[0], xr[2]))):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
