"""Tensor products on an accelerator: equikit vs e3nn vs cuEquivariance's CUDA kernels, side by side.

The GPU counterpart of ``benchmarks/tp.py`` (same cases and phases, DESIGN §7 protocol): channelwise
``uvu`` (``C x (0e + 1o + ... + L)`` times the spherical harmonics up to ``L``, per-row weights) and
fully connected ``uvw`` (shared weights), float32, outputs allocated on every call. Candidates:

- ``sparse_cg``: equikit's default backend. On CUDA it runs its PyTorch path (the C++ kernels are
  CPU only): the channelwise product as one dense ``x2 @ M`` and one ``bmm`` per ``x1`` block
  (cost independent of the sparse pattern), the other modes path by path;
- ``sparse_cg_compiled``: the same under ``torch.compile`` (Inductor/Triton; ``--compile``);
- ``e3nn``: e3nn's ``TensorProduct`` / ``FullyConnectedTensorProduct`` (its codegen, eager);
- ``cuequivariance``: cuequivariance-torch with its CUDA kernels when cuequivariance-ops-torch
  loads (its default method: ``uniform_1d`` for channelwise, ``fused_tp`` for fully connected;
  the method used is recorded per case), else left out (the reason is recorded).

Each call is followed by ``torch.cuda.synchronize()``; candidates run interleaved A B C A B C,
median of ``--repeats`` after warm-up. Per case also: the max error of our result and e3nn's
against the ``naive`` backend in float64 on the CPU (e3nn's weights sign-matched), the peak CUDA
memory of one forward+backward (``torch.cuda.max_memory_allocated``) and the first-call time.
A case whose output would exceed ``--max-gb`` is skipped (listed).

Run on the device machine (see benchmarks/device_run.sh)::

    PYTHONPATH=src python3 benchmarks/tp_device.py --out $OUT --budget 150

Writes ``tp_device.{json,md,png}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit import tp
from tp import _signs, build, build_cue

CANDIDATES = ("sparse_cg", "sparse_cg_compiled", "e3nn", "cuequivariance")


def cue_status() -> str:
    """'cuda' when cuEquivariance's CUDA kernels load, else why not."""
    try:
        import cuequivariance_ops_torch  # noqa: F401
    except Exception as exc:
        return f"no CUDA kernels ({type(exc).__name__}: {str(exc)[:160]})"
    return "cuda"


def build_cue_cuda(kind: str, d, device):
    """cuEquivariance's module with its CUDA kernels (its default method: ``uniform_1d`` for
    channelwise, ``fused_tp`` for fully connected) and the method it chose, or None."""
    m = build_cue(kind, d, fallback=False, device=device)
    if m is None:
        return None
    return m, getattr(getattr(m, "module", m), "method", None)


