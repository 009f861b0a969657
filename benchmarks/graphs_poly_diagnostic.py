"""Why the polynomial-feature GNN (``poly``: GINE on atom/bond features plus the equivariant
polynomial features of :class:`~equikit.nn.PolynomialFeatures`) trails plain GIN on the
molecules: (1) the scale of each polynomial feature on the training molecules next to the
0/1 atom and bond features; (2) short trainings under the molecules protocol (hidden 64, 3
layers, Adam 1e-3 with the cosine schedule, random batches of 32, best-validation epoch)
of GIN, poly (degree 4), poly with fewer features (degree 2), and poly with the features
standardised (``poly_norm=True``), recording the final train loss next to the best
validation loss and the test MAE. GIN and poly themselves are read from the molecules
protocol's rows (``graphs_molecules_rows.jsonl``: the same runs, seed 0, same folds) unless
listed in ``--variants``.

    python benchmarks/graphs_poly_diagnostic.py --epochs 20 --folds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results
from equikit.cli.train_graph import load_graph_data, train_graph
from equikit.data.graph import collate_graphs, to_dense_adjacency, to_dense_batch
from equikit.nn import PolynomialFeatures
from equikit.train import TrainConfig

#: variant -> (train_graph model, model_kwargs)
VARIANTS = {"gin": ("gin", {}), "poly": ("poly", {}), "poly-deg2": ("poly", {"poly_degree": 2}),
            "poly-norm": ("poly", {"poly_norm": True})}


def feature_scale(graphs) -> list[dict]:
    """Mean, std and max over the real nodes (node features) / over the edges (pair features)
    of every polynomial feature, log-mapped as the model sees it and raw."""
    batch = collate_graphs(graphs)
    adj = to_dense_adjacency(batch.edge_index, batch.batch, num_graphs=batch.num_graphs)
    _, mask = to_dense_batch(batch.x, batch.batch, batch.num_graphs)
    out = []
    for log in (True, False):
        feats = PolynomialFeatures(4, log=log)
        node, pair = feats(adj, mask)
        node_v = node[mask]
        pair_v = pair[adj > 0]
        for kind, names, vals in (("node", feats.node_names, node_v), ("edge", feats.pair_names, pair_v)):
            for k, name in enumerate(names):
                v = vals[:, k].double()
                out.append({"kind": kind, "feature": name, "log": log, "mean": float(v.mean()),
                            "std": float(v.std()), "max": float(v.max())})
    return out


def train(variant: str, data_name: str, data, seed: int, fold: int, epochs: int) -> dict:
    model, kwargs = VARIANTS[variant]
    cfg = TrainConfig(seed=seed, epochs=epochs, lr=1e-3, batch_size=32, eval_every=1, verbose=False,
                      progress=False, extra={"model": model, "data": data_name, "hidden": 64, "n_layers": 3,
                                             "fold": fold, "schedule": "cosine", "model_kwargs": kwargs})
    res = train_graph(cfg, data=data)
    return {"variant": variant, "data": data_name, "seed": seed, "fold": fold, "best_epoch": res["best_epoch"],
            "train_loss_last": res["last_metrics"]["train_loss"], "val_loss_best": res["val_loss"],
            "val_loss_last": res["last_metrics"]["val_loss"], "test_mae": res["test_mae"],
            "seconds": res["seconds"]}


def reference(path: Path, variant: str, data_name: str, fold: int, epochs: int) -> dict | None:
    """The molecules protocol's row of ``variant`` (gin / poly), seed 0, as a diagnostic row."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if (r["model"], r["data"], r["seed"], r["fold"], r["epochs"]) == (variant, data_name, 0, fold, epochs) \
                and r.get("sub_batches", 1) == 1 and r.get("setting", {}).get("schedule") == "cosine":
            c = r["curve"]
            return {"variant": variant, "data": data_name, "seed": 0, "fold": fold, "best_epoch": r["best_epoch"],
                    "train_loss_last": c["train_loss"][-1], "val_loss_best": min(c["val_loss"]),
                    "val_loss_last": c["val_loss"][-1], "test_mae": r["test_mae"], "seconds": r["seconds"],
                    "from": path.name}
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", type=int, default=3, help="FreeSolv folds 0..FOLDS-1")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["poly-deg2", "poly-norm"],
                        help="variants to train here (gin and poly are otherwise read from --reference)")
    parser.add_argument("--reference", default=str(RESULTS / "graphs_molecules_rows.jsonl"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment()
    t0 = time.perf_counter()
    sol = load_graph_data("solubility")
    scale = feature_scale(sol.train)
    atom = collate_graphs(sol.train)
    rows = []
    for data_name, fold in [("solubility", 0)] + [("freesolv", f) for f in range(args.folds)]:
        data = sol if data_name == "solubility" else load_graph_data("freesolv", fold=fold)
        for v in VARIANTS:
            if v in args.variants:
                rows.append(train(v, data_name, data, 0, fold, args.epochs))
            elif (ref := reference(Path(args.reference), v, data_name, fold, args.epochs)) is not None:
                rows.append(ref)
            else:
                continue
            print(rows[-1], file=sys.stderr, flush=True)
    env_end = environment()
    payload = {"benchmark": "graphs_poly_diagnostic", "environment": env, "loadavg_end": env_end["loadavg"],
               "epochs": args.epochs, "folds": args.folds, "wall_seconds": round(time.perf_counter() - t0, 1),
               "atom_features": {"dim": int(atom.x.shape[1]), "max": float(atom.x.max()),
                                 "mean_row_sum": float(atom.x.sum(1).mean())},
               "feature_scale": scale, "rows": rows}
    lines = ["| data | variant | best epoch | final train loss | best val loss | last val loss | test MAE |",
             "|---|---|---|---|---|---|---|"]
    for d in ("solubility", "freesolv"):
        for v in VARIANTS:
            rs = [r for r in rows if r["data"] == d and r["variant"] == v]
            if not rs:
                continue
            mean = {k: np.mean([r[k] for r in rs]) for k in ("best_epoch", "train_loss_last", "val_loss_best",
                                                               "val_loss_last", "test_mae")}
            lines.append(f"| {d} (n={len(rs)}) | {v} | {mean['best_epoch']:.1f} | {mean['train_loss_last']:.3f} | "
                         f"{mean['val_loss_best']:.3f} | {mean['val_loss_last']:.3f} | {mean['test_mae']:.3f} |")
    scale_lines = ["| kind | feature | log1p: mean | std | max | raw: mean | std | max |",
                   "|---|---|---|---|---|---|---|---|"]
    for r in [r for r in scale if r["log"]]:
        raw = next(x for x in scale if not x["log"] and x["kind"] == r["kind"] and x["feature"] == r["feature"])
        scale_lines.append(f"| {r['kind']} | {r['feature']} | {r['mean']:.2f} | {r['std']:.2f} | {r['max']:.2f} | "
                           f"{raw['mean']:.1f} | {raw['std']:.1f} | {raw['max']:.0f} |")
    md = ("# Why poly trails GIN on the molecules: a diagnostic\n\n"
          f"`python benchmarks/graphs_poly_diagnostic.py --epochs {args.epochs} --folds {args.folds}"
          f"{'' if args.variants == ['poly-deg2', 'poly-norm'] else ' --variants ' + ' '.join(args.variants)}`: "
          "hidden 64, 3 layers, Adam 1e-3 with the cosine schedule, random batches of 32, seed 0; solubility "
          f"(regression, one run) and FreeSolv folds 0..{args.folds - 1} (means over folds). Losses are the MSE of "
          "the standardised target (train loss: mean over the last epoch's batches, in train mode). "
          f"Trained here: {', '.join(args.variants)}; the other rows are the same runs of the molecules protocol "
          f"(`{Path(args.reference).name}`). "
          f"{env['threads']} thread, load average at start {env['loadavg']}, end {env_end['loadavg']}; "
          f"wall {payload['wall_seconds']} s.\n\n" + "\n".join(lines) + "\n\n"
          f"Polynomial features on the {len(sol.train)} solubility training molecules (node features over atoms, "
          f"pair features over bonds), as the model sees them (`log1p`) and raw; the atom features beside them are "
          f"{atom.x.shape[1]} one-hot columns (max {float(atom.x.max()):.0f}, "
          f"{float(atom.x.sum(1).mean()):.1f} ones per atom):\n\n" + "\n".join(scale_lines) + "\n")
    write_results("graphs_poly_diagnostic", payload, md, Path(args.out))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
