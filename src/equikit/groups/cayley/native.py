"""The bitset backend: a small C kernel (``_bitset_bfs.c``) compiled on first use.

States are permutations of ``n <= 16`` items identified with their lexicographic rank; the
visited set, the current and the next layer are bitsets of ``n!`` bits each (``3 n!/8``
bytes in all, no sorting, no old layers). The kernel is plain C with OpenMP, built with the
system C compiler (``cc``) into the user cache directory (``$EQUIKIT_CACHE`` or
``~/.cache/equikit``), keyed by a hash of the source and the machine. When no compiler is
found, :func:`available` is False and the torch backend is used instead.
"""

from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path

import numpy as np

from equikit._utils.native import load_library

__all__ = ["available", "bitset_bytes", "rank", "unrank"]

_SOURCE = Path(__file__).with_name("_bitset_bfs.c")
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
MAX_N = 16


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = load_library(_SOURCE, "cayley", _FLAGS)
    if lib is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.eq_bfs_layer.argtypes = [i32, i32, p, p, p, p, i64, i32]
    lib.eq_bfs_layer.restype = i64
    lib.eq_rank_many.argtypes = [p, i64, i32, p]
    lib.eq_unrank_many.argtypes = [p, i64, i32, p]
    lib.eq_list_bits.argtypes = [p, i64, p, i64]
    lib.eq_list_bits.restype = i64
    return lib


def available() -> bool:
    """True when the C kernel compiled (or was cached) and can be used."""
    return _library() is not None


def bitset_bytes(n: int) -> int:
    """Bytes of the three bitsets (visited, layer, next layer) for permutations of ``n``."""
    return 3 * 8 * (-(-math.factorial(n) // 64))


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def rank(perms: np.ndarray) -> np.ndarray:
    """Lexicographic ranks ``(m,)`` uint64 of permutations ``(m, n)``.

    Example:
        >>> rank(np.array([[0, 1, 2], [2, 1, 0]])).tolist()
        [0, 5]
    """
    perms = np.ascontiguousarray(perms, dtype=np.int64)
    out = np.empty(perms.shape[0], dtype=np.uint64)
    _library().eq_rank_many(_ptr(perms), perms.shape[0], perms.shape[1], _ptr(out))
    return out


def unrank(ranks: np.ndarray, n: int) -> np.ndarray:
    """Permutations ``(m, n)`` int64 of lexicographic ranks ``(m,)``.

    Example:
        >>> unrank(np.array([5], dtype=np.uint64), 3).tolist()
        [[2, 1, 0]]
    """
    ranks = np.ascontiguousarray(ranks, dtype=np.uint64)
    out = np.empty((ranks.shape[0], n), dtype=np.int64)
    _library().eq_unrank_many(_ptr(ranks), ranks.shape[0], n, _ptr(out))
    return out


class BitsetBFS:
    """Bitset BFS state: visited ``V``, layer ``F``, next ``N`` (uint64 words)."""

    def __init__(self, n: int, generators: np.ndarray, start: np.ndarray) -> None:
        self.n = n
        self.gens = np.ascontiguousarray(generators, dtype=np.uint8)
        self.nwords = -(-math.factorial(n) // 64)
        self.visited = np.zeros(self.nwords, dtype=np.uint64)
        self.layer = np.zeros(self.nwords, dtype=np.uint64)
        self.next = np.zeros(self.nwords, dtype=np.uint64)
        r = int(rank(start[None])[0])
        self.visited[r >> 6] |= np.uint64(1 << (r & 63))
        self.layer[r >> 6] |= np.uint64(1 << (r & 63))

    def step(self, threads: int) -> int:
        """Expand one layer; afterwards :attr:`layer` is the new layer. Returns its size."""
        self.next.fill(0)
        count = _library().eq_bfs_layer(
            self.n, self.gens.shape[0], _ptr(self.gens), _ptr(self.layer), _ptr(self.visited),
            _ptr(self.next), self.nwords, threads,
        )
        self.layer, self.next = self.next, self.layer
        return int(count)

    def layer_ranks(self, cap: int) -> np.ndarray:
        """Ranks of (at most ``cap``) states of the current layer, ascending."""
        out = np.empty(cap, dtype=np.uint64)
        m = _library().eq_list_bits(_ptr(self.layer), self.nwords, _ptr(out), cap)
        return out[:m]
