"""Cayley graphs of permutation and matrix groups: growth, diameters, shortest words.

Generators act on states by right multiplication (``s -> s[g] = s o g``, see
:mod:`equikit.groups.cayley.graph`); growth runs on packed int64 states with torch (any
graph, CPU or GPU) or on a bitset of ranks with a small C kernel (permutations of n <= 16).
"""

from equikit.groups.cayley.encoding import StateCodec
from equikit.groups.cayley.engine import GrowthResult, estimate_peak_bytes, growth
from equikit.groups.cayley.generators import (
    FAMILIES,
    all_transpositions,
    burnt_pancake,
    coxeter,
    cube222,
    cyclic_transposition,
    generators_for,
    lrx,
    pancake,
    star,
    top_spin,
    unitriangular,
)
from equikit.groups.cayley.graph import CayleyGraph
from equikit.groups.cayley.words import apply_word, random_walks, shortest_word

__all__ = [
    "FAMILIES",
    "CayleyGraph",
    "GrowthResult",
    "StateCodec",
    "all_transpositions",
    "apply_word",
    "burnt_pancake",
    "coxeter",
    "cube222",
    "cyclic_transposition",
    "estimate_peak_bytes",
    "generators_for",
    "growth",
    "lrx",
    "pancake",
    "random_walks",
    "shortest_word",
    "star",
    "top_spin",
    "unitriangular",
]
