"""Make any backbone symmetric: frames, canonicalisation, group averaging, and soft
equivariance regularisers (DESIGN §2).

- :class:`Symmetrize` wraps a backbone with a :class:`Frame` (modes ``average``,
  ``canonicalize``, ``sample``; ``chunk_size`` bounds memory).
- Frames: :class:`PCAFrame` (O(d), SO(d), E(d), SE(d)), :class:`SortFrame` (S_n),
  :class:`PolyphaseFrame` (shifts with a stride), :class:`MDSCanonicalizer` (TinvNN),
  :class:`LearnedCanonicalizer` (with ``prior_loss``), :class:`GroupAverage` (C4, D4, S_n).
- Polyphase anchoring for strided layers: :func:`anchor`, :class:`AnchoredPatchEmbed`.
- Regularisers (``loss = task + reg(...)``): :class:`EquivarianceRegularizer`,
  :class:`ProjectionRegularizer`, :class:`LatentAlignmentLoss` (+ :class:`LearnedLatentAction`),
  :class:`DependenceRegularizer` (dCov, JdCov, CCdCov).
"""

from equikit.symmetrize._dcov import (
    DependenceRegularizer,
    concatenated_distance_covariance,
    distance_covariance,
    joint_distance_covariance,
    one_hot,
)
from equikit.symmetrize._frame import Frame, FrameOutput, GroupAverage
from equikit.symmetrize._learned import LearnedCanonicalizer
from equikit.symmetrize._learned_frame import LearnedFrame
from equikit.symmetrize._pca import MDSCanonicalizer, PCAFrame, classical_mds, principal_axes
from equikit.symmetrize._polyphase import AnchoredPatchEmbed, PolyphaseFrame, anchor, phase_keys, polyphase_energy
from equikit.symmetrize._regularizers import (
    EquivarianceRegularizer,
    LatentAlignmentLoss,
    LearnedLatentAction,
    ProjectionRegularizer,
)
from equikit.symmetrize._sort import SortFrame, lexsort
from equikit.symmetrize._symmetrize import Symmetrize

__all__ = [
    "AnchoredPatchEmbed",
    "DependenceRegularizer",
    "EquivarianceRegularizer",
    "Frame",
    "FrameOutput",
    "GroupAverage",
    "LatentAlignmentLoss",
    "LearnedCanonicalizer",
    "LearnedFrame",
    "LearnedLatentAction",
    "MDSCanonicalizer",
    "PCAFrame",
    "PolyphaseFrame",
    "ProjectionRegularizer",
    "SortFrame",
    "Symmetrize",
    "anchor",
    "classical_mds",
    "concatenated_distance_covariance",
    "distance_covariance",
    "joint_distance_covariance",
    "lexsort",
    "one_hot",
    "phase_keys",
    "polyphase_energy",
    "principal_axes",
]
