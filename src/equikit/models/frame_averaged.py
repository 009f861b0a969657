"""FA-GNN (Puny et al. 2022, "Frame Averaging for Invariant and Equivariant Network Design"):
the plain :class:`~equikit.models.GNN` made E(3)-equivariant by averaging over the PCA frame
of each system, built from :class:`equikit.symmetrize.Symmetrize` and
:class:`equikit.symmetrize.PCAFrame`.

For a system with centroid ``c`` and principal axes ``U`` the frame is the 8 elements
``(U S, c)`` with sign flips ``S``; the GNN sees ``S U^T (x - c)`` and ``S U^T v``, its output
is mapped back and the 8 outputs are averaged (``mode="average"``, exact E(3) equivariance,
evaluation). In training mode one element per system is sampled (``mode="sample"``, the cost
of one GNN pass; equivariant in distribution), as in the published n-body experiment.
"""

from __future__ import annotations

import torch
from torch import nn

from equikit.data.nbody import complete_edge_index
from equikit.groups import E, PointCloud
from equikit.models.dynamics import GNN, _check_graph
from equikit.symmetrize import PCAFrame, Symmetrize

_IN = PointCloud(E(3), vectors=("vel",), scalars=("edge_attr",))
_OUT = PointCloud(E(3))


class _DenseGNN(nn.Module):
    """A :class:`GNN` on ``{"pos": (B, n, 3), "vel": (B, n, 3), "edge_attr": (B, n(n-1), F)}``,
    a complete graph per system (edges in ``complete_edge_index(n)`` order)."""

    def __init__(self, gnn: GNN) -> None:
        super().__init__()
        self.gnn = gnn

    def forward(self, x: dict) -> torch.Tensor:
        pos, vel, ea = x["pos"], x["vel"], x["edge_attr"]
        b, n, _ = pos.shape
        ei = complete_edge_index(n).to(pos.device)
        ei = ei.repeat(1, b) + (torch.arange(b, device=pos.device) * n).repeat_interleave(ei.shape[1])
        out = self.gnn(pos.reshape(b * n, 3), vel.reshape(b * n, 3), ei, ea.reshape(b * ea.shape[1], -1))
        return out.reshape(b, n, 3)


class FAGNN(nn.Module):
    """Frame-averaged GNN for batches of complete graphs of equal size (the n-body setting).

    Args:
        hidden, n_layers, edge_features: of the wrapped :class:`GNN`.
        sample_in_training: one sampled frame element per system in training mode (else the
            full average always).

    Shapes: ``pos, vel (N, 3)`` with ``N = B n``, ``edge_index (2, B n (n - 1))`` the
    collated complete graphs (as :func:`equikit.data.nbody.collate_nbody` makes them),
    ``edge_attr (E, F)`` -> ``(N, 3)``. Other graphs raise ValueError.

    Example:
        >>> import torch
        >>> from equikit.models import FAGNN
        >>> from equikit.data.nbody import complete_edge_index
        >>> model = FAGNN(hidden=8, n_layers=1).eval()
        >>> out = model(torch.randn(5, 3), torch.randn(5, 3), complete_edge_index(5), torch.ones(20, 1))
        >>> tuple(out.shape)
        (5, 3)
    """

    def __init__(self, hidden: int = 64, n_layers: int = 4, edge_features: int = 1,
                 sample_in_training: bool = True) -> None:
        super().__init__()
        self.sample_in_training = bool(sample_in_training)
        self.symmetrized = Symmetrize(_DenseGNN(GNN(hidden=hidden, n_layers=n_layers, edge_features=edge_features)),
                                      PCAFrame(E(3), key="pos"), _IN, _OUT, mode="average")

    @staticmethod
    def _systems(pos: torch.Tensor, edge_index: torch.Tensor) -> tuple[int, int]:
        """``(B, n)`` for collated complete graphs; ValueError otherwise."""
        n_nodes, n_edges = pos.shape[0], edge_index.shape[1]
        n = n_edges // n_nodes + 1 if n_nodes else 0
        ok = n_nodes > 0 and n >= 2 and n_nodes % n == 0 and n_edges == n_nodes * (n - 1)
        if ok:
            b = n_nodes // n
            ei = complete_edge_index(n).to(edge_index.device)
            expected = ei.repeat(1, b) + (torch.arange(b, device=ei.device) * n).repeat_interleave(ei.shape[1])
            ok = torch.equal(expected, edge_index)
        if not ok:
            raise ValueError(
                f"FAGNN: expects collated complete graphs of equal size (edge_index as collate_nbody builds "
                f"it), got {n_nodes} nodes and edge_index of shape {tuple(edge_index.shape)}"
            )
        return n_nodes // n, n

    def forward(self, pos, vel, edge_index, edge_attr=None):
        _check_graph(pos, vel, edge_index, edge_attr, "FAGNN")
        if edge_attr is None:
            raise ValueError("FAGNN: `edge_attr` is required (E, F)")
        b, n = self._systems(pos, edge_index)
        self.symmetrized.mode = "sample" if (self.training and self.sample_in_training) else "average"
        x = {"pos": pos.reshape(b, n, 3), "vel": vel.reshape(b, n, 3),
             "edge_attr": edge_attr.reshape(b, n * (n - 1), -1)}
        return self.symmetrized(x).reshape(b * n, 3)
