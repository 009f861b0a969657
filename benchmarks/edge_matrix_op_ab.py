"""Thread-time A/B of the Gaunt edge-matrix op's eager dispatch: the ``autograd.Function`` of the session-7
code (commit ``9b068e7``, loaded from git) against the current ``tp.GauntEdgeMatrix`` (the same kernels,
eager calls through an ``autograd.Function``, the ``torch.library`` custom op under ``torch.compile``)
and against the custom op called eagerly (what every eager call would cost through the op)::

    .venv/bin/python benchmarks/edge_matrix_op_ab.py --repeats 60

Inputs: the edge layers' own inputs in ``benchmarks/atoms_mace_speed.py``'s potential
(``facet_gain_el``, small: hidden ``32x0e+32x1o``, ``C = 32``, max_ell 3), captured by a hook on one
ethanol frame (9 atoms, 72 edges: forces / MD) and on the Cu108 training batch (two 3x3x3 fcc cells,
~9200 edges); both interaction layers (``d_in`` 1 and 4, ``d_out`` 16). Measures, float32, one thread,
thread CPU time, candidates interleaved in a rotating order, medians: ``fb`` = forward + first-order
backward in ``x``, ``sh``, ``w_out`` (forces, MD); ``fb2`` = forward + gradients with ``create_graph``
+ a backward of a loss on them (force-loss training).
Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import atoms_mace_speed as amb
from _common import environment, interleaved, write_results
from equikit.tp import _edge_matrix as em

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "9b068e7"  # the last commit with the autograd.Function-only edge-matrix op
STRUCTURES = {"ethanol": 1, "cu108": 2}  # one molecule (72 edges); the Cu108 training batch (~9200 edges)


def old_module() -> types.ModuleType:
    """``equikit.tp._edge_matrix`` as of ``OLD_COMMIT`` (the kernel source is unchanged since)."""
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:src/equikit/tp/_edge_matrix.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType("edge_matrix_old")
    mod.__file__ = em.__file__  # finds the same kernel source (and its cached build)
    exec(compile(src, "edge_matrix_old", "exec"), mod.__dict__)
    return mod


def captured_inputs(case: str, data_python: str) -> list[tuple]:
    """``(x, sh, w_out, dst, num_nodes)`` of each interaction's edge layer in the potential on ``case``."""
    kind, what, _ = amb.CASES[case]
    count = STRUCTURES[case]
    atoms = amb.mmff_atoms(what, data_python)[:count] if kind == "mmff" else amb.emt_atoms(what, count)
    elements = sorted({int(z) for a in atoms for z in a.numbers})
    avg = amb.average_num_neighbors(amb.to_batch(atoms[:1], torch.float64), amb.CUTOFF)
    model = amb.ours_model("small", "facet_gain_el", elements, avg)
    got = []
    hooks = [layer.edge.register_forward_pre_hook(lambda mod, args: got.append((mod, args)))
             for layer in model.interactions]
    amb.run_ours(model, amb.prep_ours(atoms, torch.float32))
    for h in hooks:
        h.remove()
    return [(mod, tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)) for mod, args in got]


def candidates(mod, args, old) -> dict:
    """name -> (layer callable (x, sh, w) -> out) for the three routes."""
    dst, n = args[3:]
    old_layer = old.GauntEdgeMatrix(mod.irreps_in, mod.irreps_sh, 3)
    d_in, d_out, nb = mod.irreps_in.dim, mod.irreps_out.dim, len(mod.irreps_out)

    def by_op(x, sh, w):  # GauntEdgeMatrix.forward with the op in place of the autograd.Function
        t = (sh @ mod.matrix).reshape(sh.shape[0], d_in, d_out)
        em._check("GauntEdgeMatrix", x, t, w, d_out, dst, n)
        return em._edge_matrix_op(x, t, w, None, dst, mod.blocks, mod.starts, 3, n, nb)

    return {"old Function": lambda x, sh, w: old_layer(x, sh, w, dst, n),
            "new (eager)": lambda x, sh, w: mod(x, sh, w, dst, n),
            "op, eager dispatch": by_op}


