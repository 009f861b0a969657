"""A library of generating sets for Cayley graphs.

Convention (the same as :class:`equikit.groups.Permutation`): a generator ``g`` is an int64
vector with ``g[i] = sigma(i)``; it acts on a state ``s`` by **right multiplication**
``s -> s o g = s[g]`` (position ``i`` receives the entry at position ``g[i]``). So a word
``g1 g2 ... gk`` applied to the identity gives the permutation ``g1 o g2 o ... o gk``.

Every family function returns ``(generators, names)`` with generators an int64 tensor
``(G, n)``; :func:`generators_for` looks families up by name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from equikit._utils import check_int

__all__ = [
    "FAMILIES",
    "all_transpositions",
    "burnt_pancake",
    "coxeter",
    "cube222",
    "cyclic_transposition",
    "generators_for",
    "lrx",
    "pancake",
    "star",
    "top_spin",
    "unitriangular",
]

Gens = tuple[torch.Tensor, tuple[str, ...]]


def _pack(perms: list[list[int]], names: list[str]) -> Gens:
    return torch.tensor(perms, dtype=torch.int64), tuple(names)


def _swap(n: int, i: int, j: int) -> list[int]:
    p = list(range(n))
    p[i], p[j] = j, i
    return p


def _shift_left(n: int) -> list[int]:
    return [(i + 1) % n for i in range(n)]


def _shift_right(n: int) -> list[int]:
    return [(i - 1) % n for i in range(n)]


def _reverse_prefix(n: int, k: int) -> list[int]:
    return list(range(k - 1, -1, -1)) + list(range(k, n))


def all_transpositions(n: int) -> Gens:
    """All ``n(n-1)/2`` transpositions ``(i j)``; growth = unsigned Stirling numbers of the
    first kind, diameter ``n - 1``.

    Example:
        >>> gens, names = all_transpositions(3)
        >>> gens.tolist(), names
        ([[1, 0, 2], [2, 1, 0], [0, 2, 1]], ('(0,1)', '(0,2)', '(1,2)'))
    """
    check_int(n, "n", "all_transpositions", minimum=2)
    pairs = list(itertools.combinations(range(n), 2))
    return _pack([_swap(n, i, j) for i, j in pairs], [f"({i},{j})" for i, j in pairs])


def coxeter(n: int) -> Gens:
    """Adjacent transpositions ``(i i+1)``: growth = Mahonian numbers (inversions),
    diameter ``n(n-1)/2``.

    Example:
        >>> coxeter(3)[0].tolist()
        [[1, 0, 2], [0, 2, 1]]
    """
    check_int(n, "n", "coxeter", minimum=2)
    return _pack([_swap(n, i, i + 1) for i in range(n - 1)], [f"({i},{i + 1})" for i in range(n - 1)])


def star(n: int) -> Gens:
    """Star transpositions ``(0 i)`` for ``i = 1..n-1``.

    Example:
        >>> star(3)[0].tolist()
        [[1, 0, 2], [2, 1, 0]]
    """
    check_int(n, "n", "star", minimum=2)
    return _pack([_swap(n, 0, i) for i in range(1, n)], [f"(0,{i})" for i in range(1, n)])


def lrx(n: int, k: int = 1) -> Gens:
    """Left shift ``L``, right shift ``R`` and the transposition ``X = (0 k)``.

    Example:
        >>> lrx(4)[0].tolist()
        [[1, 2, 3, 0], [3, 0, 1, 2], [1, 0, 2, 3]]
    """
    check_int(n, "n", "lrx", minimum=3)
    check_int(k, "k", "lrx", minimum=1)
    if k >= n:
        raise ValueError(f"lrx: `k` must be in [1, n-1] = [1, {n - 1}], got {k}")
    return _pack([_shift_left(n), _shift_right(n), _swap(n, 0, k)], ["L", "R", "X"])


def cyclic_transposition(n: int, k: int = 1) -> Gens:
    """A cyclic shift ``L`` and one transposition ``(0 k)``, without ``L``'s inverse: a
    directed Cayley graph (Glushkov's 1968 question asks for its diameter; ``k = 1`` is the
    ``LX`` graph).

    Example:
        >>> cyclic_transposition(3)[0].tolist()
        [[1, 2, 0], [1, 0, 2]]
    """
    check_int(n, "n", "cyclic_transposition", minimum=2)
    check_int(k, "k", "cyclic_transposition", minimum=1)
    if k >= n:
        raise ValueError(f"cyclic_transposition: `k` must be in [1, {n - 1}], got {k}")
    return _pack([_shift_left(n), _swap(n, 0, k)], ["L", f"(0,{k})"])


def top_spin(n: int, k: int = 4) -> Gens:
    """Top-spin puzzle: shifts ``L``, ``R`` and the reversal of the first ``k`` entries. The
    reversal is odd when ``k mod 4`` is 2 or 3; with an even reversal and odd ``n`` every
    generator is even and the group is the alternating group.

    Example:
        >>> top_spin(5, 4)[0].tolist()
        [[1, 2, 3, 4, 0], [4, 0, 1, 2, 3], [3, 2, 1, 0, 4]]
    """
    check_int(n, "n", "top_spin", minimum=2)
    check_int(k, "k", "top_spin", minimum=2)
    if k > n:
        raise ValueError(f"top_spin: `k` must be in [2, n] = [2, {n}], got {k}")
    return _pack([_shift_left(n), _shift_right(n), _reverse_prefix(n, k)], ["L", "R", f"T{k}"])


def pancake(n: int) -> Gens:
    """Prefix reversals of lengths ``2..n`` (the pancake graph).

    Example:
        >>> pancake(3)[0].tolist()
        [[1, 0, 2], [2, 1, 0]]
    """
    check_int(n, "n", "pancake", minimum=2)
    return _pack([_reverse_prefix(n, k) for k in range(2, n + 1)], [f"R{k}" for k in range(2, n + 1)])


def burnt_pancake(n: int) -> Gens:
    """Burnt pancakes as permutations of ``2n`` points: position ``i < n`` holds a pancake
    burnt side down, position ``i + n`` the same pancake burnt side up. Flipping the top
    ``k`` pancakes (``k = 1..n``) reverses their order and turns each over; the group is the
    hyperoctahedral group of order ``2^n n!``.

    Example:
        >>> burnt_pancake(1)[0].tolist()
        [[1, 0]]
    """
    check_int(n, "n", "burnt_pancake", minimum=1)
    perms = []
    for k in range(1, n + 1):
        p = list(range(2 * n))
        for j in range(k):
            p[j] = k - 1 - j + n
            p[j + n] = k - 1 - j
        perms.append(p)
    return _pack(perms, [f"F{k}" for k in range(1, n + 1)])


def _cube_stickers() -> list[tuple[tuple[int, int, int], int]]:
    corners = itertools.product((-1, 1), repeat=3)
    return [(c, axis) for c in corners for axis in range(3)]


def _rotate(v: tuple[int, int, int], axis: int) -> tuple[int, int, int]:
    """Quarter turn about ``axis`` (right-handed): maps the next axis to the one after."""
    a, b = (axis + 1) % 3, (axis + 2) % 3
    out = list(v)
    out[a], out[b] = -v[b], v[a]
    return tuple(out)


def _normal(sticker: tuple[tuple[int, int, int], int]) -> tuple[int, int, int]:
    c, axis = sticker
    n = [0, 0, 0]
    n[axis] = c[axis]
    return tuple(n)


def _face_turn(axis: int, stickers: list) -> list[int]:
    """Generator of the quarter turn of the face ``x_axis = +1`` on 24 sticker slots."""
    where = {(c, _normal((c, a))): i for i, (c, a) in enumerate(stickers)}
    moved_to = []
    for c, a in stickers:
        n = _normal((c, a))
        if c[axis] == 1:
            c, n = _rotate(c, axis), _rotate(n, axis)
        moved_to.append(where[(c, n)])
    g = [0] * len(stickers)
    for src, dst in enumerate(moved_to):
        g[dst] = src  # slot dst receives the sticker that was at src
    return g


def cube222(metric: str = "quarter") -> Gens:
    """The 2x2x2 Rubik's cube as a permutation group on its 24 stickers.

    Turns of the three faces ``x, y, z = +1`` (the cubie at ``(-1, -1, -1)`` stays fixed,
    which removes the 24 whole-cube rotations): quarter turns and their inverses
    (``metric="quarter"``, 6 generators), plus half turns for ``metric="half"`` (9). The
    group has ``7! 3^6 = 3674160`` elements.

    Example:
        >>> gens, names = cube222()
        >>> tuple(gens.shape), names[:2]
        ((6, 24), ('x', "x'"))
    """
    if metric not in ("quarter", "half"):
        raise ValueError(f"cube222: `metric` must be 'quarter' or 'half', got {metric!r}")
    stickers = _cube_stickers()
    perms, names = [], []
    for axis, face in enumerate("xyz"):
        g = _face_turn(axis, stickers)
        g2 = [g[i] for i in g]
        g3 = [g2[i] for i in g]
        perms += [g, g3]
        names += [face, face + "'"]
        if metric == "half":
            perms.append(g2)
            names.append(face + "2")
    return _pack(perms, names)


def unitriangular(k: int, p: int) -> torch.Tensor:
    """Generators of the upper unitriangular group ``UT(k, Z/p)``: the elementary matrices
    ``I + E[i, i+1]`` and their inverses ``I - E[i, i+1]`` (entries mod ``p``). The group
    has order ``p^(k(k-1)/2)`` and is nilpotent (``k = 3``: the Heisenberg group).

    Returns:
        int64 tensor ``(2 (k-1), k, k)`` with entries in ``[0, p)``.

    Example:
        >>> unitriangular(2, 5).tolist()
        [[[1, 1], [0, 1]], [[1, 4], [0, 1]]]
    """
    check_int(k, "k", "unitriangular", minimum=2)
    check_int(p, "p", "unitriangular", minimum=2)
    mats = []
    for i in range(k - 1):
        for sign in (1, -1):
            m = torch.eye(k, dtype=torch.int64)
            m[i, i + 1] = sign % p
            mats.append(m)
    return torch.stack(mats)


FAMILIES: dict[str, Callable[..., Gens]] = {
    "all_transpositions": all_transpositions,
    "coxeter": coxeter,
    "star": star,
    "lrx": lrx,
    "cyclic_transposition": cyclic_transposition,
    "top_spin": top_spin,
    "pancake": pancake,
    "burnt_pancake": burnt_pancake,
}


def generators_for(family: str, n: int | None = None, **kwargs) -> Gens:
    """Look a generator family up by name (``"cube222"`` takes no ``n``).

    Example:
        >>> generators_for("lrx", 5)[1]
        ('L', 'R', 'X')
    """
    if family == "cube222":
        return cube222(**kwargs)
    if family not in FAMILIES:
        known = ", ".join(sorted([*FAMILIES, "cube222"]))
        raise ValueError(f"generators_for: unknown `family` {family!r}; known families: {known}")
    if n is None:
        raise ValueError(f"generators_for: family {family!r} needs `n`, got None")
    return FAMILIES[family](n, **kwargs)
