"""The edge-matrix kernel (``tp.edge_matrix_conv``, ``tp.GauntEdgeMatrix``) as the torch.library custom ops
``equikit::edge_matrix`` and ``equikit::edge_matrix_backward``: ``torch.library.opcheck`` (schema, fake
implementation, autograd registration, AOT dispatch), gradcheck / gradgradcheck through the ops against
the pure-PyTorch fallback, ``torch.compile(fullgraph=True)`` of forces and of a force-loss training step
(compiled against eager, native kernel and fallback), the equivariance of the compiled layer with a
negative control, and the checks that read index values: skipped in traced code, run by the op."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import OnKeys
from equikit.o3 import Irreps, IrrepsRep
from equikit.tp import GauntEdgeMatrix, edge_matrix_conv
from equikit.tp import _edge_matrix as em

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
SH = "1x0e + 1x1o + 1x2e + 1x3o"
BLOCKS = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3])
STARTS = torch.tensor([0, 1, 4, 9, 16])
OP, BACKWARD_OP = torch.ops.equikit.edge_matrix.default, torch.ops.equikit.edge_matrix_backward.default

needs_native = pytest.mark.skipif(not em.available(), reason="no C++ compiler: the edge-matrix kernel is not built")


def _operands(dtype, e=13, n=5, c=3, seed=0, grad=True):
    """``x (E, C, 4)``, ``t (E, 4, 16)``, ``w (E, C, 4)``, ``m (N, C, 16)``, ``dst (E,)`` (every centre hit)."""
    g = torch.Generator().manual_seed(seed)
    x, t, w, m = (torch.randn(*s, generator=g, dtype=torch.float64).to(dtype).requires_grad_(grad)
                  for s in ((e, c, 4), (e, 4, 16), (e, c, 4), (n, c, 16)))
    dst = torch.cat([torch.arange(n), torch.randint(0, n, (e - n,), generator=g)])
    return x, t, w, m, dst, n


def _close(a, b, dtype):
    assert a.shape == b.shape
    scale = float(b.detach().abs().max())
    assert scale > 0  # not a comparison of zeros
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=RTOL[dtype] * scale)


# --------------------------------------------------------------------------- the ops
@needs_native
@pytest.mark.parametrize("slot", [0, 1, 2, 3])
def test_opcheck_edge_matrix(dtype, slot):
    x, t, w, m, dst, n = _operands(dtype, seed=slot)
    ops = [None if r == slot else o for r, o in enumerate((x, t, w, m))]
    torch.library.opcheck(OP, (*ops, dst, BLOCKS, STARTS, slot, n, 4))


@needs_native
def test_opcheck_edge_matrix_finds_block_starts():
    """``starts`` None (what traced code passes for a ``blocks`` tensor): the op finds them."""
    x, t, w, _, dst, n = _operands(torch.float64, seed=4)
    torch.library.opcheck(OP, (x, t, w, None, dst, BLOCKS, None, 3, n, 4))
    assert torch.equal(OP(x, t, w, None, dst, BLOCKS, None, 3, n, 4), OP(x, t, w, None, dst, BLOCKS, STARTS, 3, n, 4))


@needs_native
@pytest.mark.parametrize("mask", [7, 5])
def test_opcheck_edge_matrix_backward(dtype, mask):
    x, t, w, _, dst, n = _operands(dtype, seed=5)
    h = torch.randn(n, 3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).to(dtype)
    torch.library.opcheck(BACKWARD_OP, (x, t, w, h.requires_grad_(), dst, BLOCKS, STARTS, mask))
    outs = BACKWARD_OP(x, t, w, h, dst, BLOCKS, STARTS, mask)
    assert [o.numel() > 0 for o in outs] == [bool(mask >> r & 1) for r in range(3)]


def _fallback_slot(slot, ops, dst, n, blocks=BLOCKS):
    """The slot by plain PyTorch ops (autograd differentiates them): the oracle of the op."""
    return em._reference(slot, ops, em._Meta(dst, blocks, n, int(blocks.max()) + 1, None))


# gradcheck sizes (finite differences per input element): d_in 2, d_out 4 in blocks 1 + 3, 5 edges, 3 centres
SMALL_BLOCKS, SMALL_STARTS = torch.tensor([0, 1, 1, 1]), torch.tensor([0, 1, 4])


def _small(seed):
    g = torch.Generator().manual_seed(seed)
    x, t, w, m = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                  for s in ((5, 2, 2), (5, 2, 4), (5, 2, 2), (3, 2, 4)))
    return x, t, w, m, torch.tensor([0, 2, 1, 2, 0]), 3


@needs_native
@pytest.mark.parametrize("slot", [0, 1, 2, 3])
def test_op_gradcheck_and_equal_to_fallback(slot):
    """Every slot of the op: gradcheck and gradgradcheck (its registered autograd calls the op again),
    and its value, first and second derivatives equal those of the PyTorch fallback (float64)."""
    present = [r for r in range(4) if r != slot]

    def slot_of(run, blocks, starts, dst, n):
        def f(*a):
            ops = [None] * 4
            for r, v in zip(present, a):
                ops[r] = v
            return run(ops, blocks, starts, dst, n)
        return f

    def by_op(ops, blocks, starts, dst, n):
        return OP(*ops, dst, blocks, starts, slot, n, int(blocks.max()) + 1)

    def by_torch(ops, blocks, starts, dst, n):
        return _fallback_slot(slot, ops, dst, n, blocks)

    *ops, dst, n = _small(slot)
    ins = [ops[r] for r in present]
    f = slot_of(by_op, SMALL_BLOCKS, SMALL_STARTS, dst, n)
    assert torch.autograd.gradcheck(f, ins)
    assert torch.autograd.gradgradcheck(f, ins)
    *ops, dst, n = _operands(torch.float64, seed=slot)  # the kernel's compiled-in size 4 x 16
    ins = [ops[r] for r in present]
    res = []
    for run in (by_op, by_torch):
        f = slot_of(run, BLOCKS, STARTS, dst, n)
        out = f(*ins)
        first = torch.autograd.grad(out.pow(2).sum(), ins, create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), ins)
        res.append((out, *first, *second))
    for a, b in zip(*res, strict=True):
        _close(a, b, torch.float64)


@needs_native
def test_backward_op_gradcheck_and_equal_to_slots():
    """The one-pass backward op: its outputs equal the slots 0-2 of the PyTorch fallback, and its
    registered autograd passes gradcheck / gradgradcheck."""
    x, t, w, _, dst, n = _operands(torch.float64, seed=8)
    h = torch.randn(n, 3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    ops = [x, t, w, h]
    for r, g in enumerate(BACKWARD_OP(x, t, w, h, dst, BLOCKS, STARTS, 7)):
        _close(g, _fallback_slot(r, [None if q == r else o for q, o in enumerate(ops)], dst, n), torch.float64)
    *ops, dst, n = _small(9)

    def f(x, t, w, h):
        return tuple(BACKWARD_OP(x, t, w, h, dst, SMALL_BLOCKS, SMALL_STARTS, 7))

    assert torch.autograd.gradcheck(f, tuple(ops))
    assert torch.autograd.gradgradcheck(f, tuple(ops))


@needs_native
def test_op_checks_index_values():
    """The checks that read tensor values (skipped in traced code) run in the op, before the kernel."""
    x, t, w, _, dst, n = _operands(torch.float64, grad=False)
    with pytest.raises(ValueError, match=r"equikit::edge_matrix: `dst` must lie in 0\.\.4, got 0\.\.5"):
        OP(x, t, w, None, torch.where(dst == 1, 5, dst), BLOCKS, STARTS, 3, n, 4)
    with pytest.raises(ValueError, match=r"equikit::edge_matrix: `blocks` must lie in 0\.\.3, got 0\.\.4"):
        OP(x, t, w, None, dst, torch.where(BLOCKS == 3, 4, BLOCKS), None, 3, n, 4)
    h = torch.zeros(n, 3, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"equikit::edge_matrix_backward: `dst` must lie in 0\.\.4"):
        BACKWARD_OP(x, t, w, h, dst - 1, BLOCKS, STARTS, 7)


def test_opcheck_negative_control_wrong_fake():
    """opcheck can fail: an op whose fake implementation gives the wrong shape (a transposed output)."""
    @torch.library.custom_op("equikit_test_edge::conv_wrong_fake", mutates_args=(), device_types="cpu")
    def wrong(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
        return _fallback_slot(3, (x, t, w, None), dst, n)

    @wrong.register_fake
    def _(x, t, w, dst, n):
        return x.new_empty(n, t.shape[2], x.shape[1])

    x, t, w, _, dst, n = _operands(torch.float64, grad=False)
    with pytest.raises(Exception, match=r"test_faketensor failed .* Shapes torch.Size\(\[5, 3, 16\]\) and "
                                        r"torch.Size\(\[5, 16, 3\]\)"):
        torch.library.opcheck(wrong, (x, t, w, dst, n), test_utils=("test_faketensor",))


# --------------------------------------------------------------------------- torch.compile
@pytest.fixture(params=["native", "torch"])
def path(request, monkeypatch):
    if request.param == "native":
        if not em.available():
            pytest.skip("no C++ compiler: the edge-matrix kernel is not built")
    else:
        monkeypatch.setenv("EQUIKIT_NO_NATIVE", "1")
    torch._dynamo.reset()  # _native_enabled() is a constant of the compiled code
    yield request.param
    torch._dynamo.reset()


def _layer_inputs(dtype, e=23, n=6, c=3, seed=0):
    layer = GauntEdgeMatrix("1x0e + 1x1o", SH, lmax=3).to(dtype)
    g = torch.Generator().manual_seed(seed)
    x, sh, w = (torch.randn(*s, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
                for s in ((e, c, 4), (e, 16), (e, c, 4)))
    dst = torch.cat([torch.arange(n), torch.randint(0, n, (e - n,), generator=g)])
    return layer, x, sh, w, dst, n


def _kernel_calls(monkeypatch):
    """Record every slot / one-pass backward that runs in the C++ kernel."""
    calls = []
    native, backward = em._native, em._native_backward
    monkeypatch.setattr(em, "_native", lambda *a: calls.append(a[0]) or native(*a))
    monkeypatch.setattr(em, "_native_backward", lambda *a: calls.append("backward") or backward(*a))
    return calls


def test_compiled_forces_equal_eager(dtype, path, monkeypatch):
    """One compiled graph (fullgraph: no graph break, the validation included) computing the layer and
    its first-order gradients in the harmonics and ``x`` (the forces' chain): equal to eager; the native
    route runs the kernel through the op, the fallback traced PyTorch ops."""
    layer, x, sh, w, dst, n = _layer_inputs(dtype)

    def forces(x, sh, w):
        out = layer(x, sh, w, dst, n)
        gx, gsh = torch.autograd.grad(out.pow(2).sum(), (x, sh))
        return out.detach(), gx, gsh

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(forces, fullgraph=True, backend=counter)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        native, backward = em._native, em._native_backward
        calls = _kernel_calls(monkeypatch)
        got = compiled(x, sh, w)
        monkeypatch.setattr(em, "_native", native)
        monkeypatch.setattr(em, "_native_backward", backward)
        assert counter.frame_count == 1
        assert bool(calls) == (path == "native")
        if path == "native":
            assert 3 in calls  # the forward slot; its gradients by the slots or the one-pass op
    for a, b in zip(got, forces(x, sh, w), strict=True):
        _close(a, b, dtype)


def test_compiled_force_loss_double_backward(path):
    """A force-loss step: the gradients taken with create_graph inside the compiled function, the
    parameters' gradient of the loss outside (a first-order backward of the compiled graph, which holds
    the op's backward formulas); equal to eager in float64. (create_graph through the backward of a
    compiled forward instead raises in torch 2.13: 'torch.compile with aot_autograd does not currently
    support double backward', docs/tp.md.)"""
    layer, x, sh, w, dst, n = _layer_inputs(torch.float64, seed=1)

    def loss(x, sh, w):
        out = layer(x, sh, w, dst, n)
        gx, gsh = torch.autograd.grad(out.pow(2).sum(), (x, sh), create_graph=True)
        return out.pow(2).sum() + gsh.pow(2).sum() + (gx * x).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        got = compiled(x, sh, w)
    ref = loss(x, sh, w)
    _close(got, ref, torch.float64)
    for a, b in zip(torch.autograd.grad(got, (x, sh, w)), torch.autograd.grad(ref, (x, sh, w)), strict=True):
        _close(a, b, torch.float64)


@needs_native
def test_compiled_forward_then_eager_gradients():
    """The benchmark's pattern (torch.compile of the energy, autograd.grad outside; no dynamo option):
    the compiled graph holds the op (no graph break) and its backward gives the eager gradients; the
    functional form with a ``blocks`` tensor too (the op finds the block starts)."""
    torch._dynamo.reset()
    layer, x, sh, w, dst, n = _layer_inputs(torch.float64, seed=2)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes)
        return gm

    def conv(x, sh, w):
        t = (sh @ layer.matrix).reshape(-1, 4, 16)
        return edge_matrix_conv(x, t, w, layer.blocks, dst, n)

    for f in (lambda x, sh, w: layer(x, sh, w, dst, n), conv):
        seen.clear()
        got = torch.compile(f, fullgraph=True, backend=backend)(x, sh, w)
        assert "equikit.edge_matrix.default" in seen
        ref = f(x, sh, w)
        _close(got, ref, torch.float64)
        for a, b in zip(torch.autograd.grad(got.pow(2).sum(), (x, sh, w)),
                        torch.autograd.grad(ref.pow(2).sum(), (x, sh, w)), strict=True):
            _close(a, b, torch.float64)
    torch._dynamo.reset()


