"""Cayley graph growth, checked against a plain Python breadth-first search and against
formulas computed here independently (Stirling, Mahonian, group orders)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.groups.cayley import (
    CayleyGraph,
    StateCodec,
    apply_word,
    generators_for,
    growth,
    native,
    random_walks,
    shortest_word,
    unitriangular,
)
from equikit.groups.cayley.encoding import apply_shift_plan

BACKENDS = ["torch", pytest.param("bitset", marks=pytest.mark.skipif(
    not native.available(), reason="no C compiler for the bitset kernel"))]


# ---- independent references -------------------------------------------------------------------
def python_bfs(gens: list[list[int]], start: tuple, act=None, depth: int | None = None):
    """Plain breadth-first search on tuples with a Python set: layer sizes and distances
    (up to ``depth`` layers when given)."""
    act = act or (lambda s, g: tuple(s[i] for i in g))
    dist = {start: 0}
    layer, sizes = [start], [1]
    while True:
        nxt = []
        for s in layer:
            for g in gens:
                t = act(s, g)
                if t not in dist:
                    dist[t] = len(sizes)
                    nxt.append(t)
        if not nxt or (depth is not None and len(sizes) > depth):
            return sizes, dist
        sizes.append(len(nxt))
        layer = nxt


def stirling_first(n: int) -> list[int]:
    """Unsigned Stirling numbers of the first kind c(n, k), k = 0..n, by recurrence."""
    row = [1]
    for m in range(n):
        row = [(m * (row[k] if k < len(row) else 0)) + (row[k - 1] if k else 0)
               for k in range(len(row) + 1)]
    return row


def mahonian(n: int) -> list[int]:
    """Coefficients of prod_{i=1..n} (1 + q + ... + q^(i-1)): permutations by inversions."""
    poly = [1]
    for i in range(1, n + 1):
        out = [0] * (len(poly) + i - 1)
        for a, c in enumerate(poly):
            for b in range(i):
                out[a + b] += c
        poly = out
    return poly


def parity(perm: list[int]) -> int:
    seen, swaps = set(), 0
    for i in range(len(perm)):
        j, length = i, 0
        while j not in seen:
            seen.add(j)
            j = perm[j]
            length += 1
        swaps += max(length - 1, 0)
    return swaps % 2


FAMILY_CASES = [
    ("all_transpositions", 6, {}),
    ("coxeter", 6, {}),
    ("star", 6, {}),
    ("lrx", 7, {}),
    ("lrx", 6, {"k": 2}),
    ("cyclic_transposition", 6, {}),
    ("top_spin", 7, {"k": 4}),
    ("top_spin", 6, {"k": 3}),
    ("pancake", 7, {}),
    ("burnt_pancake", 4, {}),
]


# ---- growth vs brute force ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("family", "n", "kw"), FAMILY_CASES)
def test_growth_matches_python_bfs(family, n, kw, backend):
    gens, _ = generators_for(family, n, **kw)
    graph = CayleyGraph.family(family, n, **kw)
    want, dist = python_bfs(gens.tolist(), tuple(range(graph.n)))
    if backend == "bitset" and graph.n > native.MAX_N:
        pytest.skip("state too long for the bitset")
    res = growth(graph, backend=backend)
    assert res.layer_sizes == want
    assert res.complete and res.diameter == len(want) - 1
    far = {s for s, d in dist.items() if d == len(want) - 1}
    assert {tuple(r) for r in res.last_layer.tolist()} == far


def test_growth_n8_every_family_torch_and_bitset_agree_with_python():
    for family in ("lrx", "pancake", "coxeter"):
        gens, _ = generators_for(family, 8)
        want, _ = python_bfs(gens.tolist(), tuple(range(8)))
        for backend in ("torch", "bitset") if native.available() else ("torch",):
            assert growth(CayleyGraph.family(family, 8), backend=backend).layer_sizes == want


@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_all_transpositions_growth_is_stirling_first_kind(n):
    res = growth(CayleyGraph.family("all_transpositions", n))
    c = stirling_first(n)
    assert res.layer_sizes == [c[n - d] for d in range(n)]


@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_coxeter_growth_is_mahonian_with_diameter_n_choose_2(n):
    res = growth(CayleyGraph.family("coxeter", n), backend="torch")
    assert res.layer_sizes == mahonian(n)
    assert res.diameter == n * (n - 1) // 2


PANCAKE_NUMBERS = {1: 0, 2: 1, 3: 3, 4: 4, 5: 5, 6: 7, 7: 8, 8: 9, 9: 10, 10: 11}  # OEIS A058986


def test_pancake_numbers_literature_agrees_with_python_bfs_for_small_n():
    for n in range(2, 8):
        sizes, _ = python_bfs(generators_for("pancake", n)[0].tolist(), tuple(range(n)))
        assert len(sizes) - 1 == PANCAKE_NUMBERS[n]


@pytest.mark.parametrize("n", [8, 9, pytest.param(10, marks=pytest.mark.slow)])
def test_pancake_diameter_matches_known_values(n):
    res = growth(CayleyGraph.family("pancake", n))
    assert res.diameter == PANCAKE_NUMBERS[n]
    assert res.order == math.factorial(n)


@pytest.mark.parametrize(("family", "n", "kw"), [
    ("top_spin", 9, {"k": 4}), ("top_spin", 7, {"k": 4}), ("top_spin", 7, {"k": 5}),
    ("top_spin", 6, {"k": 4}), ("top_spin", 7, {"k": 3}), ("lrx", 7, {}), ("star", 5, {}),
])
def test_group_order_is_n_factorial_or_half_for_even_generators(family, n, kw):
    # (top-spin with n = 5, k = 4 generates only a dihedral group of order 10: small n differ)
    gens, _ = generators_for(family, n, **kw)
    all_even = all(parity(g) == 0 for g in gens.tolist())
    res = growth(CayleyGraph.family(family, n, **kw))
    assert res.order == math.factorial(n) // (2 if all_even else 1)


def test_burnt_pancake_order_is_hyperoctahedral():
    for n in (2, 3, 4):
        assert growth(CayleyGraph.family("burnt_pancake", n)).order == 2**n * math.factorial(n)


def test_cube222_first_layers_match_python_bfs_and_fixed_corner():
    gens, names = generators_for("cube222")
    assert len(names) == 6
    # quarter turns have order 4 and x, x' are inverse
    g = gens.tolist()
    for a, b in zip(g[0::2], g[1::2]):
        assert [a[i] for i in b] == list(range(24))
        g2 = [a[i] for i in a]
        assert [g2[i] for i in g2] == list(range(24)) and g2 != list(range(24))
    fixed = [i for i in range(24) if all(row[i] == i for row in g)]
    assert len(fixed) == 3  # the three stickers of the fixed corner cubie
    want, _ = python_bfs(g, tuple(range(24)), depth=5)
    res = growth(CayleyGraph.family("cube222"), max_layers=5)
    assert res.layer_sizes == want and not res.complete


@pytest.mark.slow
def test_cube222_order_and_diameter():
    gens, _ = generators_for("cube222")
    want, _ = python_bfs(gens.tolist(), tuple(range(24)))
    res = growth(CayleyGraph.family("cube222"))
    assert res.layer_sizes == want
    assert res.order == math.factorial(7) * 3**6


def test_schreier_coset_graph_matches_python_bfs():
    start = (0, 0, 1, 1, 2, 2)
    for family in ("coxeter", "lrx", "pancake"):
        gens, _ = generators_for(family, 6)
        want, _ = python_bfs(gens.tolist(), start)
        res = growth(CayleyGraph.family(family, 6, start=torch.tensor(start)))
        assert res.backend == "torch" and res.layer_sizes == want
        assert res.order == math.factorial(6) // 8 and res.diameter is None


def test_long_states_use_several_words():
    graph = CayleyGraph.family("lrx", 18)
    assert graph.codec.words == 2
    gens, _ = generators_for("lrx", 18)
    want, _ = python_bfs(gens.tolist(), tuple(range(18)), depth=6)
    assert growth(graph, max_layers=6).layer_sizes == want


def _matmul_mod(p):
    def act(s, g):
        k = round(len(s) ** 0.5)
        return tuple(sum(s[i * k + t] * g[t][j] for t in range(k)) % p
                     for i in range(k) for j in range(k))
    return act


@pytest.mark.parametrize(("k", "p"), [(3, 3), (3, 5), (4, 2)])
def test_unitriangular_growth_and_order(k, p):
    gens = unitriangular(k, p)
    graph = CayleyGraph.matrices(gens, p)
    want, _ = python_bfs(gens.tolist(), tuple(np.eye(k, dtype=int).reshape(-1).tolist()),
                         act=_matmul_mod(p))
    res = growth(graph)
    assert res.layer_sizes == want
    assert res.order == p ** (k * (k - 1) // 2)


# ---- encodings ---------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 16), st.integers(1, 20), st.data())
def test_codec_round_trip(length, bits, rows, data):
    codec = StateCodec(length, bits)
    vals = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=rows * length,
                              max_size=rows * length))
    x = torch.tensor(vals, dtype=torch.int64).reshape(rows, length)
    codes = codec.encode(x)
    assert codes.shape == (rows, codec.words)
    assert torch.equal(codec.decode(codes), x)
    # distinct states get distinct codes
    assert len({tuple(r) for r in codes.tolist()}) == len({tuple(r) for r in x.tolist()})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.randoms(use_true_random=False))
def test_shift_plan_equals_gather(n, rnd):
    codec = StateCodec(n, 4)
    g = list(range(n))
    rnd.shuffle(g)
    states = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(rnd.randint(0, 99)))
                          for _ in range(5)])
    got = apply_shift_plan(codec.encode(states)[:, 0], codec.shift_plan(g))
    want = codec.encode(states[:, torch.tensor(g)])[:, 0]
    assert torch.equal(got, want)


@pytest.mark.skipif(not native.available(), reason="no C compiler")
@pytest.mark.parametrize("n", [1, 4, 6])
def test_native_rank_is_lexicographic(n):
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    ranks = native.rank(perms)
    assert ranks.tolist() == list(range(math.factorial(n)))
    assert np.array_equal(native.unrank(ranks, n), perms)


@pytest.mark.skipif(not native.available(), reason="no C compiler")
def test_native_rank_round_trip_n16():
    g = torch.Generator().manual_seed(0)
    perms = torch.stack([torch.randperm(16, generator=g) for _ in range(200)]).numpy()
    assert np.array_equal(native.unrank(native.rank(perms), 16), perms)
    assert native.rank(np.arange(16)[::-1][None].copy())[0] == math.factorial(16) - 1


# ---- words and walks ---------------------------------------------------------------------------
@pytest.mark.parametrize(("family", "n"), [("lrx", 6), ("pancake", 6), ("cyclic_transposition", 5),
                                           ("top_spin", 6)])
def test_shortest_words_are_shortest_and_correct(family, n):
    graph = CayleyGraph.family(family, n)
    _, dist = python_bfs(graph.generators.tolist(), tuple(range(n)))
    res = growth(graph, keep="all")
    rng = np.random.default_rng(1)
    targets = list(dist)
    for idx in rng.choice(len(targets), size=15, replace=False):
        t = torch.tensor(targets[idx])
        for word in (shortest_word(graph, t, result=res), shortest_word(graph, t)):
            assert len(word) == dist[targets[idx]]
            assert torch.equal(apply_word(graph, word), t)


def test_shortest_word_matrix_group_and_unreachable():
    graph = CayleyGraph.matrices(unitriangular(3, 3), 3)
    _, dist = python_bfs(graph.generators.tolist(), tuple(np.eye(3, dtype=int).reshape(-1)),
                         act=_matmul_mod(3))
    far = max(dist, key=dist.get)
    word = shortest_word(graph, torch.tensor(far).reshape(3, 3))
    assert len(word) == dist[far]
    assert apply_word(graph, word).tolist() == list(far)
    lower = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert shortest_word(graph, lower) is None


def test_random_walks_follow_generators_and_are_reproducible():
    graph = CayleyGraph.family("pancake", 6)
    states, moves = random_walks(graph, 8, 10, generator=3)
    again, moves2 = random_walks(graph, 8, 10, generator=3)
    assert torch.equal(states, again) and torch.equal(moves, moves2)
    for w in range(8):
        for t in range(10):
            assert torch.equal(states[w, t + 1], states[w, t][graph.generators[moves[w, t]]])


# ---- streaming, memory, devices ----------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_to_disk_resumes(tmp_path, backend):
    graph = CayleyGraph.family("lrx", 7)
    full = growth(graph, backend=backend)
    part = growth(graph, backend=backend, stream_dir=tmp_path, max_layers=4)
    assert part.layer_sizes == full.layer_sizes[:5] and not part.complete
    state = json.loads((tmp_path / "progress.json").read_text())
    assert state["layer_sizes"] == part.layer_sizes
    resumed = growth(graph, backend=backend, stream_dir=tmp_path)
    assert resumed.layer_sizes == full.layer_sizes and resumed.complete
    if backend == "torch":
        layer5 = torch.load(tmp_path / "layer_00005.pt")
        assert layer5.shape[0] == full.layer_sizes[5]
    with pytest.raises(ValueError, match="another graph"):
        growth(CayleyGraph.family("pancake", 7), backend=backend, stream_dir=tmp_path)


def test_peak_memory_is_reported_and_estimated():
    graph = CayleyGraph.family("pancake", 7)
    res = growth(graph, backend="torch", chunk_size=1000)
    assert res.peak_bytes > 0 and res.rss_peak_bytes > res.peak_bytes
    # the model is an upper bound within a small factor of what was measured
    assert res.peak_bytes <= res.peak_bytes_estimate <= 4 * res.peak_bytes
    assert res.layer_sizes == growth(graph, backend="torch").layer_sizes  # chunking is exact


@pytest.mark.gpu
@pytest.mark.parametrize(("family", "n"), [("lrx", 8), ("pancake", 8),
                                           ("cyclic_transposition", 7)])
def test_growth_on_gpu_matches_python_bfs(family, n):
    # selected with `-m gpu`; without CUDA this must fail, never skip
    assert torch.cuda.is_available(), "test marked `gpu` but torch sees no CUDA device"
    graph = CayleyGraph.family(family, n)
    sizes, _ = python_bfs(graph.generators.tolist(), tuple(range(n)))
    res = growth(graph, device="cuda", backend="torch", chunk_size=5000)
    assert res.layer_sizes == sizes and res.complete
    far = res.last_layer[0]
    assert len(shortest_word(graph, far)) == len(sizes) - 1


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_generators_are_refused_clearly():
    with pytest.raises(ValueError, match=r"CayleyGraph.permutations: generator 1 must be a permutation"):
        CayleyGraph.permutations([[1, 0, 2], [0, 0, 2]])
    with pytest.raises(ValueError, match=r"non-empty \(G, n\)"):
        CayleyGraph.permutations(torch.empty(0, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"non-empty \(G, n\)"):
        CayleyGraph.permutations([1, 0, 2])
    with pytest.raises(TypeError, match="must hold integers"):
        CayleyGraph.permutations([[1.0, 0.0]])
    with pytest.raises(ValueError, match="length-3 vector"):
        CayleyGraph.permutations([[1, 0, 2]], start=[0, 1])
    with pytest.raises(ValueError, match="unknown `family` 'pancakes'; known families"):
        generators_for("pancakes", 5)
    with pytest.raises(ValueError, match="lrx: `k` must be"):
        generators_for("lrx", 5, k=5)
    with pytest.raises(TypeError, match="lrx: `n` must be an int"):
        generators_for("lrx", 5.0)
    with pytest.raises(ValueError, match="not invertible mod 3"):
        CayleyGraph.matrices([[[1, 0], [0, 0]]], 3)
    with pytest.raises(ValueError, match="`p` must be prime"):
        CayleyGraph.matrices(unitriangular(2, 5), 4)


def test_bad_growth_arguments_are_refused_clearly():
    graph17 = CayleyGraph.family("lrx", 17)
    with pytest.raises(ValueError, match=r"backend='bitset' cannot run this graph: it needs n <= 16"):
        growth(graph17, backend="bitset")
    schreier = CayleyGraph.family("lrx", 5, start=[0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="permutation start state"):
        growth(schreier, backend="bitset")
    with pytest.raises(ValueError, match="growth: `backend` must be one of"):
        growth(graph17, backend="gpu")
    with pytest.raises(TypeError, match="growth: `graph` must be a CayleyGraph"):
        growth([[1, 0]])
    with pytest.raises(ValueError, match=r"StateCodec\.encode: `states` entries must lie in"):
        StateCodec(3, 2).encode(torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match="shortest_word: `target` must be a state of length 5"):
        shortest_word(CayleyGraph.family("lrx", 5), torch.arange(4))
    with pytest.raises(ValueError, match="apply_word: `word` entries must be generator indices"):
        apply_word(CayleyGraph.family("lrx", 5), [0, 3])
