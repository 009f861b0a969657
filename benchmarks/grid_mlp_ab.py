"""SphereGridMLP now against the same layer at another git revision (thread time, one process).

A revision's ``src/equikit/nn/_grid_mlp.py`` is loaded beside the current one; both get the same
weights (state dict) and inputs, the potential's settings (polynomial activation of degree 3,
``input_scale`` 5 / ``output_scale`` 0.2, ``output="degree"`` with 3 groups as ``facet_gain_el``,
or ``output="grid"`` as ``facet_cond``). Measured per case, interleaved, median thread time:
"forces" (frozen weights: forward + input gradient, as in MD) and "train" (weights train: forward
+ input gradient with ``create_graph`` + backward, as a training step with forces in the loss)::

    .venv/bin/python benchmarks/grid_mlp_ab.py --rev 9b068e7 --name grid_mlp_ab_s8

Writes ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _common import environment, interleaved, write_results  # noqa: E402
from equikit.models.potential import PolynomialActivation  # noqa: E402
from equikit.nn import SphereGridMLP  # noqa: E402

SIZES = {"small": (32, 1), "large": (64, 2)}  # channels, output lmax (the potential's hidden irreps)


def load_revision(rev: str):
    """The ``equikit.nn._grid_mlp`` module of git revision ``rev``."""
    text = subprocess.run(["git", "show", f"{rev}:src/equikit/nn/_grid_mlp.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "grid_mlp_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("grid_mlp_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def case(old_module, size: str, mode: str, rows: int, train: bool, repeats: int) -> dict:
    c, lout = SIZES[size]
    irreps_in = "+".join(f"{c}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(4))
    irreps_out = "+".join(f"{c}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lout + 1))
    kw = dict(hidden=(c,), act=PolynomialActivation(3), exact_degree=3, output=mode,
              num_groups=3 if mode == "degree" else 1, input_scale=5.0, output_scale=0.2)
    torch.manual_seed(0)
    new = SphereGridMLP(irreps_in, irreps_out, **kw)
    old = old_module.SphereGridMLP(irreps_in, irreps_out, **kw)
    old.load_state_dict(new.state_dict())
    x = torch.randn(rows, new.irreps_in.dim, requires_grad=True)
    group, cond = torch.randint(0, 3, (rows,)), torch.randn(rows, c)
    for p in [*new.parameters(), *old.parameters()]:
        p.requires_grad_(train)

    def run(m):
        out = m(x, cond, group=group)
        gx = torch.autograd.grad(out.pow(2).sum(), x, create_graph=train)[0]
        if train:
            gx.pow(2).sum().backward()
        return out.detach()

    ref = run(old)
    err = float((run(new) - ref).abs().max() / ref.abs().max())
    t = interleaved({"new": lambda: run(new), "old": lambda: run(old)}, repeats=repeats, clock=time.thread_time)
    return {"size": size, "mode": mode, "rows": rows, "measure": "train" if train else "forces",
            "new_ms": t["new"]["median_s"] * 1e3, "old_ms": t["old"]["median_s"] * 1e3,
            "speedup": t["old"]["median_s"] / t["new"]["median_s"], "max_rel_diff": err}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", required=True, help="git revision to compare against")
    ap.add_argument("--rows", type=int, nargs="*", default=[9, 216, 1024])
    ap.add_argument("--sizes", nargs="*", default=list(SIZES))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--name", default="grid_mlp_ab")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    old_module = load_revision(args.rev)
    rows = []
    for size in args.sizes:
        for mode in ("degree", "grid"):
            for n in args.rows:
                for train in (False, True):
                    r = case(old_module, size, mode, n, train, args.repeats if n < 1000 else max(5, args.repeats // 2))
                    print(r, flush=True)
                    rows.append(r)
    env = environment()
    md = [f"# SphereGridMLP: this tree vs revision {args.rev}", "",
          f"`benchmarks/grid_mlp_ab.py --rev {args.rev}`; median thread time, interleaved, {env['threads']} thread; "
          f"load average {env['loadavg']}; {env['cpu']}.", "",
          "| size | output | rows | measure | new ms | old ms | speedup | max rel diff |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['size']} | {r['mode']} | {r['rows']} | {r['measure']} | {r['new_ms']:.2f} | {r['old_ms']:.2f} | "
           f"{r['speedup']:.2f} | {r['max_rel_diff']:.1e} |" for r in rows]
    write_results(args.name, {"environment": env, "rev": args.rev, "rows": rows}, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
