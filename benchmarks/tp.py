"""Tensor-product benchmark: equikit sparse_cg (C++ kernels; and its pure-PyTorch fallback) vs
e3nn 0.6.0 (and cuEquivariance's CPU fallback where installed), DESIGN §7 protocol.

Grid (``--quick`` shrinks it to a smoke run):

- channelwise ``uvu`` (MACE/NequIP edge convolution: ``C x (0e + 1o + ... + L)`` node features
  gathered per edge times the spherical harmonics up to ``L``, outputs up to ``L``, per-edge
  weights) at L = 1..3 with C = 32 and 128 and 1k / 10k / 100k rows, and L = 4..6 with C = 32
  at 1k rows;
- fully connected ``uvw`` (``C x (0e..L) x sh(L) -> C x (0e..L)``, shared weights) at L = 1..3,
  C = 32 and 128, 1k / 10k / 100k rows, and L = 4 with C = 32 at 1k / 10k rows.

Phases: ``forward`` (no grad), ``forward_backward`` (gradients of ``sum(out)`` w.r.t. both operands
and the weights) and, channelwise only, ``double_backward``: the force-like gradient ``F = dE /
dx2`` with ``create_graph`` (``E = sum(out^2)``), then the gradient of ``sum(F^2)`` w.r.t. the
weights and ``x1`` (training on forces). Candidates run interleaved A B C A B C, median of
``--repeats`` calls after warm-up; outputs are allocated on every call, as in training. A
candidate is left out of a phase when one call times the repeats would exceed ``--budget``
seconds (the skipped ones are listed in the results: always e3nn and the PyTorch fallback at
the large sizes). Also per case: construction time (cold CG caches; e3nn's codegen), achieved
GFLOP/s (``2 * sparse_flops * rows / t``: the nonzero CG multiply-adds, the same count for every
backend), peak memory of one forward+backward (the torch allocations, from
``torch.profiler(profile_memory=True)``: the allocation/free events in time order, summed;
tracemalloc does not see torch and ``ru_maxrss`` is a process-wide high-water mark), the
log-log slope of time vs rows per backend, the max error of each candidate against the
naive backend in float64 (e3nn with weights sign-matched), and the achieved fraction of this
machine's float32 matmul FLOP/s and copy bandwidth, both measured in the same run
(:func:`machine_roofline`).

    python benchmarks/tp.py --threads 1 [--quick]

Writes benchmarks/results/tp.{json,md,png} (tp_quick.* with --quick, <name>.* with --name).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, interleaved, pyplot, write_results
from equikit import tp
from equikit.o3 import Irreps, clebsch_gordan
from equikit.o3._cg import clear_caches
from equikit.tp import _native

CANDIDATES = ("e3nn", "sparse_cg", "sparse_cg_torch", "cuequivariance")


def _layer_irreps(mul: int, lmax: int) -> Irreps:
    return Irreps([(mul, (l, (-1) ** l)) for l in range(lmax + 1)])


def _signs(d):
    from e3nn import o3 as e3o

    out = []
    for p in d.paths:
        l1, l2, l3 = (ir.l for ir in d.irreps_of(p))
        c = clebsch_gordan(l1, l2, l3, dtype=torch.float64)
        out.append(float(torch.sign((c * e3o.wigner_3j(l1, l2, l3, dtype=torch.float64)).sum())))
    return out


def build(kind: str, lmax: int, mul: int):
    """(descriptor, e3nn module factory) for one case."""
    from e3nn import o3 as e3o

    i1, i2 = _layer_irreps(mul, lmax), Irreps.spherical_harmonics(lmax)
    if kind == "channelwise":
        d = tp.channelwise(i1, i2, lmax=lmax)
        ins = [(p.i1, p.i2, p.i_out, "uvu", True) for p in d.paths]
        make = lambda: e3o.TensorProduct(str(i1), str(i2), str(d.irreps_out), ins,  # noqa: E731
                                         shared_weights=False, internal_weights=False)
    else:
        d = tp.fully_connected(i1, i2, i1)
        make = lambda: e3o.FullyConnectedTensorProduct(str(i1), str(i2), str(i1),  # noqa: E731
                                                       shared_weights=True, internal_weights=False)
    return d, make


def build_cue(kind: str, d, fallback: bool = True, device=None):
    """cuEquivariance's module for the case (its CPU fallback; ``fallback=False``: its default
    CUDA method, on ``device``), or None when not installed or when it does not build the same
    number of weights. Fully connected: a callable with ``.module`` (the weights get a batch dim)."""
    try:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
    except ImportError:
        return None
    i1, i2 = cue.Irreps("O3", str(d.irreps1)), cue.Irreps("O3", str(d.irreps2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "channelwise":
            out = sorted({str(ir) for _, ir in d.irreps_out})
            m = cuet.ChannelWiseTensorProduct(i1, i2, cue.Irreps("O3", "+".join(out)), layout=cue.mul_ir,
                                              shared_weights=False, internal_weights=False,
                                              use_fallback=True if fallback else None, device=device)
        else:
            m = cuet.FullyConnectedTensorProduct(i1, i2, cue.Irreps("O3", str(d.irreps_out)), layout=cue.mul_ir,
                                                 shared_weights=True, internal_weights=False,
                                                 use_fallback=True if fallback else None, device=device)
    if m.weight_numel != d.weight_numel:
        return None
    m = m.to(device) if device is not None else m
    if kind == "channelwise":
        return m

    def call(x1, x2, w):
        return m(x1, x2, w[None])
    call.module = m
    return call


def construction_times(kind, lmax, mul):
    import e3nn.o3  # noqa: F401  (imported before timing)

    clear_caches()
    _native.plan.cache_clear()
    tp._functional._executor.cache_clear()
    t0 = time.perf_counter()
    d, make = build(kind, lmax, mul)
    tp.make_executor(d, "sparse_cg")
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    make()
    t_e3nn = time.perf_counter() - t0
    return t_ours, t_e3nn


def kernel_build_time() -> float | None:
    """Seconds to compile the C++ kernels from scratch (first use; cached afterwards)."""
    from equikit._utils.native import build_error

    t0 = time.perf_counter()
    err = build_error(_native._SOURCE)
    return None if err else time.perf_counter() - t0


def accuracy(d, make):
    """Max |candidate - naive| / max |naive| in float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ref_mod = make()
    finally:
        torch.set_default_dtype(before)
    x1 = torch.randn(64, d.irreps1.dim, dtype=torch.float64)
    x2 = torch.randn(64, d.irreps2.dim, dtype=torch.float64)
    per_row = d.paths[0].mode == tp.Mode.UVU
    w = torch.randn(*((64,) if per_row else ()), d.weight_numel, dtype=torch.float64)
    naive = tp.make_executor(d, "naive")(x1, x2, w)
    we = w.clone()
    for s, sl in zip(_signs(d), d.weight_slices()):
        we[..., sl] *= s
    scale = naive.abs().max()
    torch_path = tp.make_executor(d, "sparse_cg")
    torch_path.native = False
    return {"sparse_cg": float((tp.make_executor(d, "sparse_cg")(x1, x2, w) - naive).abs().max() / scale),
            "sparse_cg_torch": float((torch_path(x1, x2, w) - naive).abs().max() / scale),
            "e3nn": float((ref_mod(x1, x2, we) - naive).abs().max() / scale)}


