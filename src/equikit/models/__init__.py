"""Models composed from the layers below: dynamics models for particle systems.

- :mod:`equikit.models.dynamics`: EGNN (Satorras et al. 2021) and the GNN and linear
  baselines of the n-body experiment.
"""

from equikit.models.dynamics import EGNN, GNN, EGNNLayer, GNNLayer, LinearDynamics

__all__ = ["EGNN", "GNN", "EGNNLayer", "GNNLayer", "LinearDynamics"]
