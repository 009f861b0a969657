r"""``sphere_grid`` backend: the Gaunt product as ``to_grid -> pointwise product -> from_grid``.

Per channel, the coefficient arrays of ``f1`` (degrees ``<= L1``) and ``f2`` (``<= L2``) are
evaluated on a Gauss-Legendre x equiangular grid (:func:`equikit.o3.sphere_grid`), multiplied
pointwise and projected onto the output degrees ``<= L3`` by quadrature (component
harmonics, ``int Y^2 = 4 pi``):

.. math:: z_{l_3 m} = \frac{1}{4\pi} \sum_g w_g\, f_1(x_g) f_2(x_g)\, Y_{l_3 m}(x_g)

Exactness: the integrand ``f1 f2 Y_l3`` is a polynomial of degree ``L1 + L2 + L3`` on the
sphere; ``n_theta`` Gauss-Legendre nodes integrate degree ``2 n_theta - 1`` in ``cos(theta)``
exactly and ``n_phi`` equispaced longitudes integrate trigonometric degree ``< n_phi``, so

    n_theta = ceil((L1 + L2 + L3 + 1) / 2),   n_phi = L1 + L2 + L3 + 1

is the smallest exact grid (:func:`product_resolution`); the result equals the Gaunt
contraction to rounding (``L1 = L2 = L3 = 6``: a ``10 x 19`` grid). What it can run: the
descriptors of :mod:`equikit.tp._function_product` (``tp.gaunt_product``).
"""

from __future__ import annotations

import functools
import math

import torch

from equikit.o3 import sphere_grid, spherical_harmonics
from equikit.tp._backends import _prepare, register_backend
from equikit.tp._descriptor import TensorProductDescriptor
from equikit.tp._function_product import ProductExecutor, assemble, operands


def product_resolution(lmax1: int, lmax2: int, lmax_out: int) -> tuple[int, int]:
    """Smallest Gauss-Legendre grid ``(n_theta, n_phi)`` on which ``f1 f2`` projects onto
    degrees ``<= lmax_out`` exactly (see the module docs).

    >>> product_resolution(6, 6, 6)
    (10, 19)
    """
    deg = lmax1 + lmax2 + lmax_out
    return (deg + 2) // 2, deg + 1


@functools.lru_cache(maxsize=64)
def grid_matrices(lmax1: int, lmax2: int, lmax_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 ``Y1 ((L1+1)^2, G)``, ``Y2 ((L2+1)^2, G)`` (harmonics at the grid points) and
    the projection ``P (G, (L3+1)^2) = w_g Y_l3(x_g) / (4 pi)``."""
    g = sphere_grid(0, product_resolution(lmax1, lmax2, lmax_out), dtype=torch.float64)
    pts, w = g.points.reshape(-1, 3), g.weights.reshape(-1, 1)
    y = spherical_harmonics(max(lmax1, lmax2, lmax_out), pts, backend="torch")  # component
    return (y[:, : (lmax1 + 1) ** 2].T.contiguous(), y[:, : (lmax2 + 1) ** 2].T.contiguous(),
            (w * y[:, : (lmax_out + 1) ** 2] / (4 * math.pi)).contiguous())


@register_backend
class SphereGridExecutor(ProductExecutor):
    """The Gaunt product by quadrature on an exact sphere grid (see the module docs)."""

    name = "sphere_grid"

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__(descriptor)
        y1, y2, proj = grid_matrices(self.plan.lmax1, self.plan.lmax2, self.plan.lmax_out)
        self.register_buffer("y1", y1, persistent=False)
        self.register_buffer("y2", y2, persistent=False)
        self.register_buffer("proj", proj, persistent=False)

    def forward(self, x1, x2=None, weight=None):
        d = self.descriptor
        x1, x2, _, batch, _ = _prepare(d, x1, x2, weight, "tp backend 'sphere_grid'")
        a, b = operands(self, self.plan, x1, x2)
        values = (a @ self.y1.to(a.dtype)) * (b @ self.y2.to(a.dtype))  # (B, U, G)
        prod = values @ self.proj.to(a.dtype)
        return assemble(self, self.plan, prod).reshape(*batch, d.irreps_out.dim)
