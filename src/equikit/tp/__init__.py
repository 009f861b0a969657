"""Tensor products: descriptors (pure data) and the backends that run them.

A :class:`TensorProductDescriptor` (built by :func:`fully_connected`, :func:`channelwise`,
:func:`elementwise`, :func:`tensor_square`, :func:`linear`) says which bilinear equivariant map
to compute; ``backend=`` picks how (``"naive"`` the dense oracle, ``"sparse_cg"`` the default; for the Gaunt
product of :func:`gaunt_product` also ``"gaunt_fourier"`` and ``"sphere_grid"``);
:func:`expressivity` reports what a backend can express. See ``docs/tp.md``.
"""

from equikit.tp._backends import (
    BACKENDS,
    Executor,
    NaiveExecutor,
    SparseCGExecutor,
    dense_flops,
    get_backend,
    make_executor,
    register_backend,
    sparse_flops,
)
from equikit.tp._descriptor import (
    IRREP_NORMALIZATIONS,
    PATH_NORMALIZATIONS,
    Mode,
    Path,
    TensorProductDescriptor,
    channelwise,
    elementwise,
    fully_connected,
    gaunt_factor,
    gaunt_product,
    linear,
    tensor_square,
)
from equikit.tp._edge_matrix import GauntEdgeMatrix, edge_matrix_conv, gaunt_edge_matrix
from equikit.tp._expressivity import Expressivity, expressivity, expressivity_table
from equikit.tp._functional import tensor_product
from equikit.tp._gaunt_fourier import GauntFourierExecutor
from equikit.tp._sphere_grid import SphereGridExecutor, product_resolution
from equikit.tp._symmetric import (
    SymmetricContractionDescriptor,
    count_coupling_paths,
    symmetric_basis,
    symmetric_contraction,
)
from equikit.tp._symmetric_backends import (
    SYMMETRIC_BACKENDS,
    SymmetricExecutor,
    make_symmetric_executor,
    register_symmetric_backend,
)

__all__ = [
    "BACKENDS",
    "IRREP_NORMALIZATIONS",
    "PATH_NORMALIZATIONS",
    "SYMMETRIC_BACKENDS",
    "Executor",
    "Expressivity",
    "GauntEdgeMatrix",
    "GauntFourierExecutor",
    "Mode",
    "NaiveExecutor",
    "Path",
    "SparseCGExecutor",
    "SphereGridExecutor",
    "SymmetricContractionDescriptor",
    "SymmetricExecutor",
    "TensorProductDescriptor",
    "channelwise",
    "count_coupling_paths",
    "dense_flops",
    "edge_matrix_conv",
    "elementwise",
    "expressivity",
    "expressivity_table",
    "fully_connected",
    "gaunt_edge_matrix",
    "gaunt_factor",
    "gaunt_product",
    "get_backend",
    "linear",
    "make_executor",
    "make_symmetric_executor",
    "product_resolution",
    "register_backend",
    "register_symmetric_backend",
    "sparse_flops",
    "symmetric_basis",
    "symmetric_contraction",
    "tensor_product",
    "tensor_square",
]
