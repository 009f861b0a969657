"""Irreps BatchNorm / LayerNorm: O(3) equivariance through the checker (train and eval) with
negative controls, a hand-written float64 reference, and e3nn.nn.BatchNorm where they coincide."""

import numpy as np
import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.nn import BatchNorm, LayerNorm
from equikit.o3 import Irreps, IrrepsRep

IRREPS = "3x0e + 2x0o + 2x1o + 1x1e + 2x2e"


def _x(dtype, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, Irreps(IRREPS).dim, generator=g, dtype=dtype) * 2 + 0.5)


def _randomise(m):
    with torch.no_grad():
        m.weight.uniform_(0.5, 2.0)
        if m.bias is not None:
            m.bias.normal_()
    return m


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_batchnorm_equivariant_train_and_eval(dtype, normalization):
    bn = _randomise(BatchNorm(IRREPS, normalization=normalization)).to(dtype)
    x = _x(dtype)
    bn.train()
    # a lambda, not the module: the checker puts modules in eval mode, here training is tested
    assert_equivariant(lambda t: bn(t), x, IrrepsRep(IRREPS), IrrepsRep(IRREPS))
    bn.eval()
    assert_equivariant(bn, x, IrrepsRep(IRREPS), IrrepsRep(IRREPS))


def test_layernorm_equivariant(dtype):
    ln = _randomise(LayerNorm(IRREPS)).to(dtype)
    assert_equivariant(ln, _x(dtype), IrrepsRep(IRREPS), IrrepsRep(IRREPS))


def test_negative_controls(dtype):
    """Centring vectors by a stored (running) mean, or normalising each component on its own,
    is not equivariant; the checker must say so. (Centring by the mean of the transformed batch
    itself is linear, hence equivariant in training; the running mean used at eval is a fixed
    vector, which is why BatchNorm keeps none for l > 0.)"""
    x = _x(dtype)
    act = IrrepsRep("2x1o")
    v = x[:, 7:13].contiguous()
    running_mean = _x(dtype, seed=5)[:, 7:13].mean(0)
    assert not equivariance_error(lambda t: t - running_mean, v, act, act).passed()
    per_component = lambda t: t / (t.pow(2).mean(0) + 1e-5).sqrt()  # noqa: E731
    assert not equivariance_error(per_component, v, act, act).passed()
    # a bias on the 0o scalars breaks parity: BatchNorm has none there
    bn = BatchNorm(IRREPS).to(dtype).eval()
    with_bias = lambda t: bn(t)[:, 3:5] + 0.3  # noqa: E731
    assert not equivariance_error(with_bias, x, IrrepsRep(IRREPS), IrrepsRep("2x0o")).passed()


def _reference(x, irreps, weight, bias, eps, normalization, over):
    """Loop-by-loop numpy reference: ``over="batch"`` (BatchNorm) or ``"sample"`` (LayerNorm)."""
    x = x.numpy()
    out = np.zeros_like(x)
    ix = iw = ib = 0
    for mul, ir in Irreps(irreps):
        d = ir.dim
        blk = x[:, ix : ix + mul * d].reshape(len(x), mul, d)
        res = np.zeros_like(blk)
        scalar = ir.l == 0 and ir.p == 1
        for u in range(mul):
            f = blk[:, u, :].copy()
            if over == "batch":
                if scalar:
                    f = f - f.mean()
                sq = np.mean(np.sum(f**2, axis=1) / (d if normalization == "component" else 1))
                res[:, u, :] = f / np.sqrt(sq + eps) * weight[iw + u]
            else:
                for n in range(len(x)):
                    allc = blk[n].copy()
                    if scalar:
                        allc = allc - allc.mean()
                    sq = np.mean(np.sum(allc**2, axis=1) / (d if normalization == "component" else 1))
                    res[n, u, :] = allc[u] / np.sqrt(sq + eps) * weight[iw + u]
            if scalar:
                res[:, u, :] += bias[ib + u]
        out[:, ix : ix + mul * d] = res.reshape(len(x), mul * d)
        ix += mul * d
        iw += mul
        ib += mul if scalar else 0
    return torch.from_numpy(out)


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_against_hand_reference_float64(normalization):
    x = _x(torch.float64)
    for cls, over in ((BatchNorm, "batch"), (LayerNorm, "sample")):
        m = _randomise(cls(IRREPS, normalization=normalization, eps=1e-3)).double()
        w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
        ref = _reference(x, IRREPS, w, b, 1e-3, normalization, over)
        torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-12)


def test_batchnorm_running_statistics_and_eval():
    bn = BatchNorm("2x0e + 1x1o", momentum=0.25).double()
    x = torch.randn(40, 5, dtype=torch.float64) * 3 + 1
    bn(x)
    s = x[:, :2]
    torch.testing.assert_close(bn.running_mean, 0.25 * s.mean(0), rtol=1e-12, atol=1e-12)
    var = ((s - s.mean(0)) ** 2).mean(0)
    vec = (x[:, 2:] ** 2).sum(-1).mean() / 3
    torch.testing.assert_close(bn.running_var, 0.75 + 0.25 * torch.cat([var, vec[None]]), rtol=1e-12, atol=1e-12)
    bn.eval()
    y = bn(x)
    expect_s = (s - bn.running_mean) / (bn.running_var[:2] + bn.eps).sqrt()
    torch.testing.assert_close(y[:, :2], expect_s, rtol=1e-12, atol=1e-12)
    before = bn.running_var.clone()
    bn(x)
    assert torch.equal(before, bn.running_var)  # eval does not update


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_batchnorm_matches_e3nn(normalization):
    e3nn_nn = pytest.importorskip("e3nn.nn")
    irreps = "3x0e + 2x0o + 2x1o + 1x1e + 2x2e"
    ours = _randomise(BatchNorm(irreps, normalization=normalization, momentum=0.2)).double()
    ref = e3nn_nn.BatchNorm(irreps, normalization=normalization, momentum=0.2).double()
    with torch.no_grad():
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    for seed in range(3):  # train steps update the running statistics identically
        x = _x(torch.float64, seed=seed)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    ours.eval()
    ref.eval()
    x = _x(torch.float64, seed=7)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-12)


def test_gradcheck():
    irreps = "2x0e + 1x1o + 2x2e"
    x = torch.randn(3, Irreps(irreps).dim, dtype=torch.float64, requires_grad=True)
    for m in (BatchNorm(irreps).double(), LayerNorm(irreps).double()):
        assert torch.autograd.gradcheck(m, (x,))
        assert torch.autograd.gradgradcheck(m, (x,))


def test_validation():
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        BatchNorm("0e", normalization="max")
    with pytest.raises(ValueError, match="`momentum` must be a number in"):
        BatchNorm("0e", momentum=2)
    with pytest.raises(ValueError, match="`eps` must be a number > 0"):
        LayerNorm("0e", eps=0)
    with pytest.raises(ValueError, match=r"`x` must have shape \(batch, ..., 5\)"):
        BatchNorm("2x0e + 1o")(torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least 2 rows"):
        BatchNorm("2x0e + 1o")(torch.randn(1, 5))
    with pytest.raises(TypeError, match="floating tensor"):
        LayerNorm("2x0e")(torch.ones(3, 2, dtype=torch.long))
