"""Agreement with e3nn 0.6.0 (weights copied across, one sign per CG triple), gradcheck, double
backward and torch.compile(fullgraph=True) on the default backend."""

import math

import pytest
import torch

from equikit.o3 import clebsch_gordan
from equikit.tp import channelwise, fully_connected, make_executor, tensor_product

e3nn_o3 = pytest.importorskip("e3nn.o3")


def _signs(d):
    """Per path, the sign s with e3nn's wigner_3j = s * C / sqrt(2 l3 + 1)."""
    out = []
    for p in d.paths:
        l1, l2, l3 = (ir.l for ir in d.irreps_of(p))
        c = clebsch_gordan(l1, l2, l3, dtype=torch.float64) / math.sqrt(2 * l3 + 1)
        out.append(float(torch.sign((c * e3nn_o3.wigner_3j(l1, l2, l3, dtype=torch.float64)).sum())))
    return out


def _e3nn(cls, *args, dtype, **kw):
    """Build an e3nn module in ``dtype``: e3nn bakes its wigner_3j constants in the default dtype
    at construction, so a float32-built module cast to float64 is only float32-accurate."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cls(*args, **kw)
    finally:
        torch.set_default_dtype(before)


def _to_e3nn_weights(d, w):
    """Our flat weights -> e3nn's (same layout; paths with s = -1 negated)."""
    w = w.clone()
    for s, sl in zip(_signs(d), d.weight_slices()):
        w[..., sl] *= s
    return w


@pytest.mark.parametrize("norm", ["element", "path"])
def test_fully_connected_matches_e3nn(dtype, norm):
    i1, i2, io = "3x0e + 2x1o + 2x2e", "2x0e + 1x1o + 1x2e + 1x3o", "2x0e + 3x1o + 2x1e + 2x2e + 1x3o"
    d = fully_connected(i1, i2, io, path_normalization=norm)
    ref = _e3nn(e3nn_o3.FullyConnectedTensorProduct, i1, i2, io, path_normalization=norm, internal_weights=False,
                shared_weights=True, dtype=dtype)
    assert ref.weight_numel == d.weight_numel
    assert [(i.i_in1, i.i_in2, i.i_out) for i in ref.instructions] == [(p.i1, p.i2, p.i_out) for p in d.paths]
    assert sum(s < 0 for s in _signs(d)) > 0  # the sign correction is exercised
    x1, x2 = torch.randn(7, d.irreps1.dim, dtype=dtype), torch.randn(7, d.irreps2.dim, dtype=dtype)
    w = torch.randn(d.weight_numel, dtype=dtype)
    want = ref(x1, x2, _to_e3nn_weights(d, w))
    got = tensor_product(d, x1, x2, w)
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    assert (got - want).abs().max() <= tol * want.abs().max()


def test_channelwise_matches_e3nn_per_sample_weights(dtype):
    """MACE-style edge convolution: uvu with one weight vector per edge."""
    i1, i2 = "8x0e + 8x1o + 4x2e", e3nn_o3.Irreps.spherical_harmonics(3)
    d = channelwise(i1, str(i2))
    ins = [(p.i1, p.i2, p.i_out, "uvu", True) for p in d.paths]
    ref = _e3nn(e3nn_o3.TensorProduct, i1, i2, str(d.irreps_out), ins, shared_weights=False,
                internal_weights=False, dtype=dtype)
    assert ref.weight_numel == d.weight_numel
    x1, x2 = torch.randn(11, d.irreps1.dim, dtype=dtype), torch.randn(11, d.irreps2.dim, dtype=dtype)
    w = torch.randn(11, d.weight_numel, dtype=dtype)
    want = ref(x1, x2, _to_e3nn_weights(d, w))
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    for backend in ("sparse_cg", "naive"):
        got = tensor_product(d, x1, x2, w, backend=backend)
        assert (got - want).abs().max() <= tol * want.abs().max(), backend


@pytest.mark.parametrize("backend", ["sparse_cg", "naive"])
@pytest.mark.parametrize("kind", ["uvw", "uvu", "uuu"])
def test_gradcheck_and_double_backward(backend, kind):
    from equikit.tp import elementwise

    d = {"uvw": fully_connected("2x0e + 1x1o", "1x1o + 1x2e", "1x0e + 2x1o + 1x2e"),
         "uvu": channelwise("2x1o + 1x2e", "0e + 1o", lmax=2),
         "uuu": elementwise("2x1o + 1x2e", "2x1e + 1x1o", weighted=True)}[kind]
    ex = make_executor(d, backend)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(1, d.irreps1.dim, dtype=torch.float64, generator=g, requires_grad=True)
    x2 = torch.randn(1, d.irreps2.dim, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(1, d.weight_numel, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(ex, (x1, x2, w))
    assert torch.autograd.gradgradcheck(ex, (x1, x2, w))


def test_force_like_double_backward_matches_naive():
    """d/dw of |d E / d x2|^2 (training on forces) agrees between the backends."""
    d = channelwise("4x0e + 4x1o", "0e + 1o + 2e")
    x1 = torch.randn(5, d.irreps1.dim, dtype=torch.float64)
    x2 = torch.randn(5, d.irreps2.dim, dtype=torch.float64)
    grads = []
    for backend in ("sparse_cg", "naive"):
        w = torch.randn(d.weight_numel, dtype=torch.float64, generator=torch.Generator().manual_seed(2),
                        requires_grad=True)
        y = x2.clone().requires_grad_(True)
        energy = tensor_product(d, x1, y, w, backend=backend)[:, :4].sum()
        (force,) = torch.autograd.grad(energy, y, create_graph=True)
        (gw,) = torch.autograd.grad(force.pow(2).sum(), w)
        grads.append(gw)
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_compiles_fullgraph_on_default_backend():
    d = channelwise("2x0e + 2x1o", "0e + 1o")
    ex = make_executor(d, "sparse_cg")
    compiled = torch.compile(ex, fullgraph=True, backend="eager")
    x1, x2 = torch.randn(6, d.irreps1.dim), torch.randn(6, d.irreps2.dim)
    w = torch.randn(6, d.weight_numel, requires_grad=True)
    out = compiled(x1, x2, w)
    assert torch.allclose(out, ex(x1, x2, w), rtol=1e-5, atol=1e-6)
    out.pow(2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
