"""Seconds per training epoch of ``equikit train nbody --model egnn`` (EGNN 64 x 4, batch 100,
3000 training simulations: 30 steps), the current path against the path before the speed
work, and each change alone, interleaved in one process (1 torch thread):

- ``batch``: batches indexed from the dataset tensors (:meth:`NBodyDataset.batch`) vs the
  per-sample ``collate_nbody([ds[i] for i in idx])`` the loop used before;
- ``pair_mlp``: the first edge-MLP layer applied to nodes before the gather vs the published
  concatenation ``phi_e([h_i, h_j, |x_i - x_j|^2, a_ij])`` on every edge;
- ``fused_adam``: ``Adam(fused=True)`` vs the default per-parameter loop.

Also the cost of one validation pass over all 2000 validation simulations.

    python benchmarks/nbody_epoch.py --repeats 3

writes ``benchmarks/results/nbody_epoch.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, write_results
from equikit.data.nbody import PROTOCOL_TRAIN_SAMPLES, collate_nbody
from equikit.models.dynamics import _mean_at, _sum_at
from equikit.train import TrainConfig
from equikit.train.nbody import build_nbody_model, load_nbody_splits, nbody_mse, nbody_settings


def _concat_forward(self, h, x, vel, edge_index, edge_attr=None):
    """EGNNLayer.forward as it was: the edge MLP on the concatenated (E, 2H + 1 + F) input."""
    src, dst = edge_index[0], edge_index[1]
    n = x.shape[0]
    diff = x[dst] - x[src]
    radial = (diff * diff).sum(-1, keepdim=True)
    parts = [h[dst], h[src], radial] + ([edge_attr] if edge_attr is not None else [])
    m = self.edge_mlp(torch.cat(parts, dim=-1))
    x = x + _mean_at(diff * self.coord_mlp(m), dst, n) + self.vel_mlp(h) * vel
    h = h + self.node_mlp(torch.cat([h, _sum_at(m, dst, n)], dim=-1))
    return h, x


def epoch_runner(data, *, batch: bool, pair_mlp: bool, fused_adam: bool):
    torch.manual_seed(0)
    model = build_nbody_model("egnn", hidden=64, n_layers=4)
    if not pair_mlp:
        for layer in model.layers:
            layer.forward = types.MethodType(_concat_forward, layer)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-12, fused=fused_adam or None)
    ds, gen = data["train"], torch.Generator().manual_seed(0)

    def run():
        order = torch.randperm(len(ds), generator=gen)
        for k in range(0, len(ds) - len(ds) % 100, 100):
            idx = order[k : k + 100]
            b = ds.batch(idx) if batch else collate_nbody([ds[int(i)] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(b.pos, b.vel, b.edge_index, b.edge_attr), b.target)
            loss.backward()
            opt.step()

    return run, model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--root", default=None)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    env0 = environment()
    settings = nbody_settings(TrainConfig(extra={"n_train": PROTOCOL_TRAIN_SAMPLES}))
    data = load_nbody_splits(settings, root=args.root)
    variants = {
        "before (collate, concat, Adam loop)": dict(batch=False, pair_mlp=False, fused_adam=False),
        "only batch": dict(batch=True, pair_mlp=False, fused_adam=False),
        "only pair_mlp": dict(batch=False, pair_mlp=True, fused_adam=False),
        "only fused_adam": dict(batch=False, pair_mlp=False, fused_adam=True),
        "after (all three)": dict(batch=True, pair_mlp=True, fused_adam=True),
    }
    runners = {k: epoch_runner(data, **v) for k, v in variants.items()}
    res = interleaved({k: r for k, (r, _) in runners.items()}, repeats=args.repeats, warmup=1)
    model = runners["after (all three)"][1]
    t0 = time.perf_counter()
    nbody_mse(model, data["val"])
    val_s = time.perf_counter() - t0
    env1 = environment()
    base = res["before (collate, concat, Adam loop)"]["median_s"]
    rows = ["| path | s / epoch (median) | speed-up vs before |", "|---|---|---|"]
    rows += [f"| {k} | {v['median_s']:.2f} | {base / v['median_s']:.2f}x |" for k, v in res.items()]
    md = "\n".join([
        "# n-body EGNN: seconds per training epoch (30 steps of batch 100)", "",
        f"Interleaved, {args.repeats} repeats after one warm-up epoch, 1 torch thread, {env0['cpu']}, "
        f"{env0['cores']} cores shared with other jobs (1-min load average {env0['loadavg'][0]:.1f} at the start, "
        f"{env1['loadavg'][0]:.1f} at the end): provisional, the ratios are the measurement.", "",
        *rows, "",
        f"One validation pass over all 2000 validation simulations (batches of 500, no grad): {val_s:.2f} s.", "",
        "Command: `python benchmarks/nbody_epoch.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`.", ""])
    payload = {"environment": env0, "environment_end": env1, "repeats": args.repeats,
               "epoch_seconds": {k: v["times_s"] for k, v in res.items()},
               "median_s": {k: v["median_s"] for k, v in res.items()}, "validation_pass_s": val_s}
    write_results("nbody_epoch", payload, md, Path(args.out))
    print(md)


if __name__ == "__main__":
    main()
