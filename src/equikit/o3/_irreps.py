"""Irreducible representations of O(3) and their direct sums.

An irrep of O(3) is a pair ``(l, p)``: degree ``l >= 0`` (dimension ``2l + 1``) and parity
``p = +1`` ("e", even) or ``p = -1`` ("o", odd). An improper element ``g = -R`` (``R`` a
rotation) acts on it as ``p * D_l(R)``; a rotation ``R`` acts as ``D_l(R)``.

``Irreps`` is an immutable, hashable tuple of ``(mul, Irrep)`` pairs written in the e3nn
string syntax, e.g. ``"32x0e + 16x1o + 8x2e"``. Features with these irreps have shape
``(..., irreps.dim)``, irreps last, each block laid out ``mul`` copies by ``2l + 1`` (``mul_ir``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

_IRREP_RE = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+)\s*([eoy])\s*$")
_HINT = "write irreps like '16x0e + 8x1o + 2e' (mul x l parity, parity 'e' or 'o')"


class Irrep(NamedTuple):
    """One irrep ``(l, p)`` of O(3); ``Irrep("1o")``-style strings are parsed by :func:`irrep`.

    >>> Irrep(2, -1).dim
    5
    >>> str(Irrep(1, -1))
    '1o'
    """

    l: int
    p: int

    @property
    def dim(self) -> int:
        return 2 * self.l + 1

    def __str__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    def __repr__(self) -> str:
        return f"Irrep('{self}')"

    def __mul__(self, other: Irrep) -> Iterator[Irrep]:  # type: ignore[override]
        """Irreps in the tensor product ``self x other``: ``|l1 - l2| <= l <= l1 + l2``."""
        other = irrep(other)
        p = self.p * other.p
        return (Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1))


class MulIr(NamedTuple):
    """``mul`` copies of the irrep ``ir``."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    def __str__(self) -> str:
        return f"{self.mul}x{self.ir}"


def _check_l_p(l: Any, p: Any, where: str) -> Irrep:
    if isinstance(l, bool) or not isinstance(l, int):
        raise TypeError(f"{where}: degree `l` must be an int, got {type(l).__name__} {l!r}")
    if l < 0:
        raise ValueError(f"{where}: degree `l` must be >= 0, got {l}; {_HINT}")
    if isinstance(p, bool) or p not in (1, -1):
        raise ValueError(f"{where}: parity `p` must be +1 or -1, got {p!r}; {_HINT}")
    return Irrep(l, int(p))


def irrep(value: Any, p: int | None = None) -> Irrep:
    """Build an :class:`Irrep` from ``"1o"``, ``(1, -1)``, an ``Irrep``, or ``l`` and ``p``.

    ``"1y"`` is the e3nn shorthand for the parity of spherical harmonics, ``(-1)**l``.

    >>> irrep("2e"), irrep(1, -1), irrep("3y")
    (Irrep('2e'), Irrep('1o'), Irrep('3o'))
    """
    where = "equikit.o3.irrep"
    if p is not None:
        return _check_l_p(value, p, where)
    if isinstance(value, Irrep):
        return value
    if isinstance(value, str):
        m = _IRREP_RE.match(value)
        if m is None or m.group(1) is not None:
            raise ValueError(f"{where}: cannot parse {value!r} as one irrep; {_HINT}")
        l = int(m.group(2))
        par = {"e": 1, "o": -1, "y": (-1) ** l}[m.group(3)]
        return Irrep(l, par)
    if isinstance(value, tuple) and len(value) == 2:
        return _check_l_p(value[0], value[1], where)
    raise TypeError(
        f"{where}: expected a string like '1o', a pair (l, p) or an Irrep, got {type(value).__name__} {value!r}"
    )


def _parse(text: str) -> tuple[MulIr, ...]:
    where = "equikit.o3.Irreps"
    if text.strip() == "":
        return ()
    out = []
    for term in text.split("+"):
        m = _IRREP_RE.match(term)
        if m is None:
            raise ValueError(f"{where}: cannot parse the term {term.strip()!r} of {text!r}; {_HINT}")
        mul = 1 if m.group(1) is None else int(m.group(1))
        l = int(m.group(2))
        out.append(MulIr(mul, Irrep(l, {"e": 1, "o": -1, "y": (-1) ** l}[m.group(3)])))
    return tuple(out)


