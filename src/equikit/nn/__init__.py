"""Equivariant layers: thin ``nn.Module`` shells over :mod:`equikit.tp` and :mod:`equikit.o3`.

:class:`TensorProduct`, :class:`Linear`, :class:`Gate`, :class:`NormActivation`, radial bases
(:class:`BesselBasis`, :class:`GaussianBasis`) and the :class:`PolynomialCutoff` envelope.
"""

from equikit.nn._activation import Gate, NormActivation
from equikit.nn._aggregation import (  # sets and graphs (issue 5)
    Aggregation,
    LCMAggregation,
    RecurrentAggregation,
    SoftmaxAggregation,
    group_slots,
    scatter,
    scatter_softmax,
)
from equikit.nn._graph import GCNConv, GINConv, global_pool
from equikit.nn._grid_mlp import SphereGridMLP
from equikit.nn._higher_order import PermutationLinear, PPGNBlock, dense_pair_mask, pool_order2
from equikit.nn._linear import Linear, TensorProduct
from equikit.nn._norm import BatchNorm, LayerNorm
from equikit.nn._path_gate import PathGate
from equikit.nn._polynomial import PolynomialFeatures, contract_pattern, cycle_counts
from equikit.nn._radial import BesselBasis, GaussianBasis, PolynomialCutoff
from equikit.nn._sets import ISAB, MAB, PMA, SAB, DeepSets, INSETPooling, SetLinear, masked_pool
from equikit.nn._spen import SPEN, EgoSubgraphs, SPENLayer, ego_subgraphs
from equikit.nn._spline import SplineRadial
from equikit.nn._symmetric import SymmetricContraction

__all__ = ["BesselBasis", "Gate", "GaussianBasis", "Linear", "NormActivation", "PolynomialCutoff", "TensorProduct"]
__all__ += ["SymmetricContraction"]
__all__ += [  # sets and graphs (issue 5)
    "ISAB",
    "MAB",
    "PMA",
    "SAB",
    "SPEN",
    "Aggregation",
    "DeepSets",
    "EgoSubgraphs",
    "GCNConv",
    "GINConv",
    "INSETPooling",
    "LCMAggregation",
    "PPGNBlock",
    "PermutationLinear",
    "PolynomialFeatures",
    "RecurrentAggregation",
    "SPENLayer",
    "SetLinear",
    "SoftmaxAggregation",
    "contract_pattern",
    "cycle_counts",
    "dense_pair_mask",
    "ego_subgraphs",
    "global_pool",
    "group_slots",
    "masked_pool",
    "pool_order2",
    "scatter",
    "scatter_softmax",
]
__all__ += ["BatchNorm", "LayerNorm"]
__all__ += ["SplineRadial"]
__all__ += ["SphereGridMLP"]
__all__ += ["PathGate"]
