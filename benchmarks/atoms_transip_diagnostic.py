"""Why does the transformer potential of ``atoms_transip.py`` barely learn MMFF forces? Small, cheap
ablations (one thread, a few hundred Adam steps, 250 training frames of ethanol, the ``augment``
variant unless stated): learning rate and warm-up, the energy scale of the readout (MACE-style:
atomic energies ``E0 + s * MLP`` with ``s`` the force RMS of the training frames), the frequency
scale of the Fourier features, and what the attention's pair bias sees (raw displacement
Fourier features, or a Bessel radial basis of the distances with a cutoff envelope, or both).

Per configuration: the training loss curve (running mean of the energy and force terms every
``--log-every`` steps), the force MAE on 100 training frames (moved by random O(3) elements, as
the augmented training sees them) and on 200 rotated test frames (under- vs over-fitting), and
the RMS of the untrained model's forces (conditioning: are they of the size of the labels?).

Run::

    nice -n 5 .venv/bin/python benchmarks/atoms_transip_diagnostic.py --steps 300
    .venv/bin/python benchmarks/atoms_transip_diagnostic.py --report   # table from finished configs

Results: ``benchmarks/results/atoms_transip_diagnostic.{json,md}``; finished configurations are
kept in ``data/atoms_transip_diagnostic/`` so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import environment, write_results  # noqa: E402
from atoms_transip import WORK, load_data, move, warmup_cosine  # noqa: E402
from equikit.groups import O  # noqa: E402
from equikit.models import TransformerPotential, TransformerPotentialConfig  # noqa: E402
from equikit.models.potential import fit_reference_energies  # noqa: E402

NAME = "atoms_transip_diagnostic"
# the transformer of the first committed atoms_transip runs (before this diagnosis)
BASE = dict(dim=64, heads=4, layers=3, ff_mult=2, num_frequencies=32, frequency_scale=3.0, readout_hidden=64,
            pair_bias=True, pair_features="displacement", dtype="float32")
# name -> (model overrides, training overrides); "scale" in the model overrides means the force RMS
CONFIGS = {
    "baseline (as committed)": ({}, {}),
    "lr 3e-4": ({}, {"lr": 3e-4}),
    "lr 3e-3 + warm-up": ({}, {"lr": 3e-3, "warmup": 0.1}),
    "energy scale = force RMS": ({"energy_scale": "scale"}, {}),
    "frequency scale 1": ({"frequency_scale": 1.0}, {}),
    "pair: distance (Bessel x envelope)": ({"pair_features": "distance"}, {}),
    "pair: displacement + distance": ({"pair_features": "both"}, {}),
    "pair values: displacement": ({"pair_values": True}, {}),
    "pair values: distance": ({"pair_features": "distance", "pair_values": True}, {}),
    "pair values: both": ({"pair_features": "both", "pair_values": True}, {}),
    "pair values: both, lr 3e-4": ({"pair_features": "both", "pair_values": True}, {"lr": 3e-4}),
    "pair values: both, plain": ({"pair_features": "both", "pair_values": True}, {"augment": False}),
    "pair values: distance, lr 3e-3 warm-up": ({"pair_features": "distance", "pair_values": True},
                                               {"lr": 3e-3, "warmup": 0.1}),
    "pair values: distance, frequency scale 1": ({"pair_features": "distance", "pair_values": True,
                                                 "frequency_scale": 1.0}, {}),
    "pair values: distance, plain": ({"pair_features": "distance", "pair_values": True}, {"augment": False}),
}
ENERGY_WEIGHT, FORCES_WEIGHT = 1.0, 100.0


def force_rms(frames) -> float:
    return float(frames.forces.pow(2).mean().sqrt())


def build(overrides: dict, train_set, seed: int) -> TransformerPotential:
    torch.manual_seed(seed)
    zs = (1, 6, 8)
    cfg = {**BASE, **overrides}
    if cfg.get("energy_scale") == "scale":
        cfg["energy_scale"] = force_rms(train_set)
    return TransformerPotential(TransformerPotentialConfig(atomic_numbers=zs, e0=fit_reference_energies(train_set, zs),
                                                           seed=seed, **cfg))


def mae(model, frames, chunk: int = 100) -> float:
    errs = []
    for k in range(0, len(frames), chunk):
        sub = frames[list(range(k, min(k + chunk, len(frames))))]
        errs.append((model(sub)["forces"].detach() - sub.forces).abs().flatten())
    return 1000 * float(torch.cat(errs).mean())


def run_config(name: str, pool, test_moved, args) -> dict:
    model_kw, train_kw = CONFIGS[name]
    lr, warmup, augment = train_kw.get("lr", args.lr), train_kw.get("warmup", 0.0), train_kw.get("augment", True)
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(1000 + args.seed))[:args.n_train]
    train_set = pool[sorted(idx.tolist())]
    model = build(model_kw, train_set, args.seed)
    probe = train_set[list(range(16))]
    init_rms = 1000 * float(model(probe)["forces"].detach().pow(2).mean().sqrt())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(args.steps, warmup))
    gen = torch.Generator().manual_seed(2000 + args.seed)
    curve, acc, t0 = [], [0.0, 0.0, 0], time.perf_counter()
    for step in range(args.steps):
        batch = train_set[torch.randperm(args.n_train, generator=gen)[:args.batch_size].tolist()]
        if augment:
            batch = move(batch, O(3).sample(len(batch), generator=gen, dtype=torch.float64))
        out = model(batch, training=True)
        n = batch.natoms.to(out["energy"].dtype)
        le = ((out["energy"] - batch.energy) / n).pow(2).mean()
        lf = (out["forces"] - batch.forces).pow(2).mean()
        loss = ENERGY_WEIGHT * le + FORCES_WEIGHT * lf
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        acc[0] += float(le.detach())
        acc[1] += float(lf.detach())
        acc[2] += 1
        if (step + 1) % args.log_every == 0:
            curve.append({"step": step + 1, "energy_mse": acc[0] / acc[2],
                          "force_rmse_meV_A": 1000 * math.sqrt(acc[1] / acc[2])})
            acc = [0.0, 0.0, 0]
        if not math.isfinite(float(loss)):
            raise RuntimeError(f"{name}: loss became {float(loss)} at step {step}")
    seconds = time.perf_counter() - t0
    model.eval()
    train_probe = train_set[list(range(min(100, args.n_train)))]
    train_probe = move(train_probe, O(3).sample(len(train_probe), generator=torch.Generator().manual_seed(5),
                                                dtype=torch.float64))
    return {"config": name, "model": model_kw, "train": train_kw, "lr": lr, "warmup": warmup, "augment": augment,
            "n_train": args.n_train, "steps": args.steps, "seed": args.seed, "init_force_rms_meV_A": init_rms,
            "label_force_rms_meV_A": 1000 * force_rms(train_set), "train_force_mae_meV_A": mae(model, train_probe),
            "test_force_mae_meV_A": mae(model, test_moved), "curve": curve, "train_seconds": seconds}


def report(rows: list[dict], args) -> None:
    env = environment()
    md = ["# Transformer potential diagnostics (MMFF94 ethanol, why it barely learns)", "",
          f"`benchmarks/atoms_transip_diagnostic.py --steps {args.steps} --n-train {args.n_train}`: "
          f"{args.n_train} training frames, {args.steps} Adam steps of batch {args.batch_size}, cosine decay "
          f"(after a linear warm-up where stated), seed {args.seed}, one thread. Base model {BASE} "
          f"(the transformer of the first `atoms_transip.py` runs). Test: 200 of the benchmark's test frames, each "
          f"moved by a random O(3) element. Train MAE: 100 training frames moved by random O(3) elements (what the "
          f"augmented training sees). Machine: {env.get('cpu')}, load {env.get('loadavg')} (times provisional).",
          "", "| configuration | lr | init force RMS / label RMS (meV/A) | train-loss force RMSE: first -> last "
          "log (meV/A) | train force MAE | test force MAE (rotated) | s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["curve"]
        md.append(f"| {r['config']} | {r['lr']:g}{' +wu' if r['warmup'] else ''} | {r['init_force_rms_meV_A']:.0f} / "
                  f"{r['label_force_rms_meV_A']:.0f} | {c[0]['force_rmse_meV_A']:.0f} -> "
                  f"{c[-1]['force_rmse_meV_A']:.0f} | "
                  f"{r['train_force_mae_meV_A']:.1f} | {r['test_force_mae_meV_A']:.1f} | {r['train_seconds']:.0f} |")
    write_results(NAME, {"experiment": NAME, "base": BASE, "args": {k: str(v) for k, v in vars(args).items()},
                         "rows": rows, "env": env}, "\n".join(md) + "\n")
    print("\n".join(md), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--n-train", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--work", type=Path, default=ROOT / "data" / NAME)
    ap.add_argument("--frames", type=Path, default=WORK / "frames.npz")
    ap.add_argument("--pid-file", type=Path, default=None)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.pid_file is not None:
        args.pid_file.write_text(f"{os.getpid()}\n")
    runs = args.work / f"steps{args.steps}-n{args.n_train}-s{args.seed}"
    runs.mkdir(parents=True, exist_ok=True)
    path = {name: runs / (name.replace(" ", "_").replace("/", "_") + ".json") for name in CONFIGS}
    if not args.report:
        pool, test = load_data(args.frames)
        test = test[list(range(args.n_test))]
        g = O(3).sample(len(test), generator=torch.Generator().manual_seed(77), dtype=torch.float64)
        test_moved = move(test, g)
        for name in args.configs:
            if path[name].exists():
                continue
            row = run_config(name, pool, test_moved, args)
            path[name].write_text(json.dumps(row))
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    rows = [json.loads(path[n].read_text()) for n in CONFIGS if path[n].exists()]
    if rows:
        report(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
