"""Merging 2 and 3 MLPs trained on sklearn digits from different seeds: naive averaging vs
weight matching (WM; MergeMany for 3) vs the straight-through estimator (STE; every model
aligned to model 0). Tests the claim of Ito et al. (2024) that WM beats STE when merging
three or more models, and compares the singular-vector alignment each method reaches.

Writes benchmarks/results/weights_merge.{json,md,png}.

    .venv/bin/python benchmarks/weights_merge.py [--quick]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from _common import pyplot
from equikit.weights import (
    MLP,
    STEConfig,
    average,
    layer_alignment,
    merge_models,
    mlp_spec,
    permute,
    ste_matching,
    weight_matching,
)
from weights_common import (
    RESULTS,
    Progress,
    TrainConfig,
    environment,
    evaluate,
    load_digits,
    mean_std,
    train,
    write_results,
)

NAME = "weights_merge"


def evaluate_params(net, params, data) -> dict:
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(params)
    out = evaluate(net, data.x_test, data.y_test)
    net.load_state_dict(saved)
    return out


def ste_align(spec, net, a, b, data, config: STEConfig):
    gen = torch.Generator().manual_seed(config.seed)
    n = len(data.y_train)

    def loss_fn(module, step):
        idx = torch.randint(0, n, (128,), generator=gen)
        return nn.functional.cross_entropy(module(data.x_train[idx]), data.y_train[idx])

    return ste_matching(spec, net, a, b, loss_fn, config).perms


def top_alignment(spec, a, b) -> float:
    las = layer_alignment(spec, a, b)
    return sum(la.top(max(1, len(la.align) // 10)) for la in las) / len(las)


def run_width(width, seeds, data, config, ste, log) -> dict:
    nets = []
    for s in seeds:
        torch.manual_seed(2000 + s)
        nets.append(train(MLP(64, (width,) * 3, 10), data.x_train, data.y_train, s, config))
    log(f"width {width}: {len(nets)} models trained")
    spec = mlp_spec(nets[0])
    sds = [n.state_dict() for n in nets]
    out = {"endpoints": [evaluate(n, data.x_test, data.y_test) for n in nets]}
    # STE alignment of every model to model 0
    ste_perms = [{}] + [ste_align(spec, nets[0], sds[0], sds[i], data, ste) for i in range(1, len(sds))]
    ste_aligned = [permute(spec, sd, p) for sd, p in zip(sds, ste_perms)]
    wm_pair = permute(spec, sds[1], weight_matching(spec, sds[0], sds[1]).perms)
    log(f"width {width}: STE done")
    for k in (2, len(sds)):
        merged_wm, _ = merge_models(spec, sds[:k])
        out[f"{k}_models"] = {
            "naive": evaluate_params(nets[0], average(sds[:k]), data),
            "wm": evaluate_params(nets[0], merged_wm, data),
            "ste": evaluate_params(nets[0], average(ste_aligned[:k]), data),
        }
        log(f"width {width}, {k} models: " + ", ".join(
            f"{m} acc {v['accuracy']:.3f}" for m, v in out[f"{k}_models"].items()))
    out["alignment_top10pct"] = {"naive": top_alignment(spec, sds[0], sds[1]),
                                 "wm": top_alignment(spec, sds[0], wm_pair),
                                 "ste": top_alignment(spec, sds[0], ste_aligned[1])}
    return out


def table(results: dict) -> str:
    env = results["environment"]
    cfg = results["config"]
    lines = [
        "# Merging MLPs on sklearn digits: naive vs weight matching vs STE",
        "",
        f"Command: `.venv/bin/python benchmarks/weights_merge.py`; threads {env['threads']}, load average "
        f"{tuple(round(v, 2) for v in env['loadavg'])}. MLPs 64 -> 3 x width -> 10, seeds {cfg['seeds']}, "
        f"Adam {cfg['epochs']} epochs; STE {cfg['ste_steps']} steps (lr {cfg['ste_lr']}, batch 128). "
        "Test accuracy / loss of the merged model (mean of the aligned weights).",
        "",
        "| width | models | end-point acc (mean) | naive acc | WM acc | STE acc | naive loss | WM loss | STE loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for width, r in results["widths"].items():
        ep = mean_std([e["accuracy"] for e in r["endpoints"]])[0]
        for k in (2, len(cfg["seeds"])):
            m = r[f"{k}_models"]
            lines.append(
                f"| {width} | {k} | {ep:.3f} | {m['naive']['accuracy']:.3f} | {m['wm']['accuracy']:.3f} | "
                f"{m['ste']['accuracy']:.3f} | {m['naive']['loss']:.3f} | {m['wm']['loss']:.3f} | "
                f"{m['ste']['loss']:.3f} |")
    lines += ["", "Singular-vector alignment (top 10% singular values, mean over layers) of model 1 to model 0:",
              "", "| width | naive | WM | STE |", "|---|---|---|---|"]
    for width, r in results["widths"].items():
        a = r["alignment_top10pct"]
        lines.append(f"| {width} | {a['naive']:.3f} | {a['wm']:.3f} | {a['ste']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict) -> None:
    plt = pyplot()

    widths = list(results["widths"])
    k_max = len(results["config"]["seeds"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, k in zip(axes, (2, k_max)):
        for i, (method, color) in enumerate((("naive", "tab:red"), ("wm", "tab:blue"), ("ste", "tab:orange"))):
            accs = [results["widths"][w][f"{k}_models"][method]["accuracy"] for w in widths]
            ax.bar([j + 0.25 * i for j in range(len(widths))], accs, 0.25, color=color, label=method)
        ax.set_xticks([j + 0.25 for j in range(len(widths))], [f"width {w}" for w in widths])
        ax.set_ylabel("test accuracy of merged model")
        ax.set_title(f"merging {k} models")
        ax.set_ylim(0, 1)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}.png", dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = Progress()
    widths = (64,) if args.quick else (64, 128)
    seeds = (0, 1, 2)
    config = TrainConfig(epochs=5 if args.quick else 40)
    ste = STEConfig(steps=20 if args.quick else 150, lr=1e-3)
    data = load_digits()
    results = {"environment": environment(),
               "config": {"widths": widths, "seeds": seeds, "epochs": config.epochs, "ste_steps": ste.steps,
                          "ste_lr": ste.lr},
               "widths": {}}
    for w in widths:
        results["widths"][w] = run_width(w, seeds, data, config, ste, log)
    results["environment_end"] = environment()
    print(table(results))
    if not args.quick:
        write_results(NAME, results, table(results))
        plot(results)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
