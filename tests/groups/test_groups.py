"""Group axioms (closure, associativity, identity, inverse) as hypothesis property tests in
float64, Haar invariance of the samplers in distribution, and argument validation."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from equikit.groups import (
    SE,
    SL,
    SO,
    Affine,
    Cyclic,
    CyclicShift,
    Dihedral,
    DirectProduct,
    E,
    GLPlus,
    O,
    Permutation,
    Scaling,
    Translation,
)

GROUPS = [
    Permutation(1), Permutation(5), Permutation(9), Cyclic(1), Cyclic(7), Dihedral(1),
    Dihedral(6), CyclicShift((4, 5)), CyclicShift((7,)), Translation(3), Scaling(),
    SO(2), SO(3), SO(5), O(2), O(3), O(4), E(2), E(3), SE(3), GLPlus(3), SL(3), GLPlus(2),
    Affine(3), Affine(2, linear="sl"), DirectProduct(Permutation(4), E(3)),
    DirectProduct(Cyclic(3), Dihedral(4), SO(2)),
]
IDS = [repr(g) for g in GROUPS]
seeds = st.integers(0, 2**31 - 1)


def sample(group, seed, n=6):
    return group.sample(n, generator=seed, dtype=torch.float64)


def contains(group, g) -> bool:
    """Independent membership test for closure."""
    parts = g if isinstance(g, tuple) else (g,)
    factors = group.factors if isinstance(group, DirectProduct) else (group,)
    return all(_member(f, p) for f, p in zip(factors, parts))


def _member(group, g) -> bool:
    if isinstance(group, Permutation):
        return bool((g.sort(-1).values == torch.arange(group.n)).all())
    if isinstance(group, Cyclic):
        return bool(((g >= 0) & (g < group.n)).all())
    if isinstance(group, Dihedral):
        return bool(((g[..., 0] >= 0) & (g[..., 0] < group.n) & (g[..., 1] >= 0) & (g[..., 1] < 2)).all())
    if isinstance(group, CyclicShift):
        return bool(((g >= 0) & (g < torch.tensor(group.shape))).all())
    if isinstance(group, Translation):
        return g.shape[-1] == group.d
    if isinstance(group, Scaling):
        return bool((g > 0).all())
    if isinstance(group, (E, SE, Affine)):
        d = group.d
        bottom = torch.zeros(d + 1, dtype=g.dtype)
        bottom[-1] = 1
        ok = torch.allclose(g[..., d, :], bottom.expand_as(g[..., d, :]), atol=1e-12)
        return ok and _member(group._linear_part(), g[..., :d, :d])
    eye = torch.eye(group.d, dtype=g.dtype)
    det = torch.linalg.det(g)
    if isinstance(group, (SO, O)):
        orth = torch.allclose(g @ g.transpose(-1, -2), eye.expand_as(g), atol=1e-10)
        return orth and (not isinstance(group, SO) or bool(torch.allclose(det, torch.ones_like(det))))
    if isinstance(group, SL):
        return bool(torch.allclose(det, torch.ones_like(det), atol=1e-9))
    return bool((det > 0).all())


@pytest.mark.parametrize("group", GROUPS, ids=IDS)
@given(seed=seeds)
def test_closure_associativity_identity_inverse(group, seed):
    g, h, k = sample(group, seed), sample(group, seed + 1), sample(group, seed + 2)
    assert contains(group, g) and contains(group, group.compose(g, h))
    assert group.allclose(group.compose(group.compose(g, h), k), group.compose(g, group.compose(h, k)))
    e = group.identity(6, dtype=torch.float64)
    assert group.allclose(group.compose(e, g), g) and group.allclose(group.compose(g, e), g)
    gi = group.inverse(g)
    assert contains(group, gi)
    assert group.allclose(group.compose(g, gi), e) and group.allclose(group.compose(gi, g), e)


@pytest.mark.parametrize("group", GROUPS, ids=IDS)
def test_sampling_is_reproducible_and_seed_dependent(group):
    a, b, c = sample(group, 3), sample(group, 3), sample(group, 4)
    assert group.allclose(a, b, atol=0.0)
    if group.order is None or group.order > 6:
        assert not group.allclose(a, c, atol=0.0)


@pytest.mark.parametrize("group", GROUPS, ids=IDS)
def test_batch_shape_and_dtype(group, dtype):
    g = group.sample(5, generator=0, dtype=dtype)
    assert group.batch_shape(g) == (5,)
    first = g[0] if isinstance(g, tuple) else g
    assert first.dtype == (torch.int64 if not first.is_floating_point() else dtype)
    group.check_element(g)
    assert group.batch_shape(group.identity(None)) == ()


FINITE = [g for g in GROUPS if g.order is not None and g.order <= 5040]


@pytest.mark.parametrize("group", FINITE, ids=[repr(g) for g in FINITE])
def test_elements_enumerate_the_group(group):
    els = group.elements()
    assert group.batch_shape(els) == (group.order,)
    parts = els if isinstance(els, tuple) else (els,)
    rows = {tuple(torch.cat([p.reshape(group.order, -1)[i].double() for p in parts]).tolist())
            for i in range(group.order)}
    assert len(rows) == group.order  # all distinct
    # closed under composition with a random element: left multiplication permutes the set
    g = group.take(group.sample(1, generator=1), 0)
    moved = group.compose(g, els)
    parts = moved if isinstance(moved, tuple) else (moved,)
    moved_rows = {tuple(torch.cat([p.reshape(group.order, -1)[i].double() for p in parts]).tolist())
                  for i in range(group.order)}
    assert moved_rows == rows


def test_orders():
    assert Permutation(5).order == math.factorial(5)
    assert Dihedral(6).order == 12 and CyclicShift((4, 5)).order == 20
    assert DirectProduct(Cyclic(3), Dihedral(4)).order == 24
    assert SO(3).order is None and DirectProduct(Cyclic(2), SO(2)).order is None


def test_dihedral_relations():
    d = Dihedral(5)
    r = torch.tensor([1, 0])
    f = torch.tensor([0, 1])
    # f r f = r^-1, r^5 = e, f^2 = e
    assert torch.equal(d.compose(d.compose(f, r), f), d.inverse(r))
    acc = d.identity(None)
    for _ in range(5):
        acc = d.compose(acc, r)
    assert torch.equal(acc, d.identity(None))
    assert torch.equal(d.compose(f, f), d.identity(None))


def test_permutation_matrix_is_a_homomorphism():
    p = Permutation(6)
    g, h = p.sample(4, generator=0), p.sample(4, generator=1)
    mg, mh = p.matrix(g, torch.float64), p.matrix(h, torch.float64)
    assert torch.equal(p.matrix(p.compose(g, h), torch.float64), mg @ mh)


def _ks_pvalue(a, b):
    # round away float noise: reflections of O(2) have trace exactly 0 (an atom of the law)
    return stats.ks_2samp(a.numpy().round(9), b.numpy().round(9)).pvalue


@pytest.mark.parametrize("group", [SO(2), SO(3), O(3), SO(4), O(2)], ids=repr)
def test_haar_invariance_in_distribution(group):
    """Left and right translates of Haar samples have the same distribution: compare the
    distribution of a non-class function (one matrix entry and the trace) by a KS test."""
    n = 4000
    h = group.sample(n, generator=11, dtype=torch.float64)
    g0 = group.take(group.sample(1, generator=12, dtype=torch.float64), 0)
    ref = group.sample(n, generator=13, dtype=torch.float64)
    for moved in (group.compose(g0, h), group.compose(h, g0)):
        for stat in (lambda m: m[:, 0, 0], lambda m: torch.diagonal(m, dim1=-2, dim2=-1).sum(-1)):
            assert _ks_pvalue(stat(moved), stat(ref)) > 1e-3
    # mean of a Haar random orthogonal matrix is zero
    assert ref.mean(0).abs().max() < 0.06


def test_so3_trace_distribution_matches_haar():
    """For Haar SO(3), the rotation angle has density (1 - cos t) / pi on [0, pi]."""
    r = SO(3).sample(20000, generator=5, dtype=torch.float64)
    angle = torch.arccos(((torch.diagonal(r, dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    cdf = lambda t: (t - torch.sin(torch.as_tensor(t))) / math.pi  # noqa: E731
    assert stats.kstest(angle.numpy(), lambda t: cdf(torch.as_tensor(t)).numpy()).pvalue > 1e-3


def test_o3_samples_both_components():
    det = torch.linalg.det(O(3).sample(2000, generator=0, dtype=torch.float64))
    frac = (det < 0).double().mean()
    assert 0.45 < frac < 0.55


def test_glplus_and_sl_polar_structure():
    g = GLPlus(3).sample(50, generator=0, dtype=torch.float64)
    assert (torch.linalg.det(g) > 0).all()
    s = SL(3).sample(50, generator=0, dtype=torch.float64)
    assert torch.allclose(torch.linalg.det(s), torch.ones(50, dtype=torch.float64), atol=1e-10)
    # polar decomposition g = R P: P = sqrt(g^T g) is SPD and R = g P^-1 is a rotation
    evals, evecs = torch.linalg.eigh(g.transpose(-1, -2) @ g)
    p = evecs @ torch.diag_embed(evals.sqrt()) @ evecs.transpose(-1, -2)
    r = g @ torch.linalg.inv(p)
    assert _member(SO(3), r) and (evals > 0).all()
    assert not torch.allclose(evals, torch.ones_like(evals))  # not just rotations


@pytest.mark.parametrize(
    ("factory", "exc", "match"),
    [
        (lambda: Permutation(0), ValueError, "n"),
        (lambda: Permutation(2.5), TypeError, "n"),
        (lambda: SO(0), ValueError, "d"),
        (lambda: CyclicShift(()), ValueError, "shape"),
        (lambda: Scaling(0.5), ValueError, "max_scale"),
        (lambda: GLPlus(3, scale=-1.0), ValueError, "scale"),
        (lambda: Affine(3, linear="gl"), ValueError, "linear"),
        (lambda: DirectProduct(SO(3)), ValueError, "two"),
        (lambda: DirectProduct(SO(3), "E3"), TypeError, "Groups"),
        (lambda: SO(3).sample(-1), ValueError, "n"),
        (lambda: SO(3).sample(2, generator="seed"), TypeError, "generator"),
    ],
)
def test_bad_arguments(factory, exc, match):
    with pytest.raises(exc, match=match):
        factory()


def test_check_element_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"SO\(3\)"):
        SO(3).check_element(torch.eye(4))
    with pytest.raises(TypeError, match="tuple"):
        DirectProduct(Cyclic(2), SO(2)).check_element(torch.eye(2))
    with pytest.raises(TypeError, match="tensor"):
        SO(3).check_element([[1, 0, 0]])


def test_reprs_are_short_and_equal_groups_hash_alike():
    assert repr(E(3)) == "E(3)"
    assert repr(DirectProduct(Permutation(4), SO(3))) == "DirectProduct(Permutation(4), SO(3))"
    assert SO(3) == SO(3) and hash(SO(3)) == hash(SO(3)) and SO(3) != O(3)


def test_large_permutation_group_enumeration_is_distinct():
    els = Permutation(8).elements()
    assert els.shape == (40320, 8)
    assert torch.unique(els, dim=0).shape[0] == 40320
    with pytest.raises(ValueError, match="sample"):
        Permutation(11).elements()
