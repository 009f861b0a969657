"""SphereGridMLP options of session 7: the last layer per output degree (``output="degree"``),
per-group weights (``num_groups`` + ``group``, e.g. per element) and the linear path
(``linear=True``): exact O(3) equivariance (reflections included) in float64 and float32,
negative controls, equality with the plain layer where the options reduce to it, bad input."""

import pytest
import torch

import equikit.nn._grid_mlp as grid_mlp
from equikit.check import assert_equivariant, equivariance_error
from equikit.nn import SphereGridMLP
from equikit.o3 import Irreps, IrrepsRep

I, O = "4x0e + 4x1o + 4x2e", "3x0e + 3x1o + 3x2e"
OPTIONS = [dict(output="degree"), dict(output="degree", num_groups=3), dict(linear=True),
           dict(linear=True, num_groups=3), dict(output="degree", num_groups=3, linear=True),
           dict(input_scale=3.0), dict(input_scale=2.5, output="degree", num_groups=3),
           dict(input_scale=5.0, output_scale=0.2)]


def _randomise(m: SphereGridMLP, seed: int = 0) -> SphereGridMLP:
    """Distinct weights per degree and group (they start equal / zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (m.out_weight if m.output == "degree" else None, m.lin_weight,
                  m.out_bias if m.output == "degree" else None):
            if p is not None:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return m


def _inputs(dtype, n=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, Irreps(I).dim, generator=g, dtype=torch.float64).to(dtype)
    return x, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_options_are_exactly_equivariant(dtype, opts):
    """Polynomial activation on its exact grid: every option keeps exact O(3) equivariance,
    with a per-sample group (an invariant) and a per-sample bias."""
    torch.manual_seed(0)
    m = _randomise(SphereGridMLP(I, O, hidden=(16,), act=torch.square, **opts)).to(dtype)
    x, group = _inputs(dtype)
    bias = torch.randn(len(x), 16, dtype=dtype)
    assert_equivariant(lambda v: m(v, bias=bias, group=group), x, IrrepsRep(I), IrrepsRep(O))


def test_negative_control_weights_per_component(dtype, monkeypatch):
    """A plausible bug, weights per (l, m) component instead of per degree l, breaks rotations."""
    torch.manual_seed(0)
    m = _randomise(SphereGridMLP(I, O, hidden=(16,), act=torch.square, output="degree", num_groups=3)).to(dtype)
    x, group = _inputs(dtype)
    assert_equivariant(lambda v: m(v, group=group), x, IrrepsRep(I), IrrepsRep(O))
    mix = grid_mlp._mix_degrees

    def per_component(z, weight, grp, ldeg):
        out = mix(z, weight, grp, ldeg)
        return out * torch.linspace(0.5, 1.5, out.shape[-1], dtype=out.dtype)

    monkeypatch.setattr(grid_mlp, "_mix_degrees", per_component)
    assert not equivariance_error(lambda v: m(v, group=group), x, IrrepsRep(I), IrrepsRep(O)).passed()


def test_negative_control_group_from_a_direction(dtype):
    """The group must be an invariant: one chosen from the sign of a vector component is not."""
    torch.manual_seed(0)
    m = _randomise(SphereGridMLP(I, O, hidden=(16,), act=torch.square, output="degree", num_groups=2,
                                 linear=True)).to(dtype)
    x, _ = _inputs(dtype)

    def bad(v):
        return m(v, group=(v[:, 4] > 0).long())  # the first 1o channel's first component

    assert not equivariance_error(bad, x, IrrepsRep(I), IrrepsRep(O)).passed()


def test_degree_output_with_equal_weights_is_the_grid_output():
    """output='degree' with one weight matrix for every degree is the same function as the
    default (the last layer is linear, so it commutes with the projection)."""
    torch.manual_seed(0)
    ref = SphereGridMLP(I, O, hidden=(16, 8), act=torch.square, exact_degree=4).double()
    m = SphereGridMLP(I, O, hidden=(16, 8), act=torch.square, exact_degree=4, output="degree").double()
    assert len(m.layers) == 2 and tuple(m.out_weight.shape) == (1, 3, 8, 3)
    with torch.no_grad():
        for a, b in zip(m.layers, ref.layers):
            a.load_state_dict(b.state_dict())
        m.out_weight.copy_(ref.layers[-1].weight.T.expand(1, 3, 8, 3))
        m.out_bias.copy_(ref.layers[-1].bias[None])
    x, _ = _inputs(torch.float64)
    bias = torch.randn(len(x), 16, dtype=torch.float64)
    assert torch.allclose(m(x, bias=bias), ref(x, bias=bias), rtol=1e-10, atol=1e-12)
    # a fresh module starts equal to a grid module with its own last layer's weights
    fresh = SphereGridMLP(I, O, hidden=(16,), output="degree", num_groups=2)
    assert torch.equal(fresh.out_weight[0, 0], fresh.out_weight[1, 2])


def test_group_picks_that_groups_weights():
    """Each sample's output equals a one-group module holding its group's weights."""
    torch.manual_seed(0)
    m = _randomise(SphereGridMLP(I, O, hidden=(16,), output="degree", num_groups=3, linear=True)).double()
    x, group = _inputs(torch.float64)
    out = m(x, group=group)
    for k in range(3):
        one = SphereGridMLP(I, O, hidden=(16,), output="degree", linear=True).double()
        with torch.no_grad():
            one.layers[0].load_state_dict(m.layers[0].state_dict())
            one.out_weight.copy_(m.out_weight[k : k + 1])
            one.out_bias.copy_(m.out_bias[k : k + 1])
            one.lin_weight.copy_(m.lin_weight[k : k + 1])
        sel = group == k
        assert sel.any()
        assert torch.allclose(out[sel], one(x[sel]), rtol=1e-10, atol=1e-12)


def test_linear_path_is_a_per_degree_channel_mix():
    """With the MLP's output zeroed, the layer is the linear path: per degree l <= min(L_in, L_out)
    a C_in x C_out matrix on the mul_ir blocks (written out here block by block), zero beyond."""
    torch.manual_seed(0)
    i, o = "4x0e + 4x1o + 4x2e", "3x0e + 3x1o"
    m = SphereGridMLP(i, o, hidden=(5,), output="degree", linear=True).double()
    assert tuple(m.lin_weight.shape) == (1, 2, 4, 3)
    x, _ = _inputs(torch.float64)
    with torch.no_grad():
        m.out_weight.zero_()
        m.out_bias.zero_()
        m.lin_weight.normal_()
    w = m.lin_weight[0]
    want = torch.cat([x[:, :4] @ w[0],
                      torch.einsum("bcm,cd->bdm", x[:, 4:16].reshape(-1, 4, 3), w[1]).reshape(-1, 9)], dim=1)
    assert torch.allclose(m(x), want, rtol=1e-10, atol=1e-12)


def test_input_and_output_scale_are_the_plain_layer_at_scaled_input_and_output():
    torch.manual_seed(0)
    m = SphereGridMLP(I, O, hidden=(16,), act=torch.square, input_scale=3.0).double()
    plain = SphereGridMLP(I, O, hidden=(16,), act=torch.square).double()
    plain.load_state_dict(m.state_dict())
    x, _ = _inputs(torch.float64)
    bias = torch.randn(len(x), 16, dtype=torch.float64)
    assert torch.allclose(m(x, bias=bias), plain(3.0 * x, bias=bias), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(m(x), plain(x), rtol=1e-3)
    assert "input_scale=3" in repr(m)
    both = SphereGridMLP(I, O, hidden=(16,), act=torch.square, input_scale=3.0, output_scale=0.25).double()
    both.load_state_dict(m.state_dict())
    assert torch.allclose(both(x, bias=bias), 0.25 * plain(3.0 * x, bias=bias), rtol=1e-12, atol=1e-12)


def test_linear_path_starts_at_zero():
    torch.manual_seed(0)
    a = SphereGridMLP(I, O, hidden=(6,), output="degree")
    torch.manual_seed(0)
    b = SphereGridMLP(I, O, hidden=(6,), output="degree", linear=True)
    x, _ = _inputs(torch.float32)
    assert torch.equal(a(x), b(x)) and not b.lin_weight.any()


def test_gradients():
    torch.manual_seed(0)
    m = _randomise(SphereGridMLP("2x0e + 2x1o", "2x0e + 2x1o", hidden=(4,), output="degree", num_groups=2,
                                 linear=True)).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    group = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert m(x, group=group).shape == (2, 3, 8)
    assert torch.autograd.gradcheck(lambda v: m(v, group=group), (x,))
    assert torch.autograd.gradgradcheck(lambda v: m(v, group=group), (x,))
    m(x, group=group).square().sum().backward()
    assert m.out_weight.grad[0].abs().sum() > 0 and m.out_weight.grad[1].abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"SphereGridMLP: `output` must be 'grid' or 'degree', got 'per_l'"):
        SphereGridMLP("2x0e", "2x0e", output="per_l")
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match=r"SphereGridMLP: `num_groups` must be an int >= 1"):
            SphereGridMLP("2x0e", "2x0e", output="degree", num_groups=bad)
    for bad in (0.0, -1.0, float("nan"), True, "2"):
        with pytest.raises(ValueError, match=r"SphereGridMLP: `input_scale` must be a finite number > 0"):
            SphereGridMLP("2x0e", "2x0e", input_scale=bad)
        with pytest.raises(ValueError, match=r"SphereGridMLP: `output_scale` must be a finite number > 0"):
            SphereGridMLP("2x0e", "2x0e", output_scale=bad)
    with pytest.raises(TypeError, match=r"SphereGridMLP: `linear` must be a bool, got str"):
        SphereGridMLP("2x0e", "2x0e", linear="yes")
    with pytest.raises(ValueError, match=r"`num_groups` = 2 has no per-group weights"):
        SphereGridMLP("2x0e", "2x0e", num_groups=2)
    with pytest.raises(ValueError, match=r"output='degree' needs a hidden layer"):
        SphereGridMLP("2x0e", "2x0e", hidden=(), output="degree")
    m = SphereGridMLP("2x0e + 2x1o", "2x0e", hidden=(4,), output="degree", num_groups=2)
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"`group` is required with num_groups=2"):
        m(x)
    with pytest.raises(ValueError, match=r"`group` must be an int tensor of shape \(3,\).*got \(2,\)"):
        m(x, group=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`group` must be an int tensor.*torch.float32"):
        m(x, group=torch.zeros(3))
    with pytest.raises(ValueError, match=r"`group` values must be in \[0, 2\), got \[0, 2\]"):
        m(x, group=torch.tensor([0, 2, 1]))


# --------------------------------------------------------------------------- pre (a Linear folded in)
P = "5x0e + 5x1o + 5x2e"  # foldable: one block per degree of I


@pytest.mark.parametrize("opts", [dict(), dict(output="degree", num_groups=3, input_scale=2.0, output_scale=0.5),
                                  dict(linear=True, num_groups=3)], ids=["grid", "degree-groups-scales", "linear"])
def test_pre_is_folded_with_the_same_values_and_gradients(opts):
    """``m(x, pre=lin, pre_scale=s) == m(lin(s x))``: values, input and bias gradients with
    ``create_graph``, and the parameter gradients of a loss on them (a training step with forces)."""
    from equikit.nn import Linear

    torch.manual_seed(0)
    m = _randomise(SphereGridMLP(I, O, hidden=(6,), act=lambda t: t + t * t * t / 6, **opts)).double()
    lin = Linear(P, I).double()
    assert m._pre_fold(lin) is not None
    x = torch.randn(5, Irreps(P).dim, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    group = torch.tensor([0, 2, 1, 1, 0]) if m.num_groups > 1 else None
    params = [*m.parameters(), *lin.parameters()]
    results = []
    for folded in (True, False):
        out = m(x, bias, group=group, pre=lin, pre_scale=0.3) if folded else m(lin(0.3 * x), bias, group=group)
        gx, gb = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (x, bias),
                                     create_graph=True)
        gp = torch.autograd.grad((gx**2).sum() + (gb**2).sum() + (out**2).sum(), params)
        results.append([out, gx, gb, *gp])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_pre_fold_is_equivariant_and_a_wrong_fold_is_not(dtype):
    """Folded ``pre`` keeps exact O(3) equivariance; picking the degree's map by the component
    index (``lm mod 3``, a plausible indexing bug: the components of one degree mixed by different
    maps) breaks it."""
    from equikit.nn import Linear

    torch.manual_seed(0)
    m = _randomise(SphereGridMLP(I, O, hidden=(8,), act=torch.square, output="degree", num_groups=3)).to(dtype)
    lin = Linear(P, I).to(dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, Irreps(P).dim, generator=g, dtype=torch.float64).to(dtype)
    group = torch.randint(0, 3, (7,), generator=g)
    assert_equivariant(lambda v: m(v, group=group, pre=lin, pre_scale=0.5), x, IrrepsRep(P), IrrepsRep(O))
    key = next(iter(m._fold_cache))
    idx, ldeg, order, contiguous, c_src = m._fold_cache[key]
    m._fold_cache[key] = (idx, torch.arange(len(ldeg)) % 3, order, contiguous, c_src)
    with torch.no_grad():
        lin.weight.normal_()  # distinct maps per degree
    assert not equivariance_error(lambda v: m(v, group=group, pre=lin), x, IrrepsRep(P), IrrepsRep(O)).passed()


def test_pre_not_foldable_is_applied_and_bad_pre_raises():
    from equikit.nn import Linear

    torch.manual_seed(0)
    m = SphereGridMLP(I, O, hidden=(6,))
    lin = Linear("4x0e + 2x1o + 3x1o + 4x2e", I)  # two blocks of degree 1: applied, not folded
    assert m._pre_fold(lin) is None
    x = torch.randn(3, lin.irreps_in.dim)
    torch.testing.assert_close(m(x, pre=lin), m(lin(x)))
    with pytest.raises(ValueError, match="`pre` must be an equikit Linear to irreps_in"):
        m(x, pre=Linear("4x0e", "4x0e"))
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., 45\)"):
        m(torch.randn(3, 7), pre=Linear(P, I))
