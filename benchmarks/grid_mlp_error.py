"""SphereGridMLP: equivariance error vs grid resolution (quadrature/aliasing error).

``4 x (0e + 1o + 2e) -> 3 x (0e + 1o + 2e)``, one hidden layer of 16, float64, 16 random O(3)
elements (reflections included) through ``equikit.check.equivariance_error``; SiLU and tanh
(non-polynomial: equivariant only up to the quadrature error) and ``t^2`` (polynomial of
degree 2: exact from the default grid on). Same weights at every resolution.

    python benchmarks/grid_mlp_error.py

Writes benchmarks/results/grid_mlp_error.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results
from equikit.check import equivariance_error
from equikit.nn import SphereGridMLP
from equikit.o3 import Irreps, IrrepsRep

I, O = "4x0e + 4x1o + 4x2e", "3x0e + 3x1o + 3x2e"
RESOLUTIONS = [(3, 5), (4, 7), (6, 11), (8, 15), (12, 23), (16, 31), (24, 47), (32, 63)]
ACTS = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, "square": torch.square}


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(8, Irreps(I).dim, dtype=torch.float64)
    ref = SphereGridMLP(I, O, hidden=(16,)).double()
    rows = []
    for name, act in ACTS.items():
        for res in RESOLUTIONS:
            m = SphereGridMLP(I, O, hidden=(16,), act=act, resolution=res).double()
            m.load_state_dict(ref.state_dict())
            r = equivariance_error(m, x, IrrepsRep(I), IrrepsRep(O))
            rows.append({"act": name, "resolution": list(res), "rel_max": r.rel_max, "rel_mean": r.rel_mean})
            print(name, res, f"{r.rel_max:.2e}", flush=True)
    default = SphereGridMLP(I, O).resolution
    md = ["| activation | " + " | ".join(f"{a}x{b}" for a, b in RESOLUTIONS) + " |",
          "|---|" + "---|" * len(RESOLUTIONS)]
    for name in ACTS:
        md.append(f"| {name} | " + " | ".join(f"{r['rel_max']:.1e}" for r in rows if r["act"] == name) + " |")
    env = environment()
    load = tuple(round(v, 2) for v in env["loadavg"])
    md.append(f"\nmax relative equivariance error (float64, 16 O(3) elements); default grid {default[0]}x{default[1]} "
              f"(exact for degree-2 activations); threads {env['threads']}, load {load}.")
    write_results("grid_mlp_error", {"env": env, "irreps_in": I, "irreps_out": O, "rows": rows}, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
