"""What a backend can express for a descriptor: reachable paths, parity, independent weights.

Measures (also in ``docs/tp.md``):

- **reachable paths**: the distinct ``(ir1, ir2) -> ir_out`` couplings among the descriptor's
  paths that the backend executes;
- **parity-odd paths**: reachable couplings with ``l1 + l2 + l_out`` odd (e.g. the cross
  product ``1o x 1o -> 1e``); their Gaunt coefficients vanish, so Gaunt / sphere-grid products
  cannot express them;
- **weights**: the number of weights of the reachable paths;
- **independent weights**: the dimension of the space of bilinear maps ``(x1, x2) -> z`` that
  the weights reach, i.e. the rank of ``W -> f_W``. Every weight ``(u, v, w)`` of a path
  multiplies the map ``e_w ⊗ C(x1_u, x2_v)`` on its own coordinates, so distinct weights are
  independent except (a) paths repeating one ``(i1, i2, i_out)`` block triple (their supports
  are unioned: ``uuu ⊂ uvu ⊂ uvw``) and (b) tensor squares, where ``(u, v)`` and ``(v, u)``
  of one block give the same function up to the swap sign ``s = ±1`` of ``C`` (``C_jik =
  s C_ijk``), and ``u == v`` gives zero when ``s = -1``.
- **bilinear rank** (``rank=True``; the spirit of "The Price of Freedom", 2025): the rank of
  the linear map ``V1 ⊗ V2 -> V_out`` (for a square, ``Sym^2 V1 -> V_out``) that the backend
  computes for generic weights, i.e. the dimension of the span of its outputs. It is at most
  ``irreps_out.dim`` restricted to the reachable outputs; a Gaunt product (symmetric in its two
  functions, parity-odd couplings absent) has a lower rank than the Clebsch-Gordan product of
  the same operands. Computed numerically: the naive oracle on the reachable paths with
  ``N(0, 1)`` weights (seed 0) at ``irreps_out.dim + 16`` random input pairs, float64, rank
  with relative tolerance ``1e-9``; it costs that many naive evaluations (small descriptors).
- **family dimension** (``rank=True``): the dimension of the span of the maps ``{f_W}`` over
  all weights, numerically (the unweighted part counts as one map); equals
  ``independent_weights`` when every reachable path is weighted, ``1`` for an unweighted
  product such as ``tp.gaunt_product``, ``0`` when nothing is reachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from equikit.o3 import Irrep, clebsch_gordan
from equikit.tp._backends import get_backend
from equikit.tp._descriptor import Mode, Path, TensorProductDescriptor

_RANK = {Mode.UUU: 0, Mode.UVU: 1, Mode.UVW: 2}


@dataclass(frozen=True)
class Expressivity:
    """Expressivity of one backend on one descriptor (see the module docs for the measures)."""

    backend: str
    paths: tuple[tuple[Irrep, Irrep, Irrep], ...]
    parity_odd: tuple[tuple[Irrep, Irrep, Irrep], ...]
    unreachable: tuple[Path, ...]
    num_weights: int
    independent_weights: int
    bilinear_rank: int | None = None
    family_dim: int | None = None

    def to_dict(self) -> dict[str, Any]:
        fmt = lambda t: f"{t[0]} x {t[1]} -> {t[2]}"  # noqa: E731
        return {
            "backend": self.backend,
            "paths": [fmt(t) for t in self.paths],
            "parity_odd": [fmt(t) for t in self.parity_odd],
            "unreachable": [repr(p) for p in self.unreachable],
            "num_weights": self.num_weights,
            "independent_weights": self.independent_weights,
            "bilinear_rank": self.bilinear_rank,
            "family_dim": self.family_dim,
        }


def _swap_sign(l1: int, l3: int) -> int:
    c = clebsch_gordan(l1, l1, l3, dtype=torch.float64)
    return 1 if torch.allclose(c.transpose(0, 1), c, atol=1e-12) else -1


def _group_count(desc: TensorProductDescriptor, p: Path) -> int:
    """Independent functions spanned by the weights of mode ``p.mode`` on ``p``'s block triple."""
    m1, m2, mo = desc.irreps1[p.i1].mul, desc.irreps2[p.i2].mul, desc.irreps_out[p.i_out].mul
    if not (desc.square and p.i1 == p.i2):
        return {Mode.UVW: m1 * m2 * mo, Mode.UVU: m1 * m2, Mode.UUU: m1}[p.mode]
    ir1, _, iro = desc.irreps_of(p)
    s = _swap_sign(ir1.l, iro.l)
    pairs = m1 * (m1 + 1) // 2 if s == 1 else m1 * (m1 - 1) // 2
    return {Mode.UVW: pairs * mo, Mode.UVU: m1 * m1 - (m1 if s == -1 else 0), Mode.UUU: m1 if s == 1 else 0}[p.mode]


