"""PathGate (SPHNet-style learned path gates): pruned execution equals the full product with
the dropped paths zeroed, gradients reach dropped gates (straight-through), training finds the
paths that matter, O(3) equivariance through the checker with a negative control."""

import pytest
import torch

from equikit import tp
from equikit.check import assert_equivariant, equivariance_error
from equikit.groups.actions import OnKeys
from equikit.nn import PathGate
from equikit.o3 import IrrepsRep

I1, I2 = "3x0e + 3x1o + 2x2e", "0e + 1o + 2e"


def _desc():
    return tp.fully_connected(I1, I2, "3x0e + 3x1o + 2x1e + 2x2e")


def _x(d, dtype=torch.float64, n=5):
    return torch.randn(n, d.irreps1.dim, dtype=dtype), torch.randn(n, d.irreps2.dim, dtype=dtype)


@pytest.mark.parametrize("rule", ["straight_through", "anneal"])
@pytest.mark.parametrize("select", [{"k": 4}, {"threshold": 0.5}])
def test_pruned_equals_full_with_dropped_paths_zeroed(rule, select):
    d = _desc()
    m = PathGate(d, rule=rule, **select).double()
    with torch.no_grad():
        m.logits.copy_(torch.linspace(-3, 3, len(d.paths)).flip(0)[torch.randperm(len(d.paths))])
    x1, x2 = _x(d)
    kept = m.kept_paths()
    g = torch.sigmoid(m.logits.detach().double())
    assert kept == tuple(sorted(torch.argsort(-g)[:4].tolist())) if "k" in select else \
        kept == tuple(int(i) for i in torch.nonzero(g > 0.5).flatten())
    assert 0 < len(kept) < len(d.paths)
    # the oracle: the full naive product, dropped paths' weights zeroed, kept ones scaled by s_p
    w = m.weight.detach().clone()
    for n, sl in enumerate(d.weight_slices()):
        w[sl] *= (g[n] if rule == "anneal" else 1.0) if n in kept else 0.0
    want = tp.make_executor(d, "naive")(x1, x2, w)
    m.eval()
    assert [d.paths.index(p) for p in m.pruned_descriptor().paths] == list(kept)
    got = m(x1, x2)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # training mode with straight-through runs every path but has the same forward value
    if rule == "straight_through":
        assert torch.allclose(m.train()(x1, x2), want, rtol=1e-10, atol=1e-12)


def test_straight_through_gradients_reach_dropped_gates():
    d = _desc()
    m = PathGate(d, k=3).double()
    with torch.no_grad():
        m.logits.copy_(torch.arange(len(d.paths), dtype=torch.float64))
    x1, x2 = _x(d)
    target = torch.randn(5, d.irreps_out.dim, dtype=torch.float64)
    (m(x1, x2) - target).pow(2).sum().backward()  # dL/ds_p = <2 (z - y), z_p>, nonzero for every path
    dropped = [n for n in range(len(d.paths)) if n not in m.kept_paths()]
    assert (m.logits.grad[dropped].abs() > 0).all()
    # the weights of dropped paths get no gradient through a zero scale
    sl = d.weight_slices()[dropped[0]]
    assert m.weight.grad[sl].abs().max() == 0


def test_training_keeps_the_paths_that_matter():
    """Targets from two paths only; gates and weights trained together with k = 2 select them."""
    torch.manual_seed(1)
    d = tp.fully_connected("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o + 2x1e")
    truth = (1, 3)
    w_true = torch.zeros(d.weight_numel, dtype=torch.float64)
    for n in truth:
        sl = d.weight_slices()[n]
        w_true[sl] = torch.randn(sl.stop - sl.start, dtype=torch.float64)
    x1, x2 = _x(d, n=64)
    y = tp.make_executor(d, "naive")(x1, x2, w_true)
    m = PathGate(d, k=2, init=0.0).double()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = (m(x1, x2) - y).pow(2).mean() + 1e-2 * m.gates().sum()
        loss.backward()
        opt.step()
    assert m.kept_paths() == truth
    m.eval()
    assert (m(x1, x2) - y).pow(2).mean() < 1e-3 * y.pow(2).mean()


def test_equivariant_with_negative_control(dtype):
    d = _desc()
    m = PathGate(d, k=4).to(dtype)
    x1, x2 = _x(d, dtype, n=6)
    act = OnKeys({"x1": IrrepsRep(I1), "x2": IrrepsRep(I2)})
    f = lambda t: m(t["x1"], t["x2"])  # noqa: E731
    assert_equivariant(f, {"x1": x1, "x2": x2}, act, IrrepsRep(d.irreps_out))  # eval mode: the pruned product
    m.train()
    assert_equivariant(f, {"x1": x1, "x2": x2}, act, IrrepsRep(d.irreps_out))
    # negative control: a gate per output *component* (not per path) breaks equivariance
    comp = torch.linspace(0.5, 1.5, d.irreps_out.dim, dtype=dtype)
    assert not equivariance_error(lambda t: f(t) * comp, {"x1": x1, "x2": x2}, act,
                                  IrrepsRep(d.irreps_out)).passed()


def test_external_weights_and_bad_arguments():
    d = _desc()
    m = PathGate(d, k=2, internal_weights=False).double().eval()
    x1, x2 = _x(d)
    w = torch.randn(5, d.weight_numel, dtype=torch.float64)
    assert m(x1, x2, w).shape == (5, d.irreps_out.dim)
    with pytest.raises(ValueError, match="give exactly one of `k`"):
        PathGate(d)
    with pytest.raises(ValueError, match=r"`k` must be an int in \[1, "):
        PathGate(d, k=0)
    with pytest.raises(ValueError, match="every path must be weighted"):
        PathGate(tp.elementwise("1o", "1o"), k=1)
    with pytest.raises(ValueError, match="`rule` must be one of"):
        PathGate(d, k=1, rule="hard")
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        PathGate(d, k=1, temperature=0)
