"""Charged n-body (EGNN protocol, DESIGN §6): six dynamics models trained with
``equikit.train`` (the same code as ``equikit train nbody``) under one wall-clock budget per
run, 3 seeds each; test position MSE (frame 30 -> 40, 3000 training simulations) beside the
published numbers; time per epoch and per forward/backward; multi-step rollouts.

The budget is wall-clock seconds per run on this shared machine (1 torch thread), far below
the papers' 10000 epochs: the numbers are **budgeted, not a reproduction**.

    python benchmarks/nbody.py                              # 6 models x 3 seeds x 150 s (~55 min)
    python benchmarks/nbody.py --budget-s 20 --seeds 0      # quick look
    python benchmarks/nbody.py --render-only                # tables/plots from the json

Protocol as published: Adam, lr 5e-4, weight decay 1e-12, batch 100, MSE loss; the test MSE is
taken for the weights of the best validation evaluation (every ``--eval-every`` epochs, on
the first ``--n-val-eval`` validation simulations to save time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit.data.nbody import PROTOCOL_TRAIN_SAMPLES, NBodyDataset, collate_nbody, load_charged_nbody
from equikit.train import TrainConfig
from equikit.train.nbody import (
    NBODY_PUBLISHED,
    build_nbody_model,
    load_nbody_splits,
    nbody_batches,
    nbody_settings,
    train_nbody,
)

PUBLISHED = {k: v for k, v in NBODY_PUBLISHED.items() if v is not None}
MODELS = ("linear", "gnn", "egnn", "fa_gnn", "ponita", "eqmotion")
# the sizes trained here; PONITA is shrunk from the published 128 channels / 256 basis / 5 layers /
# 20 orientations (about 7 s per batch of 100 on one loaded core) to fit the budget
MODEL_KWARGS = {
    "linear": {},
    "gnn": {"hidden": 64, "n_layers": 4},
    "egnn": {"hidden": 64, "n_layers": 4},
    "fa_gnn": {"hidden": 64, "n_layers": 4},
    "ponita": {"hidden": 32, "basis": 32, "n_layers": 4, "n_orientations": 12},
    "eqmotion": {"hidden": 64, "channels": 16, "n_layers": 4},
}


# --------------------------------------------------------------------------- legacy helpers
# (used by benchmarks/symmetrize_fagnn.py)
def batches(ds: NBodyDataset, batch_size: int, shuffle: bool, gen: torch.Generator):
    yield from nbody_batches(ds, batch_size, shuffle, gen)


def predict_graph(model, b):
    """A graph model's prediction for a collated batch."""
    return model(b.pos, b.vel, b.edge_index, b.edge_attr)


def evaluate(model, ds, batch_size=500, predict=predict_graph) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches(ds, batch_size, False, torch.Generator()):
            total += float(torch.nn.functional.mse_loss(predict(model, b), b.target)) * b.num_graphs
            count += b.num_graphs
    model.train()
    return total / count


def fit(name, model, predict, data, budget_s, args, published) -> dict:
    """Adam on the MSE of ``predict(model, batch)`` for ``budget_s`` seconds of wall clock;
    validation every ``args.eval_every`` epochs; test MSE at the best validation epoch."""
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-12)
    t0 = time.perf_counter()
    curve, best = [], {"val": float("inf"), "test": None, "epoch": None}
    epoch = 0
    while time.perf_counter() - t0 < budget_s:
        for b in batches(data["train"], args.batch, True, gen):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(predict(model, b), b.target)
            loss.backward()
            opt.step()
        epoch += 1
        if epoch % args.eval_every == 0 or time.perf_counter() - t0 >= budget_s:
            val = evaluate(model, data["val"], predict=predict)
            test = evaluate(model, data["test"], predict=predict)
            elapsed = time.perf_counter() - t0
            curve.append({"epoch": epoch, "seconds": round(elapsed, 2), "val": val, "test": test})
            if val < best["val"]:
                best = {"val": val, "test": test, "epoch": epoch}
            print(f"{name:6s} epoch {epoch:4d} {elapsed:6.1f}s val {val:.5f} test {test:.5f}", flush=True)
    return {"epochs": epoch, "seconds": round(time.perf_counter() - t0, 1), "best_epoch": best["epoch"],
            "best_val_mse": best["val"], "test_mse": best["test"], "published_test_mse": published,
            "parameters": sum(p.numel() for p in model.parameters()), "curve": curve}


