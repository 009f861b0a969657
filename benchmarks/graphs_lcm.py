"""Learnable commutative monoids (Ong & Velickovic 2022): multiset tasks trained on small sets
(2..10 elements) and tested on sets up to 10x larger (100 elements), with four aggregators:

- ``sum`` and ``max`` (``equikit.nn.scatter``; sequential depth 1),
- ``gru``: a GRU read over the set in its (random, i.i.d.) input order (depth ``V``), written
  here because ``equikit.nn.RecurrentAggregation`` is an LSTM,
- ``lcm``: ``equikit.nn.LCMAggregation``, a learned commutative operator over a balanced
  binary tree (depth ``ceil(log2 V)``), trained with its associativity and identity losses.

Tasks on multisets of integers in ``[0, K)`` (K = 10), exact labels: ``max`` (K classes),
``second-max`` (the largest value strictly below the max, K classes) and ``parity`` (parity
of the number of odd elements, 2 classes). Sets are drawn so that the label does not
collapse to ``K - 1`` on large sets (see ``_draw_set``).

Every model: element embedding -> MLP -> aggregator -> MLP -> logits, hidden 32, Adam 1e-3,
a fixed number of steps (the budget), batches of 128 sets with sizes uniform in 2..10.
Test accuracy on 1000 fresh sets at each size in 10, 25, 50, 100.

    python benchmarks/graphs_lcm.py               # ~10 min at 1 thread on a loaded machine (600 steps, 2 seeds)
    python benchmarks/graphs_lcm.py --steps 200   # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results
from equikit.nn import LCMAggregation, group_slots, scatter

K = 10
TASKS = {"max": K, "second-max": K, "parity": 2}
AGGREGATORS = ("sum", "max", "gru", "lcm")
TEST_SIZES = (10, 25, 50, 100)


def labels(task: str, values: np.ndarray, index: np.ndarray, n_sets: int) -> np.ndarray:
    """Exact labels per set (plain numpy, one set at a time): the max, the largest value
    strictly below the max, or the parity of the number of odd elements."""
    out = np.empty(n_sets, dtype=np.int64)
    for s in range(n_sets):
        v = values[index == s]
        if task == "max":
            out[s] = v.max()
        elif task == "second-max":
            out[s] = v[v < v.max()].max()
        else:
            out[s] = int((v % 2 == 1).sum()) % 2
    return out


def _draw_set(task: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One multiset whose label is uniform-ish at every size (so that large sets are not
    trivially labelled K - 1): ``max``: a top value ``u`` uniform in ``[0, K)``, elements
    uniform in ``[0, u]``, one of them ``u``; ``second-max``: ``u`` uniform in ``[1, K)``, a
    runner-up ``l`` uniform in ``[0, u)``, one element each, the rest uniform over
    ``{0..l} + {u}``; ``parity``: elements uniform in ``[0, K)``."""
    if task == "max":
        u = int(rng.integers(0, K))
        v = rng.integers(0, u + 1, size)
        v[rng.integers(size)] = u
    elif task == "second-max":
        u = int(rng.integers(1, K))
        lo = int(rng.integers(0, u))
        pool = np.array([*range(lo + 1), u])
        v = pool[rng.integers(0, len(pool), size)]
        pos = rng.permutation(size)[:2]
        v[pos[0]], v[pos[1]] = u, lo
    else:
        v = rng.integers(0, K, size)
    return v


def sample(task: str, n_sets: int, sizes: tuple[int, int], rng: np.random.Generator):
    """``values (M,)``, ``index (M,)`` (set id of each element) and ``y (n_sets,)``."""
    size = rng.integers(sizes[0], sizes[1] + 1, n_sets)
    index = np.repeat(np.arange(n_sets), size)
    values = np.concatenate([_draw_set(task, int(n), rng) for n in size])
    return (torch.as_tensor(values), torch.as_tensor(index),
            torch.as_tensor(labels(task, values, index, n_sets)))


