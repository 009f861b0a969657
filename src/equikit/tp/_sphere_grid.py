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

import numpy as np
import torch

from equikit.o3 import sphere_grid, spherical_harmonics
from equikit.tp import _grid_native
from equikit.tp._backends import _prepare, register_backend
from equikit.tp._descriptor import Mode, TensorProductDescriptor
from equikit.tp._function_product import ProductExecutor, ProductPlan
from equikit.tp._grid_native import grid_sides
from equikit.tp._grid_transform import coefficient_layout, grid_to_rings, ring_factors, rings_to_grid


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
    """The Gaunt product by quadrature on an exact sphere grid (see the module docs), with the
    separable ``O(L^3)`` transforms of :mod:`equikit.tp._grid_transform`; the gather of the
    operand blocks is fused into the first (per-``q``) step and the scatter into the last."""

    name = "sphere_grid"

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__(descriptor)
        for name, t in separable_plan(self.plan).items():
            self.register_buffer(name, t, persistent=False)
        plan = self.plan
        #: True when the fused C++ kernel is available (used for CPU float32 / float64); decided
        #: here, not per call, so that torch.compile sees a plain attribute
        self.native = _grid_native.library() is not None
        self._key = _native_key(descriptor, plan) if self.native else -1


    def forward(self, x1, x2=None, weight=None):
        d, plan = self.descriptor, self.plan
        x1, x2, _, batch, _ = _prepare(d, x1, x2, weight, "tp backend 'sphere_grid'")
        if x1.device.type == "cpu" and x1.dtype in (torch.float32, torch.float64) and self.native:
            out = _grid_native.grid_bilinear(x1, x2, self._key, 0)
            return out.reshape(*batch, d.irreps_out.dim)
        n, u, dt = x1.shape[0], plan.mul, x1.dtype
        q1, q2 = self.leg1_t.shape[0], self.leg2_t.shape[0]
        a = x1.T.index_select(0, self.gather1).reshape(q1, plan.lmax1 + 1, u * n)
        f1 = rings_to_grid(a, self.leg1_t.to(dt), self.trig1_t.to(dt))  # (n_phi, n_theta, U B)
        if plan.mode == Mode.UUU:
            b = x2.T.index_select(0, self.gather2).reshape(q2, plan.lmax2 + 1, u * n)
            u2 = u
        else:  # uvu: the channels of x2 summed into one function per row
            b = (self.mat2_sep.to(dt) @ x2.T).reshape(q2, plan.lmax2 + 1, n)
            u2 = 1
        f2 = rings_to_grid(b, self.leg2_t.to(dt), self.trig2_t.to(dt))
        n_phi, n_theta = f1.shape[:2]
        h = (f1.reshape(n_phi, n_theta, u, n) * f2.reshape(n_phi, n_theta, u2, n)).reshape(n_phi, n_theta, u * n)
        z = grid_to_rings(h, self.trig3.to(dt), self.leg3_w.to(dt))
        z = z.reshape(z.shape[0] * z.shape[1] * u, n)  # (Q3 (L3+1) U, B)
        out = z.index_select(0, self.scatter) * self.scale_out_sep.to(dt)[:, None]
        return out.T.reshape(*batch, d.irreps_out.dim)


_NATIVE_KEYS: dict[TensorProductDescriptor, int] = {}


def _native_key(descriptor: TensorProductDescriptor, plan: ProductPlan) -> int:
    """The C++ route's sides of ``descriptor``, registered once per descriptor (the key the
    ``equikit::grid_bilinear`` op takes)."""
    if descriptor not in _NATIVE_KEYS:
        dims = (descriptor.irreps1.dim, descriptor.irreps2.dim, descriptor.irreps_out.dim)
        res = product_resolution(plan.lmax1, plan.lmax2, plan.lmax_out)
        _NATIVE_KEYS[descriptor] = _grid_native.register(grid_sides(plan, res, dims))
    return _NATIVE_KEYS[descriptor]


def separable_plan(plan: ProductPlan) -> dict[str, torch.Tensor]:
    """Buffers of the separable route for a :class:`ProductPlan`: the row gathers of ``x1``
    (and ``x2`` for ``uuu``) into the per-``q`` layout ``(q, l, u)``, the operand scales folded
    into the Legendre factors (every used block has its own ``l``), the ``uvu`` channel sum as
    one matrix, and the scatter of the projected ``(q, l, u)`` rows to the output columns."""
    res = product_resolution(plan.lmax1, plan.lmax2, plan.lmax_out)
    out: dict[str, torch.Tensor] = {}
    for k, lmax in ((1, plan.lmax1), (2, plan.lmax2)):
        f = ring_factors(lmax, *res)
        slots = coefficient_layout(lmax, f.q_of)
        valid = slots >= 0
        n_lm = (lmax + 1) ** 2
        if k == 1 or plan.mode == Mode.UUU:
            idx, scale = (plan.idx1, plan.scale1) if k == 1 else (plan.mat2, plan.scale2)
            sc = np.where(valid, np.asarray(scale)[np.where(valid, slots, 0)], 0.0)  # 0: empty or unused l
            cols = np.stack([idx[u * n_lm + np.where(valid, slots, 0)] for u in range(plan.mul)], 1)
            cols = np.where((sc != 0)[:, None], cols, 0)  # any real column: its Legendre row is zero
            out[f"gather{k}"] = torch.from_numpy(cols.reshape(-1).copy())
        else:
            mat = np.asarray(plan.mat2)  # (d2, n_lm): channel sum with the scales
            sc = np.ones(len(slots))
            out["mat2_sep"] = torch.from_numpy(np.where(valid[:, None], mat.T[np.where(valid, slots, 0)], 0.0))
        leg = f.legendre * torch.from_numpy(sc).reshape(2 * lmax + 1, lmax + 1, 1)
        out[f"leg{k}_t"] = leg.transpose(1, 2).contiguous()
        out[f"trig{k}_t"] = f.trig.T.contiguous()
    f = ring_factors(plan.lmax_out, *res)
    out["leg3_w"] = (f.legendre * f.weights / (4 * math.pi)).contiguous()
    out["trig3"] = f.trig
    slots = coefficient_layout(plan.lmax_out, f.q_of)
    n3 = (plan.lmax_out + 1) ** 2
    slot_of = np.zeros(n3, dtype=np.int64)
    slot_of[slots[slots >= 0]] = np.nonzero(slots >= 0)[0]
    pad = plan.idx_out >= plan.mul * n3
    u, lm = np.divmod(np.where(pad, 0, plan.idx_out), n3)
    out["scatter"] = torch.from_numpy(np.where(pad, 0, slot_of[lm] * plan.mul + u))
    out["scale_out_sep"] = torch.from_numpy(np.where(pad, 0.0, plan.scale_out))
    return out