@needs_native
def test_compiled_dynamic_shapes_one_graph():
    """dynamic=True: edge and node counts are symbolic (``num_nodes`` a SymInt): one graph serves two
    structures of different sizes, values and gradients equal to eager."""
    torch._dynamo.reset()
    layer = GauntEdgeMatrix("1x0e + 1x1o", SH, lmax=3).double()
    counter = CompileCounterWithBackend("aot_eager")

    def f(x, sh, w, dst, nodes):
        return layer(x, sh, w, dst, nodes.shape[0])

    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend=counter)
    for e, n in ((23, 6), (40, 9)):
        _, x, sh, w, dst, _ = _layer_inputs(torch.float64, e=e, n=n, seed=e)
        got, ref = compiled(x, sh, w, dst, torch.empty(n)), f(x, sh, w, dst, torch.empty(n))
        _close(got, ref, torch.float64)
        _close(torch.autograd.grad(got.pow(2).sum(), sh)[0], torch.autograd.grad(ref.pow(2).sum(), sh)[0],
               torch.float64)
    assert counter.frame_count == 1
    torch._dynamo.reset()


@needs_native
def test_compiled_graph_runs_the_op_index_checks():
    """Traced code skips the checks that read index values; the op runs them, so a centre out of range
    raises instead of reaching the kernel."""
    torch._dynamo.reset()
    layer, x, sh, w, dst, n = _layer_inputs(torch.float64, seed=3)
    compiled = torch.compile(lambda x, sh, w, dst: layer(x, sh, w, dst, n), fullgraph=True, backend="aot_eager")
    compiled(x, sh, w, dst)
    with pytest.raises(ValueError, match=r"equikit::edge_matrix: `dst` must lie in 0\.\.5"):
        compiled(x, sh, w, dst + 1)
    torch._dynamo.reset()


