"""Exact permutation learning (Giapitzakis, Back de Luca, Fountoulakis 2025, arXiv:2502.16763):
how many independently trained wide two-layer ReLU networks must be averaged (then rounded)
before the ensemble outputs ``P x`` exactly, (a) for one input, (b) for all ``2^k - 1``
nonzero binary inputs, as ``k`` grows; beside the paper's rates ``O(k log k)`` and ``O(k^2)``.

Per ``k`` and seed: a random target permutation, ``M`` networks (width ``--width``, NTK
parameterisation, bias std 1) trained by full-batch gradient descent on the ``k`` basis vectors
(step ``1 / lambda_max`` of the infinite-width NTK, steps until the slowest mode has contracted
by ``1e-6``), all networks at once in chunks (``equikit.models.permutation_learning``). The
ensemble sizes are read off one sequence of ``M`` networks: for each input the smallest ``m``
from which every prefix average ``m' >= m`` is exact (last failing prefix + 1), so (b) is the
max over inputs. (a) is a uniformly drawn input that was not trained on (``|x| >= 2``); also
reported: the median over all inputs. ``M`` is set per ``k`` from the infinite-width
prediction (x ``--safety``), capped by ``--max-models``; a seed whose full ensemble still fails
is reported as ``> M`` (censored).

Labelled comparison (no training): the infinite-width Gaussian-process limit
(``infinite_width_moments``). For one input the output coordinates are independent Gaussians,
so its ``m*`` is simulated exactly from the mean and variance; for all inputs the
"GP (indep.)" column is the smallest ``m`` with ``prod Phi(z sqrt(m)) >= 1/2`` over all
(input, coordinate) margins ``z``, treating inputs as independent (they are positively
correlated, so this is an estimate, not a bound).

    python benchmarks/graphs_permutation.py                       # k = 4..12, 3 seeds
    python benchmarks/graphs_permutation.py --ks 4 5 6 --seeds 0  # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, pyplot, write_results
from equikit.models.permutation_learning import (
    PermutationEnsembleConfig,
    ensemble_outputs,
    infinite_width_moments,
    init_ensemble,
    last_failing_sizes,
    nonzero_binary_inputs,
    permute_features,
    relu_kernels,
    train_ensemble,
)


def gd_schedule(k: int, bias_std: float = 1.0, contraction: float = 1e-6) -> tuple[float, int]:
    """Step ``1 / lambda_max`` of the infinite-width NTK on the basis vectors and the number of
    steps after which its slowest mode has shrunk by ``contraction``."""
    X = torch.eye(k, dtype=torch.float64)
    ev = torch.linalg.eigvalsh(relu_kernels(X, X, bias_std)[1])
    lo, hi = float(ev.min()), float(ev.max())
    return 1.0 / hi, math.ceil(math.log(contraction) / math.log(1.0 - lo / hi))


def margins(k: int, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Infinite-width ``z = margin / sd`` per (input, coordinate) for the sign rule, and ``|x|``."""
    x = nonzero_binary_inputs(k, dtype=torch.float64)
    mu, sd = infinite_width_moments(x, perm)
    thr = torch.where(x.sum(-1) == 1, 0.5, 0.0)[:, None]
    target = permute_features(x, perm)
    margin = torch.where(target > 0, mu - thr, thr - mu)
    # one-hot inputs: a trained network interpolates (sd -> 0 in the GP limit); they never fail
    z = torch.where(x.sum(-1, keepdim=True) == 1, torch.inf, margin / sd.clamp(min=1e-300)[:, None])
    return z, x.sum(-1)


def gp_all_inputs(z: torch.Tensor) -> int:
    """Smallest ``m`` with ``prod Phi(z sqrt(m)) >= 1/2`` (inputs treated as independent)."""
    zf = z[torch.isfinite(z)].double()
    normal = torch.distributions.Normal(0.0, 1.0)
    lo, hi = 1, 1
    while float(torch.log(normal.cdf(zf * math.sqrt(hi))).sum()) < math.log(0.5):
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if float(torch.log(normal.cdf(zf * math.sqrt(mid))).sum()) >= math.log(0.5):
            hi = mid
        else:
            lo = mid + 1
    return hi


def gp_one_input(z_row: torch.Tensor, n_models: int, gen: torch.Generator) -> int:
    """Simulated ``m*`` of one input in the GP limit: standardised coordinates ``z + noise_t``,
    running means over ``n_models`` draws, last failing prefix + 1."""
    noise = torch.randn(n_models, z_row.numel(), generator=gen, dtype=torch.float64)
    running = torch.cumsum(noise, 0) / torch.arange(1, n_models + 1, dtype=torch.float64)[:, None]
    fail = (running + z_row <= 0).any(-1)
    idx = torch.nonzero(fail).flatten()
    return int(idx.max()) + 2 if idx.numel() else 1


