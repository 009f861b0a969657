"""Module values (against e3nn and closed forms), validation, and compilation."""

import math

import pytest
import torch

from equikit import tp
from equikit.nn import BesselBasis, Gate, GaussianBasis, Linear, NormActivation, PolynomialCutoff, TensorProduct

e3nn_o3 = pytest.importorskip("e3nn.o3")


def test_linear_matches_e3nn(dtype):
    i, o = "3x0e + 2x1o + 2x0e + 1x2e", "2x0e + 3x1o + 1x1e"
    ours = Linear(i, o).to(dtype)
    ref = e3nn_o3.Linear(i, o).to(dtype)
    assert ref.weight_numel == ours.weight.numel()
    # e3nn orders its instructions the same way: (i_in, i_out) pairs with equal irreps
    assert [(a.i_in, a.i_out) for a in ref.instructions] == [(p.i1, p.i_out) for p in ours.descriptor.paths]
    with torch.no_grad():
        ref.weight.copy_(ours.weight)
    x = torch.randn(5, ours.irreps_in.dim, dtype=dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert torch.allclose(ours(x), ref(x), atol=tol, rtol=tol)


def test_linear_bias_only_on_0e():
    lin = Linear("2x1o + 1x0e", "3x0e + 1x1o + 2x0e", bias=True)
    assert lin.bias.numel() == 5
    with torch.no_grad():
        lin.bias.fill_(1.0)
        lin.weight.zero_()
    out = lin(torch.randn(2, 7))
    assert torch.equal(out[:, :3], torch.ones(2, 3)) and torch.equal(out[:, 3:6], torch.zeros(2, 3))


def test_tensor_product_module_weights():
    d = tp.channelwise("4x0e + 4x1o", "0e + 1o")
    m = TensorProduct(d)
    assert m.weight.shape == (d.weight_numel,)
    x1, x2 = torch.randn(3, 16), torch.randn(3, 4)
    assert torch.allclose(m(x1, x2), tp.tensor_product(d, x1, x2, m.weight.detach(), backend="naive"), atol=1e-5)
    with pytest.raises(ValueError, match=r"holds its weights .* internal_weights=False to pass `weight`"):
        m(x1, x2, m.weight)
    ext = TensorProduct(d, backend="naive", internal_weights=False)
    assert ext.weight is None
    with pytest.raises(ValueError, match=r"needs `weight` of shape \(24,\) or \(\.\.\., 24\)"):
        ext(x1, x2)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        TensorProduct(d, backend="cuda")


def test_bessel_and_gaussian_closed_forms(dtype):
    r = torch.tensor([0.3, 1.0, 2.5, 3.9], dtype=dtype)
    b = BesselBasis(4.0, 5)(r)
    n = torch.arange(1, 6, dtype=dtype)
    want = math.sqrt(2 / 4.0) * torch.sin(n * math.pi * r[:, None] / 4.0) / r[:, None]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(b, want, atol=tol, rtol=tol)
    b0 = BesselBasis(4.0, 5)(torch.zeros(1, dtype=dtype))  # the limit n pi / r_c sqrt(2 / r_c)
    assert torch.allclose(b0[0], n * math.pi / 4.0 * math.sqrt(0.5), atol=tol)
    g = GaussianBasis(0.0, 4.0, 5)(torch.tensor([1.0, 1.5], dtype=dtype))
    assert torch.allclose(g[0], torch.exp(-0.5 * (torch.tensor([-1.0, 0, 1, 2, 3], dtype=dtype)) ** 2), atol=tol)
    assert BesselBasis(4.0, 3, trainable=True).freq.requires_grad


def test_cutoff_is_smooth_at_r_max():
    f = PolynomialCutoff(3.0, p=6)
    r = torch.tensor([0.0, 2.999999, 3.0], dtype=torch.float64, requires_grad=True)
    y = f(r)
    (d1,) = torch.autograd.grad(y.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    assert y[0] == 1 and abs(y[1]) < 1e-12 and y[2] == 0
    assert abs(d1[1]) < 1e-8 and abs(d2[1]) < 1e-4


def test_module_validation():
    msg = r"Linear: `x` must have shape \(\.\.\., 4\) for irreps '1x0e\+1x1o', got \(2, 5\)"
    with pytest.raises(ValueError, match=msg):
        Linear("0e + 1o", "0e")(torch.randn(2, 5))
    with pytest.raises(ValueError, match="Gate: `irreps_scalars` must contain only l = 0"):
        Gate("1o", "1o")
    with pytest.raises(ValueError, match="Gate: `irreps_gated` must contain only l > 0"):
        Gate("0e", "0e")
    with pytest.raises(ValueError, match=r"NormActivation: `x` must have shape \(\.\.\., 3\)"):
        NormActivation("1o")(torch.randn(4))
    with pytest.raises(TypeError, match="BesselBasis: `r` must be a floating tensor"):
        BesselBasis(4.0)(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="BesselBasis: `r_max` must be > 0, got -1"):
        BesselBasis(-1.0)
    with pytest.raises(ValueError, match="GaussianBasis: need r_max > r_min"):
        GaussianBasis(2.0, 1.0)


def test_block_compiles_fullgraph():
    """Linear -> channelwise TP with per-edge radial weights -> Linear -> Gate, as in a MACE
    interaction, under torch.compile(fullgraph=True) (dynamo only: backend='eager')."""
    node = "4x0e + 2x1o"
    d = tp.channelwise(node, "0e + 1o", lmax=1)
    gate = Gate("4x0e", "2x1o")
    lin1, conv, lin2 = Linear(node, node), TensorProduct(d, internal_weights=False), \
        Linear(d.irreps_out.simplify(), gate.irreps_in)
    radial = torch.nn.Linear(6, d.weight_numel)
    bessel, cut = BesselBasis(3.0, 6), PolynomialCutoff(3.0)

    def block(x, sh, r):
        w = radial(bessel(r)) * cut(r)[:, None]
        return gate(lin2(conv(lin1(x), sh, w)))

    x, sh, r = torch.randn(5, 10), torch.randn(5, 4), torch.rand(5) * 3
    out = torch.compile(block, fullgraph=True, backend="eager")(x, sh, r)
    assert torch.allclose(out, block(x, sh, r), atol=1e-6)


def test_linear_frozen_dense_path_equals_per_path(dtype, monkeypatch):
    """Frozen weights on few rows run as one dense matmul (kept per weight version): values and
    derivatives in ``x`` (to second order) equal the per-path loop; an in-place weight update is
    seen (a stale matrix would fail); above ``DENSE_LIMIT`` the loop runs."""
    torch.manual_seed(0)
    i, o = "3x0e + 2x1o + 2x0e + 1x2e", "2x0e + 3x1o + 1x1e"
    lin = Linear(i, o, bias=True).to(dtype)
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(7, lin.irreps_in.dim, dtype=dtype, requires_grad=True)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)

    def value_and_grads(m):
        y = m(x)
        (g,) = torch.autograd.grad((y**2).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad((g**2).sum(), x)
        return y, g, gg

    ref = value_and_grads(lin)
    assert not lin._dense_cache  # weights need gradients: the loop ran
    lin.requires_grad_(False)
    for a, b in zip(value_and_grads(lin), ref):
        torch.testing.assert_close(a, b, **tol)
    assert len(lin._dense_cache) == 1
    with torch.no_grad():
        lin.weight.mul_(2.0)
    lin.requires_grad_(True)
    ref2 = lin(x).detach()
    lin.requires_grad_(False)
    torch.testing.assert_close(lin(x), ref2, **tol)
    assert float((ref2 - ref[0].detach()).abs().max()) > 1e-2  # the update changed the output
    monkeypatch.setattr(Linear, "DENSE_LIMIT", 0)
    lin._dense_cache.clear()
    torch.testing.assert_close(lin(x), ref2, **tol)
    assert not lin._dense_cache
