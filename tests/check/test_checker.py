"""The checker measures what it claims: it passes equivariant callables, flags broken ones
with a wide margin, finds the worst element, and rejects bad input clearly."""

import json
import math

import pytest
import torch
from torch import nn

from equikit.check import EquivarianceError, assert_equivariant, equivariance_error, zoo
from equikit.groups import (
    SO,
    Cyclic,
    E,
    ImageRot90,
    ImageShift,
    MatrixRep,
    NodePermutation,
    O,
    PointCloud,
    Translation,
)

ENTRIES = zoo.zoo()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_zoo_verdicts(entry, dtype):
    report = equivariance_error(entry.model(dtype), entry.input(dtype), entry.in_action, entry.out_action)
    assert report.passed() == entry.expect_equivariant, str(report)
    assert report.output_dtype == dtype


def test_margin_between_equivariant_models_and_controls():
    """Worst passing vs best failing relative error, per dtype: orders of magnitude apart."""
    margins = {}
    for dtype in (torch.float32, torch.float64):
        rel = {e.name: equivariance_error(e.model(dtype), e.input(dtype), e.in_action, e.out_action).rel_max
               for e in ENTRIES}
        good = max(rel[e.name] for e in ENTRIES if e.expect_equivariant)
        bad = min(rel[e.name] for e in ENTRIES if not e.expect_equivariant)
        margins[dtype] = bad / max(good, 1e-300)
    assert margins[torch.float32] > 1e3
    assert margins[torch.float64] > 1e8


@pytest.mark.parametrize("name", ["deepsets", "distance-invariant", "centroid", "circular-conv",
                                  "rot90-cnn", "flat-mlp", "centroid+translation"])
def test_vectorized_equals_loop(name):
    e = zoo.get(name)
    model, x = e.model(torch.float64), e.input(torch.float64)
    loop = equivariance_error(model, x, e.in_action, e.out_action, n_samples=6)
    vec = equivariance_error(model, x, e.in_action, e.out_action, n_samples=6, vectorize=True, chunk_size=4)
    assert torch.allclose(loop.per_element_rel, vec.per_element_rel, rtol=1e-6, atol=1e-14)
    assert loop.passed() == vec.passed()


def triple_product(pos):
    """Invariant under rotations, changes sign under reflections (a pseudoscalar)."""
    return torch.linalg.det(pos[..., :3, :]).unsqueeze(-1)


def test_worst_element_is_a_reflection_for_a_pseudoscalar(dtype):
    x = torch.randn(8, 5, 3, dtype=dtype)
    assert equivariance_error(triple_product, x, PointCloud(SO(3))).passed()
    report = equivariance_error(triple_product, x, PointCloud(O(3)), n_samples=12)
    assert not report.passed()
    assert torch.linalg.det(report.worst_element.double()) < 0
    dets = torch.linalg.det(O(3).sample(12, generator=0, dtype=torch.float64))
    # every proper rotation passes, every reflection fails
    rtol = report.default_rtol()
    assert torch.equal(report.per_element_rel > rtol, dets < 0)


def test_explicit_elements_of_a_finite_group():
    e = zoo.get("plain-cnn")
    model, x = e.model(), e.input()
    report = equivariance_error(model, x, ImageRot90(), elements=Cyclic(4).elements())
    assert report.n_elements == 4
    assert report.per_element_rel[0] == 0  # the identity
    assert (report.per_element_rel[1:] > 1e-3).all()
    assert report.worst_index in (1, 2, 3)


def test_module_mode_is_restored_and_dropout_disabled():
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    f = lambda pos: model(pos).sum(dim=-2)  # noqa: E731 - sum over points: permutation invariant
    model.train()
    x = torch.randn(4, 6, 3)
    report = equivariance_error(model, x, NodePermutation(6, node_dim=-2), NodePermutation(6, node_dim=-2))
    assert model.training and report.passed()
    assert equivariance_error(f, x, NodePermutation(6, node_dim=-2)).rel_max > 0  # f is a plain callable:
    # dropout stays active, so it is (correctly) not invariant


def test_forces_from_autograd_with_no_grad_false(dtype):
    """Forces -dE/dpos of a pair potential are E(3)-equivariant vectors."""
    def forces(pos):
        pos = pos.detach().requires_grad_(True)
        d = (pos.unsqueeze(-2) - pos.unsqueeze(-3)).pow(2).sum(-1)
        energy = torch.exp(-d).sum()
        return -torch.autograd.grad(energy, pos)[0]

    x = torch.randn(3, 7, 3, dtype=dtype)
    rot_part = MatrixRep(E(3), rep=lambda g: g[..., :3, :3])
    report = assert_equivariant(forces, x, PointCloud(E(3)), rot_part, no_grad=False)
    assert report.rel_max < (1e-5 if dtype == torch.float32 else 1e-12)
    with pytest.raises(RuntimeError):
        equivariance_error(forces, x, PointCloud(E(3)), rot_part)  # no_grad=True breaks autograd


def test_consistency_for_classifiers():
    e = zoo.get("plain-cnn")
    report = equivariance_error(e.model(), e.input(), e.in_action)
    assert 0 < report.consistency < 1
    # count directly
    model, x = e.model(), e.input()
    g = Cyclic(4).sample(16, generator=0)
    with torch.no_grad():
        ref = model(x).argmax(-1)
        agree = [(model(torch.rot90(x, int(k), dims=(-2, -1))).argmax(-1) == ref).double().mean() for k in g]
    assert math.isclose(report.consistency, float(torch.stack(agree).mean()), rel_tol=1e-12)
    good = equivariance_error(zoo.get("rot90-cnn").model(), x, e.in_action)
    assert good.consistency == 1.0
    assert equivariance_error(lambda p: p.mean(-2), torch.randn(4, 5, 3), PointCloud(E(3)),
                              PointCloud(E(3))).consistency is None


