"""GIN / GINE layers: equikit vs PyG's own ``GINConv`` / ``GINEConv`` on the same batch (issue 5).

Both layers share one MLP (PyG's wraps ours, as in ``tests/nn/test_graph_layers.py``), so they
compute the same function; the run checks that (max abs difference) before timing. Cases: a
molecule-like batch (many small graphs: rings with random chords, both directions) and two large
sparse graphs, float32, 64 and 128 channels. Phases: forward (no grad) and forward+backward
(gradients of ``sum(out)`` w.r.t. the node features and every parameter). Interleaved A B A B,
median of ``--repeats`` after warm-up; torch threads and load recorded (DESIGN §7).

Our ``GINConv`` (sum aggregation) runs the fused C kernel of ``equikit.nn._graph_native`` when it
compiled, with the edge rows (CSR) built once per ``edge_index`` and cached; the ``cold``
candidate clears that cache before every call, so it pays the CSR build each time (a new batch
per call, one layer per batch: the worst case).

    python benchmarks/graphs_gin_pyg.py --threads 1

Writes ``benchmarks/results/graphs_gin_pyg.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, write_results
from equikit.nn import GINConv, _graph_native

PROTOCOL = 2  # 2: with the cold candidate; --resume only continues a run of the same protocol
CASES = {  # name -> (graphs, nodes per graph, extra chords per graph)
    "molecules 256 x 24": (256, 24, 4),
    "graph 20k nodes": (1, 20_000, 40_000),
    "graph 100k nodes": (1, 100_000, 200_000),
}


def make_graph(graphs: int, n: int, chords: int, gen: torch.Generator) -> torch.Tensor:
    """``edge_index (2, E)`` of ``graphs`` disjoint rings of ``n`` nodes plus ``chords`` random
    chords each, every edge in both directions."""
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    src = torch.randint(0, n, (chords,), generator=gen)
    dst = (src + torch.randint(2, max(3, n - 1), (chords,), generator=gen)) % n
    one = torch.cat([ring, torch.stack([src, dst])], dim=1)
    one = torch.cat([one, one.flip(0)], dim=1)
    offsets = (torch.arange(graphs) * n).repeat_interleave(one.shape[1])
    return one.repeat(1, graphs) + offsets


def layers(channels: int, edge_dim: int | None):
    from torch_geometric import nn as pyg_nn

    torch.manual_seed(0)
    ours = GINConv(channels, channels, edge_dim=edge_dim)
    if edge_dim is None:
        ref = pyg_nn.GINConv(ours.mlp, eps=0.0)
    else:
        ref = pyg_nn.GINEConv(ours.mlp, eps=0.0, edge_dim=edge_dim)
        with torch.no_grad():
            ref.lin.weight.copy_(ours.edge.weight)
            ref.lin.bias.copy_(ours.edge.bias)
    return ours, ref


def phases(layer, x, edge_index, edge_attr, cold=False):
    args = (edge_index,) if edge_attr is None else (edge_index, edge_attr)
    xg = x.clone().requires_grad_(True)

    def forward():
        if cold:
            _graph_native.clear_cache()
        with torch.no_grad():
            layer(x, *args)

    def forward_backward():
        if cold:
            _graph_native.clear_cache()
        layer(xg, *args).sum().backward()
        xg.grad = None
        layer.zero_grad(set_to_none=True)

    return {"forward": forward, "forward_backward": forward_backward}


def run_case(name, channels, edge_dim, repeats) -> dict:
    graphs, n, chords = CASES[name]
    gen = torch.Generator().manual_seed(0)
    edge_index = make_graph(graphs, n, chords, gen)
    x = torch.randn(graphs * n, channels, generator=gen)
    edge_attr = None if edge_dim is None else torch.randn(edge_index.shape[1], edge_dim, generator=gen)
    ours, ref = layers(channels, edge_dim)
    args = (edge_index,) if edge_attr is None else (edge_index, edge_attr)
    with torch.no_grad():
        diff = float((ours(x, *args) - ref(x, *args)).abs().max())
    p_ours, p_ref = phases(ours, x, edge_index, edge_attr), phases(ref, x, edge_index, edge_attr)
    p_cold = phases(ours, x, edge_index, edge_attr, cold=True)
    times, cpu = {}, {}
    for phase in ("forward", "forward_backward"):
        cands = {"equikit": p_ours[phase], "equikit_cold": p_cold[phase], "pyg": p_ref[phase]}
        t = interleaved(cands, repeats=repeats, warmup=3)
        times[phase] = {k: v["median_s"] for k, v in t.items()}
        t = interleaved(cands, repeats=repeats, warmup=0, clock=time.thread_time)
        cpu[phase] = {k: v["median_s"] for k, v in t.items()}
    return {"case": name, "layer": "GINE" if edge_dim else "GIN", "channels": channels, "nodes": graphs * n,
            "edges": int(edge_index.shape[1]), "max_abs_diff": diff, "times": times, "thread_times": cpu}



def _cold(t: dict) -> str:
    return f"{t['pyg'] / t['equikit_cold']:.2f}" if "equikit_cold" in t else "-"


def table(payload) -> str:
    env = payload["env"]
    lines = ["# GIN / GINE: equikit vs PyG's GINConv / GINEConv (same MLP, same batch)", "",
             f"`python benchmarks/graphs_gin_pyg.py {' '.join(payload['argv'])}`; torch {env['torch']}, "
             f"torch_geometric {payload['pyg']}, {env['threads']} thread(s), {env['cpu']}, load {env['loadavg']} "
             f"-> {payload['env_end']['loadavg']}; float32; medians of {payload['repeats']} interleaved calls. "
             "`x` = PyG / equikit (> 1: ours faster); `cpu x`: the same ratio of the medians of this thread's "
             "CPU time per call (insensitive to other processes' load). "
             f"Fused native kernel: {payload.get('native', False)}; `cold`: ours with the edge-row (CSR) cache "
             "cleared before every call (the CSR built each time).", "",
             "| case | layer | C | nodes | edges | fwd ours ms | fwd PyG ms | x fwd | cpu x fwd | cpu x fwd cold | "
             "fwd+bwd ours ms | fwd+bwd PyG ms | x fwd+bwd | cpu x fwd+bwd | cpu x fwd+bwd cold | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        f, b = r["times"]["forward"], r["times"]["forward_backward"]
        cf, cb = r["thread_times"]["forward"], r["thread_times"]["forward_backward"]
        lines.append(f"| {r['case']} | {r['layer']} | {r['channels']} | {r['nodes']} | {r['edges']} | "
                     f"{1e3 * f['equikit']:.3f} | {1e3 * f['pyg']:.3f} | {f['pyg'] / f['equikit']:.2f} | "
                     f"{cf['pyg'] / cf['equikit']:.2f} | {_cold(cf)} | "
                     f"{1e3 * b['equikit']:.3f} | {1e3 * b['pyg']:.3f} | {b['pyg'] / b['equikit']:.2f} | "
                     f"{cb['pyg'] / cb['equikit']:.2f} | {_cold(cb)} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="graphs_gin_pyg")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run with the same arguments")
    args = ap.parse_args(argv)
    import torch_geometric

    torch.set_num_threads(args.threads)
    argv_list = sys.argv[1:] if argv is None else list(argv)
    payload = {"argv": argv_list, "env": environment(), "repeats": args.repeats,
               "pyg": torch_geometric.__version__, "native": _graph_native.available(), "protocol": PROTOCOL,
               "runs": []}
    old = args.out / f"{args.name}.json"
    if args.resume and old.exists():
        prev = json.loads(old.read_text())
        same = [a for a in prev["argv"] if a != "--resume"] == [a for a in argv_list if a != "--resume"]
        if same and prev.get("protocol") == PROTOCOL and prev.get("native") == payload["native"]:
            payload = prev
    done = {(r["case"], r["layer"], r["channels"]) for r in payload["runs"]}
    for name in args.cases:
        for channels in args.channels:
            for edge_dim in (None, 16):
                if (name, "GINE" if edge_dim else "GIN", channels) in done:
                    continue
                r = run_case(name, channels, edge_dim, args.repeats)
                payload["runs"].append(r)
                payload["env_end"] = environment()
                write_results(args.name, payload, table(payload), args.out)
                print(table(payload).splitlines()[-1], flush=True)
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
