"""What the Gaunt backends (``gaunt_fourier``, ``sphere_grid``) can run, and the shared
gather/scatter between irreps features and harmonic coefficient arrays.

Both backends compute one *product of spherical functions* per channel instead of one
contraction per path: the used blocks of ``x1`` become ``f1_u = sum_i a_i x1[i, u] . Y_{l_i}``,
those of ``x2`` become ``f2`` (per channel ``u`` for ``uuu``; summed over the channels for
``uvu``), the product ``f1_u f2`` is projected onto each output degree ``l3`` and scaled by
``c_out``. That equals the descriptor's sum over paths exactly when (checked by
:func:`plan_or_reason`, the reasons are what ``why_not`` reports):

1. ``coefficients="gaunt"`` (the product of functions has Gaunt coefficients, not CG ones);
2. every path is unweighted (one product cannot give each path its own weight: the
   independent path weights are what the faster product gives up) and not a tensor square;
3. every path has one mode, ``uuu`` or ``uvu`` (``uvw`` mixes channels: a Linear after);
4. the used blocks of each operand have distinct ``l`` (two ``l = 1`` blocks would be summed
   into one function and could not be told apart again) and one multiplicity (``uvu``: only
   ``x1``);
5. every output block that receives paths receives *every* pair of used blocks with a nonzero
   Gaunt coefficient into its ``l3``, once (the product does not leave any out), so with parity
   twists ``p (-1)^l`` mixed in an operand the pairs split over ``0e``/``0o``-like outputs and
   the descriptor is refused;
6. the constants factor, ``c_p / g_p = a(i1) b(i2) c(i_out)`` (true for every built-in
   normalisation; ``g_p`` the Gaunt factor).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from equikit.tp._backends import Executor
from equikit.tp._descriptor import Mode, Path, TensorProductDescriptor, gaunt_factor


@dataclass(frozen=True)
class ProductPlan:
    """The function product a descriptor reduces to (see the module docs)."""

    mode: Mode
    mul: int
    lmax1: int
    lmax2: int
    lmax_out: int
    idx1: np.ndarray  # (mul * (lmax1 + 1)^2,) column of x1 (d1 = zero pad) per (u, lm)
    scale1: np.ndarray
    mat2: np.ndarray  # uvu: (d2, (lmax2 + 1)^2) sum over channels; uuu: index like idx1
    scale2: np.ndarray
    idx_out: np.ndarray  # (d_out,) column of the product (mul * (lmax_out+1)^2 = zero pad)
    scale_out: np.ndarray


def path_reason(desc: TensorProductDescriptor, p: Path) -> str | None:
    """Why one path alone cannot run on a Gaunt backend (``None`` if it can)."""
    if desc.coefficients != "gaunt":
        return ("the backend computes the product of spherical functions, whose coupling is Gaunt, not "
                "Clebsch-Gordan: build the descriptor with coefficients='gaunt' (e.g. tp.gaunt_product)")
    if p.weighted:
        return ("a weighted path: one function product cannot give each path its own weight (independent "
                "path weights); use unweighted paths (tp.gaunt_product) and scale per l before/after")
    if p.mode == Mode.UVW:
        return "mode 'uvw' mixes channels inside the product; use 'uuu'/'uvu' and a Linear after"
    if desc.square:
        return "a tensor square (pass x2 = x1 with a non-square descriptor)"
    return None


def _blocks_used(desc, which: int) -> list[int]:
    return sorted({p.i1 if which == 1 else p.i2 for p in desc.paths})


@functools.lru_cache(maxsize=256)
def plan_or_reason(desc: TensorProductDescriptor) -> ProductPlan | str:
    """The :class:`ProductPlan` of ``desc``, or why it is not one product of functions."""
    for p in desc.paths:
        why = path_reason(desc, p)
        if why is not None:
            return why
    if not desc.paths:
        return "the descriptor has no paths"
    modes = {p.mode for p in desc.paths}
    if len(modes) > 1:
        return f"paths mix the modes {sorted(m.value for m in modes)}; one product has one mode"
    mode = modes.pop()
    used1, used2 = _blocks_used(desc, 1), _blocks_used(desc, 2)
    for name, irreps, used in (("irreps1", desc.irreps1, used1), ("irreps2", desc.irreps2, used2)):
        ls = [irreps[i].ir.l for i in used]
        if len(set(ls)) < len(ls):
            return (f"two used blocks of {name} '{irreps}' have the same l; the function product would sum "
                    "them into one harmonic degree")
    muls = {desc.irreps1[i].mul for i in used1} | ({desc.irreps2[i].mul for i in used2} if mode == Mode.UUU else set())
    if len(muls) > 1:
        return f"the used blocks have multiplicities {sorted(muls)}; one product needs one channel count"
    # completeness: each output block gets every nonzero Gaunt pair of used blocks, once
    by_out: dict[int, list[Path]] = {}
    for p in desc.paths:
        by_out.setdefault(p.i_out, []).append(p)
    for i_out, ps in by_out.items():
        l3 = desc.irreps_out[i_out].ir.l
        want = sorted((a, b) for a in used1 for b in used2
                      if gaunt_factor(desc.irreps1[a].ir.l, desc.irreps2[b].ir.l, l3) != 0.0)
        got = sorted((p.i1, p.i2) for p in ps)
        if got != want:
            missing = sorted(set(want) - set(got))
            extra = sorted({q for q in got if got.count(q) > 1 or q not in want})
            what = ", ".join(f"{k} {v}" for k, v in (("missing", missing), ("extra or repeated", extra)) if v)
            return (f"output block {i_out} ({desc.irreps_out[i_out]}) receives the pairs {got} but the product "
                    f"of functions puts every pair {want} into l={l3} ({what}); "
                    "build it with tp.gaunt_product (with one parity twist p(-1)^l per operand)")
    # factorisation of the constants
    d1 = {i: desc.irreps1[i].ir.dim for i in used1}
    d2 = {i: desc.irreps2[i].ir.dim for i in used2}
    norm = desc.irrep_normalization == "norm"
    a = {i: math.sqrt(d1[i]) if norm else 1.0 for i in used1}
    b = {i: (math.sqrt(d2[i]) if norm else 1.0)
         / (math.sqrt(desc.irreps2[i].mul) if desc.path_normalization == "path" and mode == Mode.UVU else 1.0)
         for i in used2}
    c: dict[int, float] = {}
    for n, p in enumerate(desc.paths):
        ir1, ir2, iro = desc.irreps_of(p)
        r = desc.coefficient(n) / gaunt_factor(ir1.l, ir2.l, iro.l) / (a[p.i1] * b[p.i2])
        c.setdefault(p.i_out, r)
        if abs(c[p.i_out] - r) > 1e-12 * abs(r):
            return f"the path constants c_p do not factor per operand block (path {p!r})"
    return _build_plan(desc, mode, used1, used2, a, b, c)


def _build_plan(desc, mode, used1, used2, a, b, c) -> ProductPlan:
    mul = desc.irreps1[used1[0]].mul
    lmax1 = max(desc.irreps1[i].ir.l for i in used1)
    lmax2 = max(desc.irreps2[i].ir.l for i in used2)
    lmax_out = max(desc.irreps_out[i].ir.l for i in {p.i_out for p in desc.paths})
    s1, s2, so = desc.irreps1.slices(), desc.irreps2.slices(), desc.irreps_out.slices()
    idx1, scale1 = _gather(desc.irreps1, s1, used1, a, mul, lmax1)
    n2 = (lmax2 + 1) ** 2
    if mode == Mode.UUU:
        mat2, scale2 = _gather(desc.irreps2, s2, used2, b, mul, lmax2)
    else:
        mat2, scale2 = np.zeros((desc.irreps2.dim, n2)), np.ones(n2)
        for i in used2:
            m, ir = desc.irreps2[i]
            for u in range(m):
                for k in range(ir.dim):
                    mat2[s2[i].start + u * ir.dim + k, ir.l**2 + k] = b[i]
    n3 = (lmax_out + 1) ** 2
    idx_out = np.full(desc.irreps_out.dim, mul * n3, dtype=np.int64)
    scale_out = np.zeros(desc.irreps_out.dim)
    for i, cv in c.items():
        m, ir = desc.irreps_out[i]
        for u in range(m):
            cols = slice(so[i].start + u * ir.dim, so[i].start + (u + 1) * ir.dim)
            idx_out[cols] = u * n3 + ir.l**2 + np.arange(ir.dim)
            scale_out[cols] = cv
    return ProductPlan(mode, mul, lmax1, lmax2, lmax_out, idx1, scale1, mat2, scale2, idx_out, scale_out)


def _gather(irreps, slices, used, scale, mul, lmax) -> tuple[np.ndarray, np.ndarray]:
    """Index (into the features padded with one zero column) and scale per ``(u, lm)``."""
    n = (lmax + 1) ** 2
    idx = np.full(mul * n, irreps.dim, dtype=np.int64)
    sc = np.zeros(mul * n)
    for i in used:
        m, ir = irreps[i]
        for u in range(m):
            cols = u * n + ir.l**2 + np.arange(ir.dim)
            idx[cols] = slices[i].start + u * ir.dim + np.arange(ir.dim)
            sc[cols] = scale[i]
    return idx, sc


# ---------------------------------------------------------------------------------- tensors
def register_plan(module, plan: ProductPlan) -> None:
    """Store the plan's gathers and scales as (non-persistent) buffers of ``module``."""
    for name in ("idx1", "idx_out"):
        module.register_buffer(name, torch.from_numpy(getattr(plan, name)), persistent=False)
    names = ("scale1", "scale2", "scale_out") + (("mat2",) if plan.mode == Mode.UVU else ())
    for name in names:
        module.register_buffer(name, torch.from_numpy(np.asarray(getattr(plan, name), dtype=np.float64)),
                               persistent=False)
    if plan.mode == Mode.UUU:
        module.register_buffer("idx2", torch.from_numpy(plan.mat2), persistent=False)


