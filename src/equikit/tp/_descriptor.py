"""Tensor-product descriptors: pure, printable, comparable, hashable data.

A descriptor says *what* bilinear equivariant map to compute; a backend (``_backends.py``)
says *how*. Nothing here touches a feature tensor.

Math (one path ``p = (i1, i2, i_out, mode)`` between blocks ``mul1 x ir1``, ``mul2 x ir2``,
``mul_out x ir_out``)::

    uvw: z[w, k] += c_p sum_{u v} W_p[u, v, w] sum_{i j} C_ijk x[u, i] y[v, j]
    uvu: z[u, k] += c_p sum_{v}   W_p[u, v]    sum_{i j} C_ijk x[u, i] y[v, j]
    uuu: z[u, k] += c_p           W_p[u]       sum_{i j} C_ijk x[u, i] y[u, j]

``C = o3.clebsch_gordan(l1, l2, l_out)`` (orthogonal coupling, ``sum_ij C_ijk C_ijk' =
delta_kk'``), ``c_p`` the normalisation constant of the path (:meth:`coefficient`) and ``W_p``
its weights (all ones for an unweighted path).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from equikit.o3 import Irrep, Irreps, clebsch_gordan, gaunt, is_coupled

PATH_NORMALIZATIONS = ("element", "path", "none")
IRREP_NORMALIZATIONS = ("component", "norm", "none")
COEFFICIENTS = ("clebsch_gordan", "gaunt")


@functools.cache
def gaunt_factor(l1: int, l2: int, l3: int) -> float:
    r"""The scalar ``g`` with ``sqrt(4 pi) * o3.gaunt(l1, l2, l3) = g * o3.clebsch_gordan(l1, l2, l3)``.

    ``z_c = g sum_ab C_abc x_a y_b`` are the component-normalised harmonic coefficients (degree
    ``l3``) of the pointwise product of ``x . Y_l1`` and ``y . Y_l2`` (component-normalised
    harmonics, ``int Y^2 = 4 pi``). Closed form ``g = sqrt((2l1+1)(2l2+1)/(2l3+1)) <l1 0 l2 0 | l3 0>``;
    zero when ``l1 + l2 + l3`` is odd or the triangle fails.

    >>> round(gaunt_factor(1, 1, 0), 12), gaunt_factor(1, 1, 1)  # x.Y1 * y.Y1 has 0e part x.y
    (-1.732050807569, 0.0)
    """
    if (l1 + l2 + l3) % 2 or not is_coupled(l1, l2, l3):
        return 0.0
    c = clebsch_gordan(l1, l2, l3, dtype=torch.float64)
    g = gaunt(l1, l2, l3, dtype=torch.float64)
    return float((g * c).sum() / (c * c).sum()) * math.sqrt(4 * math.pi)


class Mode(enum.Enum):
    """How the channels of a path connect: ``uvw`` fully connected, ``uvu`` channelwise,
    ``uuu`` elementwise.

    >>> Mode("uvu")
    <Mode.UVU: 'uvu'>
    """

    UVW = "uvw"
    UVU = "uvu"
    UUU = "uuu"

    @classmethod
    def parse(cls, value: Any, where: str) -> Mode:
        if isinstance(value, Mode):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"{where}: unknown mode {value!r}; expected one of {[m.value for m in cls]} "
                "('uvw' fully connected, 'uvu' channelwise, 'uuu' elementwise)"
            ) from None


@dataclass(frozen=True)
class Path:
    """One path: block ``i1`` of operand 1 times block ``i2`` of operand 2 into output block
    ``i_out``, with channel connectivity ``mode`` and learnable (or external) weights when
    ``weighted``.

    >>> Path(0, 1, 2, "uvu")
    Path(0, 1, 2, 'uvu')
    """

    i1: int
    i2: int
    i_out: int
    mode: Mode = Mode.UVW
    weighted: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode.parse(self.mode, "equikit.tp.Path"))
        for name in ("i1", "i2", "i_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise TypeError(f"equikit.tp.Path: `{name}` must be an int >= 0, got {v!r}")
        if not isinstance(self.weighted, bool):
            raise TypeError(f"equikit.tp.Path: `weighted` must be a bool, got {self.weighted!r}")

    def __repr__(self) -> str:
        w = "" if self.weighted else ", weighted=False"
        return f"Path({self.i1}, {self.i2}, {self.i_out}, '{self.mode.value}'{w})"


@dataclass(frozen=True)
class TensorProductDescriptor:
    """A bilinear O(3)-equivariant map ``(x1, x2) -> z`` as data.

    Args:
        irreps1, irreps2, irreps_out: operand and output irreps.
        paths: the :class:`Path` s; several paths may write to one output block (summed).
        path_normalization: ``"element"`` (e3nn's default): ``c_p = 1/sqrt(sum over the paths q
            into the same output block of n_q)`` with ``n_q`` the number of ``(u, v)`` terms
            summed per output channel (``uvw``: ``mul1 mul2``, ``uvu``: ``mul2``, ``uuu``: 1);
            ``"path"``: ``c_p = 1/sqrt(n_p * number of paths into the block)``; ``"none"``: 1.
            With unit-variance inputs and weights, both give unit-variance outputs.
        irrep_normalization: ``"component"`` (default): ``C`` as is, so ``|z_l|^2 ~ 2l + 1``
            for component-normalised inputs; ``"norm"``: ``C * sqrt(d1 d2 / d_out)``;
            ``"none"``: ``C / sqrt(d_out)`` (Frobenius-normalised, e3nn's raw ``wigner_3j`` up
            to a sign per ``(l1, l2, l3)``).
        square: the map is ``x -> f(x, x)`` (operand 2 is operand 1); see :func:`tensor_square`.
        coefficients: ``"clebsch_gordan"`` (default): ``C`` as above; ``"gaunt"``: the Gaunt
            coupling ``g_{l1 l2 l3} C`` (:func:`gaunt_factor`), folded into ``c_p``: with
            ``component``/``none`` normalisation and unit weights a path computes the
            component-normalised ``l3`` coefficients of the pointwise product of the spherical
            functions ``x . Y_l1`` and ``y . Y_l2``. Parity-odd paths (``l1 + l2 + l3`` odd, such
            as ``1o x 1o -> 1e``) have ``g = 0`` and are refused.

    Weight layout: one flat vector, the paths' weights concatenated in path order, each
    flattened row-major from :meth:`weight_shape` (``uvw``: ``(mul1, mul2, mul_out)``, ``uvu``:
    ``(mul1, mul2)``, ``uuu``: ``(mul1,)``; unweighted paths take none) -- e3nn's layout.
    Weights are either shared, shape ``(weight_numel,)``, or per sample, ``(..., weight_numel)``
    broadcasting with the operands (the per-edge radial weights of MACE / NequIP).

    >>> d = channelwise("8x0e + 8x1o", "0e + 1o")
    >>> str(d.irreps_out), d.weight_numel
    ('8x0e+8x0e+8x1e+8x1o+8x1o+8x2e', 48)
    >>> d == channelwise("8x0e+8x1o", "1x0e+1x1o") and hash(d) == hash(channelwise("8x0e+8x1o", "0e+1o"))
    True
    """

    irreps1: Irreps
    irreps2: Irreps
    irreps_out: Irreps
    paths: tuple[Path, ...]
    path_normalization: str = "element"
    irrep_normalization: str = "component"
    square: bool = False
    coefficients: str = "clebsch_gordan"
    _coefficients: tuple[float, ...] = field(default=(), init=False, repr=False, compare=False, hash=False)
    _weight_numel: int = field(default=0, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = "TensorProductDescriptor"
        for name in ("irreps1", "irreps2", "irreps_out"):
            object.__setattr__(self, name, Irreps(getattr(self, name)))
        paths = tuple(self.paths)
        if not all(isinstance(p, Path) for p in paths):
            raise TypeError(f"{where}: `paths` must be Path objects, got {[type(p).__name__ for p in paths]}")
        object.__setattr__(self, "paths", paths)
        if self.path_normalization not in PATH_NORMALIZATIONS:
            raise ValueError(
                f"{where}: `path_normalization` must be one of {PATH_NORMALIZATIONS}, got {self.path_normalization!r}"
            )
        if self.irrep_normalization not in IRREP_NORMALIZATIONS:
            raise ValueError(
                f"{where}: `irrep_normalization` must be one of {IRREP_NORMALIZATIONS}, "
                f"got {self.irrep_normalization!r}"
            )
        if self.coefficients not in COEFFICIENTS:
            raise ValueError(f"{where}: `coefficients` must be one of {COEFFICIENTS}, got {self.coefficients!r}")
        if self.square and self.irreps1 != self.irreps2:
            raise ValueError(f"{where}: square=True needs irreps1 == irreps2, got {self.irreps1} and {self.irreps2}")
        for p in paths:
            self._check_path(p, where)
        object.__setattr__(self, "_coefficients", tuple(self._coefficient(p) for p in paths))
        object.__setattr__(self, "_weight_numel", sum(math.prod(self.weight_shape(p)) for p in paths if p.weighted))

    # ------------------------------------------------------------------ validation
    def _check_path(self, p: Path, where: str) -> None:
        for name, idx, irreps in (("i1", p.i1, self.irreps1), ("i2", p.i2, self.irreps2),
                                  ("i_out", p.i_out, self.irreps_out)):
            if idx >= len(irreps):
                raise ValueError(f"{where}: {p!r} has {name}={idx} but the irreps '{irreps}' have {len(irreps)} blocks")
        (m1, ir1), (m2, ir2), (mo, iro) = self.irreps1[p.i1], self.irreps2[p.i2], self.irreps_out[p.i_out]
        if not is_coupled(ir1.l, ir2.l, iro.l) or ir1.p * ir2.p != iro.p:
            raise ValueError(
                f"{where}: {p!r} couples {ir1} x {ir2} -> {iro}, which is not equivariant; the product "
                f"{ir1} x {ir2} contains {[str(ir) for ir in ir1 * ir2]}"
            )
        if self.coefficients == "gaunt" and (ir1.l + ir2.l + iro.l) % 2:
            raise ValueError(
                f"{where}: {p!r} couples {ir1} x {ir2} -> {iro}, a parity-odd path (l1 + l2 + l_out odd) whose "
                "Gaunt coefficients vanish; drop it or use coefficients='clebsch_gordan'"
            )
        if p.mode == Mode.UVU and mo != m1:
            raise ValueError(f"{where}: channelwise {p!r} needs mul_out == mul1, got {mo} and {m1}")
        if p.mode == Mode.UUU and not (m1 == m2 == mo):
            raise ValueError(f"{where}: elementwise {p!r} needs mul1 == mul2 == mul_out, got {m1}, {m2}, {mo}")

    # ------------------------------------------------------------------ sizes and layout
    def irreps_of(self, p: Path) -> tuple[Irrep, Irrep, Irrep]:
        """The irreps ``(ir1, ir2, ir_out)`` a path couples."""
        return self.irreps1[p.i1].ir, self.irreps2[p.i2].ir, self.irreps_out[p.i_out].ir

    def weight_shape(self, p: Path) -> tuple[int, ...]:
        """Shape of one path's weights (``()`` when unweighted)."""
        if not p.weighted:
            return ()
        m1, m2, mo = self.irreps1[p.i1].mul, self.irreps2[p.i2].mul, self.irreps_out[p.i_out].mul
        return {Mode.UVW: (m1, m2, mo), Mode.UVU: (m1, m2), Mode.UUU: (m1,)}[p.mode]

    @property
    def weight_numel(self) -> int:
        """Length of the flat weight vector."""
        return self._weight_numel

    def weight_slices(self) -> list[slice | None]:
        """Per path, its slice of the flat weight vector (``None`` when unweighted)."""
        out: list[slice | None] = []
        start = 0
        for p in self.paths:
            if not p.weighted:
                out.append(None)
                continue
            n = math.prod(self.weight_shape(p))
            out.append(slice(start, start + n))
            start += n
        return out

    def num_elements(self, p: Path) -> int:
        """Number of ``(u, v)`` products summed into one output channel by the path."""
        m1, m2 = self.irreps1[p.i1].mul, self.irreps2[p.i2].mul
        return {Mode.UVW: m1 * m2, Mode.UVU: m2, Mode.UUU: 1}[p.mode]

    # ------------------------------------------------------------------ coefficients
    def _coefficient(self, p: Path) -> float:
        ir1, ir2, iro = self.irreps_of(p)
        alpha = {"component": 1.0, "norm": ir1.dim * ir2.dim / iro.dim, "none": 1.0 / iro.dim}[
            self.irrep_normalization
        ]
        siblings = [q for q in self.paths if q.i_out == p.i_out]
        if self.path_normalization == "element":
            x = sum(self.num_elements(q) for q in siblings)
        elif self.path_normalization == "path":
            x = self.num_elements(p) * len(siblings)
        else:
            x = 1
        c = math.sqrt(alpha / x) if x > 0 else math.sqrt(alpha)
        return c * gaunt_factor(ir1.l, ir2.l, iro.l) if self.coefficients == "gaunt" else c

    def coefficient(self, p: Path | int) -> float:
        """The normalisation constant ``c_p`` of a path (or path index); see the class docs."""
        i = p if isinstance(p, int) else self.paths.index(p)
        return self._coefficients[i]

    # ------------------------------------------------------------------ printing
    def __str__(self) -> str:
        head = f"TensorProductDescriptor({self.irreps1} x {self.irreps2} -> {self.irreps_out}"
        head += ", square" if self.square else ""
        head += ", gaunt" if self.coefficients == "gaunt" else ""
        head += f", {len(self.paths)} paths, {self.weight_numel} weights, {self.path_normalization}/"
        head += f"{self.irrep_normalization})"
        lines = [head]
        for i, p in enumerate(self.paths):
            w = "x".join(map(str, self.weight_shape(p))) if p.weighted else "-"
            lines.append(
                f"  {i:3d} {p.mode.value} [{p.i1}] {self.irreps1[p.i1]} x [{p.i2}] {self.irreps2[p.i2]} "
                f"-> [{p.i_out}] {self.irreps_out[p.i_out]}  w {w}  c {self._coefficients[i]:.4g}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- builders
def _irreps(value: Any, name: str, where: str) -> Irreps:
    try:
        return Irreps(value)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: `{name}` is not valid irreps ({err})") from None


def fully_connected(
    irreps1: Any,
    irreps2: Any,
    irreps_out: Any,
    *,
    path_normalization: str = "element",
    irrep_normalization: str = "component",
    coefficients: str = "clebsch_gordan",
) -> TensorProductDescriptor:
    """Every allowed ``uvw`` path between the blocks (e3nn's ``FullyConnectedTensorProduct``);
    with ``coefficients="gaunt"`` only the parity-even ones.

    >>> d = fully_connected("2x0e + 2x1o", "1o", "3x1e + 2x0e")
    >>> [str(d.irreps_of(p)[2]) for p in d.paths], d.weight_numel
    (['1e', '0e'], 10)
    """
    where = "fully_connected"
    i1, i2 = _irreps(irreps1, "irreps1", where), _irreps(irreps2, "irreps2", where)
    io = _irreps(irreps_out, "irreps_out", where)
    paths = [
        Path(a, b, c, Mode.UVW)
        for a, (_, ir1) in enumerate(i1)
        for b, (_, ir2) in enumerate(i2)
        for c, (_, iro) in enumerate(io)
        if _allowed(ir1, ir2, iro, coefficients)
    ]
    return TensorProductDescriptor(i1, i2, io, tuple(paths), path_normalization, irrep_normalization,
                                   coefficients=coefficients)


def channelwise(
    irreps1: Any,
    irreps2: Any,
    irreps_out: Any = None,
    *,
    lmax: int | None = None,
    path_normalization: str = "element",
    irrep_normalization: str = "component",
    coefficients: str = "clebsch_gordan",
) -> TensorProductDescriptor:
    """Channelwise ``uvu`` product (the MACE / NequIP edge convolution); with
    ``coefficients="gaunt"`` only the parity-even paths.

    With ``irreps_out=None`` every reachable ``ir_out`` (``l <= lmax`` if given) of every block
    pair gets its own output block of ``mul1`` channels; the blocks are then sorted by
    ``(l, p)``. Equal neighbouring blocks are kept apart (one per path) but have the layout of
    ``irreps_out.simplify()``, so the next layer may take the simplified irreps. With
    ``irreps_out`` given, a path goes to every output block with the reachable irrep and
    ``mul == mul1``.

    >>> d = channelwise("4x1o", "0e + 1o + 2e", lmax=1)
    >>> str(d.irreps_out), str(d.irreps_out.simplify())
    ('4x0e+4x1e+4x1o+4x1o', '4x0e+4x1e+8x1o')
    """
    where = "channelwise"
    i1, i2 = _irreps(irreps1, "irreps1", where), _irreps(irreps2, "irreps2", where)
    if lmax is not None and (isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0):
        raise ValueError(f"{where}: `lmax` must be an int >= 0 or None, got {lmax!r}")
    if irreps_out is None:
        blocks, raw = [], []
        for a, (m1, ir1) in enumerate(i1):
            for b, (_, ir2) in enumerate(i2):
                for iro in ir1 * ir2:
                    if (lmax is None or iro.l <= lmax) and _allowed(ir1, ir2, iro, coefficients):
                        raw.append((a, b, len(blocks)))
                        blocks.append((m1, iro))
        io, perm, _ = Irreps(blocks).sort()
        paths = [Path(a, b, perm[c], Mode.UVU) for a, b, c in raw]
    else:
        io = _irreps(irreps_out, "irreps_out", where)
        paths = [
            Path(a, b, c, Mode.UVU)
            for a, (m1, ir1) in enumerate(i1)
            for b, (_, ir2) in enumerate(i2)
            for c, (mo, iro) in enumerate(io)
            if _allowed(ir1, ir2, iro, coefficients) and mo == m1 and (lmax is None or iro.l <= lmax)
        ]
    return TensorProductDescriptor(i1, i2, io, tuple(paths), path_normalization, irrep_normalization,
                                   coefficients=coefficients)


def elementwise(
    irreps1: Any,
    irreps2: Any,
    *,
    lmax: int | None = None,
    weighted: bool = False,
    path_normalization: str = "element",
    irrep_normalization: str = "component",
    coefficients: str = "clebsch_gordan",
) -> TensorProductDescriptor:
    """Elementwise ``uuu`` product: channel ``u`` of block ``i`` of ``x1`` with channel ``u`` of
    block ``i`` of ``x2``, into every reachable irrep (``l <= lmax``), unweighted by default
    (e3nn's ``ElementwiseTensorProduct``). Blocks must pair up with equal multiplicities.

    >>> str(elementwise("3x1o", "3x1o").irreps_out)
    '3x0e+3x1e+3x2e'
    """
    where = "elementwise"
    i1, i2 = _irreps(irreps1, "irreps1", where), _irreps(irreps2, "irreps2", where)
    if [m.mul for m in i1] != [m.mul for m in i2]:
        raise ValueError(
            f"{where}: `irreps1` and `irreps2` must have the same multiplicities block by block, got "
            f"'{i1}' and '{i2}'; split blocks (e.g. '2x1o' -> '1o+1o') so that they pair up"
        )
    blocks, paths = [], []
    for a, ((m, ir1), (_, ir2)) in enumerate(zip(i1, i2)):
        for iro in ir1 * ir2:
            if (lmax is None or iro.l <= lmax) and _allowed(ir1, ir2, iro, coefficients):
                paths.append(Path(a, a, len(blocks), Mode.UUU, weighted))
                blocks.append((m, iro))
    return TensorProductDescriptor(i1, i2, Irreps(blocks), tuple(paths), path_normalization, irrep_normalization,
                                   coefficients=coefficients)


def tensor_square(
    irreps: Any,
    irreps_out: Any = None,
    *,
    lmax: int | None = None,
    path_normalization: str = "element",
    irrep_normalization: str = "component",
) -> TensorProductDescriptor:
    """``x -> f(x, x)``: fully connected ``uvw`` paths over block pairs ``i1 <= i2`` only (the
    pairs ``i1 > i2`` would repeat them). With ``irreps_out=None``: every reachable irrep
    (``l <= lmax``), sorted, with ``irreps.num_irreps`` channels each. Within a block pair
    ``i1 == i2`` the weights ``W[u, v, w]`` and ``W[v, u, w]`` act on the same function, so not
    all weights are independent (see :func:`equikit.tp.expressivity`).

    >>> d = tensor_square("1o")
    >>> str(d.irreps_out), d.square
    ('1x0e+1x1e+1x2e', True)
    """
    where = "tensor_square"
    i1 = _irreps(irreps, "irreps", where)
    if irreps_out is None:
        irs = {iro for a, (_, ir1) in enumerate(i1) for (_, ir2) in i1[a:] for iro in ir1 * ir2
               if lmax is None or iro.l <= lmax}
        io = Irreps([(i1.num_irreps, ir) for ir in irs]).sort().irreps
    else:
        io = _irreps(irreps_out, "irreps_out", where)
    paths = [
        Path(a, b, c, Mode.UVW)
        for a, (_, ir1) in enumerate(i1)
        for b, (_, ir2) in enumerate(i1)
        if a <= b
        for c, (_, iro) in enumerate(io)
        if iro in list(ir1 * ir2) and (lmax is None or iro.l <= lmax)
    ]
    return TensorProductDescriptor(i1, i1, io, tuple(paths), path_normalization, irrep_normalization, square=True)


def linear(irreps_in: Any, irreps_out: Any) -> TensorProductDescriptor:
    """Equivariant linear map as a product with the constant ``1x0e``: a ``uvw`` path for every
    pair of blocks with equal irreps (``C(l, 0, l)`` is the identity), ``element``
    normalisation (``1/sqrt(fan_in)`` per output irrep, e3nn's ``o3.Linear``).

    >>> d = linear("4x0e + 2x1o", "3x0e + 1x1o + 1x2e")
    >>> d.paths, d.weight_numel
    ((Path(0, 0, 0, 'uvw'), Path(1, 0, 1, 'uvw')), 14)
    """
    where = "linear"
    i_in, io = _irreps(irreps_in, "irreps_in", where), _irreps(irreps_out, "irreps_out", where)
    paths = [Path(a, 0, c, Mode.UVW) for a, (_, ir) in enumerate(i_in) for c, (_, iro) in enumerate(io) if ir == iro]
    return TensorProductDescriptor(i_in, Irreps("0e"), io, tuple(paths))


def _allowed(ir1: Irrep, ir2: Irrep, iro: Irrep, coefficients: str) -> bool:
    """``ir1 x ir2 -> iro`` is a path, and for Gaunt coefficients a parity-even one."""
    if iro not in list(ir1 * ir2):
        return False
    return coefficients != "gaunt" or (ir1.l + ir2.l + iro.l) % 2 == 0


def gaunt_product(
    irreps1: Any,
    irreps2: Any,
    *,
    lmax: int | None = None,
    mode: str = "uuu",
    path_normalization: str = "none",
    irrep_normalization: str = "component",
) -> TensorProductDescriptor:
    """The Gaunt tensor product (Luo et al. 2024): the pointwise product of the spherical
    functions ``f1_u = sum_i x1[i, u] . Y_{l_i}`` and ``f2``, projected onto every reachable
    ``l_out <= lmax``. One output block per reachable irrep collects *every* parity-even pair
    ``(i1, i2)`` that couples to it, unweighted, ``coefficients="gaunt"``: with the defaults
    (``path_normalization="none"``, ``component``) it is exactly the product of functions, and
    the ``gaunt_fourier`` / ``sphere_grid`` backends can run it (``naive`` / ``sparse_cg`` too).

    ``mode="uuu"``: channel ``u`` of every block of ``x1`` with channel ``u`` of every block of
    ``x2`` (all multiplicities equal); ``"uvu"``: with the sum over the channels of ``x2``
    (``x2`` may be ``1x0e + 1x1o + ...``, the edge harmonics). Output multiplicity: ``mul1``.

    >>> d = gaunt_product("1x0e + 1x1o", "1x0e + 1x1o")
    >>> str(d.irreps_out), len(d.paths), d.coefficients  # no 1e: the cross product is parity-odd
    ('1x0e+1x1o+1x2e', 5, 'gaunt')
    """
    where = "gaunt_product"
    i1, i2 = _irreps(irreps1, "irreps1", where), _irreps(irreps2, "irreps2", where)
    mode_ = Mode.parse(mode, where)
    if mode_ == Mode.UVW:
        raise ValueError(f"{where}: `mode` must be 'uuu' or 'uvu', got 'uvw' (mix channels with a Linear after)")
    if lmax is not None and (isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0):
        raise ValueError(f"{where}: `lmax` must be an int >= 0 or None, got {lmax!r}")
    muls = {m.mul for m in i1} | ({m.mul for m in i2} if mode_ == Mode.UUU else set())
    if len(muls) > 1:
        need = "irreps1 and irreps2" if mode_ == Mode.UUU else "irreps1"
        raise ValueError(f"{where}: every block of {need} needs one multiplicity, got '{i1}' and '{i2}'")
    mul = i1[0].mul if len(i1) else 0
    raw = [(a, b, iro) for a, (_, ir1) in enumerate(i1) for b, (_, ir2) in enumerate(i2) for iro in ir1 * ir2
           if (ir1.l + ir2.l + iro.l) % 2 == 0 and (lmax is None or iro.l <= lmax)]
    io = Irreps([(mul, ir) for ir in sorted({t[2] for t in raw})])
    index = {mi.ir: k for k, mi in enumerate(io)}
    paths = [Path(a, b, index[iro], mode_, weighted=False) for a, b, iro in raw]
    return TensorProductDescriptor(i1, i2, io, tuple(paths), path_normalization, irrep_normalization,
                                   coefficients="gaunt")
