"""Breadth-first growth of Cayley and Schreier graphs.

Two backends compute the same layer sizes:

- ``"torch"`` (any graph, CPU or GPU): states are packed into int64 codes; each step applies
  every generator to the whole frontier at once (shifts and masks on single-word codes),
  deduplicates by sort plus neighbour comparison and drops states already seen. For
  undirected graphs only the last two layers are kept (a neighbour of layer ``k`` lies in
  layer ``k-1``, ``k`` or ``k+1``); directed graphs keep a sorted visited set. The frontier
  is processed in chunks of ``chunk_size`` candidates to bound memory.
- ``"bitset"`` (permutations of ``n <= 16``, CPU): one bit per permutation indexed by its
  lexicographic rank (see :mod:`equikit.groups.cayley.native`); no sorting, no old layers.

``backend="auto"`` picks the bitset when the C kernel is available and ``3 n!/8`` bytes fit
the memory budget. With ``stream_dir`` every layer (torch) or the bitsets (bitset) are
written to disk atomically after each step and an interrupted run resumes from there.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from equikit._utils import check_int
from equikit.groups.cayley import native
from equikit.groups.cayley.graph import CayleyGraph

__all__ = ["GrowthResult", "estimate_peak_bytes", "growth"]

Progress = Callable[[int, int, int], None]
_BACKENDS = ("auto", "torch", "bitset")


@dataclass
class GrowthResult:
    """Result of :func:`growth`.

    Attributes:
        layer_sizes: number of states at distance ``0, 1, ...`` from the start.
        complete: True when the search ran until no new state appeared.
        last_layer: decoded states ``(m, n)`` of the last layer (at most ``last_layer_cap``).
        layers: all layers as codes when ``keep="all"``, else None.
        backend: ``"torch"`` or ``"bitset"``.
        seconds: wall time of the search.
        peak_bytes: largest total size of the engine's live arrays (measured).
        peak_bytes_estimate: the prediction of :func:`estimate_peak_bytes` for this run.
        rss_peak_bytes: the process's peak resident memory at the end (all allocations).
    """

    layer_sizes: list[int]
    complete: bool
    last_layer: torch.Tensor
    layers: list[torch.Tensor] | None
    backend: str
    seconds: float
    peak_bytes: int
    peak_bytes_estimate: int
    rss_peak_bytes: int
    is_group: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def order(self) -> int:
        """Number of states reached (the group order for a complete Cayley graph)."""
        return sum(self.layer_sizes)

    @property
    def eccentricity(self) -> int:
        """Distance from the start to the farthest state reached."""
        return len(self.layer_sizes) - 1

    @property
    def diameter(self) -> int | None:
        """The diameter: equals the start's eccentricity for a complete Cayley graph (vertex
        transitive); None for a Schreier graph or an incomplete search."""
        return self.eccentricity if (self.complete and self.is_group) else None

    def to_dict(self) -> dict:
        return {
            "layer_sizes": self.layer_sizes,
            "order": self.order,
            "eccentricity": self.eccentricity,
            "diameter": self.diameter,
            "complete": self.complete,
            "backend": self.backend,
            "seconds": self.seconds,
            "peak_bytes": self.peak_bytes,
            "peak_bytes_estimate": self.peak_bytes_estimate,
            "rss_peak_bytes": self.rss_peak_bytes,
            "last_layer": self.last_layer.tolist()[:100],
            **self.extra,
        }


# ---- small pure helpers --------------------------------------------------------------------
def _rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 8 << 30


def unique_sorted(codes: torch.Tensor) -> torch.Tensor:
    """Sorted distinct codes: ``(N,)`` by sort + neighbour comparison, ``(N, W)`` by rows."""
    if codes.ndim == 2:
        return torch.unique(codes, dim=0)
    if codes.numel() < 2:
        return codes.clone()
    s = torch.sort(codes).values
    keep = torch.ones_like(s, dtype=torch.bool)
    torch.ne(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def isin_sorted(codes: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Membership of ``codes`` in the sorted distinct ``ref`` (``(N,)`` or ``(N, W)``)."""
    if ref.shape[0] == 0 or codes.shape[0] == 0:
        return torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device)
    if codes.ndim == 2:
        _, inv = torch.unique(torch.cat([ref, codes]), dim=0, return_inverse=True)
        return torch.isin(inv[ref.shape[0] :], inv[: ref.shape[0]])
    idx = torch.searchsorted(ref, codes).clamp_(max=ref.shape[0] - 1)
    return ref[idx] == codes


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def estimate_peak_bytes(
    graph: CayleyGraph, backend: str, max_layer: int, order: int | None = None,
    chunk_size: int = 1 << 24,
) -> int:
    """Predicted peak bytes of the engine's arrays.

    Args:
        graph: the graph.
        backend: ``"torch"`` or ``"bitset"``.
        max_layer: the largest layer size (known after a run, or an upper bound before).
        order: number of states (directed torch runs keep them all).
        chunk_size: candidates per chunk of the torch backend.

    The torch model: previous, current and next layer plus one chunk of candidates, which
    exists about three times over while it is sorted and filtered. Example:
        >>> g = CayleyGraph.family("lrx", 10)
        >>> estimate_peak_bytes(g, "bitset", 0) == 3 * 8 * (3628800 // 64)
        True
    """
    if backend == "bitset":
        return native.bitset_bytes(graph.n)
    word = 8 * graph.codec.words
    cand = min(chunk_size, graph.n_generators * max_layer)
    visited = 2 * (order or 0) if not graph.undirected else 0
    return word * (3 * max_layer + 3 * cand + visited)


