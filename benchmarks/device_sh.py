"""Spherical harmonics on an accelerator: equikit (torch recursion) vs e3nn, side by side.

Same protocol as benchmarks/o3_sh.py (interleaved, median after warm-up) but on the device
given by ``--device`` (default cuda), timed with synchronisation, forward and
forward+backward, lmax 2, 4, 8. Also records the max difference between the two results
(the bases are identical). Writes ``device_sh.{json,md}`` to ``--out``.

Run on the device machine: ``PYTHONPATH=src python3 benchmarks/device_sh.py --out $OUT``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, interleaved, write_results
from equikit.o3 import spherical_harmonics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        import e3nn.o3 as e3o3

        e3nn_version = __import__("e3nn").__version__
    except ImportError:
        e3o3, e3nn_version = None, None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 3, generator=gen).to(device)
    rows, payload_rows = [], []
    for lmax in args.lmax:
        cands = {}

        def ours_fwd(lmax=lmax):
            spherical_harmonics(lmax, x, backend="torch")
            sync()

        def ours_bwd(lmax=lmax):
            xr = x.detach().requires_grad_(True)
            spherical_harmonics(lmax, xr, backend="torch").sum().backward()
            sync()

        cands["equikit fwd"] = ours_fwd
        cands["equikit fwd+bwd"] = ours_bwd
        diff = None
        if e3o3 is not None:
            irreps = e3o3.Irreps.spherical_harmonics(lmax)

            def e3_fwd(irreps=irreps):
                e3o3.spherical_harmonics(irreps, x, normalize=True, normalization="component")
                sync()

            def e3_bwd(irreps=irreps):
                xr = x.detach().requires_grad_(True)
                e3o3.spherical_harmonics(irreps, xr, normalize=True, normalization="component").sum().backward()
                sync()

            cands["e3nn fwd"] = e3_fwd
            cands["e3nn fwd+bwd"] = e3_bwd
            with torch.no_grad():
                diff = float((spherical_harmonics(lmax, x[:1000], backend="torch")
                              - e3o3.spherical_harmonics(irreps, x[:1000], True, "component")).abs().max())
        res = interleaved(cands, repeats=args.repeats)
        med = {k: v["median_s"] for k, v in res.items()}
        row = {"lmax": lmax, "median_ms": {k: 1e3 * v for k, v in med.items()}, "max_abs_diff_vs_e3nn": diff}
        if e3o3 is not None:
            row["speedup_fwd"] = med["e3nn fwd"] / med["equikit fwd"]
            row["speedup_fwd_bwd"] = med["e3nn fwd+bwd"] / med["equikit fwd+bwd"]
        payload_rows.append(row)
        rows.append(
            f"| {lmax} | {1e3 * med['equikit fwd']:.3f} | "
            + (f"{1e3 * med['e3nn fwd']:.3f} | {row['speedup_fwd']:.2f} | " if e3o3 else "- | - | ")
            + f"{1e3 * med['equikit fwd+bwd']:.3f} | "
            + (f"{1e3 * med['e3nn fwd+bwd']:.3f} | {row['speedup_fwd_bwd']:.2f} |" if e3o3 else "- | - |")
        )
    env = environment()
    payload = {"benchmark": "device_sh", "n": args.n, "device": env["device"], "e3nn": e3nn_version,
               "rows": payload_rows, "environment": env,
               "command": "PYTHONPATH=src python3 benchmarks/device_sh.py " + " ".join(argv or sys.argv[1:])}
    md = "\n".join([
        f"# Spherical harmonics on {env['device']}",
        "",
        f"{args.n} float32 vectors, median of {args.repeats} interleaved synchronised calls; torch {env['torch']}, "
        f"e3nn {e3nn_version}. Speed-up = e3nn time / equikit time.",
        "",
        "| lmax | equikit fwd (ms) | e3nn fwd (ms) | speed-up | equikit fwd+bwd (ms) | e3nn fwd+bwd (ms) | speed-up |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    write_results("device_sh", payload, md, Path(args.out))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
