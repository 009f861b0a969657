"""Every action is a homomorphism (act(gh, x) = act(g, act(h, x))), acts trivially by the
identity, agrees with an independent reference, and rejects data that does not fit."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from equikit.groups import (
    SE,
    SO,
    Affine,
    Compose,
    Cyclic,
    E,
    FeaturePermutation,
    GLPlus,
    ImageDihedral,
    ImageFlip,
    ImageRot90,
    ImageShift,
    MatrixRep,
    NodePermutation,
    O,
    OnKeys,
    Permutation,
    PointCloud,
    Rescale,
    Scaling,
    SequenceShift,
    Translation,
    Trivial,
)

B = 4


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rep_o3(g):
    return torch.linalg.det(g)[..., None, None] * g  # the pseudovector representation


CASES = {
    "trivial": (Trivial(SO(3)), lambda: _x(B, 5)),
    "matrix-o3": (MatrixRep(O(3)), lambda: _x(B, 7, 3)),
    "matrix-custom": (MatrixRep(O(3), rep=_rep_o3), lambda: _x(B, 3)),
    "cloud-e3": (PointCloud(E(3)), lambda: _x(B, 10, 3)),
    "cloud-se2": (PointCloud(SE(2)), lambda: _x(B, 6, 2)),
    "cloud-translation": (PointCloud(Translation(3)), lambda: _x(B, 10, 3)),
    "cloud-scaling": (PointCloud(Scaling()), lambda: _x(B, 10, 3)),
    "cloud-affine": (PointCloud(Affine(3)), lambda: _x(B, 10, 3)),
    "cloud-glplus": (PointCloud(GLPlus(3)), lambda: _x(B, 10, 3)),
    "cloud-dict": (
        PointCloud(E(3), vectors=("vel",), pseudovectors=("spin",), scalars=("q",)),
        lambda: {"pos": _x(B, 5, 3), "vel": _x(B, 5, 3, seed=1), "spin": _x(B, 5, 3, seed=2), "q": _x(B, 5)},
    ),
    "rescale": (Rescale(degree=2.0), lambda: _x(B, 3)),
    "nodes-dense": (
        NodePermutation(6, nodes={"x": -2, "label": -1}, adjacency=("adj",)),
        lambda: {"x": _x(B, 6, 3), "label": _x(B, 6), "adj": _x(B, 6, 6)},
    ),
    "nodes-tensor": (NodePermutation(6), lambda: _x(B, 6, 2)),
    "features": (FeaturePermutation(5, dim=-1), lambda: _x(B, 3, 5)),
    "features-mid": (FeaturePermutation(5, dim=-2), lambda: _x(B, 5, 2)),
    "image-shift": (ImageShift((5, 6)), lambda: _x(B, 2, 5, 6)),
    "rot90": (ImageRot90(), lambda: _x(B, 2, 5, 5)),
    "dihedral": (ImageDihedral(), lambda: _x(B, 2, 5, 5)),
    "flip": (ImageFlip(), lambda: _x(B, 2, 5, 6)),
    "flip-ud": (ImageFlip(axis=-2), lambda: _x(B, 2, 5, 6)),
    "sequence": (SequenceShift(7), lambda: _x(B, 7, 3)),
    "compose": (
        Compose(NodePermutation(10, node_dim=-2), PointCloud(E(3))),
        lambda: _x(B, 10, 3),
    ),
    "onkeys": (
        OnKeys({"pos": PointCloud(O(3)), "v": MatrixRep(O(3))}, invariant=("z",)),
        lambda: {"pos": _x(B, 4, 3), "v": _x(B, 4, 3, seed=3), "z": _x(B, 4)},
    ),
}


def _close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
@given(seed=st.integers(0, 2**31 - 1))
def test_homomorphism_single_elements(name, seed):
    action, make = CASES[name]
    grp = action.group
    x = make()
    g, h = grp.sample(2, generator=seed, dtype=torch.float64), grp.sample(2, generator=seed + 1, dtype=torch.float64)
    g, h = grp.take(g, 0), grp.take(h, 0)
    assert _close(action(grp.compose(g, h), x), action(g, action(h, x)))
    assert _close(action(grp.identity(None, dtype=torch.float64), x), x)


@pytest.mark.parametrize("name", sorted(CASES))
@given(seed=st.integers(0, 2**31 - 1))
def test_batched_elements_match_one_at_a_time(name, seed):
    action, make = CASES[name]
    grp = action.group
    x = make()
    g = grp.sample(B, generator=seed, dtype=torch.float64)
    h = grp.sample(B, generator=seed + 1, dtype=torch.float64)
    batched = action(g, x)
    for b in range(B):
        xb = {k: v[b] for k, v in x.items()} if isinstance(x, dict) else x[b]
        one = action(grp.take(g, b), xb)
        ref = {k: v[b] for k, v in batched.items()} if isinstance(x, dict) else batched[b]
        assert _close(one, ref)
    assert _close(action(grp.compose(g, h), x), action(g, action(h, x)))


# ----------------------------------------------------------------------------- references
def test_point_cloud_matches_explicit_formula():
    grp = E(3)
    g = grp.sample(B, generator=0, dtype=torch.float64)
    a, t = g[:, :3, :3], g[:, :3, 3]
    x = {"pos": _x(B, 5, 3), "vel": _x(B, 5, 3, seed=1), "spin": _x(B, 5, 3, seed=2), "q": _x(B, 5)}
    out = CASES["cloud-dict"][0](g, x)
    for b in range(B):
        assert torch.allclose(out["pos"][b], x["pos"][b] @ a[b].T + t[b])
        assert torch.allclose(out["vel"][b], x["vel"][b] @ a[b].T)
        assert torch.allclose(out["spin"][b], torch.linalg.det(a[b]) * x["spin"][b] @ a[b].T)
        assert torch.equal(out["q"][b], x["q"][b])


def test_node_permutation_matches_permutation_matrices_and_edge_index():
    n = 7
    grp = Permutation(n)
    g = grp.take(grp.sample(1, generator=3), 0)
    p = grp.matrix(g, torch.float64)
    adj = (torch.rand(n, n, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    feats = _x(n, 3)
    edge_index = adj.nonzero().T
    act = NodePermutation(n, nodes={"x": -2}, adjacency=("adj",), edge_index="edge_index",
                          invariant=("edge_attr",))
    data = {"x": feats, "adj": adj, "edge_index": edge_index, "edge_attr": _x(edge_index.shape[1])}
    out = act(g, data)
    assert torch.allclose(out["x"], p @ feats)
    assert torch.allclose(out["adj"], p @ adj @ p.T)
    dense = torch.zeros(n, n, dtype=torch.float64)
    dense[out["edge_index"][0], out["edge_index"][1]] = 1
    assert torch.equal(dense, out["adj"])
    assert torch.equal(out["edge_attr"], data["edge_attr"])


def test_feature_permutation_moves_item_i_to_sigma_i():
    g = torch.tensor([2, 0, 1])
    x = torch.tensor([[10.0, 20.0, 30.0]])
    out = FeaturePermutation(3)(g, x)
    assert out.tolist() == [[20.0, 30.0, 10.0]]  # x'[sigma(i)] = x[i]: 10 -> slot 2, 20 -> 0


def test_image_actions_match_torch_ops():
    x = _x(B, 2, 5, 5)
    s = torch.tensor([[1, 2], [0, 4], [3, 3], [4, 0]])
    out = ImageShift((5, 5))(s, x)
    k = torch.tensor([0, 1, 2, 3])
    rot = ImageRot90()(k, x)
    f = torch.tensor([0, 1, 1, 0])
    flip = ImageFlip()(f, x)
    for b in range(B):
        assert torch.equal(out[b], torch.roll(x[b], tuple(s[b].tolist()), dims=(-2, -1)))
        assert torch.equal(rot[b], torch.rot90(x[b], int(k[b]), dims=(-2, -1)))
        assert torch.equal(flip[b], torch.flip(x[b], (-1,)) if f[b] else x[b])
    seq = _x(B, 7, 3)
    sh = torch.tensor([[1], [6], [0], [3]])
    out = SequenceShift(7)(sh, seq)
    for b in range(B):
        assert torch.equal(out[b], torch.roll(seq[b], int(sh[b]), dims=-2))


def test_single_element_moves_every_sample_alike():
    x = _x(B, 10, 3)
    g = SO(3).take(SO(3).sample(1, generator=0, dtype=torch.float64), 0)
    out = PointCloud(SO(3))(g, x)
    assert torch.allclose(out, x @ g.T)


def test_compose_applies_both_factors():
    act = CASES["compose"][0]
    grp = act.group
    g = grp.take(grp.sample(1, generator=2, dtype=torch.float64), 0)
    x = _x(10, 3)
    p = Permutation(10).matrix(g[0], torch.float64)
    expected = (p @ x) @ g[1][:3, :3].T + g[1][:3, 3]
    assert torch.allclose(act(g, x), expected)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("action", "g", "x", "exc", "match"),
    [
        (PointCloud(E(3)), E(3).identity(None), _x(4, 2), ValueError, "R\\^3"),
        (PointCloud(E(3)), E(3).identity(None), {"pos": _x(4, 3), "extra": _x(4)}, ValueError, "extra"),
        (PointCloud(E(3), vectors=("vel",)), E(3).identity(None), {"pos": _x(4, 3)}, ValueError, "vel"),
        (PointCloud(E(3)), E(3).identity(3), _x(4, 5, 3), ValueError, "batch"),
        (PointCloud(E(3)), torch.eye(3), _x(4, 3), ValueError, "E\\(3\\)"),
        (PointCloud(E(3)), E(3).identity(None), "pos", TypeError, "dict"),
        (MatrixRep(O(3)), O(3).identity(None), _x(4, 2), ValueError, "last dim"),
        (NodePermutation(5), Permutation(5).identity(None), _x(6, 3), ValueError, "size 5"),
        (NodePermutation(5, edge_index="ei"), Permutation(5).identity(2),
         {"x": _x(2, 5, 2), "ei": torch.zeros(2, 3, dtype=torch.long)}, ValueError, "one permutation"),
        (NodePermutation(5, edge_index="ei"), Permutation(5).identity(None),
         {"x": _x(5, 2), "ei": torch.tensor([[0, 9], [1, 2]])}, ValueError, "outside"),
        (NodePermutation(5, edge_index="ei"), Permutation(5).identity(None),
         {"x": _x(5, 2), "ei": _x(2, 3)}, ValueError, "integer"),
        (ImageShift((4, 4)), torch.zeros(2, dtype=torch.long), _x(3, 4, 5), ValueError, "4, 4"),
        (ImageRot90(), torch.tensor(1), _x(3, 4, 5), ValueError, "square"),
        (SequenceShift(5), torch.zeros(1, dtype=torch.long), _x(3, 4, 2), ValueError, "length 5"),
        (FeaturePermutation(3), Permutation(3).identity(None), [1, 2, 3], TypeError, "Tensor"),
    ],
)
def test_bad_data_is_rejected_with_a_clear_message(action, g, x, exc, match):
    with pytest.raises(exc, match=match):
        action(g, x)


def test_bad_action_arguments():
    with pytest.raises(TypeError, match="as_affine"):
        PointCloud(Cyclic(3))
    with pytest.raises(ValueError, match="share one group"):
        OnKeys({"a": MatrixRep(O(3)), "b": MatrixRep(SO(3))})
    with pytest.raises(ValueError, match="axis"):
        ImageFlip(axis=0)
    with pytest.raises(ValueError, match="negative"):
        SequenceShift(5, dim=1)
    with pytest.raises(TypeError, match="Actions"):
        Compose(PointCloud(E(3)), "perm")
