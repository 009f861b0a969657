"""Cayley graphs and Schreier coset graphs given by generators.

A :class:`CayleyGraph` holds generators, a start state and how generators act on states:

- ``kind="perm"``: a state is an int64 vector ``s`` of length ``n``; a generator ``g`` (a
  permutation, ``g[i] = sigma(i)`` as in :class:`equikit.groups.Permutation`) acts by right
  multiplication ``s -> s[g] = s o g``. With ``start = arange(n)`` the vertices are the group
  elements (the Cayley graph); with repeated values in ``start`` (e.g. ``[0, 0, 1, 1]``) the
  vertices are cosets of the start's stabiliser (a Schreier coset graph).
- ``kind="matrix"``: a state is a ``k x k`` matrix over Z/pZ stored flat (length ``k*k``);
  a generator ``A`` acts by ``M -> M A mod p``.

Edges go from ``s`` to ``s . g`` for every generator; the graph is undirected when the
generating set is closed under inverses (checked, see :attr:`CayleyGraph.undirected`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from equikit._utils import check_int
from equikit.groups.cayley.encoding import StateCodec, apply_shift_plan
from equikit.groups.cayley.generators import generators_for

__all__ = ["CayleyGraph"]


def _as_int_tensor(value, name: str, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{where}: `{name}` must be an integer tensor or nested list of ints, "
                f"got {type(value).__name__}"
            ) from err
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{where}: `{name}` must hold integers, got dtype {t.dtype}")
    return t.to(torch.int64).cpu()


def _check_perm_generators(gens, where: str) -> torch.Tensor:
    g = _as_int_tensor(gens, "generators", where)
    if g.ndim != 2 or g.shape[0] == 0 or g.shape[1] == 0:
        raise ValueError(
            f"{where}: `generators` must be a non-empty (G, n) set of permutations, "
            f"got shape {tuple(g.shape)}"
        )
    want = torch.arange(g.shape[1])
    for i, row in enumerate(g):
        if not torch.equal(row.sort().values, want):
            raise ValueError(
                f"{where}: generator {i} must be a permutation of 0..{g.shape[1] - 1}, "
                f"got {row.tolist()}"
            )
    return g


def _inverse_mod(m: torch.Tensor, p: int) -> torch.Tensor | None:
    """Inverse of a square integer matrix mod prime ``p`` by Gauss-Jordan, or None."""
    k = m.shape[0]
    a = [[int(m[i, j]) % p for j in range(k)] + [int(i == j) for j in range(k)] for i in range(k)]
    for col in range(k):
        piv = next((r for r in range(col, k) if a[r][col] % p), None)
        if piv is None:
            return None
        a[col], a[piv] = a[piv], a[col]
        inv = pow(a[col][col], -1, p)
        a[col] = [(x * inv) % p for x in a[col]]
        for r in range(k):
            if r != col and a[r][col]:
                f = a[r][col]
                a[r] = [(x - f * y) % p for x, y in zip(a[r], a[col])]
    return torch.tensor([row[k:] for row in a], dtype=torch.int64)


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


@dataclass(frozen=True, eq=False)
class CayleyGraph:
    """Generators, a start state and an action; build with :meth:`permutations`,
    :meth:`family` or :meth:`matrices`.

    Attributes:
        generators: ``(G, n)`` permutations (``kind="perm"``) or ``(G, k, k)`` matrices.
        start: the start state, ``(n,)`` or ``(k*k,)``.
        names: one name per generator.
        kind: ``"perm"`` or ``"matrix"``.
        modulus: ``p`` for matrix groups.

    Example:
        >>> graph = CayleyGraph.family("lrx", 4)
        >>> graph.n, graph.undirected, graph.names
        (4, True, ('L', 'R', 'X'))
    """

    generators: torch.Tensor
    start: torch.Tensor
    names: tuple[str, ...]
    kind: str = "perm"
    modulus: int | None = None
    _plans: list = field(default_factory=list, repr=False)

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def permutations(cls, generators, start=None, names=None) -> CayleyGraph:
        """A Cayley graph (``start`` the identity, the default) or Schreier coset graph
        (``start`` with repeated values) of permutation generators ``(G, n)``."""
        where = "CayleyGraph.permutations"
        g = _check_perm_generators(generators, where)
        n = g.shape[1]
        if start is None:
            s = torch.arange(n)
        else:
            s = _as_int_tensor(start, "start", where)
            if s.shape != (n,) or (n and int(s.min()) < 0):
                raise ValueError(
                    f"{where}: `start` must be a length-{n} vector of non-negative ints "
                    f"(n from the generators), got shape {tuple(s.shape)}"
                )
        names = tuple(names) if names is not None else tuple(f"g{i}" for i in range(len(g)))
        if len(names) != len(g):
            raise ValueError(f"{where}: got {len(names)} `names` for {len(g)} generators")
        return cls(g, s, names)

    @classmethod
    def family(cls, family: str, n: int | None = None, start=None, **kwargs) -> CayleyGraph:
        """A graph from the generator library, e.g. ``CayleyGraph.family("pancake", 6)``."""
        gens, names = generators_for(family, n, **kwargs)
        return cls.permutations(gens, start=start, names=names)

    @classmethod
    def matrices(cls, generators, p: int, start=None, names=None) -> CayleyGraph:
        """Cayley graph of the group generated by invertible ``(G, k, k)`` matrices over
        Z/pZ (``p`` prime), acting on the right: ``M -> M A mod p``."""
        where = "CayleyGraph.matrices"
        check_int(p, "p", where, minimum=2)
        if not _is_prime(p):
            raise ValueError(f"{where}: `p` must be prime, got {p}")
        g = _as_int_tensor(generators, "generators", where)
        if g.ndim != 3 or g.shape[0] == 0 or g.shape[1] != g.shape[2]:
            raise ValueError(
                f"{where}: `generators` must be a non-empty (G, k, k) stack of square matrices, "
                f"got shape {tuple(g.shape)}"
            )
        g = g % p
        for i, m in enumerate(g):
            if _inverse_mod(m, p) is None:
                raise ValueError(f"{where}: generator {i} is not invertible mod {p}: {m.tolist()}")
        k = g.shape[1]
        s = torch.eye(k, dtype=torch.int64) if start is None else _as_int_tensor(start, "start", where)
        if s.shape != (k, k):
            raise ValueError(f"{where}: `start` must be a ({k}, {k}) matrix, got {tuple(s.shape)}")
        names = tuple(names) if names is not None else tuple(f"A{i}" for i in range(len(g)))
        return cls(g, (s % p).reshape(-1), names, kind="matrix", modulus=p)

    # ---- properties ---------------------------------------------------------------------
    @property
    def n(self) -> int:
        """State length (``n`` for permutations, ``k*k`` for matrices)."""
        return self.start.shape[0]

    @property
    def n_generators(self) -> int:
        return self.generators.shape[0]

    @property
    def codec(self) -> StateCodec:
        top = self.modulus - 1 if self.kind == "matrix" else max(int(self.start.max()), 1)
        return StateCodec.for_values(self.n, top)

    @property
    def is_group(self) -> bool:
        """True when vertices are group elements (start has distinct values / is a matrix)."""
        return self.kind == "matrix" or len(set(self.start.tolist())) == self.n

    def inverse_generators(self) -> torch.Tensor:
        """``(G, ...)`` inverses of the generators, in the same order."""
        if self.kind == "matrix":
            return torch.stack([_inverse_mod(m, self.modulus) for m in self.generators])
        inv = torch.empty_like(self.generators)
        src = torch.arange(self.generators.shape[1]).expand_as(self.generators)
        return inv.scatter_(-1, self.generators, src)

    @property
    def undirected(self) -> bool:
        """True when the generating set is closed under inverses."""
        flat = {tuple(r.reshape(-1).tolist()) for r in self.generators}
        return all(tuple(r.reshape(-1).tolist()) in flat for r in self.inverse_generators())

    def inverse_index(self) -> list[int] | None:
        """For each generator the index of its inverse, or None when not inverse-closed."""
        flat = [tuple(r.reshape(-1).tolist()) for r in self.generators]
        out = []
        for r in self.inverse_generators():
            key = tuple(r.reshape(-1).tolist())
            if key not in flat:
                return None
            out.append(flat.index(key))
        return out

    # ---- action -------------------------------------------------------------------------
    def act(self, states: torch.Tensor, generators: torch.Tensor | None = None) -> torch.Tensor:
        """Neighbours of decoded states.

        Args:
            states: ``(N, n)`` int64 states.
            generators: defaults to the graph's generators ``(G, ...)``.

        Returns:
            ``(G, N, n)``: entry ``[j, i]`` is ``states[i] . generators[j]``.
        """
        gens = self.generators if generators is None else generators
        gens = gens.to(states.device)
        if self.kind == "matrix":
            k = gens.shape[-1]
            m = states.reshape(1, -1, k, k)
            return (m @ gens[:, None]).remainder_(self.modulus).reshape(len(gens), -1, k * k)
        idx = gens[:, None, :].expand(len(gens), states.shape[0], self.n)
        return torch.gather(states[None].expand(len(gens), -1, -1), -1, idx)

    def neighbor_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Neighbours of encoded states: ``(N,)`` or ``(N, W)`` codes -> ``(G*N,)`` or
        ``(G*N, W)``, generator-major. Single-word permutation codes use shifts and masks."""
        codec = self.codec
        if self.kind == "perm" and codec.words == 1:
            if not self._plans:
                self._plans.extend(codec.shift_plan(g.tolist()) for g in self.generators)
            return torch.cat([apply_shift_plan(codes, plan) for plan in self._plans])
        states = codec.decode(codes.reshape(-1, codec.words))
        nb = self.act(states).reshape(-1, self.n)
        out = codec.encode(nb)
        return out.reshape(-1) if codes.ndim == 1 else out

    def encode(self, states: torch.Tensor) -> torch.Tensor:
        """``(N, n)`` states -> ``(N,)`` single-word or ``(N, W)`` codes."""
        out = self.codec.encode(states)
        return out[:, 0] if self.codec.words == 1 else out

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`."""
        return self.codec.decode(codes[:, None] if codes.ndim == 1 else codes)

    def fingerprint(self) -> str:
        """A string identifying the graph (for checkpoints)."""
        gens = ";".join(",".join(map(str, r.reshape(-1).tolist())) for r in self.generators)
        start = ",".join(map(str, self.start.tolist()))
        return f"{self.kind}|{self.modulus}|{gens}|{start}"
