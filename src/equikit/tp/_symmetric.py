"""MACE's symmetric contraction as data: the generalised Clebsch-Gordan basis ``U`` and a
descriptor. Nothing here touches a feature tensor (executors: ``_symmetric_backends.py``).

Math (Batatia et al. 2022, "MACE"). Per node and channel ``c`` the features ``A_c`` are one
vector of ``irreps_in`` (``V``, e.g. ``0e + 1o + 2e + 3o``, dim ``d``). For a correlation order
``nu`` and an output irrep ``L`` (dim ``m``) the maps ``V^{x nu} -> L`` that are O(3)-equivariant
*and* symmetric in their ``nu`` slots form a space of dimension ``K`` (the multiplicity of ``L``
in ``Sym^nu V``); :func:`symmetric_basis` returns a basis ``U (d, ..., d, m, K)`` of it, and

.. math:: B^{L}_{c} = \\sum_{\\nu=1}^{\\nu_{max}} \\sum_{k=1}^{K_\\nu}
          W_{e, \\nu, k, c} \\sum_{i_1 \\dots i_\\nu} U^{(\\nu)}_{i_1 \\dots i_\\nu, :, k}
          A_{c i_1} \\cdots A_{c i_\\nu}

with ``e`` the node's element. Construction: all iterated couplings
``((V x V) -> l12) x V -> ... -> L`` through every intermediate irrep (the tensors MACE's
``U_matrix_real`` stacks, which span every equivariant map), then symmetrised over the ``nu``
input slots, then Gram-Schmidt in a fixed order dropping the dependent ones, so the basis has no
redundant element and is reproducible (no SVD sign ambiguity). Each element is rescaled to
``|U_k|_F^2 = m`` (the "component" normalisation of a single CG path).

MACE keeps the unsymmetrised paths, so its weight count (:func:`count_coupling_paths`) is larger:
weights on the antisymmetric or repeated paths act on the same (or a zero) function of ``A``.
For ``irreps_in = 0e+1o+2e+3o`` and correlation 3: ``0e``: MACE 1 / 4 / 23 weights for
``nu = 1 / 2 / 3``, here 1 / 4 / 8; ``1o``: MACE 1 / 6 / 51, here 1 / 3 / 12 (the counts here
equal the multiplicities of the irrep in ``Sym^nu V`` from character theory; tests check both).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from equikit.o3 import Irrep, Irreps, clebsch_gordan

MAX_CORRELATION = 4


def _check_correlation(nu: Any, where: str, name: str = "correlation") -> int:
    if isinstance(nu, bool) or not isinstance(nu, int) or not 1 <= nu <= MAX_CORRELATION:
        raise ValueError(f"{where}: `{name}` must be an int in 1..{MAX_CORRELATION}, got {nu!r}")
    return nu


def _as_irreps(value: Any, name: str, where: str) -> Irreps:
    try:
        return Irreps(value)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: `{name}` is not valid irreps ({err})") from None


def _as_irrep(value: Any, where: str) -> Irrep:
    irreps = _as_irreps(value, "ir_out", where)
    if len(irreps) != 1 or irreps[0].mul != 1:
        raise ValueError(f"{where}: `ir_out` must be a single irrep such as '1o', got '{irreps}'")
    return irreps[0].ir


@functools.lru_cache(maxsize=32)
def _couplings(irreps_in: Irreps, nu: int, lmax: int) -> tuple[tuple[Irrep, np.ndarray], ...]:
    """All iterated couplings of ``nu`` copies of ``irreps_in`` into irreps with ``l <= lmax``:
    ``(ir, T)`` with ``T (d, ..., d, ir.dim)`` (``nu`` input axes), in a fixed order."""
    d = irreps_in.dim
    copies = list(zip(_copy_slices(irreps_in), _expand(irreps_in)))
    if nu == 1:
        out = []
        for sl, ir in copies:
            t = np.zeros((d, ir.dim))
            t[sl] = np.eye(ir.dim)
            out.append((ir, t))
        return tuple(out)
    out = []
    for ir_left, t_left in _couplings(irreps_in, nu - 1, lmax + irreps_in.lmax):
        for sl, ir in copies:
            for ir_new in ir_left * ir:
                if ir_new.l > lmax:
                    continue
                c = clebsch_gordan(ir_left.l, ir.l, ir_new.l, dtype=torch.float64).numpy()
                t = np.zeros((*t_left.shape[:-1], d, ir_new.dim))
                t[..., sl, :] = np.tensordot(t_left, c, axes=([-1], [0]))
                out.append((ir_new, t))
    return tuple(out)


def _expand(irreps: Irreps) -> list[Irrep]:
    return [ir for mul, ir in irreps for _ in range(mul)]


def _copy_slices(irreps: Irreps) -> list[slice]:
    out, start = [], 0
    for mul, ir in irreps:
        for _ in range(mul):
            out.append(slice(start, start + ir.dim))
            start += ir.dim
    return out


def count_coupling_paths(irreps_in: Any, ir_out: Any, nu: int) -> int:
    """Number of iterated Clebsch-Gordan paths ``V^{x nu} -> ir_out`` through every intermediate
    irrep: the number of weights MACE's ``U_matrix_real`` gives per channel and element (it
    keeps these paths unsymmetrised). Compare :func:`symmetric_basis` (no redundancy).

    >>> [count_coupling_paths("0e + 1o + 2e + 3o", "0e", nu) for nu in (1, 2, 3)]
    [1, 4, 23]
    """
    where = "count_coupling_paths"
    irreps = _as_irreps(irreps_in, "irreps_in", where)
    ir = _as_irrep(ir_out, where)
    _check_correlation(nu, where, "nu")
    return sum(1 for ir2, _ in _couplings(irreps, nu, ir.l) if ir2 == ir)


def _symmetrise(t: np.ndarray, nu: int) -> np.ndarray:
    perms = list(itertools.permutations(range(nu)))
    rest = tuple(range(nu, t.ndim))
    return sum(np.transpose(t, (*p, *rest)) for p in perms) / len(perms)


def _gram_schmidt(cols: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Orthonormal basis of the span of the columns of ``cols (n, k)``, in column order, dropping
    a column when its residual is below ``rtol`` times the largest column norm (a symmetrised
    antisymmetric path is zero up to rounding, so the threshold must not be relative to the
    column itself). Classical Gram-Schmidt, applied twice."""
    q = np.zeros((cols.shape[0], 0))
    scale = float(np.linalg.norm(cols, axis=0).max(initial=0.0))
    for j in range(cols.shape[1]):
        v = cols[:, j]
        for _ in range(2):
            v = v - q @ (q.T @ v)
        n = np.linalg.norm(v)
        if n > rtol * scale:
            q = np.concatenate([q, (v / n)[:, None]], axis=1)
    return q


