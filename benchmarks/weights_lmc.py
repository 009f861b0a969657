"""Linear mode connectivity on sklearn digits: MLPs of width 32..512 (3 hidden layers) and a
small CNN with BatchNorm, trained from different seeds; loss/accuracy barriers along the
straight line naive vs after weight matching (WM) and activation matching (AM); and the
analysis of Ito et al. (2024): L2 distance and singular-vector alignment before/after.

Writes benchmarks/results/weights_lmc.{json,md} and weights_lmc_{curves,barrier,svd,cnn}.png.

    .venv/bin/python benchmarks/weights_lmc.py            # full run (~5 min, 1 thread)
    .venv/bin/python benchmarks/weights_lmc.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from _common import pyplot
from equikit.weights import (
    CNN,
    MLP,
    activation_matching,
    cnn_spec,
    collect_activations,
    l2_distance,
    layer_alignment,
    mlp_spec,
    permute,
    weight_matching,
)
from weights_common import (
    Progress,
    TrainConfig,
    curves,
    environment,
    load_digits,
    mean_std,
    train,
    write_results,
)

NAME = "weights_lmc"


def train_models(make, data, seeds, config, log, tag):
    models = []
    for s in seeds:
        torch.manual_seed(1000 + s)
        net = train(make(), data.x_train, data.y_train, s, config)
        log(f"{tag} seed {s} trained")
        models.append(net)
    return models


def alignment_summary(spec, a, b) -> dict:
    """Per layer: singular values, alignment, weighted alignment, top-10% / bottom-50%."""
    out = {}
    for la in layer_alignment(spec, a, b):
        r = len(la.align)
        k = max(1, r // 10)
        out[la.key] = {"sv": la.sv_a.tolist(), "align": la.align.tolist(), "weighted": la.weighted(),
                       "top10pct": la.top(k), "bottom50pct": float(la.align[r // 2:].mean())}
    return out


def analyse_pair(spec, net_a, net_b, data, bn_batches=None) -> dict:
    a, b = net_a.state_dict(), net_b.state_dict()
    t0 = time.perf_counter()
    wm = weight_matching(spec, a, b)
    t_wm = time.perf_counter() - t0
    acts_a = collect_activations(net_a, spec, data.x_train)
    acts_b = collect_activations(net_b, spec, data.x_train)
    am = activation_matching(spec, acts_a, acts_b)
    b_wm, b_am = permute(spec, b, wm.perms), permute(spec, b, am)
    res = {"wm_sweeps": wm.sweeps, "wm_seconds": t_wm,
           "l2": {"naive": l2_distance(a, b), "wm": l2_distance(a, b_wm), "am": l2_distance(a, b_am),
                  "norm_a": l2_distance(a, {k: 0 * v for k, v in a.items()})},
           "align": {"naive": alignment_summary(spec, a, b), "wm": alignment_summary(spec, a, b_wm),
                     "am": alignment_summary(spec, a, b_am)},
           "wm_am_agree": float(sum((wm.perms[k] == am[k]).double().mean() for k in am) / len(am))}
    for name, pb in (("naive", b), ("wm", b_wm), ("am", b_am)):
        res[name] = curves(net_a, a, pb, data, bn_batches)
    return res


def summarise(pairs: list[dict]) -> dict:
    out = {}
    for method in ("naive", "wm", "am"):
        for metric in ("train_loss_barrier", "test_loss_barrier", "train_accuracy_barrier",
                       "test_accuracy_barrier"):
            out[f"{method}_{metric}"] = mean_std([p[method][metric] for p in pairs])
        out[f"{method}_l2"] = mean_std([p["l2"][method] for p in pairs])
        for stat in ("weighted", "top10pct", "bottom50pct"):
            out[f"{method}_align_{stat}"] = mean_std(
                [sum(v[stat] for v in p["align"][method].values()) / len(p["align"][method]) for p in pairs])
    out["wm_sweeps"] = mean_std([p["wm_sweeps"] for p in pairs])
    out["wm_seconds"] = mean_std([p["wm_seconds"] for p in pairs])
    out["wm_am_agree"] = mean_std([p["wm_am_agree"] for p in pairs])
    return out


def barriers_line(pair: dict) -> str:
    return "test loss barrier " + ", ".join(f"{m} {pair[m]['test_loss_barrier']:.3f}" for m in ("naive", "wm", "am"))


def endpoint_accuracy(pairs) -> float:
    return sum(p["naive"]["test_accuracy"][0] for p in pairs) / len(pairs)


def fmt(ms) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def table(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Linear mode connectivity on sklearn digits",
        "",
        f"Command: `.venv/bin/python benchmarks/weights_lmc.py`; threads {env['threads']}, "
        f"load average {tuple(round(v, 2) for v in env['loadavg'])}, {env['cpu']}.",
        f"MLPs 64 -> {results['config']['depth']} x width -> 10 (ReLU), {len(results['config']['seeds'])} "
        f"seeds, all pairs; Adam, {results['config']['epochs']} epochs. Barriers are "
        "max_t of the rise above the straight line between the end points (25 points), mean ± std "
        "over pairs. WM: weight matching, AM: activation matching.",
        "",
        "| model | naive train loss barrier | WM | AM | naive test loss barrier | WM | AM | "
        "naive test acc barrier | WM | AM | end-point test acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        s = r["summary"]
        lines.append(
            f"| {name} | {fmt(s['naive_train_loss_barrier'])} | {fmt(s['wm_train_loss_barrier'])} | "
            f"{fmt(s['am_train_loss_barrier'])} | {fmt(s['naive_test_loss_barrier'])} | "
            f"{fmt(s['wm_test_loss_barrier'])} | {fmt(s['am_test_loss_barrier'])} | "
            f"{fmt(s['naive_test_accuracy_barrier'])} | {fmt(s['wm_test_accuracy_barrier'])} | "
            f"{fmt(s['am_test_accuracy_barrier'])} | {r['endpoint_test_accuracy']:.3f} |")
    lines += [
        "",
        "## Analysis of Ito et al. (2024): distance vs singular-vector alignment",
        "",
        "L2 = ||theta_A - P theta_B||; alignment of singular pair i = max_j |<u^A_i, u^B_j>| "
        "|<v^A_i, v^B_j>| (1 = same rank-one direction), averaged over layers: weighted by "
        "singular value, over the top 10% singular values, over the bottom 50%.",
        "",
        "| model | L2 naive | L2 WM (ratio) | L2 AM (ratio) | align top-10% naive -> WM -> AM | "
        "align bottom-50% naive -> WM -> AM | sv-weighted naive -> WM | WM sweeps | WM = AM units |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        s = r["summary"]
        l2n = s["naive_l2"][0]
        lines.append(
            f"| {name} | {l2n:.2f} | {s['wm_l2'][0]:.2f} ({s['wm_l2'][0] / l2n:.3f}) | "
            f"{s['am_l2'][0]:.2f} ({s['am_l2'][0] / l2n:.3f}) | "
            f"{s['naive_align_top10pct'][0]:.3f} -> {s['wm_align_top10pct'][0]:.3f} -> "
            f"{s['am_align_top10pct'][0]:.3f} | {s['naive_align_bottom50pct'][0]:.3f} -> "
            f"{s['wm_align_bottom50pct'][0]:.3f} -> {s['am_align_bottom50pct'][0]:.3f} | "
            f"{s['naive_align_weighted'][0]:.3f} -> {s['wm_align_weighted'][0]:.3f} | "
            f"{s['wm_sweeps'][0]:.1f} | {s['wm_am_agree'][0]:.2f} |")
    return "\n".join(lines) + "\n"


def plots(results: dict) -> None:
    plt = pyplot()

    from weights_common import RESULTS

    models = results["models"]
    mlps = [k for k in models if k.startswith("mlp")]
    fig, axes = plt.subplots(2, len(mlps), figsize=(3.2 * len(mlps), 5.5), squeeze=False)
    for col, name in enumerate(mlps):
        for row, metric in enumerate(("test_loss", "test_accuracy")):
            ax = axes[row, col]
            for method, color in (("naive", "tab:red"), ("wm", "tab:blue"), ("am", "tab:green")):
                for i, p in enumerate(models[name]["pairs"]):
                    ax.plot(p[method]["ts"], p[method][metric], color=color, alpha=0.6,
                            label=method if i == 0 else None)
            ax.set_title(name if row == 0 else "")
            ax.set_xlabel("t")
            ax.set_ylabel(metric)
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}_curves.png", dpi=120)
    plt.close(fig)

    widths = [models[k]["width"] for k in mlps]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("train_loss_barrier", "test_loss_barrier")):
        for method, color in (("naive", "tab:red"), ("wm", "tab:blue"), ("am", "tab:green")):
            ms = [models[k]["summary"][f"{method}_{metric}"] for k in mlps]
            ax.errorbar(widths, [m[0] for m in ms], [m[1] for m in ms], color=color, marker="o", label=method)
        ax.axhline(0.07, color="gray", ls=":", label="0.07")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width")
        ax.set_ylabel(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}_barrier.png", dpi=120)
    plt.close(fig)

    name = mlps[-1]
    pair = models[name]["pairs"][0]
    layers = list(pair["align"]["naive"])
    fig, axes = plt.subplots(2, len(layers), figsize=(3.2 * len(layers), 5.5), squeeze=False)
    for col, key in enumerate(layers):
        for method, color in (("naive", "tab:red"), ("wm", "tab:blue"), ("am", "tab:green")):
            a = pair["align"][method][key]
            axes[0, col].plot(a["align"], color=color, label=method, lw=0.8)
        axes[1, col].semilogy(pair["align"]["naive"][key]["sv"], color="k")
        axes[0, col].set_title(f"{name}: {key}", fontsize=8)
        axes[0, col].set_ylabel("alignment")
        axes[1, col].set_ylabel("singular value")
        axes[1, col].set_xlabel("singular index (descending)")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}_svd.png", dpi=120)
    plt.close(fig)

    cnns = [k for k in models if k.startswith("cnn")]
    if cnns:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, metric in zip(axes, ("test_loss", "test_accuracy")):
            for method, color in (("naive", "tab:red"), ("wm", "tab:blue"), ("am", "tab:green")):
                for i, p in enumerate(models[cnns[0]]["pairs"]):
                    ax.plot(p[method]["ts"], p[method][metric], color=color, alpha=0.6,
                            label=method if i == 0 else None)
            ax.set_xlabel("t")
            ax.set_ylabel(metric)
            ax.set_title(f"{cnns[0]} (BatchNorm statistics recomputed)", fontsize=9)
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"{NAME}_cnn.png", dpi=120)
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two widths, two seeds, few epochs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = Progress()
    widths = (32, 128) if args.quick else (32, 64, 128, 256, 512)
    seeds = (0, 1) if args.quick else (0, 1, 2)
    depth = 3
    config = TrainConfig(epochs=5 if args.quick else 40)
    cnn_config = TrainConfig(epochs=3 if args.quick else 25)
    data = load_digits()
    results = {"environment": environment(),
               "config": {"widths": widths, "seeds": seeds, "depth": depth, "epochs": config.epochs,
                          "cnn_epochs": cnn_config.epochs, "batch_size": config.batch_size, "lr": config.lr},
               "models": {}}
    for width in widths:
        name = f"mlp{width}"
        nets = train_models(lambda w=width: MLP(64, (w,) * depth, 10), data, seeds, config, log, name)
        spec = mlp_spec(nets[0])
        pairs = []
        for i, j in itertools.combinations(range(len(nets)), 2):
            pairs.append(analyse_pair(spec, nets[i], nets[j], data))
            log(f"{name} pair {i}-{j}: " + barriers_line(pairs[-1]))
        results["models"][name] = {"width": width, "pairs": pairs, "summary": summarise(pairs),
                                   "endpoint_test_accuracy": endpoint_accuracy(pairs)}
    images = data.images()
    channels = (16, 32) if args.quick else (16, 32, 32)
    name = "cnn" + "-".join(map(str, channels))
    nets = train_models(lambda: CNN(1, channels, 10), images, seeds, cnn_config, log, name)
    spec = cnn_spec(nets[0])
    bn_batches = list(images.x_train.split(256))
    pairs = []
    for i, j in itertools.combinations(range(len(nets)), 2):
        pairs.append(analyse_pair(spec, nets[i], nets[j], images, bn_batches))
        log(f"{name} pair {i}-{j}: " + barriers_line(pairs[-1]))
    results["models"][name] = {"width": channels, "pairs": pairs, "summary": summarise(pairs),
                               "endpoint_test_accuracy": endpoint_accuracy(pairs)}
    results["environment_end"] = environment()
    if args.quick:
        print(table(results))
        return 0
    write_results(NAME, results, table(results))
    plots(results)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