# --------------------------------------------------------------------------- budgeted runs
def run_one(model: str, seed: int, data: dict, args) -> dict:
    cfg = TrainConfig(seed=seed, epochs=10000, lr=args.lr, weight_decay=1e-12, batch_size=args.batch,
                      budget_s=args.budget_s, eval_every=args.eval_every, patience=args.patience,
                      checkpoint_every=10**6, progress=False, verbose=False,
                      extra={"model": model, "model_kwargs": MODEL_KWARGS[model], "n_val_eval": args.n_val_eval})
    load0 = os.getloadavg()[0]
    out = train_nbody(cfg, Path(args.runs) / f"{model}-s{seed}", data=data)
    state = out.pop("best_state")
    torch.save(state, Path(args.runs) / f"{model}-s{seed}" / "best_state.pt")
    out.update({"seed": seed, "loadavg_start": load0, "loadavg_end": os.getloadavg()[0],
                "seconds_per_epoch": out["seconds"] / max(out["epochs"], 1)})
    print(f"{model:8s} seed {seed} epochs {out['epochs']:4d} {out['seconds']:6.1f}s val {out['val_mse']:.5f} "
          f"test {out['test_mse']:.5f} (load {load0:.1f})", flush=True)
    return out


def aggregate(runs: list[dict]) -> dict:
    tests = [r["test_mse"] for r in runs]
    return {"n_seeds": len(runs), "test_mse_mean": statistics.fmean(tests),
            "test_mse_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "epochs_mean": statistics.fmean(r["epochs"] for r in runs),
            "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
            "seconds_per_epoch_median": statistics.median(r["seconds_per_epoch"] for r in runs),
            "parameters": runs[0]["parameters"], "published": NBODY_PUBLISHED[runs[0]["model"]]}


# --------------------------------------------------------------------------- speed
def speed(data: dict, repeats: int) -> dict:
    """Median forward (eval, no grad) and forward+backward (train) time on one batch of 100."""
    b = collate_nbody([data["train"][i] for i in range(100)])
    torch.manual_seed(0)
    models = {m: build_nbody_model(m, **MODEL_KWARGS[m]) for m in MODELS}
    for m in models.values():  # PONITA calibrates its kernels on the first training pass
        torch.nn.functional.mse_loss(m(b.pos, b.vel, b.edge_index, b.edge_attr), b.target).backward()

    def fwd(m):
        def run():
            m.eval()
            with torch.no_grad():
                m(b.pos, b.vel, b.edge_index, b.edge_attr)
        return run

    def fwd_bwd(m):
        def run():
            m.train()
            m.zero_grad()
            torch.nn.functional.mse_loss(m(b.pos, b.vel, b.edge_index, b.edge_attr), b.target).backward()
        return run

    t_f = interleaved({k: fwd(m) for k, m in models.items()}, repeats=repeats, warmup=2)
    t_fb = interleaved({k: fwd_bwd(m) for k, m in models.items()}, repeats=repeats, warmup=2)
    return {k: {"forward_ms": 1e3 * t_f[k]["median_s"], "forward_backward_ms": 1e3 * t_fb[k]["median_s"]}
            for k in models}


# --------------------------------------------------------------------------- rollouts
def _trained_models(args):
    """``(name, model)`` in eval mode for every model of :data:`MODELS` whose seed-0 run left
    ``<args.runs>/<name>-s0/best_state.pt`` (the others are skipped)."""
    for m in MODELS:
        path = Path(args.runs) / f"{m}-s0" / "best_state.pt"
        if not path.is_file():
            continue
        model = build_nbody_model(m, **MODEL_KWARGS[m])
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        yield m, model


def rollouts(args, n_sims: int = 200, start: int = 8, steps: int = 4, stride: int = 10) -> dict:
    """Autoregressive rollouts of the seed-0 models on the first ``n_sims`` test simulations:
    from frame ``start``, ``steps`` predictions of ``stride`` frames each. The model predicts
    positions only, so the next input velocity is the last predicted displacement divided by
    the elapsed time (``stride * sample_every * dt = 1``): an average, not the instantaneous
    velocity the models were trained on. MSE against the simulated positions per horizon."""
    test = load_charged_nbody(root=args.root)["test"].head(n_sims)
    pos = torch.as_tensor(test.pos, dtype=torch.float32)  # (S, T, n, 3)
    vel = torch.as_tensor(test.vel, dtype=torch.float32)
    q = torch.as_tensor(test.charges, dtype=torch.float32)
    s_, _, n, _ = pos.shape
    from equikit.data.nbody import complete_edge_index

    ei = complete_edge_index(n)
    edge_index = ei.repeat(1, s_) + (torch.arange(s_) * n).repeat_interleave(ei.shape[1])
    edge_attr = (q[:, ei[0]] * q[:, ei[1]]).reshape(-1, 1)
    dt = stride * 100 * 0.001
    out = {"start_frame": start, "stride_frames": stride, "n_sims": n_sims, "models": {}}
    for m, model in _trained_models(args):
        x, v = pos[:, start].reshape(-1, 3), vel[:, start].reshape(-1, 3)
        errs = []
        with torch.no_grad():
            for k in range(1, steps + 1):
                nxt = model(x, v, edge_index, edge_attr)
                v, x = (nxt - x) / dt, nxt
                errs.append(float(((x - pos[:, start + k * stride].reshape(-1, 3)) ** 2).mean()))
        out["models"][m] = errs
    return out