def machine_roofline(repeats: int = 9) -> dict:
    """This machine's reference rates at the benchmark's thread count, measured in the run:
    float32 matmul GFLOP/s (``torch.mm``, 2048 x 2048) and copy bandwidth GB/s (``copy_`` of
    256 MiB, read + write bytes counted)."""
    import statistics

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    src = torch.randn(64 * 2**20)
    dst = torch.empty_like(src)
    rates = {"matmul_gflops": [], "copy_gbs": []}
    torch.mm(a, b)
    dst.copy_(src)
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates["matmul_gflops"].append(2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
        t0 = time.perf_counter()
        dst.copy_(src)
        rates["copy_gbs"].append(2 * src.nbytes / (time.perf_counter() - t0) / 1e9)
    return {k: statistics.median(v) for k, v in rates.items()}


def call_bytes(d, kind: str) -> tuple[int, int]:
    """Bytes one forward call must move at least (inputs, weights, output; float32): per row,
    and once per call (shared weights)."""
    per_row = d.irreps1.dim + d.irreps2.dim + d.irreps_out.dim + (d.weight_numel if kind == "channelwise" else 0)
    return 4 * per_row, 4 * (d.weight_numel if kind != "channelwise" else 0)


def peak_bytes(fn) -> int:
    """Peak of the torch CPU allocations during ``fn()`` (profiler alloc/free events summed in
    time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    cur = peak = 0
    for _, n in events:
        cur += n
        peak = max(peak, cur)
    return peak


def _phases(kind, f, x1, x2, w):
    x1g, x2g, wg = (t.clone().requires_grad_(True) for t in (x1, x2, w))

    def forward():
        with torch.no_grad():
            return f(x1, x2, w)

    def forward_backward():
        out = f(x1g, x2g, wg)
        out.backward(torch.ones_like(out))
        x1g.grad = x2g.grad = wg.grad = None

    def double_backward():
        out = f(x1g, x2g, wg)
        (force,) = torch.autograd.grad(out.pow(2).sum(), x2g, create_graph=True)
        force.pow(2).sum().backward()
        x1g.grad = x2g.grad = wg.grad = None

    ph = {"forward": forward, "forward_backward": forward_backward}
    if kind == "channelwise":
        ph["double_backward"] = double_backward
    return ph


def time_case(kind, lmax, mul, rows, repeats, budget, with_cue, per_row, clock=time.perf_counter):
    """Median times of every candidate and phase at ``rows``; ``per_row`` carries seconds per row
    of each (candidate, phase) from the smaller sizes, to leave out a call that would take too
    long before running it."""
    d, make = build(kind, lmax, mul)
    fns = {"e3nn": make(), "sparse_cg": tp.make_executor(d, "sparse_cg")}
    torch_path = tp.make_executor(d, "sparse_cg")
    torch_path.native = False
    fns["sparse_cg_torch"] = torch_path
    if with_cue:
        cue_m = build_cue(kind, d)
        if cue_m is not None:
            fns["cuequivariance"] = cue_m
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(rows, d.irreps1.dim, generator=g)
    x2 = torch.randn(rows, d.irreps2.dim, generator=g)
    w = torch.randn(*((rows,) if kind == "channelwise" else ()), d.weight_numel, generator=g)
    times, skipped, memory = {}, {}, {}
    per_phase = {name: _phases(kind, f, x1, x2, w) for name, f in fns.items()}
    limit = budget / (repeats + 2)
    for phase in per_phase["sparse_cg"]:
        run = {}
        for name, ph in per_phase.items():
            guess = per_row.get((name, phase), 0.0) * rows
            if guess > 2 * limit:
                skipped[f"{name}/{phase}"] = round(guess, 3)
                continue
            t0 = clock()
            ph[phase]()  # warm-up call, also the cost estimate
            est = clock() - t0
            per_row[(name, phase)] = est / rows
            if est > limit:
                skipped[f"{name}/{phase}"] = round(est, 3)
            else:
                run[name] = ph[phase]
        if run:
            t = interleaved(run, repeats=repeats, warmup=1, clock=clock)
            times[phase] = {k: v["median_s"] for k, v in t.items()}
    for name, ph in per_phase.items():
        if f"{name}/forward_backward" not in skipped:
            memory[name] = peak_bytes(ph["forward_backward"])
    return d, times, skipped, memory


def slopes(runs) -> list[dict]:
    """Per (kind, L, C, phase, backend): the log-log slope of median time vs rows."""
    out = []
    keys = sorted({(r["kind"], r["lmax"], r["mul"]) for r in runs})
    for kind, lmax, mul in keys:
        rs = sorted((r for r in runs if (r["kind"], r["lmax"], r["mul"]) == (kind, lmax, mul)), key=lambda r: r["rows"])
        for phase in ("forward", "forward_backward", "double_backward"):
            for name in CANDIDATES:
                pts = [(r["rows"], r["times"][phase][name]) for r in rs if name in r["times"].get(phase, {})]
                if len(pts) >= 2:
                    s = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0]
                    out.append({"kind": kind, "lmax": lmax, "mul": mul, "phase": phase, "backend": name,
                                "slope": float(s), "rows": [p[0] for p in pts]})
    return out


def _ms(t):
    return "" if t is None else f"{1e3 * t:.2f}"


def table(payload) -> str:
    lines = ["| case | L | C | rows | phase | e3nn ms | sparse_cg ms | sparse_cg_torch ms | cueq ms | "
             "e3nn / sparse_cg | sparse_cg_torch / sparse_cg | sparse_cg GFLOP/s | of matmul | GB/s | of copy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    roof = payload.get("roofline") or {}
    cases = {(c["kind"], c["lmax"], c["mul"]): c for c in payload["cases"]}
    for r in payload["runs"]:
        c = cases[(r["kind"], r["lmax"], r["mul"])]
        for phase, t in r["times"].items():
            e, s, st, cu = t.get("e3nn"), t.get("sparse_cg"), t.get("sparse_cg_torch"), t.get("cuequivariance")
            if s is None:
                continue
            gflops = 2 * c["sparse_flops"] * r["rows"] / s / 1e9 if phase == "forward" else None
            gbs = None
            if phase == "forward" and "bytes" in c:
                gbs = (c["bytes"][0] * r["rows"] + c["bytes"][1]) / s / 1e9
            frac = ""
            if gflops is not None and roof:
                frac = f"{gflops / roof['matmul_gflops']:.0%}"
            bw = "" if gbs is None else f"{gbs:.1f}"
            bw_frac = "" if gbs is None or not roof else f"{gbs / roof['copy_gbs']:.0%}"
            lines.append(
                f"| {r['kind']} | {r['lmax']} | {r['mul']} | {r['rows']} | {phase} | {_ms(e)} | {_ms(s)} | {_ms(st)} | "
                f"{_ms(cu)} | {'' if e is None else f'{e / s:.2f}x'} | {'' if st is None else f'{st / s:.2f}x'} | "
                f"{'' if gflops is None else f'{gflops:.1f}'} | {frac} | {bw} | {bw_frac} |"
            )
    lines += ["", "| case | L | C | paths | weights | sparse / dense CG terms | construction ours ms | "
              "construction e3nn ms | max rel err sparse_cg | max rel err torch path | max rel err e3nn |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in payload["cases"]:
        lines.append(
            f"| {c['kind']} | {c['lmax']} | {c['mul']} | {c['paths']} | {c['weights']} | "
            f"{c['sparse_flops'] / c['dense_flops']:.2f} | {1e3 * c['construct_ours_s']:.1f} | "
            f"{1e3 * c['construct_e3nn_s']:.1f} | {c['err']['sparse_cg']:.1e} | {c['err']['sparse_cg_torch']:.1e} | "
            f"{c['err']['e3nn']:.1e} |"
        )
    lines += ["", "Peak torch memory of one forward+backward (MiB):", "",
              "| case | L | C | rows | e3nn | sparse_cg | sparse_cg_torch | cueq |",
              "|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        m = r["memory"]
        cells = " | ".join("" if m.get(k) is None else f"{m[k] / 2**20:.1f}" for k in CANDIDATES)
        lines.append(f"| {r['kind']} | {r['lmax']} | {r['mul']} | {r['rows']} | {cells} |")
    lines += ["", "Slope of log time vs log rows (1 = linear):", "",
              "| case | L | C | phase | backend | slope | rows |", "|---|---|---|---|---|---|---|"]
    for s in payload["slopes"]:
        lines.append(f"| {s['kind']} | {s['lmax']} | {s['mul']} | {s['phase']} | {s['backend']} | {s['slope']:.2f} | "
                     f"{', '.join(map(str, s['rows']))} |")
    skipped = [f"{r['kind']} L={r['lmax']} C={r['mul']} rows={r['rows']}: {k} (one call {v:.2f} s)"
               for r in payload["runs"] for k, v in r["skipped"].items()]
    env = payload["env"]
    kb = payload.get("kernel_build_s")
    lines += ["", f"Left out (one call x repeats over the {payload['budget_s']:.0f} s budget): "
              + ("; ".join(skipped) if skipped else "none") + ".",
              "", f"threads {env['threads']}, load average {env['loadavg']} (end {payload['env_end']['loadavg']}), "
              f"{env['cpu']}, torch {env['torch']}, {env['time']}; float32; medians of {payload['repeats']} "
              f"{'thread-CPU-time ' if payload.get('clock') == 'thread' else ''}"
              f"interleaved calls; outputs allocated per call; kernel build from scratch "
              f"{'n/a' if kb is None else f'{kb:.1f} s'} (first use only, cached)."]
    roof = payload.get("roofline")
    if roof:
        lines += ["", f"This machine in the same run, {env['threads']} thread(s): float32 matmul "
                  f"{roof['matmul_gflops']:.1f} GFLOP/s (torch.mm 2048^2), copy {roof['copy_gbs']:.1f} GB/s "
                  "(copy_ of 256 MiB, read + write); 'of matmul' = sparse_cg GFLOP/s (nonzero CG "
                  "multiply-adds only) / that, 'GB/s' = the bytes a forward must move at least (inputs, "
                  "weights, output) / time, 'of copy' = that / the copy bandwidth."]
    return "\n".join(lines) + "\n"


def plot(payload, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, phase in zip(axes, ("forward", "forward_backward", "double_backward")):
        for kind, mul in sorted({(r["kind"], r["mul"]) for r in payload["runs"]}):
            rs = [r for r in payload["runs"] if r["kind"] == kind and r["mul"] == mul and r["rows"] == 1000]
            rs.sort(key=lambda r: r["lmax"])
            for name, style in (("e3nn", "o--"), ("sparse_cg", "s-"), ("sparse_cg_torch", "^:")):
                pts = [(r["lmax"], r["times"][phase][name]) for r in rs
                       if phase in r["times"] and name in r["times"][phase]]
                if pts:
                    ax.semilogy([p[0] for p in pts], [1e3 * p[1] for p in pts], style, label=f"{name} {kind} C={mul}")
        ax.set_xlabel("L (1000 rows)")
        ax.set_ylabel("median ms")
        ax.set_title(phase)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def grid(quick: bool):
    """(kind, L, C, rows list) of the run."""
    if quick:
        return [("channelwise", 2, 16, [200, 400]), ("fully_connected", 1, 16, [200, 400])]
    g = []  # most important first: a run cut short keeps them
    rows = [1000, 10000, 100000]
    g += [("channelwise", lmax, 32, rows) for lmax in (1, 2, 3)]
    g += [("fully_connected", lmax, 32, rows) for lmax in (1, 2, 3)]
    g += [("channelwise", lmax, 32, [1000]) for lmax in (4, 5, 6)]
    g += [("fully_connected", 4, 32, [1000, 10000])]
    g += [("channelwise", lmax, 128, rows) for lmax in (1, 2, 3)]
    g += [("fully_connected", lmax, 128, rows) for lmax in (1, 2, 3)]
    return g


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--budget", type=float, default=12.0,
                    help="seconds per candidate and phase; slower candidates are left out (listed)")
    ap.add_argument("--quick", action="store_true", help="two tiny cases, repeats 5 (smoke test, not for results)")
    ap.add_argument("--lmax", type=int, nargs="+", default=None, help="only these L of the grid")
    ap.add_argument("--mul", type=int, nargs="+", default=None, help="only these channel counts of the grid")
    ap.add_argument("--rows", type=int, nargs="+", default=None, help="only these row counts of the grid")
    ap.add_argument("--kind", nargs="+", default=None, choices=["channelwise", "fully_connected"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default=None, help="result file stem (default tp, or tp_quick with --quick)")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall: perf_counter; thread: this thread's CPU time (one-thread runs on a loaded "
                         "machine; needs --threads 1, the kernels then run on the calling thread)")
    args = ap.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread needs --threads 1 (other threads' CPU time is not counted)")
    if args.repeats < 20 and not args.quick:
        ap.error("--repeats must be >= 20 (DESIGN §7); use --quick for a smoke run")
    if args.quick:
        args.repeats = 5
    warnings.filterwarnings("ignore", module="cuequivariance_torch")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    payload = {"env": environment(), "repeats": args.repeats, "budget_s": args.budget, "runs": [], "cases": [],
               "clock": args.clock,
               "argv": sys.argv[1:] if argv is None else list(argv),
               "native": _native.available(), "kernel_build_s": None if args.quick else kernel_build_time(),
               "roofline": machine_roofline(3 if args.quick else 9)}
    for kind, lmax, mul, rows_list in grid(args.quick):
        rows_list = [r for r in rows_list if args.rows is None or r in args.rows]
        if not rows_list or (args.lmax and lmax not in args.lmax) or (args.mul and mul not in args.mul) or (
                args.kind and kind not in args.kind):
            continue
        t_ours, t_e3nn = construction_times(kind, lmax, mul)
        d, make = build(kind, lmax, mul)
        payload["cases"].append({
            "kind": kind, "lmax": lmax, "mul": mul, "paths": len(d.paths), "weights": d.weight_numel,
            "dense_flops": tp.dense_flops(d), "sparse_flops": tp.sparse_flops(d),
            "construct_ours_s": t_ours, "construct_e3nn_s": t_e3nn, "err": accuracy(d, make),
            "bytes": call_bytes(d, kind),
        })
        per_row: dict = {}
        for rows in rows_list:
            _, times, skipped, memory = time_case(kind, lmax, mul, rows, args.repeats, args.budget,
                                                  with_cue=rows <= 1000, per_row=per_row, clock=clock)
            if not times:
                print(kind, lmax, mul, rows, "every candidate over the budget", flush=True)
                payload["runs"].append({"kind": kind, "lmax": lmax, "mul": mul, "rows": rows, "times": {},
                                        "skipped": skipped, "memory": memory})
                break
            payload["runs"].append({"kind": kind, "lmax": lmax, "mul": mul, "rows": rows, "times": times,
                                    "skipped": skipped, "memory": memory})
            print(kind, lmax, mul, rows, {ph: {k: f"{1e3 * v:.2f}ms" for k, v in t.items()} for ph, t in times.items()},
                  "skipped", sorted(skipped), flush=True)
        _write(payload, args)  # after every case, so a run cut short still leaves its results
    md = _write(payload, args)
    plot(payload, args.out / f"{_stem(args)}.png")
    print(md)
    return 0


def _write(payload, args) -> str:
    payload["slopes"] = slopes(payload["runs"])
    payload["env_end"] = environment()
    md = table(payload)
    write_results(_stem(args), payload, md, args.out)
    return md


def _stem(args) -> str:
    return args.name or ("tp_quick" if args.quick else "tp")


if __name__ == "__main__":
    raise SystemExit(main())
