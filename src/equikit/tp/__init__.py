"""Tensor products: descriptors (pure data) and the backends that run them.

A :class:`TensorProductDescriptor` (built by :func:`fully_connected`, :func:`channelwise`,
:func:`elementwise`, :func:`tensor_square`, :func:`linear`) says which bilinear equivariant map
to compute; ``backend=`` picks how (``"naive"`` the dense oracle, ``"sparse_cg"`` the default);
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
    linear,
    tensor_square,
)
from equikit.tp._expressivity import Expressivity, expressivity
from equikit.tp._functional import tensor_product

__all__ = [
    "BACKENDS",
    "IRREP_NORMALIZATIONS",
    "PATH_NORMALIZATIONS",
    "Executor",
    "Expressivity",
    "Mode",
    "NaiveExecutor",
    "Path",
    "SparseCGExecutor",
    "TensorProductDescriptor",
    "channelwise",
    "dense_flops",
    "elementwise",
    "expressivity",
    "fully_connected",
    "get_backend",
    "linear",
    "make_executor",
    "register_backend",
    "sparse_flops",
    "tensor_product",
    "tensor_square",
]