def test_compiled_layer_equivariant_with_negative_control(dtype):
    """The compiled layer through the public checker (rotations and reflections of O(3)): output
    irreps as declared; read with the opposite parity, the check fails."""
    torch._dynamo.reset()
    layer, x, sh, w, dst, n = _layer_inputs(dtype, seed=4)
    compiled = torch.compile(lambda d: layer(d["x"], d["sh"], w.detach(), dst, n), fullgraph=True,
                             backend="aot_eager")
    inputs = {"x": x.detach(), "sh": sh.detach()}
    act = OnKeys({"x": IrrepsRep("1x0e + 1x1o"), "sh": IrrepsRep(SH)})
    assert_equivariant(compiled, inputs, act, IrrepsRep(layer.irreps_out), n_samples=6, generator=1,
                       rtol=RTOL[dtype])
    wrong = Irreps([(m.mul, (m.ir.l, -m.ir.p)) for m in layer.irreps_out])
    assert not equivariance_error(compiled, inputs, act, IrrepsRep(wrong), n_samples=6, generator=1).passed(
        rtol=RTOL[dtype])
    torch._dynamo.reset()


@pytest.mark.parametrize("call, match", [
    (lambda L, x, sh, w, d: L(x[:, :, :3], sh, w, d, 6), r"GauntEdgeMatrix: `x` must be \(E, C, 4\), got \(23, 3, 3\)"),
    (lambda L, x, sh, w, d: L(x, sh, w[:, :, :3], d, 6), r"GauntEdgeMatrix: `w_out` must be \(E, C, 4\)"),
    (lambda L, x, sh, w, d: L(x, sh, w, d + 1, 6), r"GauntEdgeMatrix: `dst` must lie in 0\.\.5, got 1\.\.6"),
    (lambda L, x, sh, w, d: edge_matrix_conv(x, torch.ones(23, 4, 16), w, L.blocks - 1, d, 6),
     r"edge_matrix_conv: `blocks` must be >= 0, got min\(blocks\) = -1"),
])
def test_bad_input_raises(call, match):
    layer, x, sh, w, dst, _ = _layer_inputs(torch.float32)
    with pytest.raises(ValueError, match=match):
        call(layer, x.detach(), sh.detach(), w.detach(), dst)
