import pytest
import torch
from torch import nn

from equikit.check import equivariance_error
from equikit.groups import SO, Cyclic, Dihedral, ImageDihedral, ImageRot90, ImageShift, NodePermutation, PointCloud
from equikit.symmetrize import (
    AnchoredPatchEmbed,
    GroupAverage,
    LearnedCanonicalizer,
    PolyphaseFrame,
    SortFrame,
    Symmetrize,
    anchor,
    lexsort,
    polyphase_energy,
)

from ._helpers import DictMLP, Reshape, mlp


# ----------------------------------------------------------------------------- sort frame
def test_sort_invariant_and_equivariant(dtype):
    n, c = 5, 3
    x = torch.randn(6, n, c, dtype=torch.float64).to(dtype)
    act = NodePermutation(n)
    inv = Symmetrize(mlp(n * c, 4, dtype), SortFrame(n), act)
    assert equivariance_error(inv, x, act, n_samples=12).passed()
    eq = Symmetrize(Reshape(mlp(n * c, n * 2, dtype), (n, 2)), SortFrame(n), act, act)
    assert equivariance_error(eq, x, act, act, n_samples=12).passed()
    assert not equivariance_error(mlp(n * c, 4, dtype), x, act, n_samples=12).passed()


def _graph_with_ties(dtype, b=4, n=5):
    g = torch.Generator().manual_seed(1)
    feats = torch.randint(0, 2, (b, n, 1), generator=g).to(dtype)  # many tied features
    adj = (torch.rand(b, n, n, generator=g) < 0.5).to(dtype)
    adj = torch.triu(adj, 1)
    return {"x": feats, "adj": adj + adj.transpose(-1, -2)}


def test_sort_ties_enumerated_on_graphs(dtype):
    n = 5
    act = NodePermutation(n, nodes=("x",), adjacency=("adj",))
    data = _graph_with_ties(dtype)
    key = lambda d: d["x"]  # noqa: E731 -- ties between nodes with equal features
    exact = Symmetrize(DictMLP(n + n * n, 3, dtype), SortFrame(n, key), act)
    rep = equivariance_error(exact, data, act, n_samples=10)
    assert rep.passed(), rep
    first = Symmetrize(DictMLP(n + n * n, 3, dtype), SortFrame(n, key, ties="first"), act)
    assert not equivariance_error(first, data, act, n_samples=10).passed()
    assert bool(first.last_degenerate.any())


def test_sort_frame_sizes_and_cap():
    x = torch.tensor([[[1.0], [0.0], [1.0], [1.0]], [[3.0], [2.0], [1.0], [0.0]]])
    fr = SortFrame(4)(x)
    assert fr.weights.shape == (6, 2)  # 3! orderings of the tied 1s, 1 ordering of row 2
    assert torch.allclose(fr.weights.sum(0), torch.ones(2))
    assert int((fr.weights[:, 1] > 0).sum()) == 1
    # every frame element sorts the input
    for k in range(6):
        g = fr.elements[k, 0]
        assert x[0, g, 0].tolist() == sorted(x[0, :, 0].tolist())
    with pytest.raises(ValueError, match="max_size"):
        SortFrame(4, max_size=5)(x)


def test_lexsort_matches_python():
    keys = torch.randint(0, 3, (5, 7, 3))
    order = lexsort(keys)
    for b in range(5):
        rows = [tuple(r) for r in keys[b].tolist()]
        assert [rows[i] for i in order[b].tolist()] == sorted(rows)


# ----------------------------------------------------------------------------- polyphase
def test_polyphase_full_stride_exact_for_any_backbone(dtype):
    shape = (6, 8)
    act = ImageShift(shape)
    x = torch.randn(5, 2, *shape, dtype=torch.float64).to(dtype)
    inv = Symmetrize(mlp(2 * 48, 4, dtype), PolyphaseFrame(shape), act)
    assert equivariance_error(inv, x, act, n_samples=10).passed()
    eq = Symmetrize(Reshape(mlp(2 * 48, 48, dtype), shape), PolyphaseFrame(shape), act, act, mode="canonicalize")
    assert equivariance_error(eq, x, act, act, n_samples=10).passed()
    assert not equivariance_error(mlp(2 * 48, 4, dtype), x, act, n_samples=10).passed()