def measure(fn, x, sh, w, kind: str):
    ins = [v.clone().requires_grad_(True) for v in (x, sh, w)]

    def fb():
        out = fn(*ins)
        torch.autograd.grad(out.pow(2).sum(), ins)

    def fb2():
        out = fn(*ins)
        gx, gsh, _ = torch.autograd.grad(out.pow(2).sum(), ins, create_graph=True)
        torch.autograd.grad(gsh.pow(2).sum() + (gx * ins[0]).sum(), ins)

    return fb if kind == "fb" else fb2


def run(case: str, repeats: int, data_python: str, old) -> list[dict]:
    rows = []
    for layer_index, (mod, args) in enumerate(captured_inputs(case, data_python)):
        x, sh, w, _, n = args
        for kind in ("fb", "fb2"):
            calls = {name: measure(fn, x, sh, w, kind) for name, fn in candidates(mod, args, old).items()}
            ref = None
            for name, fn in candidates(mod, args, old).items():  # the three routes agree
                out = fn(x, sh, w)
                ref = out if ref is None else ref
                assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max())), name
            timed = interleaved(calls, repeats, warmup=3, clock=time.thread_time, rotate=True)
            med = {k: 1e3 * v["median_s"] for k, v in timed.items()}
            rows.append({"case": case, "layer": layer_index, "edges": int(x.shape[0]), "nodes": int(n),
                         "C": int(x.shape[1]), "d_in": int(x.shape[2]), "d_out": mod.irreps_out.dim, "measure": kind,
                         "median_ms": med, "times_s": {k: v["times_s"] for k, v in timed.items()}})
            print(f"{case} layer {layer_index} E={x.shape[0]} {kind}: "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in med.items()), flush=True)
    return rows


def table(payload: dict) -> str:
    env, end = payload["env"], payload["env_end"]
    lines = ["# Edge-matrix op: eager dispatch A/B (thread time, one thread, float32)", "",
             f"`{payload['command']}`; torch {env['torch']}, {env['cpu']}; load average "
             f"{tuple(round(v, 2) for v in env['loadavg'])} at start, {tuple(round(v, 2) for v in end['loadavg'])} "
             f"at end; medians of {payload['repeats']} interleaved calls (rotating order), thread CPU time. "
             f"old = the autograd.Function of `{OLD_COMMIT}`; new = `tp.GauntEdgeMatrix` now (eager: "
             "autograd.Function, the custom op under torch.compile); op = the custom op called eagerly. "
             "fb: forward + first-order backward; fb2: forward + create_graph gradients + backward of a loss "
             "on them.", "",
             "| case | layer | E | d_in | measure | old (ms) | new (ms) | op eager (ms) | new / old | op / old |",
             "|---" * 10 + "|"]
    for r in payload["runs"]:
        t = r["median_ms"]
        o, nw, op = t["old Function"], t["new (eager)"], t["op, eager dispatch"]
        lines.append(f"| {r['case']} | {r['layer']} | {r['edges']} | {r['d_in']} | {r['measure']} | {o:.3f} | "
                     f"{nw:.3f} | {op:.3f} | {nw / o:.3f} | {op / o:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["ethanol", "cu108"], choices=["ethanol", "cu108"])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--data-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--name", default="edge_matrix_op_ab")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not em.available():
        raise SystemExit("edge_matrix_op_ab: the edge-matrix kernel did not build (no C++ compiler?)")
    old = old_module()
    payload = {"command": "benchmarks/edge_matrix_op_ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "env": environment(), "repeats": args.repeats, "old_commit": OLD_COMMIT, "runs": []}
    for case in args.cases:
        payload["runs"].extend(run(case, args.repeats, args.data_python, old))
        payload["env_end"] = environment()
        write_results(args.name, payload, table(payload))
    print(table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
