"""Peak memory of SPEN (k-hop ego subgraphs) vs a global 2nd-order network (PPGN) as graphs
grow, n = 20 ... 500 (SPEN's claim: memory linear in n on bounded-degree graphs, where a
2nd-order network needs n^2).

How it is measured: one fresh subprocess per (model, n). The child builds a random 3-regular
graph (networkx, seed 0) and the model (hidden 32, 2 layers, float32; SPEN with k = 2 hops,
PPGN = 2 :class:`~equikit.nn.PPGNBlock` on the dense ``(1, n, n, 2)`` input [adjacency,
node features on the diagonal]), then resets the kernel's peak-RSS counter
(``echo 5 > /proc/self/clear_refs``), reads ``VmRSS`` from ``/proc/self/status``, runs one
training step (forward, sum readout, backward) and reads ``VmHWM`` (the peak). The reported
number is ``VmHWM - VmRSS``: resident memory the step needed above what the process already
held (tensors, autograd buffers, allocator growth). No warm-up step: after one, glibc keeps
the freed blocks and the second step's growth would hide most of its footprint. Slopes are
least-squares fits of ``log(peak) ~ slope * log(n)`` over n >= 100 (below that the
allocator's page granularity dominates).

    python benchmarks/graphs_memory.py           # ~2 min at 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results

SIZES = (20, 50, 100, 200, 300, 400, 500)
MODELS = ("spen", "ppgn")
HIDDEN, LAYERS, HOPS = 32, 2, 2


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def child(model_name: str, n: int) -> dict:
    import networkx as nx
    import torch

    from equikit.nn import SPEN, PPGNBlock, ego_subgraphs, pool_order2

    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = nx.random_regular_graph(3, n, seed=0)
    e = torch.tensor(list(g.edges), dtype=torch.long).T
    edge_index = torch.cat([e, e.flip(0)], 1)
    x = torch.ones(n, 1)
    if model_name == "spen":
        model = SPEN(1, HIDDEN, HIDDEN, n_layers=LAYERS, k=HOPS)
        ego = ego_subgraphs(edge_index, n, HOPS)

        def step():
            model(x, edge_index, ego).sum().backward()
        extra = {"pairs": ego.num_pairs, "subgraph_edges": int(ego.edge_index.shape[1])}
    else:
        blocks = torch.nn.ModuleList([PPGNBlock(2, HIDDEN)] + [PPGNBlock(HIDDEN, HIDDEN) for _ in range(LAYERS - 1)])
        adj = torch.zeros(1, n, n)
        adj[0, edge_index[0], edge_index[1]] = 1.0
        dense = torch.stack([adj, torch.diag_embed(x.T)], -1)  # (1, n, n, 2)

        def step():
            h = dense
            for blk in blocks:
                h = blk(h)
            pool_order2(h).sum().backward()
        extra = {"pairs": n * n}
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS counter
    before = _status()["VmRSS"]
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    peak = _status()["VmHWM"]
    return {"model": model_name, "n": n, "rss_before": before, "rss_peak": peak,
            "step_bytes": peak - before, "step_seconds": round(seconds, 4), **extra}


def fit_slope(ns, values, n_min=100) -> float | None:
    pts = [(n, v) for n, v in zip(ns, values) if n >= n_min and v > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "N"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--plot-only", action="store_true", help="redraw the png from the json")
    args = parser.parse_args(argv)
    if args.plot_only:
        payload = json.loads((Path(args.out) / "graphs_memory.json").read_text())
        plot(payload["results"], payload["slopes_n_ge_100"], Path(args.out) / "graphs_memory.png")
        return 0
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    import torch

    torch.set_num_threads(1)  # as in the children (they also get OMP_NUM_THREADS=1)
    env = environment()
    t0 = time.perf_counter()
    rows = []
    for n in args.sizes:
        for m in MODELS:  # interleaved over sizes
            res = subprocess.run([sys.executable, __file__, "--child", m, str(n)], capture_output=True,
                                 text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    slopes = {}
    for m in MODELS:
        rs = [r for r in rows if r["model"] == m]
        base = rs[0]["step_bytes"]  # the smallest n: allocator / fixed overhead of a step
        slopes[m] = {"memory": fit_slope([r["n"] for r in rs], [r["step_bytes"] for r in rs]),
                     "memory_above_smallest_n": fit_slope([r["n"] for r in rs[1:]],
                                                          [r["step_bytes"] - base for r in rs[1:]]),
                     "time": fit_slope([r["n"] for r in rs], [r["step_seconds"] for r in rs])}
    env_end = environment()
    payload = {"benchmark": "graphs_memory", "environment": env, "loadavg_end": env_end["loadavg"],
               "wall_seconds": round(time.perf_counter() - t0, 1), "graph": "random 3-regular (networkx, seed 0)",
               "hidden": HIDDEN, "layers": LAYERS, "spen_hops": HOPS, "dtype": "float32",
               "measure": "VmHWM - VmRSS around the first training step, peak counter reset "
                          "via /proc/self/clear_refs; one subprocess per point",
               "results": rows, "slopes_n_ge_100": slopes}
    lines = ["| n | SPEN step MB | PPGN step MB | PPGN / SPEN | SPEN pairs | SPEN s | PPGN s |",
             "|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        s = next(r for r in rows if r["model"] == "spen" and r["n"] == n)
        p = next(r for r in rows if r["model"] == "ppgn" and r["n"] == n)
        ratio = p["step_bytes"] / s["step_bytes"] if s["step_bytes"] > 0 else float("nan")
        lines.append(f"| {n} | {s['step_bytes'] / 2**20:.2f} | {p['step_bytes'] / 2**20:.2f} | {ratio:.1f} | "
                     f"{s['pairs']} | {s['step_seconds']:.3f} | {p['step_seconds']:.3f} |")

    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}"
    md = ("# Peak memory: SPEN vs PPGN (2nd order) on random 3-regular graphs\n\n"
          f"`python benchmarks/graphs_memory.py`; hidden {HIDDEN}, {LAYERS} layers, SPEN k = {HOPS}, float32, "
          f"one training step; memory = peak RSS minus RSS before the step (fresh subprocess per point, "
          f"peak counter reset just before the step, no warm-up). {env['threads']} thread(s); load average at start "
          f"{env['loadavg']}, end {env_end['loadavg']} (shared machine: times are provisional).\n\n"
          + "\n".join(lines) + "\n\n"
          f"Log-log slopes over n >= 100: memory SPEN {fmt(slopes['spen']['memory'])}, PPGN "
          f"{fmt(slopes['ppgn']['memory'])}; of the memory above the smallest n's (fixed overhead removed) SPEN "
          f"{fmt(slopes['spen']['memory_above_smallest_n'])}, PPGN {fmt(slopes['ppgn']['memory_above_smallest_n'])}; "
          f"step time SPEN {fmt(slopes['spen']['time'])}, PPGN "
          f"{fmt(slopes['ppgn']['time'])}.\n")
    out = Path(args.out)
    write_results("graphs_memory", payload, md, out)
    plot(rows, slopes, out / "graphs_memory.png")
    print(md)
    return 0


def plot(rows, slopes, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for m, label in (("spen", "SPEN (k=2 ego nets)"), ("ppgn", "PPGN (dense 2nd order)")):
        rs = [r for r in rows if r["model"] == m]
        ns = [r["n"] for r in rs]
        axes[0].loglog(ns, [max(r["step_bytes"], 1) / 2**20 for r in rs], "o-",
                       label=f"{label}, slope {slopes[m]['memory'] or float('nan'):.2f}")
        axes[1].loglog(ns, [r["step_seconds"] for r in rs], "o-",
                       label=f"{label}, slope {slopes[m]['time'] or float('nan'):.2f}")
    axes[0].set_ylabel("peak memory of a training step (MB)")
    axes[1].set_ylabel("step time (s, loaded machine)")
    ns = sorted({r["n"] for r in rows})
    for ax in axes:
        ax.minorticks_off()
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("nodes n (random 3-regular graph)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