class ProductExecutor(Executor):
    """Shared base of the Gaunt-product backends (``sphere_grid``, ``gaunt_fourier``): they
    express exactly the descriptors with a :class:`ProductPlan`, which ``__init__`` stores as
    ``self.plan`` and registers as buffers (:func:`register_plan`)."""

    @classmethod
    def can_express(cls, descriptor: TensorProductDescriptor, path: Path) -> bool:
        return path_reason(descriptor, path) is None and isinstance(plan_or_reason(descriptor), ProductPlan)

    @classmethod
    def why_not(cls, descriptor: TensorProductDescriptor, path: Path) -> str:
        why = path_reason(descriptor, path)
        plan = plan_or_reason(descriptor)
        return why or (plan if isinstance(plan, str) else "it can")

    def __init__(self, descriptor: TensorProductDescriptor) -> None:
        super().__init__(descriptor)
        self.plan = plan_or_reason(descriptor)
        register_plan(self, self.plan)


def operands(module, plan: ProductPlan, x1, x2):
    """Coefficient arrays ``(B, mul, (lmax1+1)^2)`` and ``(B, mul or 1, (lmax2+1)^2)``."""
    B = x1.shape[0]
    pad1 = torch_pad(x1)
    a = pad1.index_select(1, module.idx1) * module.scale1.to(x1.dtype)
    a = a.reshape(B, plan.mul, (plan.lmax1 + 1) ** 2)
    if plan.mode == Mode.UUU:
        b = torch_pad(x2).index_select(1, module.idx2) * module.scale2.to(x1.dtype)
        return a, b.reshape(B, plan.mul, (plan.lmax2 + 1) ** 2)
    return a, (x2 @ module.mat2.to(x1.dtype))[:, None, :]


def assemble(module, plan: ProductPlan, prod):
    """Output features ``(B, irreps_out.dim)`` from the product coefficients ``(B, mul, (lmax_out+1)^2)``."""
    flat = torch_pad(prod.reshape(prod.shape[0], -1))
    return flat.index_select(1, module.idx_out) * module.scale_out.to(prod.dtype)


def torch_pad(x):
    """Append one zero column (the target of unused indices)."""
    return torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
