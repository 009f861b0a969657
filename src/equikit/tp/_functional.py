"""Functional entry point: ``tensor_product(descriptor, x1, x2, weight, backend=...)``."""

from __future__ import annotations

import functools

import torch

from equikit.tp._backends import Executor, make_executor
from equikit.tp._descriptor import TensorProductDescriptor


@functools.lru_cache(maxsize=256)
def _executor(descriptor: TensorProductDescriptor, backend: str, device: torch.device) -> Executor:
    return make_executor(descriptor, backend).to(device)


def tensor_product(
    descriptor: TensorProductDescriptor,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    *,
    backend: str = "sparse_cg",
) -> torch.Tensor:
    r"""Run the tensor product ``descriptor`` on ``x1 (..., irreps1.dim)`` and
    ``x2 (..., irreps2.dim)`` (``None`` for a square) with ``weight`` ``(weight_numel,)`` shared
    or ``(..., weight_numel)`` per sample; leading dims broadcast. Returns
    ``(..., irreps_out.dim)``. Executors are cached per ``(descriptor, backend, device)``.

    .. math:: z_{w k} = \sum_p c_p \sum_{uv} W^p_{uvw} \sum_{ij} C^{l_1 l_2 l_3}_{ijk} x_{ui} y_{vj}

    >>> import torch
    >>> from equikit.tp import fully_connected
    >>> d = fully_connected("1o", "1o", "1e", path_normalization="none")
    >>> x, y = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0])
    >>> z = tensor_product(d, x, y, torch.ones(1))  # C(1, 1, 1) contracts to -(x cross y) / sqrt(2)
    >>> (-z * 2**0.5).round(decimals=6) + 0.0
    tensor([0., 0., 1.])
    """
    if not isinstance(descriptor, TensorProductDescriptor):
        raise TypeError(
            f"tensor_product: `descriptor` must be a TensorProductDescriptor, got {type(descriptor).__name__}"
        )
    if not isinstance(x1, torch.Tensor):
        raise TypeError(f"tensor_product: `x1` must be a torch.Tensor, got {type(x1).__name__}")
    return _executor(descriptor, backend, x1.device)(x1, x2, weight)