# ---- checkpoints -----------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _save_state(stream: Path, state: dict) -> None:
    _atomic_write(stream / "progress.json", lambda p: Path(p).write_text(json.dumps(state)))


def _load_state(stream: Path, fingerprint: str, backend: str) -> dict | None:
    path = stream / "progress.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint or state.get("backend") != backend:
        raise ValueError(
            f"growth: `stream_dir` {str(stream)!r} holds a run of another graph or backend; "
            "use an empty folder"
        )
    return state


# ---- torch backend ---------------------------------------------------------------------------
def _expand(graph, frontier, exclude, chunk_rows):
    """Distinct neighbours of ``frontier`` not in any sorted tensor of ``exclude``."""
    parts, peak = [], 0
    for chunk in frontier.split(chunk_rows):
        cand = unique_sorted(graph.neighbor_codes(chunk))
        peak = max(peak, 3 * _nbytes(cand))
        for ref in exclude:
            cand = cand[~isin_sorted(cand, ref)]
        parts.append(cand)
    new = parts[0] if len(parts) == 1 else unique_sorted(torch.cat(parts))
    return new, peak


def _torch_growth(graph, max_layers, keep, chunk_size, device, stream, progress):
    fingerprint = graph.fingerprint()
    start = graph.encode(graph.start[None]).to(device)
    layer_sizes, layers = [1], [start]
    prev = start[:0]
    frontier = start
    visited = start
    state = _load_state(stream, fingerprint, "torch") if stream else None
    if state is not None:
        layer_sizes = state["layer_sizes"]
        k = len(layer_sizes) - 1
        load = lambda i: torch.load(stream / f"layer_{i:05d}.pt").to(device)  # noqa: E731
        frontier = load(k)
        prev = load(k - 1) if k > 0 else start[:0]
        if not graph.undirected:
            visited = unique_sorted(torch.cat([load(i) for i in range(k + 1)]))
        if keep == "all":
            layers = [load(i) for i in range(k + 1)]
        if state["complete"]:
            return layer_sizes, True, frontier, layers if keep == "all" else None, 0
    elif stream is not None:
        _atomic_write(stream / "layer_00000.pt", lambda p: torch.save(start.cpu(), p))
        _save_state(stream, {"fingerprint": fingerprint, "backend": "torch",
                             "layer_sizes": layer_sizes, "complete": False})
    if progress:
        progress(len(layer_sizes) - 1, layer_sizes[-1], sum(layer_sizes))
    chunk_rows = max(1, chunk_size // graph.n_generators)
    peak, complete = 0, False
    while max_layers is None or len(layer_sizes) <= max_layers:
        exclude = [frontier, prev] if graph.undirected else [visited]
        new, cand_peak = _expand(graph, frontier, exclude, chunk_rows)
        peak = max(peak, cand_peak + _nbytes(frontier, prev, new) + (
            0 if graph.undirected else 2 * _nbytes(visited)))
        if new.shape[0] == 0:
            complete = True
            break
        layer_sizes.append(int(new.shape[0]))
        if not graph.undirected:
            visited = unique_sorted(torch.cat([visited, new]))
        if keep == "all":
            layers.append(new)
        prev, frontier = frontier, new
        if stream is not None:
            k = len(layer_sizes) - 1
            _atomic_write(stream / f"layer_{k:05d}.pt", lambda p, t=new: torch.save(t.cpu(), p))
            _save_state(stream, {"fingerprint": fingerprint, "backend": "torch",
                                 "layer_sizes": layer_sizes, "complete": False})
        if progress:
            progress(len(layer_sizes) - 1, layer_sizes[-1], sum(layer_sizes))
    if stream is not None:
        _save_state(stream, {"fingerprint": fingerprint, "backend": "torch",
                             "layer_sizes": layer_sizes, "complete": complete})
    return layer_sizes, complete, frontier, (layers if keep == "all" else None), peak


# ---- bitset backend --------------------------------------------------------------------------
_SERIAL_WORK = 1 << 18  # neighbours per layer below which one thread does the layer


def _layer_threads(threads: int, layer_size: int, n_generators: int) -> int:
    """OpenMP threads for expanding a layer of ``layer_size`` states.

    Small layers run on one thread: waking a team costs more than the work, and on a loaded
    machine a spinning second thread stalled a whole layer (LRX n = 9 took 0.30 s with two
    threads against 0.034 s with one in a loaded run).
    """
    return 1 if layer_size * n_generators < _SERIAL_WORK else threads


def _bitset_growth(graph, max_layers, threads, stream, progress):
    fingerprint = graph.fingerprint()
    bfs = native.BitsetBFS(graph.n, graph.generators.numpy(), graph.start.numpy())
    layer_sizes = [1]
    state = _load_state(stream, fingerprint, "bitset") if stream else None
    if state is not None:
        layer_sizes = state["layer_sizes"]
        bfs.visited[:] = np.load(stream / "visited.npy")
        bfs.layer[:] = np.load(stream / "layer.npy")
        if state["complete"]:
            return layer_sizes, True, bfs
    complete = False
    if progress:
        progress(len(layer_sizes) - 1, layer_sizes[-1], sum(layer_sizes))
    while max_layers is None or len(layer_sizes) <= max_layers:
        saved_layer = bfs.layer
        size = bfs.step(_layer_threads(threads, layer_sizes[-1], graph.generators.shape[0]))
        if size == 0:
            complete = True
            bfs.layer, bfs.next = saved_layer, bfs.layer  # keep the last non-empty layer
            break
        layer_sizes.append(size)
        if stream is not None:
            _atomic_write(stream / "visited.npy", lambda p: _save_npy(p, bfs.visited))
            _atomic_write(stream / "layer.npy", lambda p: _save_npy(p, bfs.layer))
            _save_state(stream, {"fingerprint": fingerprint, "backend": "bitset",
                                 "layer_sizes": layer_sizes, "complete": False})
        if progress:
            progress(len(layer_sizes) - 1, size, sum(layer_sizes))
    if stream is not None:
        _save_state(stream, {"fingerprint": fingerprint, "backend": "bitset",
                             "layer_sizes": layer_sizes, "complete": complete})
    return layer_sizes, complete, bfs


def _bitset_ok(graph: CayleyGraph) -> str | None:
    """Why the bitset backend cannot run this graph, or None when it can."""
    if graph.kind != "perm" or sorted(graph.start.tolist()) != list(range(graph.n)):
        return "it needs a permutation start state (a Cayley graph, not a Schreier graph)"
    if graph.n > native.MAX_N:
        return f"it needs n <= {native.MAX_N}, got n = {graph.n}"
    if not native.available():
        return "no C compiler was found to build its kernel"
    return None


def _pick_backend(graph, backend, keep, device, memory_budget) -> str:
    reason = _bitset_ok(graph)
    if backend == "auto":
        fits = native.bitset_bytes(graph.n) <= memory_budget if graph.n <= native.MAX_N else False
        ok = reason is None and keep == "last" and torch.device(device).type == "cpu" and fits
        return "bitset" if ok else "torch"
    if backend == "bitset":
        if reason is not None:
            raise ValueError(f"growth: backend='bitset' cannot run this graph: {reason}")
        if keep != "last":
            raise ValueError("growth: backend='bitset' keeps no layers; use keep='last'")
    return backend


def growth(
    graph: CayleyGraph,
    *,
    max_layers: int | None = None,
    backend: str = "auto",
    keep: str = "last",
    chunk_size: int = 1 << 24,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    stream_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    last_layer_cap: int = 1 << 20,
    memory_budget: int | None = None,
) -> GrowthResult:
    """Breadth-first growth from the graph's start state: layer sizes, eccentricity and the
    last layer.

    Args:
        graph: a :class:`CayleyGraph`.
        max_layers: stop after this many layers beyond the start (None: until exhausted).
        backend: ``"auto"``, ``"torch"`` or ``"bitset"`` (see the module docstring).
        keep: ``"last"`` (only what the search needs) or ``"all"`` (every layer's codes in
            ``result.layers``, needed by :func:`~equikit.groups.cayley.shortest_word`).
        chunk_size: torch backend: candidates deduplicated at once (memory knob).
        device: torch backend: where the states live (``"cuda"`` where available).
        threads: bitset backend: OpenMP threads (default ``torch.get_num_threads()``).
        stream_dir: write layers/checkpoints here after each step; resume from them.
        progress: called as ``progress(layer, layer_size, total_so_far)`` after each layer.
        last_layer_cap: at most this many states of the last layer are decoded.
        memory_budget: bytes the bitset may use (default: half of the free memory).

    Returns:
        a :class:`GrowthResult`.

    Example:
        >>> res = growth(CayleyGraph.family("coxeter", 4))
        >>> res.layer_sizes, res.diameter
        ([1, 3, 5, 6, 5, 3, 1], 6)
    """
    if not isinstance(graph, CayleyGraph):
        raise TypeError(f"growth: `graph` must be a CayleyGraph, got {type(graph).__name__}")
    if backend not in _BACKENDS:
        raise ValueError(f"growth: `backend` must be one of {_BACKENDS}, got {backend!r}")
    if keep not in ("last", "all"):
        raise ValueError(f"growth: `keep` must be 'last' or 'all', got {keep!r}")
    if max_layers is not None:
        check_int(max_layers, "max_layers", "growth", minimum=0)
    check_int(chunk_size, "chunk_size", "growth", minimum=1)
    budget = memory_budget if memory_budget is not None else _available_bytes() // 2
    chosen = _pick_backend(graph, backend, keep, device, budget)
    stream = Path(stream_dir) if stream_dir is not None else None
    if stream is not None:
        stream.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if chosen == "bitset":
        nthreads = threads if threads is not None else torch.get_num_threads()
        sizes, complete, bfs = _bitset_growth(graph, max_layers, nthreads, stream, progress)
        seconds = time.perf_counter() - t0
        ranks = bfs.layer_ranks(min(sizes[-1], last_layer_cap))
        last = torch.from_numpy(native.unrank(ranks, graph.n))
        layers, peak = None, native.bitset_bytes(graph.n)
    else:
        sizes, complete, frontier, layers, peak = _torch_growth(
            graph, max_layers, keep, chunk_size, device, stream, progress
        )
        seconds = time.perf_counter() - t0
        last = graph.decode(frontier[:last_layer_cap].cpu())
    order = sum(sizes) if not graph.undirected else None
    estimate = estimate_peak_bytes(graph, chosen, max(sizes), order, chunk_size)
    return GrowthResult(
        layer_sizes=list(sizes), complete=complete, last_layer=last, layers=layers,
        backend=chosen, seconds=seconds, peak_bytes=int(peak), peak_bytes_estimate=estimate,
        rss_peak_bytes=_rss_bytes(), is_group=graph.is_group,
        extra={"group_order_bound": math.factorial(graph.n) if graph.kind == "perm" else None},
    )
