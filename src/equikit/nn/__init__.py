"""Equivariant layers: thin ``nn.Module`` shells over :mod:`equikit.tp` and :mod:`equikit.o3`.

:class:`TensorProduct`, :class:`Linear`, :class:`Gate`, :class:`NormActivation`, radial bases
(:class:`BesselBasis`, :class:`GaussianBasis`) and the :class:`PolynomialCutoff` envelope.
"""

from equikit.nn._activation import Gate, NormActivation
from equikit.nn._linear import Linear, TensorProduct
from equikit.nn._radial import BesselBasis, GaussianBasis, PolynomialCutoff
from equikit.nn._symmetric import SymmetricContraction

__all__ = ["BesselBasis", "Gate", "GaussianBasis", "Linear", "NormActivation", "PolynomialCutoff", "TensorProduct"]
__all__ += ["SymmetricContraction"]