def equivariance_of_trained(args, data: dict) -> dict:
    """E(3) relative error of the trained seed-0 models on 10 test systems (eval mode, 16
    elements incl. reflections): of the predicted positions in float32 (``rel_max``) and of
    the predicted displacement ``output - pos`` in float64 (``disp_rel_max``; the positions
    themselves would hide an approximate model's error, and float64 separates it from
    rounding)."""
    from equikit.check import equivariance_error
    from equikit.groups import E, PointCloud

    b = collate_nbody([data["test"][i] for i in range(10)])
    x = {"pos": b.pos, "vel": b.vel, "ei": b.edge_index, "ea": b.edge_attr}
    x64 = {k: v.double() if v.is_floating_point() else v for k, v in x.items()}
    act_in = PointCloud(E(3), vectors=("vel",), scalars=("ei", "ea"))
    disp = PointCloud(E(3), pos=None, vectors=("d",))
    out = {}
    for m, model in _trained_models(args):
        with torch.no_grad():
            rep = equivariance_error(lambda d, model=model: model(d["pos"], d["vel"], d["ei"], d["ea"]), x, act_in,
                                     PointCloud(E(3)), n_samples=16, generator=1)
            model.double()
            rep_d = equivariance_error(
                lambda d, model=model: {"d": model(d["pos"], d["vel"], d["ei"], d["ea"]) - d["pos"]}, x64, act_in,
                disp, n_samples=16, generator=1)
        out[m] = {"rel_max": float(rep.rel_max), "rel_mean": float(rep.rel_mean),
                  "disp_rel_max": float(rep_d.rel_max), "disp_rel_mean": float(rep_d.rel_mean)}
    return out


