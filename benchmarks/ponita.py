"""PONITA-style model: ms per training step (forward + backward + Adam) on one batch of 100
charged n-body systems, before/after issue #8, interleaved in one process, 1 thread.

Candidates: ``before`` (the model as of commit ``--before``, loaded from git history),
``fixed`` and ``frame`` (today's ``Ponita(grid=...)``), each at the published n-body size
(128 channels, basis 256, 5 layers, 20 orientations) and at the shrunk size the n-body
benchmark trains. Also the relative E(3) error of the predicted displacement (float64, 16
elements incl. reflections, untrained model) per grid mode.

    python benchmarks/ponita.py [--repeats 5] [--before 289bdd7]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved, write_results
from equikit.check import equivariance_error
from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, collate_nbody, generate_charged_nbody
from equikit.groups import E, PointCloud
from equikit.models import Ponita

SIZES = {"published": {}, "shrunk": {"hidden": 32, "basis": 32, "n_layers": 4, "n_orientations": 12}}


def _old_ponita(commit: str):
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{commit}:src/equikit/models/ponita.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "ponita_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ponita_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Ponita


def _step(model, batch):
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step():
        opt.zero_grad()
        out = model(batch.pos, batch.vel, batch.edge_index, batch.edge_attr)
        torch.nn.functional.mse_loss(out, batch.target).backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", default="289bdd7")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = ChargedNBodyConfig(n_train=100, n_val=0, n_test=0, steps=600, sample_every=50)
    ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9)
    batch = collate_nbody([ds[i] for i in range(100)])
    before = _old_ponita(args.before)
    timings = {}
    for size, kw in SIZES.items():
        cands = {}
        for name, cls, extra in (("before", before, {}), ("fixed", Ponita, {"grid": "fixed"}),
                                 ("frame", Ponita, {"grid": "frame"})):
            torch.manual_seed(0)
            cands[name] = _step(cls(**kw, **extra), batch)
        timings[size] = interleaved(cands, repeats=args.repeats, warmup=1)
    # equivariance of the displacement, untrained, float64
    small = collate_nbody([ds[i] for i in range(3)])
    x = {k: v.double() if v.is_floating_point() else v for k, v in small.inputs().items()}
    e3_in = PointCloud(E(3), vectors=("vel",), scalars=("charges", "edge_attr", "edge_index"))
    disp = PointCloud(E(3), pos=None, vectors=("d",))
    errors = {}
    for grid in ("fixed", "frame"):
        torch.manual_seed(0)
        m = Ponita(grid=grid, **SIZES["shrunk"]).double().eval()
        f = lambda d, m=m: {"d": m(d["pos"], d["vel"], d["edge_index"], d["edge_attr"]) - d["pos"]}  # noqa: E731
        errors[grid] = equivariance_error(f, x, e3_in, disp, n_samples=16, generator=1).rel_max
    env = environment()
    rows = []
    for size, res in timings.items():
        b = res["before"]["median_s"]
        for name, r in res.items():
            rows.append(f"| {size} | {name} | {1000 * r['median_s']:.0f} | {b / r['median_s']:.2f} |")
    md = "\n".join([
        "# PONITA-style model: training-step time and equivariance (issue #8)", "",
        f"One training step (forward, backward, Adam) on a batch of 100 charged n-body systems "
        f"(500 particles, 2000 directed edges), median of {args.repeats} interleaved repeats, "
        f"{env['threads']} thread, {env['cpu']}, load average {env['loadavg'][0]:.2f} "
        f"(shared machine: provisional). `before` = commit {args.before}; published size = 128 "
        "channels, basis 256, 5 layers, 20 orientations; shrunk = the n-body benchmark's 32/32/4/12.", "",
        "| size | model | ms / step | speed-up vs before |", "|---|---|---|---|", *rows, "",
        "Relative E(3) error of the predicted displacement (untrained shrunk model, float64, 16 elements "
        f"incl. reflections): fixed grid {errors['fixed']:.2e}, frame grid {errors['frame']:.2e}.", "",
        "Command: `python benchmarks/ponita.py`.", ""])
    write_results("ponita", {"environment": env, "timings": timings, "displacement_e3_rel_max": errors,
                             "before": args.before}, md)
    print(md)


if __name__ == "__main__":
    main()