def _reachable(desc: TensorProductDescriptor, paths: list[Path]) -> TensorProductDescriptor:
    return TensorProductDescriptor(desc.irreps1, desc.irreps2, desc.irreps_out, tuple(paths), desc.path_normalization,
                                   desc.irrep_normalization, desc.square, desc.coefficients)


def _numerical_ranks(desc: TensorProductDescriptor) -> tuple[int, int]:
    """``(bilinear rank, family dimension)`` of ``desc`` run by the naive oracle (module docs)."""
    from equikit.tp._backends import make_executor

    if not desc.paths:
        return 0, 0
    gen = torch.Generator().manual_seed(0)
    ex = make_executor(desc, "naive")
    n = desc.irreps_out.dim + 16
    x1 = torch.randn(n, desc.irreps1.dim, dtype=torch.float64, generator=gen)
    x2 = None if desc.square else torch.randn(n, desc.irreps2.dim, dtype=torch.float64, generator=gen)
    k = desc.weight_numel
    w = torch.randn(k, dtype=torch.float64, generator=gen) if k else None
    rank = int(torch.linalg.matrix_rank(ex(x1, x2, w), rtol=1e-9))
    # family: f_W = f_0 + sum_i W_i (f_{e_i} - f_0) with f_0 the unweighted part (W = 0)
    m = min(n, 24)
    f0 = ex(x1[:m], None if x2 is None else x2[:m], torch.zeros(k, dtype=torch.float64) if k else None)
    cols = [f0.reshape(-1)] + [ex(x1[:m], None if x2 is None else x2[:m], e).reshape(-1) - f0.reshape(-1)
                               for e in torch.eye(k, dtype=torch.float64)]
    family = int(torch.linalg.matrix_rank(torch.stack(cols, 1), rtol=1e-9))
    return rank, family


def expressivity(descriptor: TensorProductDescriptor, backend: str = "sparse_cg", *,
                 rank: bool = False) -> Expressivity:
    """Report what ``backend`` can express of ``descriptor`` (``rank=True`` adds the numerical
    bilinear rank and family dimension; see the module docs).

    >>> from equikit.tp import fully_connected, tensor_square
    >>> e = expressivity(fully_connected("1o", "1o", "0e + 1e + 2e"))
    >>> [f"{a} x {b} -> {c}" for a, b, c in e.parity_odd], e.independent_weights
    (['1o x 1o -> 1e'], 3)
    >>> expressivity(tensor_square("2x1o", "0e + 1e")).independent_weights  # 3 sym pairs + 1 antisym
    4
    >>> from equikit.tp import gaunt_product
    >>> cg = expressivity(fully_connected("0e + 1o", "0e + 1o", "0e + 1o + 1e + 2e"), rank=True)
    >>> ga = expressivity(gaunt_product("0e + 1o", "0e + 1o"), "sphere_grid", rank=True)
    >>> (cg.bilinear_rank, cg.family_dim), (ga.bilinear_rank, ga.family_dim, ga.independent_weights)
    ((12, 6), (9, 1, 0))
    """
    if not isinstance(descriptor, TensorProductDescriptor):
        raise TypeError(
            f"expressivity: `descriptor` must be a TensorProductDescriptor, got {type(descriptor).__name__}"
        )
    cls = get_backend(backend)
    reach = [p for p in descriptor.paths if cls.can_express(descriptor, p)]
    unreachable = tuple(p for p in descriptor.paths if not cls.can_express(descriptor, p))
    triples = tuple(dict.fromkeys(descriptor.irreps_of(p) for p in reach))
    odd = tuple(t for t in triples if (t[0].l + t[1].l + t[2].l) % 2)
    groups: dict[tuple[int, int, int], Path] = {}
    for p in reach:
        if not p.weighted:
            continue
        key = (min(p.i1, p.i2), max(p.i1, p.i2), p.i_out) if descriptor.square else (p.i1, p.i2, p.i_out)
        if key not in groups or _RANK[p.mode] > _RANK[groups[key].mode]:
            groups[key] = p
    num = sum(int(torch.Size(descriptor.weight_shape(p)).numel()) for p in reach if p.weighted)
    independent = sum(_group_count(descriptor, p) for p in groups.values())
    ranks = _numerical_ranks(_reachable(descriptor, reach)) if rank else (None, None)
    return Expressivity(cls.name, triples, odd, unreachable, num, independent, *ranks)


def expressivity_table(descriptor: TensorProductDescriptor, backends: Any = None, *,
                       rank: bool = False) -> list[Expressivity]:
    """:func:`expressivity` of ``descriptor`` for every registered backend (or ``backends``).

    >>> from equikit.tp import gaunt_product
    >>> {e.backend: len(e.paths) for e in expressivity_table(gaunt_product("1o", "1o"))}["gaunt_fourier"]
    2
    """
    from equikit.tp._backends import BACKENDS

    names = sorted(BACKENDS) if backends is None else list(backends)
    return [expressivity(descriptor, b, rank=rank) for b in names]
