import pytest
import torch

from equikit.groups import E, ImageRot90, ImageShift, NodePermutation, O, PointCloud
from equikit.symmetrize import (
    DependenceRegularizer,
    EquivarianceRegularizer,
    GroupAverage,
    LatentAlignmentLoss,
    LearnedCanonicalizer,
    PCAFrame,
    PolyphaseFrame,
    ProjectionRegularizer,
    SortFrame,
    Symmetrize,
    classical_mds,
    distance_covariance,
)

from ._helpers import mlp

NET = mlp(6, 1, torch.float64)


def test_symmetrize_arguments():
    with pytest.raises(ValueError, match=r"Symmetrize: `in_action` acts by CyclicShift.*frame produces.*O\(3\)"):
        Symmetrize(NET, PCAFrame(O(3)), ImageShift((4, 4)))
    with pytest.raises(ValueError, match="Symmetrize: `mode` must be one of"):
        Symmetrize(NET, PCAFrame(O(3)), PointCloud(O(3)), mode="mean")
    with pytest.raises(ValueError, match="Symmetrize: `chunk_size` must be an int >= 1"):
        Symmetrize(NET, PCAFrame(O(3)), PointCloud(O(3)), chunk_size=0)
    with pytest.raises(TypeError, match="Symmetrize: `frame` must be"):
        Symmetrize(NET, O(3), PointCloud(O(3)))
    with pytest.raises(TypeError, match="Symmetrize: `in_action` must be an equikit Action"):
        Symmetrize(NET, PCAFrame(O(3)), O(3))
    with pytest.raises(TypeError, match="Symmetrize: `backbone` must be callable"):
        Symmetrize(3, PCAFrame(O(3)), PointCloud(O(3)))
    with pytest.raises(TypeError, match="cannot act with a batch"):
        Symmetrize(NET, SortFrame(3), NodePermutation(3, nodes=("x",), edge_index="ei"))


def test_symmetrize_inputs():
    net = Symmetrize(NET, PCAFrame(O(3)), PointCloud(O(3)))
    x = torch.randn(2, 2, 3, dtype=torch.float64)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="Symmetrize: `x \\(leaf 0\\)` contains 1 NaN"):
        net(x)
    with pytest.raises(ValueError, match=r"PCAFrame: positions must be a floating tensor \(B, N, 3\).*got \(2, 2, 2\)"):
        net(torch.randn(2, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="the backbone must return tensors with the batch dim first"):
        Symmetrize(lambda z: z.sum(), PCAFrame(O(3)), PointCloud(O(3)))(torch.randn(2, 4, 3))
    with pytest.raises(TypeError, match=r"has no equivariant rule"):
        Symmetrize(mlp(16, 1, torch.float32), GroupAverage(ImageRot90().group), ImageRot90(), mode="canonicalize")(
            torch.randn(2, 4, 4))


def test_frame_arguments():
    with pytest.raises(TypeError, match="PCAFrame: `group` must be O\\(d\\)"):
        PCAFrame(ImageRot90().group)
    with pytest.raises(ValueError, match="PCAFrame: `on_degenerate`"):
        PCAFrame(O(3), on_degenerate="ignore")
    with pytest.raises(ValueError, match="PolyphaseFrame: `stride` \\(3, 3\\) must divide"):
        PolyphaseFrame((8, 8), stride=3)
    with pytest.raises(ValueError, match="PolyphaseFrame: images must be"):
        PolyphaseFrame((8, 8))(torch.randn(2, 1, 6, 8))
    with pytest.raises(ValueError, match="SortFrame: `ties`"):
        SortFrame(3, ties="random")
    with pytest.raises(ValueError, match="SortFrame: expected 3 items"):
        SortFrame(3)(torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match="SortFrame: `key` must return"):
        SortFrame(3, key=lambda x: x[:, 0])(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="LearnedCanonicalizer: the action's group must be finite"):
        LearnedCanonicalizer(PointCloud(E(2)), NET)
    with pytest.raises(ValueError, match="classical_mds: `d` must be an int in"):
        classical_mds(torch.zeros(1, 3, 3), 5)


def test_regularizer_arguments():
    with pytest.raises(ValueError, match="ProjectionRegularizer: `symmetries` must be a non-empty dict"):
        ProjectionRegularizer({})
    with pytest.raises(TypeError, match="EquivarianceRegularizer: `in_action` must be an equikit Action"):
        EquivarianceRegularizer(O(3))
    with pytest.raises(ValueError, match="EquivarianceRegularizer: actions of different groups"):
        EquivarianceRegularizer(PointCloud(O(3)), PointCloud(E(3)))
    with pytest.raises(ValueError, match="DependenceRegularizer: `kind` must be one of"):
        DependenceRegularizer("hsic")
    with pytest.raises(TypeError, match="one-hot encode categorical"):
        distance_covariance(torch.randn(5), torch.arange(5))
    with pytest.raises(ValueError, match="`y` has 4 samples but the predictions have 5"):
        distance_covariance(torch.randn(5), torch.randn(4))
    with pytest.raises(TypeError, match="LatentAlignmentLoss: `latent_action` must be"):
        LatentAlignmentLoss(PointCloud(O(3)), torch.nn.Linear(3, 3))
