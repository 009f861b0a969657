"""Models composed from the layers below: dynamics models for particle systems.

- :mod:`equikit.models.dynamics`: EGNN (Satorras et al. 2021) and the GNN and linear
  baselines of the n-body experiment.
- :mod:`equikit.models.ponita`: a PONITA-style network on positions x orientations.
- :mod:`equikit.models.eqmotion`: an EqMotion-style model (geometric channels, invariant
  interaction reasoning).
- :mod:`equikit.models.frame_averaged`: FA-GNN, the GNN averaged over PCA frames.
- :mod:`equikit.models.graph`: :class:`GraphModel` graph classifiers / regressors (GIN, GCN,
  PPGN, SPEN, polynomial features, DeepSets backbones).
- :mod:`equikit.models.permutation_learning`: ensembles of wide two-layer networks that learn a
  permutation exactly from the basis vectors (Giapitzakis et al. 2025).
- :mod:`equikit.models.potential`: :class:`Potential`, a MACE-style interatomic potential;
  :mod:`equikit.models.calculator`: its ASE calculator (imports ase).
- :mod:`equikit.models.molecular_property`: :class:`MolecularProperty`, QM9-style targets on the
  potential's invariant readout (extensive, intensive, dipole from charges x positions).
- :mod:`equikit.models.transformer_potential`: :class:`TransformerPotential`, a non-equivariant
  atoms-as-tokens transformer potential (the TransIP learned-equivariance backbone).
"""

from equikit.models.dynamics import EGNN, GNN, EGNNLayer, GNNLayer, LinearDynamics
from equikit.models.eqmotion import EqMotion, EqMotionLayer
from equikit.models.frame_averaged import FAGNN
from equikit.models.graph import GraphModel, GraphModelConfig
from equikit.models.molecular_property import MolecularProperty  # QM9-style targets (issue 7)
from equikit.models.permutation_learning import PermutationEnsemble, PermutationEnsembleConfig
from equikit.models.ponita import Ponita
from equikit.models.potential import Potential, PotentialConfig  # MACE-style potential (issue 7)
from equikit.models.transformer_potential import TransformerPotential, TransformerPotentialConfig  # TransIP (issue 7)

__all__ = ["EGNN", "FAGNN", "GNN", "EGNNLayer", "EqMotion", "EqMotionLayer", "GNNLayer", "LinearDynamics", "Ponita"]
__all__ += ["GraphModel", "GraphModelConfig"]
__all__ += ["PermutationEnsemble", "PermutationEnsembleConfig"]  # exact permutation learning (issue 5)
__all__ += ["Potential", "PotentialConfig"]  # the ASE calculator: equikit.models.calculator (needs ase)
__all__ += ["MolecularProperty"]  # QM9-style property regression (issue 7)
__all__ += ["TransformerPotential", "TransformerPotentialConfig"]  # learned equivariance (issue 7)