def run_one(k: int, seed: int, n_models: int, width: int, chunk_elems: int) -> dict:
    gen = torch.Generator().manual_seed(1000 * k + seed)
    perm = torch.randperm(k, generator=gen)
    lr, steps = gd_schedule(k)
    x = nonzero_binary_inputs(k)
    X = torch.eye(k)
    Y = permute_features(X, perm)
    last_fail = torch.zeros(x.shape[0], dtype=torch.long)
    running, done, residual = None, 0, 0.0
    chunk = max(1, chunk_elems // (x.shape[0] * width))
    t0 = time.perf_counter()
    while done < n_models:
        c = min(chunk, n_models - done)
        params = init_ensemble(c, k, k, width, generator=gen)
        params, res = train_ensemble(params, X, Y, steps=steps, lr=lr)
        residual = max(residual, res)
        lf, running = last_failing_sizes(ensemble_outputs(params, x), x, perm, start_sum=running, start_count=done)
        last_fail = torch.maximum(last_fail, lf)
        done += c
    sizes = last_fail + 1
    unseen = torch.nonzero(x.sum(-1) >= 2).flatten()
    pick = int(unseen[torch.randint(len(unseen), (1,), generator=gen)])
    z, _ = margins(k, perm)
    return {"k": k, "seed": seed, "perm": perm.tolist(), "n_models": n_models, "width": width, "steps": steps,
            "lr": lr, "max_train_residual": residual, "seconds": round(time.perf_counter() - t0, 2),
            "one_input": x[pick].tolist(), "m_one": int(sizes[pick]), "m_all": int(sizes.max()),
            "m_median_input": float(sizes.float().median()), "censored_all": bool(sizes.max() > n_models),
            "gp_m_one": gp_one_input(z[pick], 20 * n_models, gen), "gp_m_all_indep": gp_all_inputs(z),
            "gp_min_z": float(z[torch.isfinite(z)].min())}


def fit(ks, ms, rate) -> float:
    """``c`` of ``m = c f(k)`` by least squares in log space."""
    f = np.array([rate(k) for k in ks], dtype=float)
    return float(np.exp(np.mean(np.log(np.asarray(ms, dtype=float)) - np.log(f))))


RATES = {"k log k": lambda k: k * math.log(k), "k^2": lambda k: k * k}


def summarise(rows, ks) -> dict:
    out = {}
    for k in ks:
        r = [x for x in rows if x["k"] == k]
        out[k] = {key: statistics.median([x[key] for x in r]) for key in
                  ("m_one", "m_all", "m_median_input", "gp_m_one", "gp_m_all_indep", "seconds")}
        out[k]["censored"] = sum(x["censored_all"] for x in r)
        out[k]["n_models"] = max(x["n_models"] for x in r)
        out[k]["seeds"] = len(r)
    return out


def plot(summary, fits, path: Path) -> None:
    plt = pyplot()
    ks = sorted(summary)
    kk = np.linspace(min(ks), max(ks), 100)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, gp_key, title in ((axes[0], "m_one", "gp_m_one", "(a) one input"),
                                   (axes[1], "m_all", "gp_m_all_indep", "(b) all 2^k - 1 inputs")):
        ax.plot(ks, [summary[k][key] for k in ks], "o-", label="trained ensembles (median)")
        ax.plot(ks, [summary[k][gp_key] for k in ks], "s--", alpha=0.7, label="infinite-width GP")
        if key == "m_one":
            ax.plot(ks, [summary[k]["m_median_input"] for k in ks], "^-", alpha=0.7, label="median over inputs")
        for name, rate in RATES.items():
            ax.plot(kk, [fits[key][name] * rate(k) for k in kk], ":", label=f"{fits[key][name]:.2g} {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("k")
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("smallest exact ensemble size m")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _load_rows(path) -> list[dict]:
    if path is None:
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if "k" in row and "m_all" in row:
                rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=list(range(4, 13)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--safety", type=float, default=3.0, help="networks per k = safety x GP prediction (b)")
    parser.add_argument("--max-models", type=int, default=4000)
    parser.add_argument("--chunk-elems", type=int, default=1 << 23, help="networks x inputs x width per chunk")
    parser.add_argument("--rows-from", default=None,
                        help="JSON lines of an earlier run's stderr: its (k, seed) rows are reused, not rerun")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    PermutationEnsembleConfig(k=max(args.ks), width=args.width)  # validates k and width
    env = environment()
    t0 = time.perf_counter()
    rows = _load_rows(args.rows_from)
    done = {(r["k"], r["seed"]) for r in rows}
    for k in args.ks:
        if all((k, seed) in done for seed in args.seeds):
            continue
        gp = gp_all_inputs(margins(k, torch.randperm(k, generator=torch.Generator().manual_seed(k)))[0])
        n_models = min(args.max_models, max(32, math.ceil(args.safety * gp)))
        for seed in [s for s in args.seeds if (k, s) not in done]:
            row = run_one(k, seed, n_models, args.width, args.chunk_elems)
            rows.append(row)
            print(json.dumps({key: v for key, v in row.items() if key != "perm"}), file=sys.stderr, flush=True)
    env_end = environment()
    summary = summarise(rows, sorted({r["k"] for r in rows}))
    ks = sorted(summary)
    fit_keys = ("m_one", "m_median_input", "m_all")
    fits = {key: {name: fit(ks, [summary[k][key] for k in ks], rate) for name, rate in RATES.items()}
            for key in fit_keys}
    residuals = {key: {name: float(np.std(np.log([summary[k][key] for k in ks])
                                          - np.log([fits[key][name] * rate(k) for k in ks])))
                       for name, rate in RATES.items()} for key in fit_keys}
    slopes = {key: float(np.polyfit(np.log(ks), np.log([summary[k][key] for k in ks]), 1)[0])
              for key in (*fit_keys, "gp_m_one", "gp_m_all_indep")}
    payload = {"benchmark": "graphs_permutation", "environment": env, "loadavg_end": env_end["loadavg"],
               "wall_seconds": round(time.perf_counter() - t0, 1), "args": vars(args),
               "rounding": "sign: 1 iff output > 0; threshold 1/2 on the k one-hot (training) inputs",
               "paper_rates": {"one input": "O(k log k)", "all inputs": "O(k^2)"},
               "summary": {str(k): v for k, v in summary.items()}, "fits": fits,
               "fit_log_residual_std": residuals, "loglog_slopes": slopes, "results": rows}
    lines = ["| k | seeds | networks trained M | (a) m one input | (a) GP | median-input m | (b) m all inputs | "
             "(b) GP (indep.) | censored (b) | s per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k in ks:
        s = summary[k]
        lines.append(f"| {k} | {s['seeds']} | {s['n_models']} | {s['m_one']:.0f} | {s['gp_m_one']:.0f} | "
                     f"{s['m_median_input']:.0f} | {s['m_all']:.0f} | {s['gp_m_all_indep']:.0f} | "
                     f"{s['censored']}/{s['seeds']} | {s['seconds']:.1f} |")
    fit_lines = ["| quantity | paper's rate | fit c k log k (log-resid. std) | fit c k^2 (log-resid. std) | "
                 "log-log slope |", "|---|---|---|---|---|"]
    for key, label, rate in (("m_one", "(a) one input", "O(k log k)"),
                             ("m_median_input", "(a') median over inputs", "O(k log k)"),
                             ("m_all", "(b) all inputs", "O(k^2)")):
        fit_lines.append(f"| {label} | {rate} | {fits[key]['k log k']:.3g} ({residuals[key]['k log k']:.2f}) | "
                         f"{fits[key]['k^2']:.3g} ({residuals[key]['k^2']:.2f}) | {slopes[key]:.2f} |")
    md = ("# Exact permutation learning: ensemble size vs k\n\n"
          f"`python benchmarks/graphs_permutation.py --ks {' '.join(map(str, args.ks))} --seeds "
          f"{' '.join(map(str, args.seeds))} --width {args.width} --safety {args.safety} --max-models "
          f"{args.max_models}`" + (f" (rows of (k, seed) pairs already in `{args.rows_from}` reused from earlier "
                                  "runs of this script, see `results` in the json; `--safety` and `--max-models` "
                                  "apply only to pairs run now, the M column shows what each row used)"
                                  if args.rows_from else "")
          + f"; two-layer ReLU networks of width {args.width} (NTK parameterisation, bias std 1), "
          "full-batch GD on the k basis vectors, sign rounding; medians over seeds (a new random permutation and "
          f"initialisation per seed). {env['threads']} thread, load average at start {env['loadavg']}, end "
          f"{env_end['loadavg']}; wall {payload['wall_seconds']} s.\n\n" + "\n".join(lines) + "\n\n"
          + "\n".join(fit_lines) + "\n\n"
          f"GP columns: the infinite-width Gaussian-process limit (closed form, no training; (b) treats inputs as "
          f"independent). Log-log slopes of the GP columns: one input {slopes['gp_m_one']:.2f}, all inputs "
          f"{slopes['gp_m_all_indep']:.2f}.\n")
    out = Path(args.out)
    write_results("graphs_permutation", payload, md, out)
    plot(summary, fits, out / "graphs_permutation.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
