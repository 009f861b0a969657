"""``SymmetricContraction``: MACE's many-body product basis as a thin module over
:mod:`equikit.tp` (descriptor :func:`~equikit.tp.symmetric_contraction`, executors
``"monomial"`` / ``"recursive"`` / ``"naive"``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from equikit._utils.validate import check_int
from equikit.o3 import Irreps
from equikit.tp import make_symmetric_executor, symmetric_contraction


def _element_index(element: Any, n: int, num_elements: int, where: str) -> torch.Tensor:
    """Integer indices ``(N,)`` from indices or one-hot attributes ``(N, num_elements)``."""
    if isinstance(element, torch.Tensor) and element.is_floating_point():
        if element.shape != (n, num_elements):
            raise ValueError(f"{where}: one-hot `element` must have shape ({n}, {num_elements}), got "
                             f"{tuple(element.shape)}")
        ok = ((element == 0) | (element == 1)).all() and (element.sum(-1) == 1).all() if n else True
        if not ok:
            raise ValueError(f"{where}: floating `element` must be one-hot (one 1 per row, zeros elsewhere); "
                             "for soft mixtures of elements pass weights through a Linear layer instead")
        return element.argmax(-1)
    return element


class SymmetricContraction(nn.Module):
    r"""MACE's symmetric contraction (Batatia et al. 2022): per node and channel, the symmetric
    products of the feature vector with itself up to ``correlation``, coupled to ``irreps_out``,
    with weights chosen by the node's element.

    .. math:: B^{L}_{c} = \sum_{\nu=1}^{\nu_{max}} \sum_{k} W_{e, \nu, k, c}\,
              \sum_{i_1 \dots i_\nu} U^{(\nu, L)}_{i_1 \dots i_\nu, :, k} A_{c i_1} \cdots A_{c i_\nu}

    ``U`` is the basis of :func:`equikit.tp.symmetric_basis` (symmetric, no redundant
    elements: fewer weights than MACE's for the same function space, see ``docs/tp.md``).

    Args:
        irreps_in: irreps of one channel, e.g. ``"0e + 1o + 2e + 3o"``.
        irreps_out: output irreps of one channel, multiplicity 1 each, e.g. ``"0e"`` or ``"0e + 1o"``.
        correlation: highest order ``nu_max`` (1..4; MACE uses 3).
        num_elements: number of chemical elements (rows of the weights).
        channels: number of channels ``C``.
        backend: ``"monomial"`` (default), ``"recursive"`` or ``"naive"`` (any registered symmetric
            backend; all compute the same function, see :mod:`equikit.tp._symmetric_backends`).

    Weights: ``weight (num_elements, weight_numel, channels)``, each ``(ir_out, nu)`` block
    initialised ``N(0, 1) / K`` with ``K`` the block's basis size (MACE's initialisation).

    Shapes: ``x (N, C, irreps_in.dim)``, ``element (N,)`` integer indices in
    ``[0, num_elements)`` or one-hot ``(N, num_elements)`` -> ``(N, C * irreps_out.dim)``, laid
    out as the irreps ``irreps_out_full = C x ir`` per block (``mul_ir``).

    >>> sc = SymmetricContraction("0e + 1o + 2e", "0e + 1o", correlation=3, num_elements=2, channels=4)
    >>> out = sc(torch.randn(5, 4, 9), torch.tensor([0, 1, 1, 0, 1]))
    >>> out.shape, str(sc.irreps_out_full)
    (torch.Size([5, 16]), '4x0e+4x1o')
    """

    def __init__(self, irreps_in: Any, irreps_out: Any, correlation: int, num_elements: int, channels: int,
                 *, backend: str = "monomial") -> None:
        super().__init__()
        where = "SymmetricContraction"
        self.num_elements = check_int(num_elements, "num_elements", where, minimum=1)
        self.channels = check_int(channels, "channels", where, minimum=1)
        self.descriptor = symmetric_contraction(irreps_in, irreps_out, correlation)
        self.executor = make_symmetric_executor(self.descriptor, backend)
        self.backend = backend
        w = torch.randn(num_elements, self.descriptor.weight_numel, channels)
        for sl in self.descriptor.weight_slices().values():
            w[:, sl] /= max(sl.stop - sl.start, 1)
        self.weight = nn.Parameter(w)

    @property
    def irreps_in(self) -> Irreps:
        return self.descriptor.irreps_in

    @property
    def irreps_out(self) -> Irreps:
        return self.descriptor.irreps_out

    @property
    def irreps_out_full(self) -> Irreps:
        return self.descriptor.irreps_out_full(self.channels)

    def forward(self, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and (x.ndim != 3 or x.shape[1] != self.channels):
            raise ValueError(f"SymmetricContraction: `x` must have shape (N, {self.channels}, {self.irreps_in.dim}) "
                             f"(channels={self.channels}), got {tuple(x.shape)}")
        n = x.shape[0] if isinstance(x, torch.Tensor) else 0
        element = _element_index(element, n, self.num_elements, "SymmetricContraction")
        return self.executor(x, element, self.weight.to(x.dtype) if isinstance(x, torch.Tensor) else self.weight)

    def extra_repr(self) -> str:
        d = self.descriptor
        return (f"{d.irreps_in} -> {d.irreps_out}, correlation={d.correlation}, num_elements={self.num_elements}, "
                f"channels={self.channels}, backend={self.backend!r}")