class GRUAggregation(nn.Module):
    """A GRU over each set in input order; the last valid hidden state (depth = set size)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, channels, batch_first=True)

    def forward(self, x, index, dim_size):
        slot, length = group_slots(index, dim_size)
        seq = x.new_zeros(dim_size, max(length, 1), x.shape[-1])
        seq[index, slot] = x
        out, _ = self.gru(seq)
        counts = torch.bincount(index, minlength=dim_size)
        return out[torch.arange(dim_size), (counts - 1).clamp(min=0)]


class SetModel(nn.Module):
    def __init__(self, aggregator: str, n_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.kind = aggregator
        self.embed = nn.Embedding(K, hidden)
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        if aggregator == "gru":
            self.agg = GRUAggregation(hidden)
        elif aggregator == "lcm":
            self.agg = LCMAggregation(hidden)
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_classes))

    def encode(self, values):
        return self.phi(self.embed(values))

    def forward(self, values, index, n_sets):
        h = self.encode(values)
        if self.kind in ("sum", "max"):
            pooled = scatter(h, index, n_sets, self.kind)
        else:
            pooled = self.agg(h, index, n_sets)
        return self.rho(pooled)


def train_one(task: str, aggregator: str, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SetModel(aggregator, TASKS[task])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    lo = 2
    for _ in range(steps):
        values, index, y = sample(task, 128, (lo, 10), rng)
        loss = nn.functional.cross_entropy(model(values, index, 128), y)
        if aggregator == "lcm":  # the paper's regularisers: towards an associative monoid
            h = model.encode(values)
            loss = loss + 0.1 * (model.agg.associativity_loss(h, 64) + model.agg.identity_loss(h))
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    test_rng = np.random.default_rng(10_000 + seed)
    acc = {}
    model.eval()
    with torch.no_grad():
        for size in (5, *TEST_SIZES):
            values, index, y = sample(task, 1000, (size, size), test_rng)
            acc[size] = float((model(values, index, 1000).argmax(-1) == y).float().mean())
    return {"task": task, "aggregator": aggregator, "seed": seed, "steps": steps,
            "train_seconds": round(train_s, 2), "accuracy": acc}


def depth(aggregator: str, size: int) -> int:
    """Sequential steps of the aggregation of one set of ``size`` elements."""
    if aggregator == "gru":
        return size
    if aggregator == "lcm":
        return math.ceil(math.log2(size))
    return 1


def table(rows: list[dict], seeds: list[int]) -> str:
    lines = ["| task | aggregator | acc V=5 (in range) | " + " | ".join(
        f"acc V={v}" for v in TEST_SIZES) + " | depth at V=100 | train s |",
        "|---|---|---|" + "---|" * len(TEST_SIZES) + "---|---|"]
    for task in TASKS:
        for agg in AGGREGATORS:
            rs = [r for r in rows if r["task"] == task and r["aggregator"] == agg]
            if not rs:
                continue

            def cell(size, rs=rs):
                a = np.array([r["accuracy"][size] for r in rs])
                return f"{a.mean():.3f}" + (f" +- {a.std():.3f}" if len(a) > 1 else "")
            lines.append(f"| {task} | {agg} | {cell(5)} | " + " | ".join(cell(v) for v in TEST_SIZES)
                         + f" | {depth(agg, 100)} | {np.mean([r['train_seconds'] for r in rs]):.1f} |")
    lines.append(f"\nSeeds {seeds}; mean +- std over seeds. Train sizes 2..10, chance accuracy "
                 f"{1 / K:.2f} (max, second-max), 0.5 (parity).")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 3.4))
    for ax, task in zip(axes, TASKS):
        for agg in AGGREGATORS:
            rs = [r for r in rows if r["task"] == task and r["aggregator"] == agg]
            if not rs:
                continue
            d = [depth(agg, v) for v in TEST_SIZES]
            a = [np.mean([r["accuracy"][v] for r in rs]) for v in TEST_SIZES]
            ax.plot(d, a, marker="o", label=agg)
            for di, ai, v in zip(d, a, TEST_SIZES):
                ax.annotate(str(v), (di, ai), fontsize=6, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("sequential depth at test size V (labels: V)")
        ax.set_title(task)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("test accuracy (trained on V <= 10)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment()
    rows = []
    t0 = time.perf_counter()
    for task in TASKS:
        for agg in AGGREGATORS:
            for seed in args.seeds:
                r = train_one(task, agg, args.steps, seed)
                rows.append(r)
                print(json.dumps(r), flush=True)
    env_end = environment()
    payload = {"benchmark": "graphs_lcm", "environment": env, "loadavg_end": env_end["loadavg"],
               "wall_seconds": round(time.perf_counter() - t0, 1), "steps": args.steps,
               "seeds": args.seeds, "test_sizes": list(TEST_SIZES), "results": rows,
               "note": "budgeted run: a fixed number of optimizer steps per model"}
    md = ("# LCM: multisets trained on V <= 10, tested up to V = 100\n\n"
          f"`python benchmarks/graphs_lcm.py --steps {args.steps} --seeds "
          f"{' '.join(map(str, args.seeds))}`; budgeted: {args.steps} Adam steps per model; "
          f"{env['threads']} thread(s), load average at start {env['loadavg']}, end "
          f"{env_end['loadavg']}; wall {payload['wall_seconds']} s.\n\n" + table(rows, args.seeds))
    out = Path(args.out)
    write_results("graphs_lcm", payload, md, out)
    plot(rows, out / "graphs_lcm.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