class TokenPool(nn.Module):
    """Strided conv + mean pool: invariant to shifts by multiples of the stride only."""

    def __init__(self, dtype):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 2, stride=2).to(dtype)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((-1, -2))


def test_polyphase_stride_with_token_invariant_backbone(dtype):
    shape = (8, 8)
    act = ImageShift(shape)
    x = torch.randn(4, 1, *shape, dtype=torch.float64).to(dtype)
    backbone = TokenPool(dtype)
    net = Symmetrize(backbone, PolyphaseFrame(shape, stride=2), act)
    assert equivariance_error(net, x, act, n_samples=12).passed()
    assert not equivariance_error(backbone, x, act, n_samples=12).passed()
    # a generic backbone is not enough at stride 2: the frame only removes the phase
    generic = Symmetrize(mlp(64, 3, dtype), PolyphaseFrame(shape, stride=2), act)
    assert not equivariance_error(generic, x, act, n_samples=12).passed()


def test_polyphase_ties_enumerated():
    x = torch.zeros(1, 4, 4)
    x[0, 0, 0] = x[0, 1, 1] = 1.0  # two phases with equal energy
    fr = PolyphaseFrame((4, 4), stride=2, tiebreak=0)(x)
    assert fr.weights[:, 0].tolist() == [0.5, 0.5]
    assert sorted(map(tuple, fr.elements[:, 0].tolist())) == [(0, 0), (1, 1)]
    assert PolyphaseFrame((4, 4), stride=2, tiebreak=0).canonical(x).degenerate.tolist() == [True]
    assert polyphase_energy(x, (2, 2))[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # the random-filter keys break this tie; a periodic image keeps it
    assert PolyphaseFrame((4, 4), stride=2).canonical(x).degenerate.tolist() == [False]
    periodic = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).repeat(2, 2)[None]
    assert PolyphaseFrame((4, 4)).canonical(periodic).degenerate.tolist() == [True]
    assert PolyphaseFrame((4, 4))(periodic).weights.shape[0] == 4


