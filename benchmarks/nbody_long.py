"""Charged n-body, long runs at the published protocol (Satorras et al. 2021: Adam lr 5e-4,
weight decay 1e-12, batch 100, EGNN hidden 64 x 4 layers, 3000 training simulations, test
MSE of the best validation epoch), several seeds trained round-robin in pieces of
``--chunk-epochs`` epochs so that all seeds advance together and a run stopped at any time
leaves comparable seeds.

Each piece is ``equikit.train.nbody.train_nbody`` resumed from the seed's checkpoint with a
larger ``max_steps`` (the loop resumes bit for bit, so the pieces make the same run as one
uninterrupted call). Budgeted in epochs, not wall clock: ``--rounds`` x ``--chunk-epochs``;
touch ``<runs>/STOP`` to end after the running round. Results are re-rendered after every
round from the run folders:

    python benchmarks/nbody_long.py --models egnn --seeds 0 1 2 --chunk-epochs 20 --rounds 50
    python benchmarks/nbody_long.py --models egnn --seeds 0 1 2 --render-only

writes ``benchmarks/results/nbody_long.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results
from equikit.data.nbody import PROTOCOL_TRAIN_SAMPLES, NBodyDataset
from equikit.train import TrainConfig
from equikit.train.nbody import NBODY_PUBLISHED, load_nbody_splits, nbody_settings, train_nbody

MODEL_KWARGS = {"egnn": {"hidden": 64, "n_layers": 4}, "gnn": {"hidden": 64, "n_layers": 4},
                "ponita": {"hidden": 32, "basis": 32, "n_layers": 4, "n_orientations": 12}}
TARGET_TOLERANCE = {"egnn": 0.10, "ponita": 0.15}  # issue #8: within 10% / 15% of the published MSE


def config(model: str, seed: int, args, max_steps: int | None) -> TrainConfig:
    return TrainConfig(seed=seed, epochs=args.epochs, lr=5e-4, weight_decay=1e-12, batch_size=100,
                       max_steps=max_steps, eval_every=args.eval_every, patience=args.patience,
                       checkpoint_every=args.eval_every, progress=False, verbose=False,
                       extra={"model": model, "model_kwargs": MODEL_KWARGS[model], "n_val_eval": None,
                              "device": args.device})


def read_curve(run: Path) -> list[dict]:
    if not (run / "metrics.csv").is_file():
        return []
    with open(run / "metrics.csv") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def extrapolate(curve: list[dict], target: float) -> dict:
    """Power law ``val = a * epoch^b`` fitted (least squares in log-log) to the second half of
    the validation curve; the epoch where it would reach ``target`` (None if not decreasing),
    or, when the curve has reached it, the first epoch that did (``reached``)."""
    pts = [(r["epoch"], r["val_loss"]) for r in curve if "val_loss" in r and r["epoch"] > 0]
    hit = [e for e, v in pts if v <= target]
    if hit:
        return {"slope": None, "epochs_to_target": hit[0], "reached": True}
    pts = pts[len(pts) // 2 :]
    if len(pts) < 3:
        return {"slope": None, "epochs_to_target": None, "reached": False}
    xs, ys = [math.log(e) for e, _ in pts], [math.log(v) for _, v in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    return {"slope": b, "epochs_to_target": math.exp((math.log(target) - a) / b) if b < 0 else None,
            "reached": False}


def collect(args) -> dict:
    runs, agg = [], {}
    for m in args.models:
        rows = []
        for s in args.seeds:
            run = Path(args.runs) / f"{m}-s{s}"
            if not (run / "summary.json").is_file():
                continue
            summ = json.loads((run / "summary.json").read_text())
            curve = read_curve(run)
            row = {"model": m, "seed": s, "epochs": summ["epochs"], "steps": summ["steps"],
                   "seconds": summ["seconds"], "best_epoch": summ["best_epoch"], "val_mse": summ.get("val_mse"),
                   "test_mse": summ.get("test_mse"), "stop_reason": summ["stop_reason"],
                   "seconds_per_epoch": summ["seconds"] / max(summ["epochs"], 1), "curve": curve,
                   "extrapolation": extrapolate(curve, NBODY_PUBLISHED[m] * (1 + TARGET_TOLERANCE.get(m, 0.1)))}
            rows.append(row)
        runs += rows
        if rows:
            tests = [r["test_mse"] for r in rows]
            agg[m] = {"n_seeds": len(rows), "test_mse_mean": statistics.fmean(tests),
                      "test_mse_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                      "epochs": [r["epochs"] for r in rows],
                      "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
                      "seconds_per_epoch_median": statistics.median(r["seconds_per_epoch"] for r in rows),
                      "published": NBODY_PUBLISHED[m]}
    return {"runs": runs, "aggregate": agg}


def render(payload: dict, out_dir: Path) -> None:
    agg, runs = payload["aggregate"], payload["runs"]
    loads = payload.get("loadavg_rounds") or [[0.0]]
    lo, hi = min(min(x) for x in loads), max(max(x) for x in loads)
    lines = [
        "# Charged n-body, long runs at the published protocol",
        "",
        "Adam lr 5e-4, weight decay 1e-12, batch 100, 3000 training simulations, frame 30 -> 40; validation on "
        f"all 2000 validation simulations every {payload['eval_every']} epochs; test MSE (all 2000 test "
        f"simulations) for the weights of the best validation evaluation. Seeds trained round-robin in "
        f"pieces of {payload['chunk_epochs']} epochs (resumed from checkpoints, exact). 1 torch thread, "
        f"{payload['environment']['cpu']}, {payload['environment']['cores']} cores shared with other jobs (1-min "
        f"load average {lo:.1f}-{hi:.1f} during the rounds): the timings are provisional. Trained on: "
        f"{payload['environment'].get('device', 'cpu') if payload.get('device', 'cpu') != 'cpu' else 'the CPU'}; "
        f"model sizes: {json.dumps(payload.get('model_kwargs', {}))}.",
        "",
        "| model | seeds | test MSE (mean ± std) | published | ours / published | epochs per seed | "
        "train time per seed (s) | s / epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, a in agg.items():
        pub = a["published"]
        lines.append(f"| {m} | {a['n_seeds']} | {a['test_mse_mean']:.4f} ± {a['test_mse_std']:.4f} | {pub} | "
                     f"{a['test_mse_mean'] / pub:.2f} | {', '.join(str(e) for e in a['epochs'])} | "
                     f"{a['seconds_mean']:.0f} | {a['seconds_per_epoch_median']:.2f} |")
    lines += ["", "Per seed (the extrapolation fits `val = a epoch^b` to the second half of the validation "
              "curve and asks when it would reach the target, published x (1 + tolerance); a curve that has "
              "reached it shows the first epoch whose validation MSE did):", "",
              "| model | seed | epochs | best epoch | val MSE | test MSE | slope b | epochs to target |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ex = r["extrapolation"]
        slope = "-" if ex["slope"] is None else f"{ex['slope']:.2f}"
        to = "-" if ex["epochs_to_target"] is None else f"{ex['epochs_to_target']:.0f}"
        to = f"reached at epoch {to}" if ex.get("reached") else to
        lines.append(f"| {r['model']} | {r['seed']} | {r['epochs']} | {r['best_epoch']} | {r['val_mse']:.5f} | "
                     f"{r['test_mse']:.5f} | {slope} | {to} |")
    lines += ["", "Command: `python benchmarks/nbody_long.py " + " ".join(payload["argv"]) + "`.", ""]
    write_results(payload.get("name", "nbody_long"), payload, "\n".join(lines), out_dir)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, r in enumerate(runs):
        pts = [(c["epoch"], c["val_loss"]) for c in r["curve"] if "val_loss" in c]
        if pts:
            ax.plot(*zip(*pts), color=f"C{k}", label=f"{r['model']} seed {r['seed']}")
    for m in agg:
        ax.axhline(NBODY_PUBLISHED[m], color="k", ls="--", lw=1, label=f"published {m} (test)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MSE")
    ax.set_title("charged n-body: validation curves", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{payload.get('name', 'nbody_long')}.png", dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["egnn"], choices=sorted(MODEL_KWARGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10000, help="the run's epochs (the published 10000)")
    p.add_argument("--chunk-epochs", type=int, default=20, help="epochs per seed per round")
    p.add_argument("--rounds", type=int, default=50, help="rounds to run now (resumes earlier rounds)")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--patience", type=int, default=50, help="early stopping, in evaluations")
    p.add_argument("--runs", default="/tmp/equikit-nbody-long", help="run folders (checkpoints, metrics)")
    p.add_argument("--root", default=None, help="data dir (default: $EQUIKIT_DATA or the user cache)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    p.add_argument("--model-kwargs", default=None,
                   help='JSON {model: kwargs} replacing MODEL_KWARGS, e.g. the published PONITA size')
    p.add_argument("--name", default="nbody_long", help="result file stem")
    p.add_argument("--export-data", default=None, metavar="FILE",
                   help="write the protocol's three splits (the frame 30/40 tensors, ~2 MB) to FILE and exit")
    p.add_argument("--data-file", default=None, metavar="FILE",
                   help="train on the splits of --export-data instead of the cached simulations (a machine "
                        "without the 14,000 simulations)")
    args = p.parse_args(argv)
    if args.model_kwargs:
        MODEL_KWARGS.update(json.loads(args.model_kwargs))
    out_dir = Path(args.out)
    torch.set_num_threads(1)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    state_path = Path(args.runs) / "rounds.json"
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rounds_done": 0, "loadavg_rounds": []}
    if not args.render_only:
        state["argv"] = argv_list  # the training command, kept for --render-only
    meta = {"environment": environment(), "eval_every": args.eval_every, "chunk_epochs": args.chunk_epochs,
            "name": args.name, "device": args.device,
            "argv": state.get("argv", argv_list), "model_kwargs": {m: MODEL_KWARGS[m] for m in args.models}}
    if args.render_only:
        render({**meta, **state, **collect(args)}, out_dir)
        return
    settings = nbody_settings(TrainConfig(extra={"n_train": PROTOCOL_TRAIN_SAMPLES}))
    if args.data_file:
        saved = torch.load(args.data_file, weights_only=True)
        data = {k: NBodyDataset.from_tensors(**v) for k, v in saved.items()}
    else:
        data = load_nbody_splits(settings, root=args.root)
    if args.export_data:
        torch.save({k: {a: getattr(ds, a) for a in ("pos", "vel", "target", "charges")} for k, ds in data.items()},
                   args.export_data)
        return
    steps_per_epoch = len(data["train"]) // 100
    for _ in range(args.rounds):
        if (Path(args.runs) / "STOP").exists():
            print("STOP file found: ending", flush=True)
            break
        r = state["rounds_done"] + 1
        loads = [os.getloadavg()[0]]
        for m in args.models:
            for s in args.seeds:
                run = Path(args.runs) / f"{m}-s{s}"
                summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
                if summ.get("stop_reason") in ("early_stopping", "epochs"):
                    continue  # finished
                t0 = time.perf_counter()
                out = train_nbody(config(m, s, args, r * args.chunk_epochs * steps_per_epoch), run,
                                  resume=True, data=data)
                loads.append(os.getloadavg()[0])
                val = "-" if out["val_mse"] is None else f"{out['val_mse']:.5f}"
                print(f"round {r} {m} seed {s}: epoch {out['epochs']} val {val} test "
                      f"{out['test_mse']:.5f} ({time.perf_counter() - t0:.0f} s, load {loads[-1]:.1f})", flush=True)
        state["rounds_done"] = r
        state["loadavg_rounds"].append(loads)
        state_path.write_text(json.dumps(state))
        render({**meta, **state, **collect(args)}, out_dir)


if __name__ == "__main__":
    main()