def test_degenerate_inputs_are_counted():
    x = torch.randn(6, 5, 3, dtype=torch.float64)
    x[2] = 0.0  # fixed by every rotation
    report = equivariance_error(lambda p: p.norm(dim=-1).sum(-1, keepdim=True), x, PointCloud(SO(3)))
    assert report.degenerate_inputs == 1
    img = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    img[0] = 1.0  # a constant image is fixed by every shift
    report = equivariance_error(lambda t: t, img, ImageShift((6, 6)), ImageShift((6, 6)))
    assert report.degenerate_inputs == 1 and report.passed()
    ident = equivariance_error(lambda p: p, x, PointCloud(SO(3)), PointCloud(SO(3)),
                               elements=SO(3).identity(3, dtype=torch.float64))
    assert ident.degenerate_inputs == x.shape[0]


def test_tuple_and_dict_outputs_and_unbatched_inputs(dtype):
    pos = torch.randn(9, 3, dtype=dtype)  # one cloud, no batch dim
    f = lambda p: {"c": p.mean(0), "r": (p - p.mean(0)).norm(dim=-1).sum().reshape(1)}  # noqa: E731
    out = PointCloud(E(3), pos="c", scalars=("r",))
    report = assert_equivariant(f, pos, PointCloud(E(3)), out)
    assert report.n_rows == 1
    g = lambda p: (p.mean(0), p.mean(0) + 1)  # noqa: E731 - the second entry breaks rotations
    out_t = MatrixRep(E(3), rep=lambda g_: g_[..., :3, :3])
    with pytest.raises(EquivarianceError):
        assert_equivariant(g, pos - pos.mean(0), PointCloud(E(3)), out_t)


def test_assert_message_names_element_outputs_and_tolerance():
    x = torch.randn(4, 5, 3)
    with pytest.raises(EquivarianceError) as info:
        assert_equivariant(lambda p: p.mean(-2) + 1.0, x, PointCloud(SO(3)), PointCloud(SO(3)))
    msg = str(info.value)
    assert "worst element" in msg and "f(g x)" in msg and "g f(x)" in msg and "rtol=1e-05" in msg
    assert not info.value.report.passed()


def test_tolerances_and_json():
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    report = equivariance_error(lambda p: p.mean(-2) + 1e-7 * p[..., 0, :] ** 2, x,
                                PointCloud(SO(3)), PointCloud(SO(3)))
    assert not report.passed() and report.passed(rtol=1e-4)
    assert report.passed(rtol=0.0, atol=1.0) and not report.passed(rtol=0.0, atol=1e-12)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["kind"] == "equivariance" and d["passed"] is False and d["n_elements"] == 16
    assert report.quantiles[1.0] == report.rel_max


def test_translation_elements_default_to_float64_transforms():
    """Transforms run in float64: for a float32 model the measured error is the model's own."""
    x = torch.randn(8, 5, 3, dtype=torch.float32)
    report = equivariance_error(lambda p: p - p.mean(-2, keepdim=True), x, PointCloud(Translation(3)),
                                None)
    assert report.passed()


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments():
    x = torch.randn(4, 5, 3)
    act = PointCloud(SO(3))
    with pytest.raises(TypeError, match="callable"):
        equivariance_error(42, x, act)
    with pytest.raises(TypeError, match="in_action"):
        equivariance_error(lambda p: p, x, SO(3))
    with pytest.raises(ValueError, match="same group"):
        equivariance_error(lambda p: p, x, act, PointCloud(O(3)))
    with pytest.raises(ValueError, match="n_samples"):
        equivariance_error(lambda p: p, x, act, n_samples=0)
    with pytest.raises(ValueError, match="empty"):
        equivariance_error(lambda p: p, torch.zeros(0, 5, 3), act)
    with pytest.raises(ValueError, match="NaN"):
        equivariance_error(lambda p: p, torch.full((2, 3), float("nan")), act)
    with pytest.raises(ValueError, match="NaN"):
        equivariance_error(lambda p: p / 0 * 0, x, act)
    with pytest.raises(ValueError, match="inf"):
        equivariance_error(lambda p: p.sum(-1, keepdim=True) / (p[..., :1] * 0), x, act)
    with pytest.raises(TypeError, match="Tensor"):
        equivariance_error(lambda p: p, {"pos": [1.0, 2.0]}, act)
    with pytest.raises(ValueError, match="R\\^3"):
        equivariance_error(lambda p: p, torch.randn(4, 2), act)
    with pytest.raises(ValueError, match="elements"):
        equivariance_error(lambda p: p, x, act, elements=SO(3).identity(None))


def test_output_structure_and_shape_changes_are_errors():
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    calls = {"n": 0}

    def flaky(p):
        calls["n"] += 1
        return p.mean(-2) if calls["n"] == 1 else {"c": p.mean(-2)}

    with pytest.raises(ValueError, match="structure"):
        equivariance_error(flaky, x, PointCloud(SO(3)), PointCloud(SO(3)))

    def sign_dependent_shape(p):  # keeps 1 or 2 points depending on a sign rotations flip
        return p[..., : int(p[0, 0, 0] > 0) + 1, :]

    with pytest.raises(ValueError, match="shape"):
        equivariance_error(sign_dependent_shape, x, PointCloud(SO(3)), PointCloud(SO(3)), n_samples=32)


def test_vectorize_needs_a_shared_batch_dim():
    with pytest.raises(ValueError, match="vectorize"):
        equivariance_error(lambda p: p.mean(0), torch.randn(9, 3), PointCloud(SO(3)),
                           PointCloud(SO(3)), vectorize=True)
