"""FA-GNN (frame averaging a plain GNN on charged n-body, as in benchmarks/symmetrize_fagnn.py)
through the public checker: E(3)-equivariant predicted positions in float32 and float64 over
elements with reflections; negative control: the bare GNN backbone is not."""

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.nbody import (
    ChargedNBodyConfig,
    NBodyDataset,
    collate_nbody,
    complete_edge_index,
    generate_charged_nbody,
)
from equikit.groups import E, PointCloud
from equikit.models import GNN
from equikit.symmetrize import PCAFrame, Symmetrize

IN_ACTION = PointCloud(E(3), vectors=("vel",), scalars=("edge_attr",))
OUT_ACTION = PointCloud(E(3))


class DenseGNN(torch.nn.Module):
    """GNN on dense systems ``{"pos", "vel": (B, n, 3), "edge_attr": (B, n(n-1), 1)}`` -> ``(B, n, 3)``."""

    def __init__(self, gnn):
        super().__init__()
        self.gnn = gnn

    def forward(self, x):
        pos, vel, ea = x["pos"], x["vel"], x["edge_attr"]
        b, n, _ = pos.shape
        ei = complete_edge_index(n)
        ei = ei.repeat(1, b) + (torch.arange(b) * n).repeat_interleave(ei.shape[1])
        return self.gnn(pos.reshape(-1, 3), vel.reshape(-1, 3), ei, ea.reshape(-1, ea.shape[-1])).reshape(b, n, 3)


@pytest.fixture(scope="module")
def systems():
    cfg = ChargedNBodyConfig(n_train=3, n_val=0, n_test=0, steps=600, sample_every=50)
    ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9,
                      dtype=torch.float64)
    b = collate_nbody([ds[i] for i in range(3)])
    return {"pos": b.pos.reshape(3, 5, 3), "vel": b.vel.reshape(3, 5, 3), "edge_attr": b.edge_attr.reshape(3, 20, 1)}


def _elements(dtype):
    g = E(3).sample(8, generator=1, dtype=dtype)
    assert (torch.linalg.det(E(3).as_affine(g)[0].double()) < 0).any()  # reflections included
    return g


def _model(dtype):
    torch.manual_seed(0)
    backbone = DenseGNN(GNN(hidden=16, n_layers=2)).to(dtype)
    return Symmetrize(backbone, PCAFrame(E(3), key="pos"), IN_ACTION, OUT_ACTION)


def test_fagnn_is_e3_equivariant(dtype, systems):
    x = {k: v.to(dtype) for k, v in systems.items()}
    model = _model(dtype)
    report = assert_equivariant(model, x, IN_ACTION, OUT_ACTION, elements=_elements(dtype))
    assert report.n_elements == 8
    assert not bool(model.last_degenerate.any())
    assert model(x).shape == (3, 5, 3)


def test_negative_control_bare_gnn_backbone_is_not_e3_equivariant(dtype, systems):
    x = {k: v.to(dtype) for k, v in systems.items()}
    report = equivariance_error(_model(dtype).backbone, x, IN_ACTION, OUT_ACTION, elements=_elements(dtype))
    assert not report.passed()
    assert report.rel_max > 1e-2
