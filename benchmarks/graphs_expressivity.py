"""Expressivity of graph models: which non-isomorphic pairs each model tells apart, beside the
1-WL oracle, and how well it learns CSL classification and substructure counting.

Part 1 (random initialisation, float64, no training): for every pair of
``equikit.data.graph_sets.expressivity_pairs`` plus two control families, a model
distinguishes the pair when its graph outputs (``out_channels = 16``) differ by more than 100x
the numerical noise measured on 4 random node relabellings of each graph
(``graph_sets.separation``). Families:

- ``srg`` Shrikhande vs 4x4 rook (SRG(16,6,2,2)); ``csl`` C(41,[1,2]) vs each other CSL class;
  ``paley-vs-regular``, ``paley-vs-srg`` (P(25) vs a Latin-square graph, same SRG parameters);
  ``regular`` random d-regular pairs; ``atlas-1wl`` all 26 1-WL-equivalent pairs of the atlas
  (1..7 nodes): all of these are 1-WL-equivalent and non-isomorphic;
- controls: ``paley-copy`` (isomorphic: nobody may separate them) and ``atlas-control``
  (same node and edge counts, 1-WL separates them: every model should).

Models: ``GraphModel`` backbones gin, gcn, ppgn, spen (k = 2 hops), spen-k1 (k = 1) and poly.

Part 2 (trained): ``equikit.cli.train_graph.train_graph`` on CSL (fold 0) and on the three
counting sets; test accuracy / MAE at the best validation epoch. Each run is stopped either by a
wall-clock budget (``--budget-s``, the default) or, with ``--epochs N``, after exactly ``N``
epochs for every model (``--count-epochs`` for the counting sets, default ``N``), so slow
models (PPGN, SPEN) get the same number of epochs as fast ones.

    python benchmarks/graphs_expressivity.py                 # ~10 min at 1 thread
    python benchmarks/graphs_expressivity.py --budget-s 5    # quick look
    python benchmarks/graphs_expressivity.py --epochs 60 --count-epochs 2 --tag epochs
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results
from equikit.cli.train_graph import train_graph
from equikit.data import graph_sets as gs
from equikit.data.graph import collate_graphs
from equikit.models.graph import GraphModel, GraphModelConfig
from equikit.train import TrainConfig

MODELS = ("gin", "gcn", "ppgn", "spen", "poly")
#: random-init variants of part 1: name -> (GraphModel layer, extra config)
VARIANTS = {"gin": ("gin", {}), "gcn": ("gcn", {}), "ppgn": ("ppgn", {}), "spen": ("spen", {}),
            "spen-k1": ("spen", {"spen_k": 1}), "poly": ("poly", {})}
FAMILIES = ("srg", "csl", "paley-vs-regular", "paley-vs-srg", "regular", "atlas-1wl", "paley-copy",
            "atlas-control")
TRAINED_DATA = ("csl", "counting-triangle", "counting-4cycle", "counting-3star")


def control_pairs(n_pairs: int = 20, seed: int = 0) -> list[gs.GraphPair]:
    """Atlas pairs with equal node and edge counts that 1-WL separates (GIN must too)."""
    rng = np.random.default_rng(seed)
    atlas = [g for g in nx.graph_atlas_g() if 6 <= g.number_of_nodes() <= 7]
    by_nm: dict[tuple[int, int], list] = {}
    for g in atlas:
        by_nm.setdefault((g.number_of_nodes(), g.number_of_edges()), []).append(g)
    groups = [v for v in by_nm.values() if len(v) >= 2]
    out = []
    while len(out) < n_pairs:
        grp = groups[rng.integers(len(groups))]
        a, b = rng.choice(len(grp), 2, replace=False)
        if not gs.wl_equivalent(grp[a], grp[b]):
            out.append(gs.GraphPair(f"control-{len(out)}", "atlas-control", grp[a], grp[b], False))
    return out


def random_model(name: str, seed: int = 0) -> GraphModel:
    torch.manual_seed(seed)
    layer, extra = VARIANTS[name]
    cfg = GraphModelConfig(in_channels=1, out_channels=16, hidden=32, n_layers=4, layer=layer, **extra)
    return GraphModel(cfg).double().eval()


def embedder(model):
    def embed(graphs):
        with torch.no_grad():
            return model(collate_graphs(graphs))
    return embed


def part1(pairs) -> tuple[list[dict], dict]:
    rows, seconds = [], {}
    wl = {p.name: gs.wl_equivalent(p.first, p.second) for p in pairs}
    for name in VARIANTS:
        model = random_model(name)
        t0 = time.perf_counter()
        for p in pairs:
            sep = gs.separation(embedder(model), p.first, p.second, dtype=torch.float64)
            rows.append({"model": name, "pair": p.name, "family": p.family, "isomorphic": p.isomorphic,
                         "wl_equivalent": wl[p.name], "distinguished": sep.distinguished,
                         "distance": sep.distance, "noise": sep.noise, "threshold": sep.threshold})
        seconds[name] = round(time.perf_counter() - t0, 2)
        print(f"part 1: {name} done in {seconds[name]} s", file=sys.stderr, flush=True)
    for p in pairs:
        rows.append({"model": "1-WL", "pair": p.name, "family": p.family, "isomorphic": p.isomorphic,
                     "wl_equivalent": wl[p.name], "distinguished": not wl[p.name]})
    return rows, seconds


def part2(budget_s: float, seed: int, root, epochs: int | None = None, count_epochs: int | None = None,
          data_names=TRAINED_DATA) -> list[dict]:
    """Train every model on every set: ``epochs`` (``count_epochs`` on the counting sets) epochs
    each when given, else up to 1000 epochs stopped by ``budget_s`` seconds of wall clock."""
    out = []
    for data, name in itertools.product(data_names, MODELS):
        n_epochs = (count_epochs or epochs) if data.startswith("counting") else epochs
        cfg = TrainConfig(seed=seed, epochs=n_epochs or 1000, lr=1e-3, batch_size=32, eval_every=1,
                          budget_s=None if n_epochs else budget_s,
                          verbose=False, progress=False,
                          extra={"model": name, "data": data, "hidden": 32, "n_layers": 4})
        res = train_graph(cfg, root=root)
        row = {"model": name, "data": data, "epochs": res["epochs"], "seconds": res["seconds"],
               **{k: v for k, v in res.items() if k.startswith("test_") and k != "test_seconds"}}
        out.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def _cell(rows2, m, d, key):
    r = [x for x in rows2 if x["model"] == m and x["data"] == d]
    return f"{r[0][key]:.3f}" if r else "-"


def tables(rows1, rows2, families) -> str:
    names = ["1-WL", *VARIANTS]
    lines = ["| family (pairs) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for fam in families:
        fr = [r for r in rows1 if r["family"] == fam]
        n = len([r for r in fr if r["model"] == "1-WL"])
        if not n:
            continue
        cells = [f"{sum(r['distinguished'] for r in fr if r['model'] == m)}/{n}" for m in names]
        lines.append(f"| {fam} ({n}) | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    if rows2:
        lines = ["| model | CSL test acc | triangle MAE | 4-cycle MAE | 3-star MAE | epochs (csl / tri / 4cyc / "
                 "star) |", "|---|---|---|---|---|---|"]
        for m in MODELS:
            epochs = [next((str(x["epochs"]) for x in rows2 if x["model"] == m and x["data"] == d), "-")
                      for d in TRAINED_DATA]
            lines.append(f"| {m} | {_cell(rows2, m, 'csl', 'test_acc')} | "
                         + " | ".join(_cell(rows2, m, d, "test_mae") for d in TRAINED_DATA[1:])
                         + " | " + " / ".join(epochs) + " |")
        md += "\n" + "\n".join(lines) + "\n"
    return md


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=20.0, help="wall-clock seconds per trained run")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every model exactly EPOCHS epochs (no wall-clock budget)")
    parser.add_argument("--count-epochs", type=int, default=None, help="epochs on the counting sets (default --epochs)")
    parser.add_argument("--data", nargs="+", default=list(TRAINED_DATA), choices=TRAINED_DATA,
                        help="trained sets of part 2")
    parser.add_argument("--tag", default="", help="write graphs_expressivity<_TAG>.{json,md}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--root", default=None, help="data dir")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment()
    t0 = time.perf_counter()
    pairs = gs.expressivity_pairs(seed=args.seed) + control_pairs(seed=args.seed)
    rows1, seconds1 = part1(pairs)
    if args.count_epochs and not args.epochs:
        parser.error("--count-epochs needs --epochs")
    for name in ("epochs", "count_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    rows2 = [] if args.skip_training else part2(args.budget_s, args.seed, args.root, args.epochs,
                                                args.count_epochs, args.data)
    env_end = environment()
    # the claims this benchmark checks, evaluated on the rows
    mp = [r for r in rows1 if r["model"] in ("gin", "gcn") and not r["isomorphic"]]
    checks = {
        "message passing fails exactly where 1-WL fails": all(r["distinguished"] == (not r["wl_equivalent"])
                                                            for r in mp),
        "no model separates isomorphic copies": not any(r["distinguished"] for r in rows1
                                                        if r["isomorphic"] and r["model"] != "1-WL"),
        **{f"{m} goes beyond 1-WL": any(r["distinguished"] for r in rows1 if r["model"] == m and r["wl_equivalent"]
                                        and not r["isomorphic"]) for m in ("ppgn", "spen", "spen-k1", "poly")},
    }
    payload = {"benchmark": "graphs_expressivity", "environment": env, "loadavg_end": env_end["loadavg"],
               "wall_seconds": round(time.perf_counter() - t0, 1), "part1_seconds": seconds1,
               "budget_s_per_trained_run": None if args.skip_training or args.epochs else args.budget_s,
               "epochs": args.epochs, "count_epochs": args.count_epochs or args.epochs, "trained_data": args.data,
               "seed": args.seed,
               "threshold": "100 x max(permutation noise, eps * scale), float64, 4 relabellings per graph",
               "checks": checks, "pairs": rows1, "trained": rows2}
    if args.epochs:
        cmd = f"--epochs {args.epochs} --count-epochs {args.count_epochs or args.epochs} --data {' '.join(args.data)}"
        stop = (f"Trained runs are epoch-based: every model trains {args.epochs} epochs on CSL and "
                f"{args.count_epochs or args.epochs} on the counting sets (no wall-clock budget; shared, loaded "
                "machine, so the seconds in the json are provisional)")
    else:
        cmd = f"--budget-s {args.budget_s}"
        stop = (f"Trained runs are budgeted ({args.budget_s} s of wall clock each on a shared, loaded machine): a "
                "lower bound on what the models reach, not converged numbers")
    if args.tag:
        cmd += f" --tag {args.tag}"
    md = ("# Expressivity: pairs distinguished (random init) and trained CSL / counting\n\n"
          f"`python benchmarks/graphs_expressivity.py {cmd}`; models hidden 32, 4 layers "
          f"(GraphModel defaults otherwise: SPEN k = 2, polynomial features degree 4), float64 for part 1; "
          f"{env['threads']} thread(s), load average at start {env['loadavg']}, end {env_end['loadavg']}; "
          f"wall {payload['wall_seconds']} s. {stop}.\n\n"
          "A model distinguishes a pair when its outputs differ by more than 100x the noise measured on node "
          "relabellings of the same graphs. All families except the two controls are 1-WL-equivalent and "
          "non-isomorphic.\n\n" + tables(rows1, rows2, FAMILIES)
          + "\nChecks: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) + ".\n")
    write_results("graphs_expressivity" + (f"_{args.tag}" if args.tag else ""), payload, md, Path(args.out))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