# --------------------------------------------------------------------------- report
def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def render(payload: dict, out_dir: Path) -> None:
    env, agg, sp = payload["environment"], payload["aggregate"], payload.get("speed", {})
    eq = payload.get("equivariance_trained", {})
    rows = ["| model | test MSE (ours, mean ± std) | seeds | published | ours / published | epochs reached | "
            "train time (s) | s / epoch | forward (ms) | fwd+bwd (ms) | params | E(3) err. positions / displacement |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, a in agg.items():
        pub = a["published"]
        s = sp.get(m, {})
        rows.append(
            f"| {m} | {a['test_mse_mean']:.4f} ± {a['test_mse_std']:.4f} | {a['n_seeds']} | {_fmt(pub)} | "
            f"{_fmt(a['test_mse_mean'] / pub if pub else None, '.2f')} | {a['epochs_mean']:.0f} | "
            f"{a['seconds_mean']:.0f} | {a['seconds_per_epoch_median']:.1f} | {_fmt(s.get('forward_ms'), '.1f')} | "
            f"{_fmt(s.get('forward_backward_ms'), '.1f')} | {a['parameters']} | "
            f"{_fmt(eq.get(m, {}).get('rel_max'), '.1e')} / {_fmt(eq.get(m, {}).get('disp_rel_max'), '.1e')} |")
    ro = payload.get("rollouts", {})
    ro_rows = []
    if ro.get("models"):
        ks = len(next(iter(ro["models"].values())))
        ro_rows = ["| model | " + " | ".join(f"{(k + 1) * ro['stride_frames']} frames" for k in range(ks)) + " |",
                   "|---|" + "---|" * ks]
        ro_rows += [f"| {m} | " + " | ".join(f"{e:.4f}" for e in errs) + " |" for m, errs in ro["models"].items()]
    loads = [r["loadavg_start"] for r in payload["runs"]]
    md = "\n".join([
        "# Charged n-body (EGNN protocol): position MSE, frame 30 -> 40, 3000 training simulations",
        "",
        f"**Budgeted, not a reproduction.** Every run trained for {payload['budget_s']:.0f} s of wall clock "
        f"(1 torch thread, {env['cpu']}, {env['cores']} cores shared with other jobs: load average "
        f"{min(loads):.1f}-{max(loads):.1f} at the runs' starts), i.e. the epochs below against the papers' "
        "10000. Adam lr 5e-4, batch 100; test MSE (all 2000 test simulations) for the weights of the best "
        f"validation evaluation (every {payload['eval_every']} epochs, first {payload['n_val_eval']} validation "
        "simulations). Mean ± std over seeds. Timings are provisional (loaded machine). PONITA is shrunk "
        "to fit the budget (see `MODEL_KWARGS` in the script); the published numbers are for full-size "
        "models and 10000 epochs.",
        "",
        *rows,
        "",
        "Published: linear, GNN, EGNN from Satorras et al. 2021 (Table 2); FA-GNN from Puny et al. 2022; "
        "PONITA from Bekkers et al. 2024 (SEGNN 0.0043 from Brandstetter et al. 2022). EqMotion did not "
        "report this protocol. forward / fwd+bwd: median over interleaved calls on one batch of 100 "
        "systems. E(3) err.: max relative error over 16 random E(3) elements (reflections included) of the "
        "trained seed-0 model on 10 test systems, of the predicted positions (float32) / of the predicted "
        "displacement `output - pos` (float64; PONITA's fixed orientation grid makes it only approximately "
        "equivariant, which the positions hide).",
        "",
        "## Multi-step rollouts (seed-0 models)",
        "",
        f"Autoregressive from frame {ro.get('start_frame')} in steps of {ro.get('stride_frames')} frames on "
        f"{ro.get('n_sims')} test simulations; the next input velocity is the last predicted displacement / "
        "elapsed time (the models predict positions only). Position MSE per horizon:",
        "",
        *ro_rows,
        "",
        "Command: `python benchmarks/nbody.py " + " ".join(payload["argv"]) + "`.",
        "",
    ])
    write_results("nbody", payload, md, out_dir)
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    names = list(agg)
    ax.bar(range(len(names)), [agg[m]["test_mse_mean"] for m in names],
           yerr=[agg[m]["test_mse_std"] for m in names], color="C0", label=f"ours ({payload['budget_s']:.0f} s budget)")
    for k, m in enumerate(names):
        if agg[m]["published"]:
            ax.plot([k - 0.4, k + 0.4], [agg[m]["published"]] * 2, color="C3", lw=2,
                    label="published (10000 epochs)" if k == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("test position MSE")
    ax.set_title("charged n-body: budgeted training, not a reproduction", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for k, (m, errs) in enumerate(ro.get("models", {}).items()):
        ax.plot([(i + 1) * ro["stride_frames"] for i in range(len(errs))], errs, "o-", color=f"C{k}", label=m)
    ax.set_yscale("log")
    ax.set_xlabel("horizon (frames of 100 steps)")
    ax.set_ylabel("position MSE")
    ax.set_title("autoregressive rollouts (seed 0)", fontsize=9)
    if ro.get("models"):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "nbody.png", dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=float, default=150.0, help="training seconds per run")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--n-val-eval", type=int, default=500)
    p.add_argument("--patience", type=int, default=10, help="early stopping, in evaluations")
    p.add_argument("--speed-repeats", type=int, default=10)
    p.add_argument("--root", default=None, help="data dir (default: $EQUIKIT_DATA or the user cache)")
    p.add_argument("--runs", default="/tmp/equikit-nbody-runs", help="run folders (checkpoints, metrics)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--equivariance-only", action="store_true",
                   help="recompute the trained models' E(3) errors from --runs into the existing json")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    if args.render_only:
        render(json.loads((out_dir / "nbody.json").read_text()), out_dir)
        return
    torch.set_num_threads(args.threads)
    if args.equivariance_only:
        payload = json.loads((out_dir / "nbody.json").read_text())
        settings = nbody_settings(TrainConfig(extra={"n_train": 10, "n_val_eval": 10}))
        payload["equivariance_trained"] = equivariance_of_trained(args, load_nbody_splits(settings, root=args.root))
        render(payload, out_dir)
        print(json.dumps(payload["equivariance_trained"]))
        return
    payload = {"environment": environment(), "budget_s": args.budget_s, "eval_every": args.eval_every,
               "n_val_eval": args.n_val_eval, "patience": args.patience, "lr": args.lr, "batch": args.batch,
               "model_kwargs": MODEL_KWARGS, "argv": list(sys.argv[1:] if argv is None else argv),
               "runs": [], "aggregate": {}}
    settings = nbody_settings(TrainConfig(extra={"n_train": PROTOCOL_TRAIN_SAMPLES, "n_val_eval": args.n_val_eval}))
    data = load_nbody_splits(settings, root=args.root)
    names = args.models.split(",")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for m in names:
            payload["runs"].append(run_one(m, seed, data, args))
            payload["aggregate"] = {n: aggregate([r for r in payload["runs"] if r["model"] == n])
                                    for n in names if any(r["model"] == n for r in payload["runs"])}
            render(payload, out_dir)  # partial results survive an interruption
    payload["speed"] = speed(data, args.speed_repeats)
    payload["rollouts"] = rollouts(args)
    payload["equivariance_trained"] = equivariance_of_trained(args, data)
    payload["environment_end"] = environment()
    render(payload, out_dir)
    print(json.dumps({m: [a["test_mse_mean"], a["test_mse_std"]] for m, a in payload["aggregate"].items()}))


if __name__ == "__main__":
    main()