def _as_mul_ir(item: Any, where: str) -> MulIr:
    if isinstance(item, MulIr):
        return item
    if isinstance(item, (str, Irrep)):
        return MulIr(1, irrep(item))
    if isinstance(item, tuple) and len(item) == 2:
        mul, ir = item
        if isinstance(mul, bool) or not isinstance(mul, int) or mul < 0:
            raise ValueError(f"{where}: multiplicity must be an int >= 0, got {mul!r}; {_HINT}")
        if isinstance(ir, int):  # (l, p) pair
            return MulIr(1, irrep((mul, ir)))
        return MulIr(mul, irrep(ir))
    raise TypeError(f"{where}: cannot read {item!r} as (mul, irrep); {_HINT}")


class Irreps(tuple):
    """An immutable, hashable direct sum of O(3) irreps, in e3nn string syntax.

    Features carrying these irreps have shape ``(..., dim)``; block ``i`` occupies
    ``slices()[i]`` and is laid out as ``mul`` copies of a ``2l + 1`` vector.

    Args:
        irreps: a string ``"16x0e + 8x1o"``, another ``Irreps``, an ``Irrep``, an iterable of
            ``(mul, ir)`` pairs, or an ``e3nn.o3.Irreps``.

    >>> x = Irreps("16x0e + 8x1o + 2x2e")
    >>> x.dim, x.lmax, x.num_irreps
    (50, 2, 26)
    >>> str(Irreps("1o + 2x0e + 1o").simplify())
    '1x1o+2x0e+1x1o'
    >>> str(Irreps("1o + 0e + 1o").sort().irreps.simplify())
    '1x0e+2x1o'
    """

    def __new__(cls, irreps: Any = ()) -> Irreps:
        if isinstance(irreps, Irreps):
            return irreps
        where = "equikit.o3.Irreps"
        if type(irreps) in (list, tuple):  # first: the path torch.compile traces inside IrrepsTensor
            items = tuple(_as_mul_ir(item, where) for item in irreps)
        elif isinstance(irreps, str):
            items = _parse(irreps)
        elif isinstance(irreps, Irrep):
            items = (MulIr(1, irreps),)
        elif type(irreps).__module__.startswith("e3nn"):
            items = tuple(MulIr(int(m), Irrep(int(ir.l), int(ir.p))) for m, ir in irreps)
        elif isinstance(irreps, Iterable):
            items = tuple(_as_mul_ir(item, where) for item in irreps)
        else:
            raise TypeError(
                f"{where}: expected a string, Irrep or iterable of (mul, irrep), got "
                f"{type(irreps).__name__} {irreps!r}; {_HINT}"
            )
        return super().__new__(cls, items)

    # ------------------------------------------------------------------ sizes
    @property
    def dim(self) -> int:
        """Total feature dimension ``sum(mul * (2l + 1))``."""
        return sum(m.dim for m in self)

    @property
    def num_irreps(self) -> int:
        """Number of irreps counted with multiplicity ``sum(mul)``."""
        return sum(m.mul for m in self)

    @property
    def lmax(self) -> int:
        """Largest degree ``l``; raises on empty irreps."""
        if len(self) == 0:
            raise ValueError("Irreps.lmax: the irreps are empty, so there is no largest l")
        return max(m.ir.l for m in self)

    @property
    def ls(self) -> list[int]:
        """Degree of every irrep copy, repeated by multiplicity."""
        return [m.ir.l for m in self for _ in range(m.mul)]

    def slices(self) -> list[slice]:
        """Slice of the feature dim occupied by each ``(mul, ir)`` block."""
        out, start = [], 0
        for m in self:
            out.append(slice(start, start + m.dim))
            start += m.dim
        return out

    def count(self, ir: Any) -> int:  # type: ignore[override]
        """Total multiplicity of the irrep ``ir``."""
        ir = irrep(ir)
        return sum(m.mul for m in self if m.ir == ir)

    def __contains__(self, ir: Any) -> bool:  # type: ignore[override]
        try:
            ir = irrep(ir)
        except (TypeError, ValueError):
            return False
        return any(m.ir == ir for m in self)

    # ------------------------------------------------------------------ transforms
    def simplify(self) -> Irreps:
        """Merge neighbouring blocks of the same irrep and drop zero multiplicities."""
        out: list[MulIr] = []
        for m in self:
            if m.mul == 0:
                continue
            if out and out[-1].ir == m.ir:
                out[-1] = MulIr(out[-1].mul + m.mul, m.ir)
            else:
                out.append(m)
        return Irreps(out)

    def sort(self) -> SortResult:
        """Sort blocks by ``(l, p)`` with even before odd (stable).

        Returns ``(irreps, p, inv)``: the sorted irreps, ``p[i]`` the new position of old block
        ``i`` and ``inv[j]`` the old position of new block ``j``.
        """
        key = [(m.ir.l, -m.ir.p) for m in self]
        inv = tuple(sorted(range(len(self)), key=lambda i: key[i]))
        p = [0] * len(self)
        for new, old in enumerate(inv):
            p[old] = new
        return SortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def filter(
        self,
        keep: Any = None,
        *,
        drop: Any = None,
        lmax: int | None = None,
    ) -> Irreps:
        """Keep the blocks whose irrep is in ``keep`` (irreps or a predicate), remove those in
        ``drop`` and those with ``l > lmax``.

        >>> str(Irreps("2x0e + 1o + 2e").filter(lmax=1))
        '2x0e+1x1o'
        """

        def matcher(spec: Any) -> Callable[[MulIr], bool]:
            if callable(spec):
                return spec
            wanted = {m.ir for m in Irreps(spec)} if not isinstance(spec, Irrep) else {spec}
            return lambda m: m.ir in wanted

        out = list(self)
        if keep is not None:
            out = [m for m in out if matcher(keep)(m)]
        if drop is not None:
            out = [m for m in out if not matcher(drop)(m)]
        if lmax is not None:
            out = [m for m in out if m.ir.l <= lmax]
        return Irreps(out)

    def regroup(self) -> Irreps:
        """``sort().irreps.simplify()``: one block per irrep, in canonical order."""
        return self.sort().irreps.simplify()

    # ------------------------------------------------------------------ python protocol
    def __add__(self, other: Any) -> Irreps:
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other: Any) -> Irreps:
        return Irreps(tuple(Irreps(other)) + tuple(self))

    def __mul__(self, n: int) -> Irreps:  # type: ignore[override]
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"Irreps.__mul__: can only repeat by an int, got {type(n).__name__}")
        return Irreps(tuple(self) * n)

    __rmul__ = __mul__

    def __getitem__(self, i):  # type: ignore[override]
        out = super().__getitem__(i)
        return Irreps(out) if isinstance(i, slice) else out

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, str):
            try:
                other = Irreps(other)
            except (TypeError, ValueError):
                return False
        return isinstance(other, tuple) and tuple(self) == tuple(other)

    def __ne__(self, other: Any) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __str__(self) -> str:
        return "+".join(str(m) for m in self)

    def __repr__(self) -> str:
        return f"Irreps('{self}')"

    # ------------------------------------------------------------------ e3nn interop
    def to_e3nn(self):
        """The equal ``e3nn.o3.Irreps`` (needs the ``e3nn`` extra: ``pip install equikit[e3nn]``).

        The feature layout and the spherical-harmonics basis are the same as e3nn's, so tensors
        move between the libraries unchanged.
        """
        try:
            from e3nn import o3 as e3nn_o3
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("Irreps.to_e3nn: e3nn is not installed; run `pip install equikit[e3nn]`") from err
        return e3nn_o3.Irreps([(m.mul, (m.ir.l, m.ir.p)) for m in self])

    @classmethod
    def from_e3nn(cls, irreps: Any) -> Irreps:
        """Build from an ``e3nn.o3.Irreps`` (or anything iterable as ``(mul, (l, p))``)."""
        return cls([(int(m), Irrep(int(ir.l), int(ir.p))) for m, ir in irreps])

    @classmethod
    def spherical_harmonics(cls, lmax: int, p: int = -1) -> Irreps:
        """Irreps of the spherical harmonics ``0e + 1o + 2e + ...`` up to ``lmax``
        (``p=-1``: parity ``(-1)**l``; ``p=1``: all even, for pseudo-harmonics).

        >>> str(Irreps.spherical_harmonics(3))
        '1x0e+1x1o+1x2e+1x3o'
        """
        if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
            raise ValueError(f"Irreps.spherical_harmonics: `lmax` must be an int >= 0, got {lmax!r}")
        if p not in (1, -1):
            raise ValueError(f"Irreps.spherical_harmonics: `p` must be +1 or -1, got {p!r}")
        return cls([(1, Irrep(l, p**l)) for l in range(lmax + 1)])


class SortResult(NamedTuple):
    irreps: Irreps
    p: tuple[int, ...]
    inv: tuple[int, ...]
