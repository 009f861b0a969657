"""Set/graph layers (issue 5): how invariant each aggregator really is, and what each
GraphModel backbone costs.

1. Invariance of the aggregators under random permutations of the elements (float64,
   ``equivariance_error`` with 32 permutations, groups of 8 / 33 / 100 elements, 64
   channels): sum/mean/max/std/softmax (invariant up to rounding), the LSTM aggregator in
   sorted / input / random order, and the learnable commutative monoid (LCM) untrained and
   after ``--lcm-steps`` Adam steps on its associativity + identity regularisers.
2. Forward + backward time of ``GraphModel`` for every backbone on a batch of 32 random
   graphs (G(n=20, p=0.2)), hidden 64, 3 layers, float32, interleaved, median of 15 calls.

    python benchmarks/graphs_layers.py            # ~1-2 min at 1 thread
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import networkx as nx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved, write_results
from equikit.check import equivariance_error
from equikit.data.graph import GraphBatch, collate_graphs, from_networkx
from equikit.groups import NodePermutation
from equikit.models import GraphModel, GraphModelConfig
from equikit.models.graph import LAYERS
from equikit.nn import Aggregation, LCMAggregation, RecurrentAggregation, SoftmaxAggregation

C = 64


def aggregator_errors(lcm_steps: int) -> list[dict]:
    torch.manual_seed(0)
    lcm = LCMAggregation(C).double()
    trained = LCMAggregation(C).double()
    trained.load_state_dict(lcm.state_dict())
    opt = torch.optim.Adam(trained.parameters(), lr=3e-3)
    data = torch.randn(2048, C, dtype=torch.float64)
    for step in range(lcm_steps):
        opt.zero_grad()
        gen = torch.Generator().manual_seed(step)
        loss = trained.associativity_loss(data, 256, generator=gen) + trained.identity_loss(data[:256])
        loss.backward()
        opt.step()
    aggs = {
        "sum": Aggregation("sum"), "mean": Aggregation("mean"), "max": Aggregation("max"),
        "std": Aggregation("std"), "softmax": SoftmaxAggregation(C).double(),
        "lstm sorted": RecurrentAggregation(C, C, order="sorted").double(),
        "lstm input order": RecurrentAggregation(C, C, order="input").double(),
        "lstm random order": RecurrentAggregation(C, C, order="random").double(),
        "lcm untrained": lcm, f"lcm after {lcm_steps} regulariser steps": trained,
    }
    rows = []
    for size in (8, 33, 100):
        x = torch.randn(2 * size, C, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
        idx = torch.arange(2 * size) % 2
        act = NodePermutation(2 * size, nodes={"x": -2, "index": -1})
        for name, agg in aggs.items():
            rep = equivariance_error(lambda d, agg=agg: agg(d["x"], d["index"], 2), {"x": x, "index": idx},
                                     act, n_samples=32)
            # signal: how much the output moves between different random sets, on the same scale
            with torch.no_grad():
                outs = torch.stack([agg(torch.randn(2 * size, C, dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(1000 + s)), idx, 2)
                                    for s in range(8)])
            signal = ((outs - outs[:1]).abs().amax() / outs.abs().amax()).item()
            rows.append({"aggregator": name, "group_size": size, "rel_max": rep.rel_max,
                         "rel_mean": rep.rel_mean, "signal": signal})
            print(f"{name:32s} V={size:3d} rel_max={rep.rel_max:.2e} signal={signal:.2e}", flush=True)
    return rows


def model_times() -> list[dict]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for k in range(32):
        g = from_networkx(nx.gnp_random_graph(20, 0.2, seed=k))
        graphs.append(GraphBatch(x=torch.randn(20, 8, generator=gen), edge_index=g.edge_index,
                                 edge_attr=torch.randn(g.num_edges, 4, generator=gen)))
    batch = collate_graphs(graphs)
    models, cands = {}, {}
    for layer in LAYERS:
        edge_dim = 4 if layer in ("gin", "poly", "ppgn", "ign") else None
        cfg = GraphModelConfig(in_channels=8, out_channels=1, hidden=64, n_layers=3, layer=layer, edge_dim=edge_dim)
        model = models[layer] = GraphModel(cfg)
        b = batch if edge_dim else GraphBatch(x=batch.x, edge_index=batch.edge_index, batch=batch.batch,
                                              num_graphs=batch.num_graphs)

        def step(model=model, b=b):
            model.zero_grad()
            model(b).sum().backward()

        cands[layer] = step
    res = interleaved(cands, repeats=15, warmup=2)
    rows = []
    for layer in LAYERS:
        n_params = sum(p.numel() for p in models[layer].parameters())
        rows.append({"layer": layer, "median_ms": 1e3 * res[layer]["median_s"], "params": n_params})
        print(f"{layer:9s} {1e3 * res[layer]['median_s']:8.2f} ms  {n_params} params", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lcm-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()
    errors = aggregator_errors(args.lcm_steps)
    times = model_times()
    env_after = environment()
    md = ["# Set/graph layers: aggregator invariance and GraphModel cost", "",
          f"`python benchmarks/graphs_layers.py --threads {args.threads} --lcm-steps {args.lcm_steps}`; "
          f"torch {env['torch']}, {env['threads']} thread(s), load average {env['loadavg'][0]:.2f} "
          f"-> {env_after['loadavg'][0]:.2f} (shared machine: timings provisional), {env['cpu']}.", "",
          "## Invariance error under 32 random permutations (float64)", "",
          "`rel_max` of the checker; `signal`: the largest change of the output between 8 different "
          "random sets, relative to the output scale (an aggregator whose output barely depends on its "
          "input is trivially 'invariant').", "",
          "| aggregator | V = 8 rel_max / signal | V = 33 | V = 100 |", "|---|---|---|---|"]
    names = list(dict.fromkeys(r["aggregator"] for r in errors))
    for name in names:
        vals = {r["group_size"]: f"{r['rel_max']:.1e} / {r['signal']:.1e}" for r in errors if r["aggregator"] == name}
        md.append(f"| {name} | {vals[8]} | {vals[33]} | {vals[100]} |")
    md += ["", "## GraphModel forward + backward, 32 graphs x 20 nodes, hidden 64, 3 layers (float32)", "",
           "| backbone | median ms | parameters |", "|---|---|---|"]
    md += [f"| {r['layer']} | {r['median_ms']:.2f} | {r['params']} |" for r in times]
    write_results("graphs_layers", {"environment": env, "environment_after": env_after,
                                    "aggregator_invariance": errors, "model_times": times}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