def accuracy(d, make, ours, e3) -> dict:
    """Max |candidate - naive| / max |naive|: float32 on the device against float64 on the CPU."""
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(64, d.irreps1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(64, d.irreps2.dim, generator=g, dtype=torch.float64)
    per_row = d.paths[0].mode == tp.Mode.UVU
    w = torch.randn(*((64,) if per_row else ()), d.weight_numel, generator=g, dtype=torch.float64)
    naive = tp.make_executor(d, "naive")(x1, x2, w)
    scale = naive.abs().max()
    we = w.clone()
    for s, sl in zip(_signs(d), d.weight_slices()):
        we[..., sl] *= s
    dev = next(iter(ours.buffers())).device

    def err(f, wt):
        with torch.no_grad():
            out = f(x1.float().to(dev), x2.float().to(dev), wt.float().to(dev))
        return float((out.double().cpu() - naive).abs().max() / scale)

    return {"sparse_cg": err(ours, w), "e3nn": err(e3, we)}


def _phases(kind, f, x1, x2, w, sync):
    x1g, x2g, wg = (t.clone().requires_grad_(True) for t in (x1, x2, w))

    def forward():
        with torch.no_grad():
            f(x1, x2, w)
        sync()

    def forward_backward():
        out = f(x1g, x2g, wg)
        out.backward(torch.ones_like(out))
        x1g.grad = x2g.grad = wg.grad = None
        sync()

    def double_backward():
        out = f(x1g, x2g, wg)
        (force,) = torch.autograd.grad(out.pow(2).sum(), x2g, create_graph=True)
        force.pow(2).sum().backward()
        x1g.grad = x2g.grad = wg.grad = None
        sync()

    ph = {"forward": forward, "forward_backward": forward_backward}
    if kind == "channelwise":
        ph["double_backward"] = double_backward
    return ph


def time_case(kind, lmax, mul, rows, args, device, cue_ok, with_err: bool) -> dict:
    d, make = build(kind, lmax, mul)
    ours = tp.make_executor(d, "sparse_cg").to(device)
    e3 = make().to(device)
    rec = {"kind": kind, "lmax": lmax, "mul": mul, "rows": rows, "paths": len(d.paths), "weights": d.weight_numel,
           "out_dim": d.irreps_out.dim, "times": {}, "first_call_s": {}, "peak_mib": {}, "skipped": {}}
    if with_err:  # once per case: the error does not depend on the row count
        rec["err"] = accuracy(d, make, ours, e3)
    fns = {"sparse_cg": ours, "e3nn": e3}
    if args.compile:
        fns["sparse_cg_compiled"] = torch.compile(ours, fullgraph=True, dynamic=False)
    if cue_ok:
        built = build_cue_cuda(kind, d, device)
        if built is not None:
            fns["cuequivariance"], rec["cue_method"] = built
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(rows, d.irreps1.dim, generator=g).to(device)
    x2 = torch.randn(rows, d.irreps2.dim, generator=g).to(device)
    w = torch.randn(*((rows,) if kind == "channelwise" else ()), d.weight_numel, generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    per = {}
    for name, f in list(fns.items()):
        try:
            ph = _phases(kind, f, x1, x2, w, sync)
            t0 = time.perf_counter()
            ph["forward_backward"]()  # first call: codegen / compile / kernel selection
            rec["first_call_s"][name] = time.perf_counter() - t0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                ph["forward_backward"]()
                rec["peak_mib"][name] = (torch.cuda.max_memory_allocated() - base) / 2**20
            per[name] = ph
        except Exception as exc:
            rec["skipped"][name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    for phase in ("forward", "forward_backward", "double_backward"):
        run = {}
        for n, ph in per.items():
            if phase not in ph:
                continue
            try:
                ph[phase]()  # a candidate that cannot run this phase is left out of it, not of the case
                run[n] = ph[phase]
            except Exception as exc:
                rec["skipped"][f"{n}/{phase}"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        if run:
            rec["times"][phase] = {k: v["median_s"] for k, v in interleaved(run, args.repeats, warmup=1).items()}
    return rec


def grid(quick: bool):
    if quick:
        return [("channelwise", 2, 8, [64, 128]), ("fully_connected", 1, 8, [64, 128])]
    rows = [10_000, 100_000]
    # every kind and size at 10k / 100k rows first, the 1M-row cases last: in the first run with
    # cuEquivariance's kernels (75 s) the 1M-row channelwise cases took the budget before any
    # fully connected case ran
    g = [("channelwise", lmax, 32, rows) for lmax in (1, 2, 3)]
    g += [("fully_connected", lmax, 32, rows) for lmax in (1, 2, 3)]
    g += [("channelwise", lmax, 128, rows) for lmax in (1, 2, 3)]
    g += [("fully_connected", lmax, 128, rows) for lmax in (1, 2)]
    g += [("channelwise", lmax, 32, rows) for lmax in (4, 6)]
    g += [("channelwise", lmax, 32, [1_000_000]) for lmax in (1, 2)]
    return g


def _ms(t):
    return "" if t is None else f"{1e3 * t:.3f}"


def table(payload) -> str:
    env = payload["env"]
    lines = [f"# Tensor products on {env['device']}", "",
             f"`python benchmarks/tp_device.py {' '.join(payload['argv'])}`; torch {env['torch']}, "
             f"e3nn {payload['versions'].get('e3nn')}, "
             f"cuequivariance-torch {payload['versions'].get('cuequivariance_torch')} "
             f"({payload['cue_status']}); float32, medians of {payload['repeats']} interleaved calls, each followed by "
             f"torch.cuda.synchronize(); outputs allocated per call. `x` = other / sparse_cg (> 1: ours faster).", "",
             "| case | L | C | rows | phase | sparse_cg ms | compiled ms | e3nn ms | cueq ms | x e3nn | x cueq | "
             "x compiled |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        for phase, t in r["times"].items():
            s = t.get("sparse_cg")
            c, e, q = t.get("sparse_cg_compiled"), t.get("e3nn"), t.get("cuequivariance")

            def x(o, s=s):
                return "" if o is None or s is None else f"{o / s:.2f}"

            lines.append(f"| {r['kind']} | {r['lmax']} | {r['mul']} | {r['rows']} | {phase} | {_ms(s)} | {_ms(c)} | "
                         f"{_ms(e)} | {_ms(q)} | {x(e)} | {x(q)} | {x(c)} |")
    lines += ["", "| case | L | C | rows | paths | out dim | first call s (ours / compiled / e3nn / cueq) | "
              "peak MiB fwd+bwd (ours / compiled / e3nn / cueq) | max rel err ours / e3nn | notes, left out |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        fc = " / ".join("-" if r["first_call_s"].get(k) is None else f"{r['first_call_s'][k]:.2f}" for k in CANDIDATES)
        pk = " / ".join("-" if r["peak_mib"].get(k) is None else f"{r['peak_mib'][k]:.0f}" for k in CANDIDATES)
        er = r.get("err")
        ers = "" if er is None else f"{er['sparse_cg']:.1e} / {er['e3nn']:.1e}"
        sk = "; ".join(f"{k}: {v}" for k, v in r["skipped"].items())
        sk = (f"cueq method {r['cue_method']}; " if r.get("cue_method") else "") + sk
        lines.append(f"| {r['kind']} | {r['lmax']} | {r['mul']} | {r['rows']} | {r['paths']} | {r['out_dim']} | "
                     f"{fc} | {pk} | {ers} | {sk} |")
    if payload["too_big"]:
        lines += ["", "Not run (output over the memory cap, or past the time budget): "
                  + "; ".join(payload["too_big"]) + "."]
    lines += ["", f"{env['cpu']}, {env['cores']} cores, load {env['loadavg']}; {env['time']}."]
    return "\n".join(lines) + "\n"


def plot(payload, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, phase in zip(axes, ("forward", "forward_backward", "double_backward")):
        for kind, mul, rows in sorted({(r["kind"], r["mul"], r["rows"]) for r in payload["runs"]}):
            if rows != 100_000:
                continue
            rs = sorted((r for r in payload["runs"] if (r["kind"], r["mul"], r["rows"]) == (kind, mul, rows)),
                        key=lambda r: r["lmax"])
            for name, style in zip(CANDIDATES, ("s-", "d-.", "o--", "^:")):
                pts = [(r["lmax"], r["times"][phase][name]) for r in rs if name in r["times"].get(phase, {})]
                if pts:
                    ax.semilogy(*zip(*[(p[0], 1e3 * p[1]) for p in pts]), style, label=f"{name} {kind} C={mul}")
        ax.set_xlabel("L (100k rows)")
        ax.set_ylabel("median ms")
        ax.set_title(phase)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="two tiny cases (smoke test, also on the CPU)")
    ap.add_argument("--compile", action="store_true", help="add sparse_cg under torch.compile")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the whole grid; later cases left out")
    ap.add_argument("--max-gb", type=float, default=12.0, help="skip cases whose output exceeds this")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="tp_device")
    ap.add_argument("--cases", default="", help="only these grid cases, as kind:L:C[,kind:L:C...] "
                    "(e.g. fully_connected:1:128); default: the whole grid")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module="cuequivariance_torch")
    device = torch.device(args.device)
    torch.manual_seed(0)
    status = cue_status() if device.type == "cuda" else "cpu run: CUDA kernels not tried"
    versions = {}
    for mod in ("e3nn", "cuequivariance_torch"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    payload = {"env": environment(), "argv": sys.argv[1:] if argv is None else list(argv), "repeats": args.repeats,
               "cue_status": status, "versions": versions, "runs": [], "too_big": []}
    t_start = time.perf_counter()
    only = {tuple(c.split(":")) for c in args.cases.split(",") if c}
    for kind, lmax, mul, rows_list in grid(args.quick):
        if only and (kind, str(lmax), str(mul)) not in only:
            continue
        for rows in rows_list:
            d, _ = build(kind, lmax, mul)
            gb = 4 * rows * (d.irreps_out.dim + d.irreps1.dim + d.irreps2.dim) / 1e9
            if gb > args.max_gb:
                payload["too_big"].append(f"{kind} L={lmax} C={mul} rows={rows} ({gb:.1f} GB)")
                continue
            if time.perf_counter() - t_start > args.budget:
                payload["too_big"].append(f"{kind} L={lmax} C={mul} rows={rows} (time budget)")
                continue
            rec = time_case(kind, lmax, mul, rows, args, device, status == "cuda", with_err=rows == rows_list[0])
            payload["runs"].append(rec)
            ms = {p: {k: f"{1e3 * v:.3f}" for k, v in t.items()} for p, t in rec["times"].items()}
            print(kind, lmax, mul, rows, ms, rec["skipped"] or "", flush=True)
            payload["env_end"] = environment()
            write_results(args.name, payload, table(payload), args.out)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    md = table(payload)
    write_results(args.name, payload, md, args.out)
    plot(payload, args.out / f"{args.name}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
