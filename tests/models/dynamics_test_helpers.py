"""Shared pieces of the n-body dynamics model tests (tests/models is not a package: import as
``from dynamics_test_helpers import ...``): the group actions on the model inputs/outputs, a
small float64 batch, dtype casting and the model-call wrapper."""

import torch

from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, collate_nbody, generate_charged_nbody
from equikit.groups import E, NodePermutation, PointCloud

E3_IN = PointCloud(E(3), vectors=("vel",), scalars=("charges", "edge_attr", "edge_index"))
E3_OUT = PointCloud(E(3))
N = 10  # two 5-particle graphs
PERM_IN = NodePermutation(N, nodes={"pos": -2, "vel": -2, "charges": -2}, edge_index="edge_index",
                          invariant=("edge_attr",))
PERM_OUT = NodePermutation(N, node_dim=-2)


def small_batch():
    """Two 5-particle charged n-body samples (float64), collated."""
    cfg = ChargedNBodyConfig(n_train=2, n_val=0, n_test=0, steps=600, sample_every=50)
    ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9,
                      dtype=torch.float64)
    return collate_nbody([ds[0], ds[1]])


def inputs(batch, dtype):
    """The batch's model inputs with floating tensors cast to ``dtype``."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.inputs().items()}


def as_function(model):
    """``model`` as a function of the input dict (what the checker calls)."""
    return lambda d: model(d["pos"], d["vel"], d["edge_index"], d["edge_attr"])
