"""Words in the generators: applying them, shortest words, random walks.

A word ``[j1, j2, ..., jk]`` (generator indices) applied to a state ``s`` gives
``s . g_j1 . g_j2 ... g_jk`` (right multiplication, as everywhere in this package); applied
to the identity it gives the group element ``g_j1 o g_j2 o ... o g_jk``.
"""

from __future__ import annotations

import torch

from equikit._utils import check_int, resolve_generator
from equikit.groups.cayley.engine import GrowthResult, isin_sorted, unique_sorted
from equikit.groups.cayley.graph import CayleyGraph

__all__ = ["apply_word", "random_walks", "shortest_word"]


def _check_state(graph: CayleyGraph, state, name: str, where: str) -> torch.Tensor:
    t = torch.as_tensor(state)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{where}: `{name}` must hold integers, got dtype {t.dtype}")
    t = t.to(torch.int64).reshape(-1) if graph.kind == "matrix" else t.to(torch.int64)
    if t.shape != (graph.n,):
        raise ValueError(
            f"{where}: `{name}` must be a state of length {graph.n} (the graph's state length), "
            f"got shape {tuple(torch.as_tensor(state).shape)}"
        )
    return t


def apply_word(graph: CayleyGraph, word, start=None) -> torch.Tensor:
    """Apply generator indices ``word`` to ``start`` (default: the graph's start).

    Example:
        >>> g = CayleyGraph.family("lrx", 4)
        >>> apply_word(g, [0, 2]).tolist()   # L then X: (1, 2, 3, 0)[X]
        [2, 1, 3, 0]
    """
    s = graph.start if start is None else _check_state(graph, start, "start", "apply_word")
    for j in word:
        if not 0 <= int(j) < graph.n_generators:
            raise ValueError(
                f"apply_word: `word` entries must be generator indices in "
                f"[0, {graph.n_generators}), got {j}"
            )
        s = graph.act(s[None], graph.generators[int(j)][None])[0, 0]
    return s


def _walk_back(graph, layers, code, depth, step_gens) -> list[int]:
    """From ``code`` in ``layers[depth]`` down to layer 0: at each step the index ``j`` with
    ``x . step_gens[j]`` in the layer below."""
    letters = []
    x = graph.decode(code[None])
    for d in range(depth, 0, -1):
        nb = graph.act(x, step_gens)[:, 0]
        hit = isin_sorted(graph.encode(nb), layers[d - 1])
        j = int(torch.nonzero(hit)[0])
        letters.append(j)
        x = nb[j][None]
    return letters


def _layer_of(layers, code) -> int | None:
    for d, layer in enumerate(layers):
        if bool(isin_sorted(code[None], layer)[0]):
            return d
    return None


def _from_layers(graph, layers, target) -> list[int] | None:
    code = graph.encode(target[None])[0]
    d = _layer_of(layers, code)
    if d is None:
        return None
    return _walk_back(graph, layers, code, d, graph.inverse_generators())[::-1]


def _meet_in_the_middle(graph, target, max_depth) -> list[int] | None:
    inv = graph.inverse_generators()
    back = CayleyGraph(inv, target, graph.names, graph.kind, graph.modulus)
    sides = [graph, back]
    layers = [[graph.encode(graph.start[None])], [graph.encode(target[None])]]
    seen = [layers[0][0], layers[1][0]]
    if bool(isin_sorted(layers[0][0], layers[1][0])[0]):
        return []
    while len(layers[0]) + len(layers[1]) - 2 < max_depth:
        side = 0 if layers[0][-1].shape[0] <= layers[1][-1].shape[0] else 1
        new = unique_sorted(sides[side].neighbor_codes(layers[side][-1]))
        new = new[~isin_sorted(new, seen[side])]
        if new.shape[0] == 0:
            return None
        layers[side].append(new)
        seen[side] = unique_sorted(torch.cat([seen[side], new]))
        meet = isin_sorted(new, layers[1 - side][-1])
        if bool(meet.any()):
            m = new[int(torch.nonzero(meet)[0])]
            fwd = _walk_back(graph, layers[0], m, len(layers[0]) - 1, inv)[::-1]
            bwd = _walk_back(graph, layers[1], m, len(layers[1]) - 1, graph.generators)
            return fwd + bwd
    return None


def shortest_word(
    graph: CayleyGraph,
    target,
    *,
    result: GrowthResult | None = None,
    max_depth: int = 1000,
) -> list[int] | None:
    """A shortest word taking the graph's start to ``target``.

    With ``result`` (a :func:`growth` result run with ``keep="all"``) the word is read off
    the stored layers; otherwise a meet-in-the-middle search grows balls from both ends
    (inverse generators from ``target``) and stops when they touch, storing only about half
    the depth on each side.

    Args:
        graph: the graph.
        target: a state ``(n,)`` (or a ``(k, k)`` matrix).
        result: optional growth result with all layers.
        max_depth: give up (return None) beyond this distance.

    Returns:
        generator indices, or None when ``target`` is not reachable.

    Example:
        >>> g = CayleyGraph.family("pancake", 5)
        >>> w = shortest_word(g, torch.tensor([4, 3, 2, 1, 0]))
        >>> w, apply_word(g, w).tolist()
        ([3], [4, 3, 2, 1, 0])
    """
    where = "shortest_word"
    t = _check_state(graph, target, "target", where)
    check_int(max_depth, "max_depth", where, minimum=0)
    if result is not None:
        if result.layers is None:
            raise ValueError(f"{where}: `result` must come from growth(..., keep='all')")
        return _from_layers(graph, result.layers, t)
    return _meet_in_the_middle(graph, t, max_depth)


def random_walks(
    graph: CayleyGraph,
    n_walks: int,
    length: int,
    *,
    generator: torch.Generator | int | None = None,
    start=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random walks from the start state, all walks advanced together.

    Args:
        n_walks: number of walks.
        length: steps per walk.
        generator: torch.Generator or seed.
        start: optional start state (default: the graph's start).

    Returns:
        ``states (n_walks, length + 1, n)`` and ``moves (n_walks, length)`` (generator
        indices), with ``states[:, t + 1] = states[:, t] . g[moves[:, t]]``.

    Example:
        >>> g = CayleyGraph.family("lrx", 5)
        >>> states, moves = random_walks(g, 3, 4, generator=0)
        >>> tuple(states.shape), tuple(moves.shape)
        ((3, 5, 5), (3, 4))
    """
    where = "random_walks"
    check_int(n_walks, "n_walks", where, minimum=1)
    check_int(length, "length", where, minimum=0)
    gen = resolve_generator(generator)
    s = graph.start if start is None else _check_state(graph, start, "start", where)
    moves = torch.randint(0, graph.n_generators, (n_walks, length), generator=gen)
    states = [s.expand(n_walks, graph.n)]
    for t in range(length):
        cur, g = states[-1], graph.generators[moves[:, t]]
        if graph.kind == "matrix":
            k = g.shape[-1]
            nxt = (cur.reshape(-1, k, k) @ g).remainder_(graph.modulus).reshape(n_walks, -1)
        else:
            nxt = torch.gather(cur, -1, g)
        states.append(nxt)
    return torch.stack(states, dim=1), moves

