"""Set layers through the checker: permutations of padded sets (padding permuted too), both
dtypes, with negative controls; masks really ignore padding; INSET depends on the superset."""

import pytest
import torch
from torch import nn

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import NodePermutation
from equikit.nn import ISAB, PMA, SAB, DeepSets, INSETPooling, SetLinear, masked_pool

B, N, C = 3, 7, 4
IN = NodePermutation(N, nodes={"x": -2, "mask": -1})
IN_SUBSET = NodePermutation(N, nodes={"x": -2, "mask": -1, "subset": -1})
OUT = NodePermutation(N, node_dim=-2)


def _sets(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=gen, dtype=dtype)
    sizes = torch.tensor([7, 4, 1])
    mask = torch.arange(N).unsqueeze(0) < sizes.unsqueeze(1)
    x = x * mask.unsqueeze(-1)  # zero padding, the layout to_dense_batch produces
    return {"x": x, "mask": mask}


class PositionalBroken(nn.Module):
    """Negative control: a learned embedding per slot breaks permutation symmetry."""

    def __init__(self, inner, channels=C):
        super().__init__()
        self.inner = inner
        self.pos = nn.Parameter(torch.randn(N, channels))

    def forward(self, x, mask=None):
        return self.inner(x + self.pos.to(x.dtype), mask)


EQUIVARIANT = {
    "setlinear_mean": lambda: SetLinear(C, 5, pool="mean"),
    "setlinear_max": lambda: SetLinear(C, 5, pool="max"),
    "deepsets_equivariant": lambda: DeepSets(C, 8, 3, equivariant=True, n_layers=3),
    "sab": lambda: SAB(C, heads=2),
    "isab": lambda: ISAB(C, num_inducing=3, heads=2),
}
INVARIANT = {
    "deepsets": lambda: DeepSets(C, 8, 3),
    "deepsets_mean": lambda: DeepSets(C, 8, 3, pool="mean"),
    "pma": lambda: PMA(C, num_seeds=2, heads=2),
}


@pytest.mark.parametrize("name", list(EQUIVARIANT))
def test_equivariant_set_layers(name, dtype):
    layer = EQUIVARIANT[name]().to(dtype)
    data = _sets(dtype)
    assert_equivariant(lambda d: layer(d["x"], d["mask"]), data, IN, OUT)
    broken = PositionalBroken(layer).to(dtype)
    bad = equivariance_error(lambda d: broken(d["x"], d["mask"]), data, IN, OUT)
    assert not bad.passed() and bad.rel_max > 1e-3


@pytest.mark.parametrize("name", list(INVARIANT))
def test_invariant_set_layers(name, dtype):
    layer = INVARIANT[name]().to(dtype)
    data = _sets(dtype)
    assert_equivariant(lambda d: layer(d["x"], d["mask"]), data, IN)
    broken = PositionalBroken(layer).to(dtype)
    bad = equivariance_error(lambda d: broken(d["x"], d["mask"]), data, IN)
    assert not bad.passed() and bad.rel_max > 1e-3


@pytest.mark.parametrize("name", ["setlinear_mean", "deepsets", "sab", "isab", "pma"])
def test_padding_is_ignored(name):
    """Changing padded entries changes nothing; a padded set equals the unpadded one."""
    layer = {**EQUIVARIANT, **INVARIANT}[name]().double()
    data = _sets(torch.float64)
    noisy = data["x"] + 100.0 * (~data["mask"]).unsqueeze(-1)
    out, out_noisy = layer(data["x"], data["mask"]), layer(noisy, data["mask"])
    assert torch.allclose(out, out_noisy, atol=1e-12)
    short = layer(data["x"][1:2, :4], None)  # the second set has 4 real elements
    ref = out[1:2, :4] if out.ndim == 3 and name != "pma" else out[1:2]
    assert torch.allclose(short, ref, atol=1e-12)
    if out.ndim == 3 and name != "pma":
        assert torch.equal(out[1, 4:], torch.zeros_like(out[1, 4:]))


def test_deepsets_sum_matches_closed_form():
    ds = DeepSets(2, 6, 1).double()
    x = torch.randn(1, 5, 2, dtype=torch.float64)
    want = ds.rho(ds.phi(x).sum(1))
    assert torch.allclose(ds(x), want, atol=1e-14)
    assert masked_pool(torch.ones(1, 3, 2), torch.tensor([[False, False, False]]), "max").abs().sum() == 0


def test_inset_invariance_and_superset_dependence(dtype):
    torch.manual_seed(1)
    layer = INSETPooling(C, 16, 3).to(dtype)
    data = _sets(dtype)
    data["subset"] = torch.rand(B, N, generator=torch.Generator().manual_seed(2)) < 0.5
    data["subset"] &= data["mask"]
    data["subset"][:, 0] = True  # every subset non-empty
    f = lambda d: layer(d["x"], d["subset"], d["mask"])  # noqa: E731
    assert_equivariant(f, data, IN_SUBSET)
    scores = lambda d: layer(d["x"], d["subset"], d["mask"], return_scores=True)[1].unsqueeze(-1)  # noqa: E731
    assert_equivariant(scores, data, IN_SUBSET, OUT)
    # negative control: a slot embedding
    broken = PositionalBroken(lambda x, m: layer(x, data["subset"], m))
    bad = equivariance_error(lambda d: broken(d["x"], d["mask"]), {"x": data["x"], "mask": data["mask"]}, IN)
    assert not bad.passed()
    # elements outside the subset but inside the superset change the output (fusion works)
    out = f(data)
    outside = data["mask"] & ~data["subset"]
    moved = dict(data, x=data["x"] + 0.5 * outside.unsqueeze(-1).to(dtype))
    changed = (f(moved) - out).abs().amax(-1)
    assert (changed[outside.any(1)] > 1e-3).all()
    # ... but elements outside the superset do not
    pad = dict(data, x=data["x"] + 9.0 * (~data["mask"]).unsqueeze(-1).to(dtype))
    assert torch.allclose(f(pad), out, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_set_validation():
    with pytest.raises(ValueError, match=r"SetLinear: `x` must be a floating tensor \(B, n, C\)"):
        SetLinear(3, 4)(torch.randn(5, 3))
    with pytest.raises(ValueError, match="SetLinear: `x` must have 3 channels"):
        SetLinear(3, 4)(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"`mask` must be a tensor \(B, n\)"):
        SAB(4, heads=2)(torch.randn(2, 5, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        SAB(5, heads=2)
    with pytest.raises(ValueError, match="pool"):
        DeepSets(3, 4, 5, pool="median")
