import pytest
import torch

from equikit.groups import SO, Cyclic, ImageRot90, NodePermutation, O, PointCloud, Scaling
from equikit.symmetrize import (
    DependenceRegularizer,
    EquivarianceRegularizer,
    GroupAverage,
    LatentAlignmentLoss,
    LearnedLatentAction,
    ProjectionRegularizer,
    Symmetrize,
    concatenated_distance_covariance,
    distance_covariance,
    joint_distance_covariance,
    one_hot,
)

from ._helpers import mlp


def test_equivariance_regularizer(dtype):
    x = torch.randn(8, 5, 3, dtype=dtype)
    reg = EquivarianceRegularizer(PointCloud(O(3)), PointCloud(O(3)), n_samples=2, generator=0)
    centroid = lambda p: p.mean(-2)  # noqa: E731 -- O(3)-equivariant
    assert float(reg(centroid, x).detach()) < 1e-10
    lin = torch.nn.Linear(3, 3).to(dtype)
    val = reg(lambda p: lin(p.mean(-2)), x)
    assert float(val.detach()) > 1e-4
    val.backward()
    assert lin.weight.grad.abs().sum() > 0


def test_projection_regularizer_separates_symmetries():
    torch.manual_seed(0)
    x = torch.randn(32, 4, 2, dtype=torch.float64)
    f = lambda p: torch.tanh(p.pow(2).sum(-1)).sum(-1, keepdim=True)  # noqa: E731 -- O(2)-invariant, not scale
    reg = ProjectionRegularizer(
        {"rotation": (PointCloud(O(2)), None), "scale": (PointCloud(Scaling()), None)}, n_samples=8, generator=1
    )
    res = reg.residuals(f, x)
    assert float(res["rotation"]) < 1e-20
    assert float(res["scale"]) > 1e-3
    reg.train()
    reg(f, x)
    lam = reg.strengths()
    assert lam["rotation"] == pytest.approx(1 / reg.floor) and lam["rotation"] > 5 * lam["scale"]
    assert reg.levels()["rotation"] < 1e-20 < reg.levels()["scale"]


def test_projection_uses_whole_small_group(dtype):
    """With n_samples >= |G| the projection is exact group averaging, so the projected
    function has zero residual (P is idempotent)."""
    x = torch.randn(6, 4, 4, dtype=dtype)
    backbone = mlp(16, 2, dtype)
    reg = ProjectionRegularizer({"c4": (ImageRot90(), None)}, n_samples=4)
    averaged = Symmetrize(backbone, GroupAverage(Cyclic(4)), ImageRot90())
    tol = 1e-24 if dtype == torch.float64 else 1e-11
    assert float(reg.residuals(averaged, x)["c4"].detach()) < tol
    assert float(reg.residuals(backbone, x)["c4"].detach()) > 1e-4


def test_latent_alignment():
    torch.manual_seed(0)
    x = torch.randn(16, 5, 3)
    inv_enc = lambda p: p.norm(dim=-1)  # noqa: E731 -- (B, 5) invariant
    loss = LatentAlignmentLoss(PointCloud(SO(3)), None, invariant_dim=5, generator=0)
    assert float(loss(inv_enc, x)) < 1e-10
    lin = torch.nn.Linear(15, 5)
    assert float(loss(lambda p: lin(p.flatten(1)), x).detach()) > 1e-3
    # an equivariant encoder (the centroid) with the true action: zero
    true = LearnedLatentAction(9, 3, features=lambda g: g.flatten(1))
    with torch.no_grad():
        true.net[0].weight.zero_()
    eq = LatentAlignmentLoss(PointCloud(SO(3)), true, invariant_dim=0, generator=0)
    assert float(eq(lambda p: p.mean(1), x).detach()) > 1e-3  # identity action is wrong
    # learning the action drives the alignment loss of the equivariant encoder down
    opt = torch.optim.Adam(true.parameters(), lr=3e-2)
    first = None
    for _ in range(250):
        opt.zero_grad()
        val = eq(lambda p: p.mean(1), torch.randn(16, 5, 3))
        first = float(val.detach()) if first is None else first
        val.backward()
        opt.step()
    assert float(val.detach()) < 0.2 * first


