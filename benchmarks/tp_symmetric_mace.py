"""equikit's symmetric contraction vs mace-torch's, side by side in one process.

mace-torch 0.3.16 pins e3nn 0.4.4, so this runs in a SECOND venv (DESIGN §5), where equikit is
imported from ``src/`` (its core needs only torch, numpy and scipy)::

    python3 -m venv /tmp/mace-venv
    /tmp/mace-venv/bin/pip install torch==2.13.0 mace-torch==0.3.16   # or: make bench-mace (.venv-mace)
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/mace-venv/bin/python benchmarks/tp_symmetric_mace.py --threads 1

Same cases and protocol as ``benchmarks/tp_symmetric.py`` (``irreps_in = 0e+1o+2e+3o`` per
channel, correlation 3, 3 elements, float32; forward and forward+backward w.r.t. features and
weights; interleaved, median of ``--repeats``). mace-torch's ``SymmetricContraction`` takes
``x (N, C, 16)`` and one-hot attributes; ours takes element indices. The two hold different
weights (MACE's redundant basis, see docs/tp.md), so outputs are not compared; both are
checked O(3)-invariant for ``0e`` on a random rotation before timing.

Writes benchmarks/results/tp_symmetric_mace.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _common import RESULTS, environment, interleaved, write_results
from equikit import tp

ELEMENTS = 3
BACKENDS = ("monomial", "recursive")  # our executors timed (monomial: the default since session 6)
IRREPS_IN = "0e + 1o + 2e + 3o"


def mace_module(irreps_out: str, channels: int):
    from e3nn import o3
    from mace.modules.symmetric_contraction import SymmetricContraction

    irreps_in = o3.Irreps("+".join(f"{channels}x{ir}" for ir in ("0e", "1o", "2e", "3o")))
    out = o3.Irreps("+".join(f"{channels}x{ir.strip()}" for ir in irreps_out.split("+")))
    return SymmetricContraction(irreps_in, out, correlation=3, num_elements=ELEMENTS)


def run_case(irreps_out: str, channels: int, nodes: int, repeats: int, backends=BACKENDS) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(nodes, channels, 16, generator=g).requires_grad_(True)
    el = torch.randint(0, ELEMENTS, (nodes,), generator=g)
    onehot = torch.nn.functional.one_hot(el, ELEMENTS).float()
    d = tp.symmetric_contraction(IRREPS_IN, irreps_out, 3)
    ours = {b: tp.make_symmetric_executor(d, b) for b in backends}
    w = (torch.randn(ELEMENTS, d.weight_numel, channels, generator=g) / 10).requires_grad_(True)
    mace = mace_module(irreps_out, channels)
    mace_params = list(mace.parameters())
    with torch.no_grad():  # both O(3)-invariant on the 0e outputs (one basis convention: e3nn's)
        from equikit.groups import O
        from equikit.o3 import Irreps, irreps_D

        D = irreps_D(Irreps(IRREPS_IN), O(3).sample(1, generator=torch.Generator().manual_seed(1))[0])
        xr = x.detach() @ D.T
        fs = [lambda a, e=e: e(a, el, w.detach()) for e in ours.values()] + [lambda a: mace(a, onehot)]
        for f in fs:
            a, b = f(x.detach())[:, :channels], f(xr)[:, :channels]
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * a.abs().max().item()), "not invariant"
        first = next(iter(ours.values()))(x.detach(), el, w.detach())
        for e in ours.values():  # our executors compute the same function
            assert torch.allclose(e(x.detach(), el, w.detach()), first, rtol=1e-4, atol=1e-5 * first.abs().max().item())

    def fwd(name):
        return (lambda: ours[name](x.detach(), el, w.detach())) if name in ours else (lambda: mace(x.detach(), onehot))

    def fwd_bwd(name):
        def run():
            if name in ours:
                torch.autograd.grad(ours[name](x, el, w).sum(), [x, w])
            else:
                torch.autograd.grad(mace(x, onehot).sum(), [x, *mace_params])
        return run

    res = {}
    for phase, make in (("forward", fwd), ("forward_backward", fwd_bwd)):
        r = interleaved({n: make(n) for n in (*backends, "mace_torch")}, repeats=repeats, warmup=2)
        res[phase] = {n: v["median_s"] for n, v in r.items()}
    return {"irreps_out": irreps_out, "channels": channels, "nodes": nodes, "times": res, "backends": list(backends),
            "weights_ours": d.weight_numel * ELEMENTS * channels,
            "weights_mace": sum(p.numel() for p in mace_params)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--max-cases", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                    help="our symmetric-contraction executors to time beside mace-torch")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import mace

    payload = {"env": environment(), "repeats": args.repeats, "mace_torch": getattr(mace, "__version__", "?"),
               "runs": []}
    cases = [("0e + 1o", 32, 1000), ("0e", 128, 1000), ("0e", 32, 10000)]
    for irreps_out, channels, nodes in cases[: args.max_cases]:
        payload["runs"].append(run_case(irreps_out, channels, nodes, args.repeats, tuple(args.backends)))
        payload["env_end"] = environment()
        bs = list(args.backends)
        lines = ["# equikit vs mace-torch symmetric contraction", "",
                 f"`benchmarks/tp_symmetric_mace.py --threads {args.threads} --backends {' '.join(bs)}` in a second "
                 f"venv (mace-torch "
                 f"{payload['mace_torch']}, e3nn 0.4.4, torch {payload['env']['torch']}); load average at start "
                 f"{tuple(round(v, 2) for v in payload['env']['loadavg'])}, at end "
                 f"{tuple(round(v, 2) for v in payload['env_end']['loadavg'])}; float32, median of {args.repeats}.",
                 "", "| irreps_out | channels | nodes | weights ours / MACE | phase | "
                 + " | ".join(f"{b} ms" for b in bs) + " | mace-torch ms | "
                 + " | ".join(f"mace / {b}" for b in bs) + " |", "|---|---|---|---|---|" + "---|" * (2 * len(bs) + 1)]
        for r in payload["runs"]:
            for phase, t in r["times"].items():
                lines.append(f"| {r['irreps_out']} | {r['channels']} | {r['nodes']} | {r['weights_ours']} / "
                             f"{r['weights_mace']} | {phase} | " + " | ".join(f"{1e3 * t[b]:.1f}" for b in bs)
                             + f" | {1e3 * t['mace_torch']:.1f} | "
                             + " | ".join(f"{t['mace_torch'] / t[b]:.2f}x" for b in bs) + " |")
        md = "\n".join(lines) + "\n"
        write_results("tp_symmetric_mace", payload, md, args.out)
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