@functools.lru_cache(maxsize=64)
def _symmetric_basis64(irreps_in: Irreps, ir_out: Irrep, nu: int) -> np.ndarray:
    d = irreps_in.dim
    paths = [t for ir, t in _couplings(irreps_in, nu, ir_out.l) if ir == ir_out]
    shape = (d,) * nu + (ir_out.dim,)
    if not paths:
        u = np.zeros((*shape, 0))
    else:
        cols = _symmetrise(np.stack(paths, axis=-1), nu).reshape(-1, len(paths))
        rows = np.flatnonzero(np.abs(cols).max(axis=1) > 1e-14)  # selection rules zero most rows
        q_rows = _gram_schmidt(cols[rows])
        q = np.zeros((cols.shape[0], q_rows.shape[1]))
        q[rows] = q_rows
        u = q.reshape(*shape, q.shape[1]) * math.sqrt(ir_out.dim)
        u[np.abs(u) < 1e-13] = 0.0
    u.setflags(write=False)
    return u


def symmetric_basis(irreps_in: Any, ir_out: Any, nu: int, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Basis ``U (d, ..., d, m, K)`` (``nu`` input axes of ``d = irreps_in.dim``, ``m =
    ir_out.dim``) of the O(3)-equivariant maps ``Sym^nu(irreps_in) -> ir_out``: symmetric in the
    input axes, orthogonal, ``|U_k|_F^2 = m``, no redundant element (see the module docs).
    Cached per ``(irreps_in, ir_out, nu)``; about 0.1 s for ``0e+1o+2e+3o``, ``nu = 3``.

    .. math:: U_{g i_1, \dots, g i_\nu, D(g) m, k} = U_{i_1 \dots i_\nu m k}
              \quad\text{(equivariance)}, \qquad U_{i_{\sigma 1} \dots i_{\sigma\nu} m k}
              = U_{i_1 \dots i_\nu m k}

    >>> u = symmetric_basis("0e + 1o + 2e + 3o", "0e", 3, dtype=torch.float64)
    >>> tuple(u.shape)
    (16, 16, 16, 1, 8)
    >>> (symmetric_basis("1o", "0e", 2, dtype=torch.float64)[..., 0, 0] * -(3**0.5)).round(decimals=12) + 0.0
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]], dtype=torch.float64)
    """
    where = "symmetric_basis"
    irreps = _as_irreps(irreps_in, "irreps_in", where)
    if irreps.dim == 0:
        raise ValueError(f"{where}: `irreps_in` must not be empty")
    ir = _as_irrep(ir_out, where)
    _check_correlation(nu, where, "nu")
    u = _symmetric_basis64(irreps, ir, nu)
    return torch.tensor(u, dtype=torch.get_default_dtype() if dtype is None else dtype)


@dataclass(frozen=True)
class SymmetricContractionDescriptor:
    """MACE's symmetric contraction as data: which products (``irreps_in`` per channel, output
    irreps, correlation orders ``1..correlation``) and the weight layout.

    Args:
        irreps_in: the irreps of one channel's feature vector, e.g. ``"0e + 1o + 2e + 3o"``.
        irreps_out: output irreps per channel, multiplicity 1 each, e.g. ``"0e"`` or ``"0e + 1o"``.
        correlation: highest order ``nu_max`` (1..4).

    Weight layout: ``(num_elements, weight_numel, channels)``; along the middle axis the blocks
    ``(i_out, nu)`` in the order of :meth:`weight_slices` (output block major, ``nu`` minor),
    each of :meth:`num_basis` entries. Output layout: ``irreps_out`` block by block, each
    ``(channels, ir.dim)`` flattened, i.e. the irreps ``channels x ir`` in ``mul_ir`` order
    (:meth:`irreps_out_full`).

    >>> d = symmetric_contraction("0e + 1o + 2e + 3o", "0e + 1o", 3)
    >>> d.num_basis(0), d.num_basis(1), d.weight_numel
    ((1, 4, 8), (1, 3, 12), 29)
    >>> str(d.irreps_out_full(8))
    '8x0e+8x1o'
    """

    irreps_in: Irreps
    irreps_out: Irreps
    correlation: int
    _counts: tuple[tuple[int, ...], ...] = field(default=(), init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = "SymmetricContractionDescriptor"
        object.__setattr__(self, "irreps_in", _as_irreps(self.irreps_in, "irreps_in", where))
        object.__setattr__(self, "irreps_out", _as_irreps(self.irreps_out, "irreps_out", where))
        _check_correlation(self.correlation, where)
        if self.irreps_in.dim == 0 or len(self.irreps_out) == 0:
            raise ValueError(f"{where}: `irreps_in` and `irreps_out` must not be empty, got "
                             f"'{self.irreps_in}' and '{self.irreps_out}'")
        if any(m.mul != 1 for m in self.irreps_out):
            raise ValueError(
                f"{where}: `irreps_out` gives the irreps of one channel, each with multiplicity 1 (e.g. "
                f"'0e + 1o'); the channels come from the features. Got '{self.irreps_out}'"
            )
        counts = tuple(
            tuple(_symmetric_basis64(self.irreps_in, ir, nu).shape[-1] for nu in range(1, self.correlation + 1))
            for _, ir in self.irreps_out
        )
        object.__setattr__(self, "_counts", counts)

    def num_basis(self, i_out: int) -> tuple[int, ...]:
        """Per ``nu = 1..correlation``, the number of basis tensors (weights per element and
        channel) of output block ``i_out``."""
        return self._counts[i_out]

    @property
    def weight_numel(self) -> int:
        """Length of the middle axis of the weights."""
        return sum(sum(c) for c in self._counts)

    def weight_slices(self) -> dict[tuple[int, int], slice]:
        """``(i_out, nu) -> slice`` of the middle weight axis."""
        out, start = {}, 0
        for i, counts in enumerate(self._counts):
            for nu, k in enumerate(counts, start=1):
                out[(i, nu)] = slice(start, start + k)
                start += k
        return out

    def basis(self, i_out: int, nu: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``U (d, ..., d, m, K)`` of output block ``i_out`` and order ``nu``."""
        return symmetric_basis(self.irreps_in, self.irreps_out[i_out].ir, nu, dtype=dtype)

    def irreps_out_full(self, channels: int) -> Irreps:
        """Irreps of the flattened output for ``channels`` channels."""
        return Irreps([(channels, ir) for _, ir in self.irreps_out])

    def __str__(self) -> str:
        lines = [f"SymmetricContractionDescriptor({self.irreps_in} -> {self.irreps_out}, correlation "
                 f"{self.correlation}, {self.weight_numel} weights per element and channel)"]
        for (_, ir), counts in zip(self.irreps_out, self._counts):
            lines.append(f"  {ir}: basis sizes per nu {list(counts)}")
        return "\n".join(lines)


def symmetric_contraction(irreps_in: Any, irreps_out: Any, correlation: int) -> SymmetricContractionDescriptor:
    """Build a :class:`SymmetricContractionDescriptor` (MACE's product basis, orders
    ``1..correlation``).

    >>> print(symmetric_contraction("0e + 1o + 2e", "0e", 2))
    SymmetricContractionDescriptor(1x0e+1x1o+1x2e -> 1x0e, correlation 2, 4 weights per element and channel)
      0e: basis sizes per nu [1, 3]
    """
    return SymmetricContractionDescriptor(irreps_in, irreps_out, correlation)