def test_latent_alignment_on_tokens_matches_a_per_token_formula_and_masks_padding():
    """(B, T, D) tokens: the element drawn for input b acts on every token of b (checked against
    the formula written out with the same elements), and masked tokens do not count."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    act = LearnedLatentAction(9, 3).double()
    with torch.no_grad():
        act.net[-1].weight.normal_(0, 0.3)
    enc = lambda p: torch.tanh(p @ torch.tensor([[1.0, 0.5, 0], [0, 1, 0], [0.2, 0, 1]], dtype=p.dtype))  # noqa: E731
    loss = LatentAlignmentLoss(PointCloud(SO(3)), act, generator=5)(enc, x)
    g = SO(3).sample(4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # the loss's elements
    z, zg = enc(x).reshape(20, 3), enc(x @ g.transpose(1, 2)).reshape(20, 3)
    target = act(g.repeat_interleave(5, 0), z)
    expected = (zg - target).pow(2).sum(-1).mean() / (z.var(0).mean() * 3)
    assert torch.allclose(loss, expected, rtol=1e-12)
    # invariant per-point tokens (distances to the centroid) with junk in padded slots
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1:, 3:] = False
    def tokens(p):
        d = (p - p.mean(1, keepdim=True)).norm(dim=-1, keepdim=True)
        return torch.where(mask[..., None], d, p[..., :1])  # the junk rotates
    inv = LatentAlignmentLoss(PointCloud(SO(3)), None, generator=1)
    assert float(inv(tokens, x, mask=mask)) < 1e-20
    assert float(inv(tokens, x)) > 1e-3  # without the mask the junk counts
    with pytest.raises(ValueError, match="LatentAlignmentLoss: `mask` must be a bool tensor"):
        inv(tokens, x, mask=mask.float())
    with pytest.raises(ValueError, match="LatentAlignmentLoss: `mask` is for"):
        inv(lambda p: p.flatten(1), x, mask=mask)


def _naive_dcov(x, y):
    """Szekely's V-statistic as S1 + S2 - 2 S3 (an independent formula)."""
    a, b = torch.cdist(x, x), torch.cdist(y, y)
    s1 = (a * b).mean()
    s2 = a.mean() * b.mean()
    s3 = (a.mean(1) * b.mean(1)).mean()
    return s1 + s2 - 2 * s3


def test_dcov_matches_naive_formula(dtype):
    x, y = torch.randn(40, 2, dtype=dtype), torch.randn(40, 3, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(distance_covariance(x, y), _naive_dcov(x, y), rtol=tol, atol=tol)


def test_dcov_detects_dependence_and_intersections():
    g = torch.Generator().manual_seed(0)
    n = 400
    s1 = torch.randint(0, 2, (n,), generator=g)
    s2 = torch.randint(0, 2, (n,), generator=g)
    age = torch.randn(n, generator=g, dtype=torch.float64)
    noise = 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    y_xor = (s1 != s2).double() + noise  # depends on the intersection only
    a1, a2 = one_hot(s1, dtype=torch.float64), one_hot(s2, dtype=torch.float64)
    marg = distance_covariance(y_xor, a1) + distance_covariance(y_xor, a2)
    cc = concatenated_distance_covariance(y_xor, [a1, a2])
    jd = joint_distance_covariance([y_xor, a1, a2])
    indep = concatenated_distance_covariance(noise, [a1, a2])
    assert cc > 10 * marg and cc > 10 * indep
    assert jd > 10 * joint_distance_covariance([noise, a1, a2])
    assert distance_covariance(age.pow(2) + noise, age) > 10 * distance_covariance(noise, age)


def test_jdcov_two_variables_is_scaled_dcov():
    x, y = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    sx, sy = torch.cdist(x, x).mean(), torch.cdist(y, y).mean()
    assert torch.allclose(joint_distance_covariance([x, y], c=0.7), distance_covariance(x / sx, y / sy), atol=1e-6)


def test_dependence_regularizer_trains_towards_independence():
    torch.manual_seed(0)
    n = 96
    s = torch.randn(n, 1)
    feats = torch.cat([s + 0.3 * torch.randn(n, 1), torch.randn(n, 3)], dim=1)
    target = feats[:, :1] + feats[:, 1:2]
    out = {}
    for w in (0.0, 10.0):
        torch.manual_seed(1)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.Adam(model.parameters(), lr=5e-2)
        reg = DependenceRegularizer("dcov", weight=w)
        for _ in range(60):
            opt.zero_grad()
            pred = model(feats)
            ((pred - target).pow(2).mean() + reg(pred, s)).backward()
            opt.step()
        out[w] = float(distance_covariance(model(feats).detach(), s))
    assert out[10.0] < 0.3 * out[0.0]


@pytest.mark.parametrize("kind", ["dcov", "jdcov", "ccdcov"])
def test_dependence_regularizer_kinds(kind):
    y = torch.randn(30, 1, requires_grad=True)
    val = DependenceRegularizer(kind)(y, [torch.randn(30), one_hot(torch.randint(0, 3, (30,)))])
    val.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_node_permutation_regularizer_zero_for_deepsets():
    x = torch.randn(4, 6, 2, dtype=torch.float64)
    reg = EquivarianceRegularizer(NodePermutation(6), None, n_samples=3)
    assert float(reg(lambda z: z.sum(-2), x)) < 1e-24


def test_projection_regularizer_equivariant_outputs(dtype):
    x = torch.randn(8, 5, 3, dtype=dtype)
    reg = ProjectionRegularizer({"o3": (PointCloud(O(3)), PointCloud(O(3)))}, n_samples=3, generator=0)
    tol = 1e-20 if dtype == torch.float64 else 1e-9
    assert float(reg.residuals(lambda p: p.mean(-2), x)["o3"]) < tol
    shear = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype=dtype)
    assert float(reg.residuals(lambda p: p.mean(-2) @ shear.T, x)["o3"]) > 1e-3
