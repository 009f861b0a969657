"""Every backend against the naive oracle, in float64, for every mode; input validation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.o3 import Irreps, clebsch_gordan
from equikit.tp import (
    BACKENDS,
    Executor,
    Mode,
    channelwise,
    elementwise,
    fully_connected,
    linear,
    make_executor,
    register_backend,
    tensor_product,
    tensor_square,
)

from ._helpers import irreps_st


@st.composite
def descriptors(draw):
    kind = draw(st.sampled_from(["uvw", "uvu", "uuu", "square"]))
    i1 = draw(irreps_st())
    if kind == "uvw":
        return fully_connected(i1, draw(irreps_st()), draw(irreps_st(max_blocks=4)))
    if kind == "uvu":
        return channelwise(i1, draw(irreps_st()), lmax=draw(st.sampled_from([None, 2])))
    if kind == "uuu":
        return elementwise(i1, draw(irreps_st(muls=[m.mul for m in i1])), weighted=draw(st.booleans()))
    return tensor_square(i1, lmax=2)


def _inputs(d, batch=(3,), per_sample=False, dtype=torch.float64):
    x1 = torch.randn(*batch, d.irreps1.dim, dtype=dtype)
    x2 = None if d.square else torch.randn(*batch, d.irreps2.dim, dtype=dtype)
    shape = (*batch, d.weight_numel) if per_sample else (d.weight_numel,)
    w = torch.randn(*shape, dtype=dtype) if d.weight_numel else None
    return x1, x2, w


@settings(max_examples=16)
@given(d=descriptors(), per_sample=st.booleans(), torch_path=st.booleans())
def test_sparse_matches_naive_float64(d, per_sample, torch_path):
    """Both routes of sparse_cg: the C++ kernels (where built) and the PyTorch path that CUDA
    tensors and machines without a compiler take (dense per-path products for ``uvw``)."""
    x1, x2, w = _inputs(d, per_sample=per_sample)
    ref = make_executor(d, "naive")(x1, x2, w)
    ex = make_executor(d, "sparse_cg")
    if torch_path:
        ex = type(ex)(d)  # a fresh executor: the cached one is shared
        ex.native = False
    out = ex(x1, x2, w)
    assert out.shape == (3, d.irreps_out.dim)
    scale = ref.abs().max().clamp_min(1e-300)
    assert (out - ref).abs().max() <= 1e-12 * scale


@pytest.mark.parametrize("mode", ["uvw", "uvu", "uuu"])
def test_every_mode_at_lmax(mode):
    """One fixed case per mode up to l = 4 with per-sample weights and broadcasting batch dims."""
    a, b = Irreps("2x0e+2x1o+2x2e+2x3o+2x4e"), Irreps("2x0o+2x1e+2x2o+2x3e+2x4o")
    d = {"uvw": fully_connected(a, b, "2x0e+1x1e+2x3o+1x4e+1x2o"), "uvu": channelwise(a, b, lmax=4),
         "uuu": elementwise(a, b, weighted=True)}[mode]
    assert all(p.mode == Mode(mode) for p in d.paths) and len(d.paths) > 5
    x1 = torch.randn(4, 1, a.dim, dtype=torch.float64)
    x2 = torch.randn(1, 3, b.dim, dtype=torch.float64)
    w = torch.randn(4, 3, d.weight_numel, dtype=torch.float64)
    ref = tensor_product(d, x1, x2, w, backend="naive")
    out = tensor_product(d, x1, x2, w)
    assert out.shape == (4, 3, d.irreps_out.dim)
    assert (out - ref).abs().max() <= 1e-12 * ref.abs().max()
    # per-sample weights are really per sample: row (1, 2) equals a shared-weight call on it
    row = tensor_product(d, x1[1, 0], x2[0, 2], w[1, 2])
    assert torch.allclose(row, out[1, 2], rtol=1e-12, atol=1e-12)


def test_naive_is_the_formula_on_one_path():
    """The oracle itself against a hand-written loop over u, v, w and the CG entries."""
    d = fully_connected("2x1o", "3x1e", "2x2o", path_normalization="none")
    x, y, w = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64), torch.randn(2, 3, 2,
                                                                                                          dtype=torch.float64)
    C = clebsch_gordan(1, 1, 2, dtype=torch.float64)
    want = torch.zeros(2, 5, dtype=torch.float64)
    for u in range(2):
        for v in range(3):
            for o in range(2):
                for i in range(3):
                    for j in range(3):
                        want[o] += w[u, v, o] * C[i, j] * x[u, i] * y[v, j]
    got = make_executor(d, "naive")(x.reshape(-1), y.reshape(-1), w.reshape(-1))
    assert torch.allclose(got, want.reshape(-1), atol=1e-13)


def test_linear_descriptor_is_blockwise_matmul(dtype):
    d = linear("3x0e + 2x1o", "2x0e + 1x1o")
    x = torch.randn(5, d.irreps1.dim, dtype=dtype)
    w = torch.randn(d.weight_numel, dtype=dtype)
    out = tensor_product(d, x, torch.ones(5, 1, dtype=dtype), w)
    w0, w1 = w[:6].reshape(3, 2), w[6:].reshape(2, 1)
    want0 = x[:, :3] @ w0 / 3**0.5
    want1 = torch.einsum("zui,uw->zwi", x[:, 3:].reshape(5, 2, 3), w1).reshape(5, 3) / 2**0.5
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(out, torch.cat([want0, want1], -1), atol=tol)


def test_square_equals_product_with_itself():
    d = tensor_square("2x1o + 1x2e", "3x0e + 2x1e + 1x2e")
    x, _, w = _inputs(d)
    out = tensor_product(d, x, None, w)
    assert torch.allclose(out, tensor_product(d, x, x, w, backend="naive"), atol=1e-12)


def test_bad_input_messages():
    d = channelwise("2x1o", "0e + 1o")
    x1, x2, w = torch.randn(3, 6), torch.randn(3, 4), torch.randn(d.weight_numel)
    with pytest.raises(ValueError, match=r"`x1` must have shape \(\.\.\., 6\) for irreps '2x1o', got \(3, 5\)"):
        tensor_product(d, torch.randn(3, 5), x2, w)
    with pytest.raises(ValueError, match=r"`weight` must have shape \(8,\) or \(\.\.\., 8\), got \(7,\)"):
        tensor_product(d, x1, x2, torch.randn(7))
    with pytest.raises(TypeError, match=r"one dtype, got torch.float32 and torch.float64"):
        tensor_product(d, x1, x2.double(), w)
    with pytest.raises(TypeError, match=r"`weight` must have dtype torch.float32"):
        tensor_product(d, x1, x2, w.double())
    with pytest.raises(ValueError, match="leading dims do not broadcast"):
        tensor_product(d, x1, torch.randn(2, 4), w)
    with pytest.raises(ValueError, match=r"unknown backend 'fast'; available: \[.*'naive'.*'sparse_cg'"):
        tensor_product(d, x1, x2, w, backend="fast")
    with pytest.raises(TypeError, match="tensor_product: `descriptor` must be a TensorProductDescriptor"):
        tensor_product("2x1o", x1, x2, w)
    with pytest.raises(ValueError, match="tensor square; pass x2=None"):
        tensor_product(tensor_square("1o"), x2[:, 1:], x2[:, 1:] + 1)


def test_backend_that_cannot_express_a_mode_refuses():
    class OnlyElementwise(Executor):
        name = "_test_only_uuu"
        modes = frozenset({Mode.UUU})

    register_backend(OnlyElementwise)
    try:
        make_executor(elementwise("1o", "1o"), "_test_only_uuu")  # fine
        with pytest.raises(ValueError, match=r"backend '_test_only_uuu' cannot express 3 path\(s\).*mode 'uvu'"):
            make_executor(channelwise("1o", "1o"), "_test_only_uuu")
    finally:
        del BACKENDS["_test_only_uuu"]


@pytest.mark.parametrize("shared", [True, False])
def test_edge_convolution_fast_path_matches_naive(shared):
    """channelwise with one channel per x2 block (spherical harmonics) takes sparse_cg's fused
    per-x1-block path; also with a given irreps_out where two paths share one output block."""
    sh = Irreps.spherical_harmonics(4)
    for d in (channelwise("3x0e + 2x1o + 3x2e + 2x3o + 1x4e", sh),
              channelwise("2x1o + 2x2e", sh, "2x0e + 2x1o + 2x1e + 2x2e + 2x3o")):
        assert all(m.mul == 1 for m in d.irreps2)
        x1, x2, w = _inputs(d, batch=(5,), per_sample=not shared)
        ref = make_executor(d, "naive")(x1, x2, w)
        ex = make_executor(d, "sparse_cg")
        assert ex._groups is not None  # the fused path is the one under test
        out = ex(x1, x2, w)
        assert (out - ref).abs().max() <= 1e-12 * ref.abs().max()
