"""Charged n-body (EGNN protocol, DESIGN §6): train EGNN, the GNN baseline and the linear
baseline on the first 3000 train simulations and report test position MSE (frame 30 -> 40)
beside the published numbers.

The training budget is wall-clock seconds on this machine (default 480 s for all models
together on 2 threads), far below the paper's 10000 epochs: the numbers are NOT a
reproduction of the published ones, only a measured point on the way there.

    python benchmarks/nbody.py                    # ~8 min on 2 cores (plus data generation once)
    python benchmarks/nbody.py --budget-s 60      # quick look

Protocol as published: Adam, lr 5e-4, weight decay 1e-12, batch 100, MSE loss; the test
loss is taken at the epoch with the best validation loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results
from equikit.data.nbody import PROTOCOL_TRAIN_SAMPLES, NBodyDataset, collate_nbody
from equikit.models import EGNN, GNN, LinearDynamics

PUBLISHED = {"linear": 0.0819, "gnn": 0.0107, "egnn": 0.0071}  # Satorras et al. 2021, Table 2
SHARE = {"linear": 0.05, "gnn": 0.35, "egnn": 0.60}  # of the budget


def build(name: str) -> torch.nn.Module:
    if name == "egnn":
        return EGNN(hidden=64, n_layers=4)
    if name == "gnn":
        return GNN(hidden=64, n_layers=4)
    return LinearDynamics()


def batches(ds: NBodyDataset, batch_size: int, shuffle: bool, gen: torch.Generator):
    order = torch.randperm(len(ds), generator=gen) if shuffle else torch.arange(len(ds))
    stop = len(ds) - len(ds) % batch_size if shuffle else len(ds)  # drop_last when training
    for k in range(0, stop, batch_size):
        yield collate_nbody([ds[int(i)] for i in order[k : k + batch_size]])


def predict_graph(model, b):
    """A graph model's prediction for a collated batch."""
    return model(b.pos, b.vel, b.edge_index, b.edge_attr)


def evaluate(model, ds, batch_size=500, predict=predict_graph) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches(ds, batch_size, False, torch.Generator()):
            pred = predict(model, b)
            total += float(torch.nn.functional.mse_loss(pred, b.target)) * b.num_graphs
            count += b.num_graphs
    model.train()
    return total / count


def train(name, data, budget_s, args) -> dict:
    torch.manual_seed(args.seed)
    return fit(name, build(name), predict_graph, data, budget_s, args, PUBLISHED[name])


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


def render(payload: dict, out_dir: Path) -> None:
    rows = ["| model | test MSE (ours) | published | epochs (ours / paper) | train time (s) | params |",
            "|---|---|---|---|---|---|"]
    for name, r in payload["models"].items():
        rows.append(f"| {name} | {r['test_mse']:.4f} | {r['published_test_mse']:.4f} | "
                    f"{r['epochs']} / 10000 | {r['seconds']:.0f} | {r['parameters']} |")
    env = payload["environment"]
    md = "\n".join([
        "# Charged n-body (EGNN protocol): position MSE, frame 30 -> 40, 3000 training simulations",
        "",
        f"**Not a reproduction**: trained for {payload['budget_s']:.0f} s of wall clock in total on "
        f"{env['threads']} threads ({env['cpu']}, load {env['loadavg'][0]:.1f} at start), i.e. a few "
        "dozen to a few hundred epochs against the paper's 10000. One seed. Test MSE at the epoch "
        "with the best validation MSE (validation every "
        f"{payload['eval_every']} epochs).",
        "",
        *rows,
        "",
        "Published: Satorras et al. 2021 (EGNN), Table 2. Command: `python benchmarks/nbody.py "
        + " ".join(payload["argv"]) + "`.",
        "",
    ])
    write_results("nbody", payload, md, out_dir)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, r) in enumerate(payload["models"].items()):
        c = f"C{k}"
        ax.plot([p["seconds"] for p in r["curve"]], [p["test"] for p in r["curve"]], color=c, label=f"{name} (ours)")
        ax.axhline(r["published_test_mse"], color=c, ls="--", lw=0.8, label=f"{name} published (10000 epochs)")
    ax.set_yscale("log")
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("test position MSE")
    ax.set_title("charged n-body: short training vs published (not a reproduction)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "nbody.png", dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=float, default=480.0, help="training seconds, all models together")
    p.add_argument("--models", default="linear,gnn,egnn")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--root", default=None, help="data dir (default: $EQUIKIT_DATA or the user cache)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment()
    data = {"train": NBodyDataset("train", max_samples=PROTOCOL_TRAIN_SAMPLES, root=args.root),
            "val": NBodyDataset("val", root=args.root), "test": NBodyDataset("test", root=args.root)}
    names = args.models.split(",")
    share = sum(SHARE[n] for n in names)
    results = {n: train(n, data, args.budget_s * SHARE[n] / share, args) for n in names}
    payload = {"environment": env, "budget_s": args.budget_s, "eval_every": args.eval_every,
               "lr": args.lr, "batch": args.batch, "seed": args.seed,
               "argv": list(sys.argv[1:] if argv is None else argv), "models": results}
    render(payload, Path(args.out))
    print(json.dumps({n: r["test_mse"] for n, r in results.items()}))


if __name__ == "__main__":
    main()