def test_polyphase_quantised_images_canonical(dtype):
    """Digit-like images (few grey levels, many tied pixels): canonicalisation stays exact
    thanks to the tie-breaking keys, and is not exact without them."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randint(0, 3, (8, 1, 8, 8), generator=g) * (torch.rand(8, 1, 8, 8, generator=g) < 0.4)).to(dtype)
    act = ImageShift((8, 8))
    net = Symmetrize(mlp(64, 3, dtype), PolyphaseFrame((8, 8)), act, mode="canonicalize")
    assert equivariance_error(net, x, act, n_samples=12).passed()
    weak = Symmetrize(mlp(64, 3, dtype), PolyphaseFrame((8, 8), tiebreak=0), act, mode="canonicalize")
    assert not equivariance_error(weak, x, act, n_samples=12).passed()
    assert bool(weak.frame_of(x).degenerate.any())


def test_anchor_leaves_whole_stride_shifts():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    a = anchor(x, (4, 4))
    for t in [(1, 2), (5, 7), (4, 0)]:
        b = anchor(torch.roll(x, t, (-2, -1)), (4, 4))
        for n in range(3):  # each image keeps its own whole-stride shift
            shifted = [torch.roll(a[n], (4 * i, 4 * j), (-2, -1)) for i in range(2) for j in range(2)]
            assert any(torch.equal(b[n], s) for s in shifted)


def test_anchored_patch_embed_gives_shift_invariant_pooling(dtype):
    emb = AnchoredPatchEmbed(1, 6, 4).to(dtype)
    pooled = lambda x: emb(x).mean((1, 2))  # noqa: E731
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64).to(dtype)
    act = ImageShift((16, 16))
    assert equivariance_error(pooled, x, act, n_samples=10).passed()
    plain = AnchoredPatchEmbed(1, 6, 4, anchoring=False).to(dtype)
    assert not equivariance_error(lambda x: plain(x).mean((1, 2)), x, act, n_samples=10).passed()


# ----------------------------------------------------------------------------- group average
@pytest.mark.parametrize(
    "action",
    [ImageRot90(), ImageDihedral(), NodePermutation(4, node_dim=-1)],
    ids=["C4", "D4", "S4"],
)
def test_group_average(action, dtype):
    x = torch.randn(3, 4, 4, dtype=torch.float64).to(dtype)
    net = Symmetrize(mlp(16, 5, dtype), GroupAverage(action.group), action, chunk_size=5)
    elements = action.group.elements()
    assert equivariance_error(net, x, action, elements=elements).passed()
    assert not equivariance_error(mlp(16, 5, dtype), x, action, elements=elements).passed()
    eq = Symmetrize(Reshape(mlp(16, 16, dtype), (4, 4)), GroupAverage(action.group), action, action)
    assert equivariance_error(eq, x, action, action, elements=elements).passed()


def test_d4_average_is_not_c4_only(dtype):
    """Averaging over C4 only does not give flip invariance: the checker must see it."""
    x = torch.randn(3, 4, 4, dtype=torch.float64).to(dtype)
    c4 = Symmetrize(mlp(16, 5, dtype), GroupAverage(Cyclic(4)), ImageRot90())
    flip_as_d4 = lambda z: c4(z)  # noqa: E731
    assert not equivariance_error(flip_as_d4, x, ImageDihedral(), elements=Dihedral(4).elements()).passed()


def test_sample_mode_is_monte_carlo():
    x = torch.randn(2, 4, 4, dtype=torch.float64)
    backbone = mlp(16, 3, torch.float64)
    net = Symmetrize(backbone, GroupAverage(Cyclic(4)), ImageRot90(), mode="sample", n_samples=1, generator=0)
    y = net(x)
    rots = torch.stack([backbone(torch.rot90(x, -k, (-2, -1))) for k in range(4)])  # phi(g^-1 x)
    assert all(any(torch.allclose(y[b], rots[k, b]) for k in range(4)) for b in range(2))
    assert not equivariance_error(net, x, ImageRot90(), elements=Cyclic(4).elements()).passed()
    net.mode = "average"
    assert torch.allclose(net(x), rots.mean(0))


def test_infinite_group_average_refused():
    net = Symmetrize(mlp(4, 1, torch.float64), GroupAverage(SO(2)), PointCloud(SO(2)))
    with pytest.raises(TypeError, match=r"GroupAverage.*infinite"):
        net(torch.zeros(1, 2, 2, dtype=torch.float64))
    net.mode = "sample"  # Monte Carlo over the Haar measure works
    assert net(torch.ones(3, 2, 2, dtype=torch.float64)).shape == (3, 1)


# ----------------------------------------------------------------------------- learned
class Scorer(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.net = mlp(25, 1, dtype, seed=3)

    def forward(self, x):
        return self.net(x).squeeze(-1)


@pytest.mark.parametrize("train", [False, True], ids=["argmax", "softmax"])
@pytest.mark.parametrize("action", [ImageRot90(), ImageDihedral()], ids=["C4", "D4"])
def test_learned_canonicalizer(action, train, dtype):
    x = torch.randn(4, 5, 5, dtype=torch.float64).to(dtype)
    canon = LearnedCanonicalizer(action, Scorer(dtype)).train(train)
    net = Symmetrize(mlp(25, 3, dtype), canon, action)
    net.train(train)
    f = (lambda z: net(z)) if train else net  # the checker would switch a module to eval
    rep = equivariance_error(f, x, action, elements=action.group.elements())
    assert rep.passed(), rep
    # the prior loss is differentiable and lowest when the identity scores highest
    loss = canon.prior_loss(x)
    loss.backward()
    assert canon.scorer.net[1].weight.grad is not None


def test_learned_canonicalizer_prior_pulls_to_identity():
    torch.manual_seed(0)
    x = torch.randn(16, 5, 5)
    canon = LearnedCanonicalizer(ImageRot90(), Scorer(torch.float32))
    opt = torch.optim.Adam(canon.parameters(), lr=3e-2)
    for _ in range(25):
        opt.zero_grad()
        canon.prior_loss(x).backward()
        opt.step()
    canon.eval()
    assert (canon(x).elements[0] == 0).float().mean() > 0.9
    assert (canon(torch.rot90(x, 1, (-2, -1))).elements[0] == 1).all()
