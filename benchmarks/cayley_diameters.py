"""Diameters of Cayley graphs of S_n across generator families, checked and fitted.

For each family the full breadth-first growth is computed for every n in its range (the
bitset C kernel where the states are permutations of n <= 16 items, torch for burnt
pancakes, which are permutations of 2n points). Each diameter is compared with the
published values where they exist (OEIS; closed formulas proven in the literature), and a
quasi-polynomial in n mod s (one quadratic per residue class, the form the CayleyPy Growth
paper conjectures for many families) is fitted exactly, with rational coefficients, on
the smallest n of each class and checked on the remaining ones: a fit is reported as
"supported up to n" only when it reproduces every computed value it was not fitted on.
Fits are also compared with the published values beyond the computed range.
LRX additionally checks the conjecture that its farthest element is unique and equals the
involution (0 1)(2 n-1)(3 n-2)... (OEIS A186783, comment citing Chervov et al.).

    .venv/bin/python benchmarks/cayley_diameters.py          # n <= 11, ~2-4 min on 2 cores
    .venv/bin/python benchmarks/cayley_diameters.py --big    # + n = 12 for LRX, LX (long)
    .venv/bin/python benchmarks/cayley_diameters.py --quick  # n <= 8, seconds
    python benchmarks/cayley_diameters.py --device cuda --out $OUT  # GPU ranges (GPU table)

On a GPU every family runs with the torch backend on that device, over the larger ``GPU``
ranges (up to n = 13 for LRX and top-spin, 12 for the directed LX, whose visited set is
kept whole); the device's peak memory is recorded.

Writes benchmarks/results/cayley_diameters{,_quick,_big,_cuda}.{json,md,png} (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from fractions import Fraction
from pathlib import Path

import torch

from _common import pyplot
from equikit.groups.cayley import CayleyGraph, growth

RESULTS = Path(__file__).resolve().parent / "results"

# Published diameters, n -> value. OEIS A186783 (LRX, undirected), A039745 (directed, the
# n-cycle and (1 2) = our cyclic_transposition k=1, "LX"), A058986 (pancake numbers),
# A078941 (burnt pancake numbers). Proven formulas: coxeter n(n-1)/2 (number of inversions
# of the reversal), all transpositions n-1, star floor(3(n-1)/2) (Akers-Krishnamurthy 1989).
KNOWN = {
    "lrx": dict(enumerate([0, 1, 2, 6, 10, 15, 21, 28, 36, 45, 55, 66, 78], start=1)),
    "cyclic_transposition": dict(enumerate(
        [0, 1, 2, 6, 11, 18, 25, 35, 45, 58, 71, 87, 103, 122, 141], start=1)),
    "pancake": dict(enumerate(
        [0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 22], start=1)),
    "burnt_pancake": dict(enumerate([1, 4, 6, 8, 10, 12, 14, 15, 17, 18, 19, 21], start=1)),
    "coxeter": {n: n * (n - 1) // 2 for n in range(2, 17)},
    "all_transpositions": {n: n - 1 for n in range(2, 17)},
    "star": {n: 3 * (n - 1) // 2 for n in range(2, 17)},
}
SOURCES = {
    "lrx": "OEIS A186783 (n <= 13)", "cyclic_transposition": "OEIS A039745 (n <= 15)",
    "pancake": "OEIS A058986 (n <= 19)", "burnt_pancake": "OEIS A078941 (n <= 12)",
    "coxeter": "n(n-1)/2 (proven)", "all_transpositions": "n-1 (proven)",
    "star": "floor(3(n-1)/2) (proven)", "top_spin": "none found; new to us",
}
# family -> (kwargs, smallest n, largest n default, quick, big, smallest n used in fits)
FAMILIES = {
    "lrx": ({}, 3, 11, 8, 12, 4),
    "cyclic_transposition": ({"k": 1}, 3, 11, 8, 12, 4),
    "top_spin": ({"k": 4}, 6, 11, 8, 11, 6),  # n = 5: L, R, T4 generate a dihedral group
    "pancake": ({}, 2, 11, 8, 11, 2),
    "burnt_pancake": ({}, 1, 7, 5, 7, 1),
    "star": ({}, 2, 10, 8, 10, 2),
    "coxeter": ({}, 2, 10, 8, 10, 2),
    "all_transpositions": ({}, 2, 9, 7, 9, 2),
}
GPU = {"lrx": 13, "cyclic_transposition": 12, "top_spin": 13, "pancake": 12,
       "burnt_pancake": 9, "star": 12, "coxeter": 12, "all_transpositions": 11}


# ---- fits ------------------------------------------------------------------------------------
def _solve3(points: list[tuple[int, int]]) -> tuple[Fraction, Fraction, Fraction]:
    """Exact (a, b, c) with a n^2 + b n + c through three points (Lagrange form)."""
    coef = [Fraction(0)] * 3
    for i, (xi, yi) in enumerate(points):
        others = [x for j, (x, _) in enumerate(points) if j != i]
        denom = Fraction((xi - others[0]) * (xi - others[1]))
        coef[0] += yi / denom
        coef[1] += -yi * (others[0] + others[1]) / denom
        coef[2] += yi * others[0] * others[1] / denom
    return coef[0], coef[1], coef[2]


def _value(poly, n: int) -> Fraction:
    a, b, c = poly
    return a * n * n + b * n + c


def fit_quasi_polynomial(diam: dict[int, int], n_min: int, max_period: int = 3) -> dict | None:
    """Smallest start n >= n_min, then smallest period s <= max_period, for which one
    quadratic per residue class mod s, fitted on the three smallest n of the class,
    reproduces every other computed value of that class, with at least one such check in
    all (``unchecked_classes`` lists the classes without one: they are only tested against
    published values beyond the computed range). None when nothing fits."""
    for start in sorted(n for n in diam if n >= n_min):
        fit = _fit_from(diam, start, max_period)
        if fit is not None:
            return fit
    return None


def _fit_from(diam: dict[int, int], n_min: int, max_period: int) -> dict | None:
    ns = sorted(n for n in diam if n >= n_min)
    for s in range(1, max_period + 1):
        classes = {r: [n for n in ns if n % s == r] for r in range(s)}
        if any(len(c) < 3 for c in classes.values()) or all(len(c) < 4 for c in
                                                            classes.values()):
            continue
        polys, ok = {}, True
        for r, c in classes.items():
            poly = _solve3([(n, diam[n]) for n in c[:3]])
            if any(_value(poly, n) != diam[n] for n in c[3:]):
                ok = False
                break
            polys[r] = poly
        if ok:
            checked = [n for c in classes.values() for n in c[3:]]
            return {"period": s, "n_min": n_min, "supported_up_to": max(ns),
                    "checked_on": sorted(checked),
                    "unchecked_classes": [r for r, c in classes.items() if len(c) < 4],
                    "polynomials": {r: [str(x) for x in p] for r, p in polys.items()}}
    return None


def predict(fit: dict, n: int) -> Fraction:
    poly = [Fraction(x) for x in fit["polynomials"][n % fit["period"]]]
    return _value(poly, n)


def formula(fit: dict) -> str:
    parts = []
    for r, (a, b, c) in fit["polynomials"].items():
        terms = " ".join(f"{'+' if Fraction(v) >= 0 else '-'} {abs(Fraction(v))}{x}"
                         for v, x in ((a, " n^2"), (b, " n"), (c, "")) if Fraction(v) != 0)
        cls = f"n = {r} mod {fit['period']}: " if fit["period"] > 1 else ""
        parts.append(cls + terms.lstrip("+ "))
    return "; ".join(parts)


# ---- computation -----------------------------------------------------------------------------
def run_family(family: str, kwargs: dict, ns: range, device: str = "cpu") -> list[dict]:
    rows = []
    cuda = torch.device(device).type == "cuda"
    for n in ns:
        graph = CayleyGraph.family(family, n, **kwargs)
        backend = "torch" if family == "burnt_pancake" or cuda else "auto"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        res = growth(graph, backend=backend, last_layer_cap=16, device=device,
                     chunk_size=1 << 26 if cuda else 1 << 24)
        row = {"family": family, "n": n, "diameter": res.diameter, "order": res.order,
               "layer_sizes": res.layer_sizes, "antipodes": res.layer_sizes[-1],
               "backend": res.backend, "seconds": res.seconds,
               "peak_bytes": res.peak_bytes, "rss_peak_mb": res.rss_peak_bytes / 2**20,
               "known": KNOWN.get(family, {}).get(n),
               "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
        if family == "lrx":
            target = [1, 0, *range(n - 1, 1, -1)]
            row["farthest_is_conjectured_involution"] = (
                res.layer_sizes[-1] == 1 and res.last_layer[0].tolist() == target)
        rows.append(row)
        print(f"{family} n={n}: diameter {row['diameter']} (known {row['known']}), "
              f"{row['seconds']:.2f} s", flush=True)
    return rows


def _group_name(order: int, n: int, family: str) -> str:
    full = math.factorial(n)
    if family == "burnt_pancake":  # n pancakes, signed permutations: B_n, order 2^n n!
        return "S_n" if order == 2**n * full else f"order {order}"
    return "S_n" if order == full else "A_n" if 2 * order == full else f"order {order}"


def summarise(family: str, rows: list[dict], n_fit_min: int) -> dict:
    diam = {r["n"]: r["diameter"] for r in rows}
    known = KNOWN.get(family, {})
    mismatches = [n for n, d in diam.items() if n in known and known[n] != d]
    fit = fit_quasi_polynomial(diam, n_fit_min)
    out = {"family": family, "n_range": [min(diam), max(diam)], "diameters": diam,
           "source": SOURCES[family], "checked_against_known": sorted(set(diam) & set(known)),
           "mismatches": mismatches, "fit": fit,
           "group": {r["n"]: _group_name(r["order"], r["n"], family) for r in rows}}
    if fit is not None:
        out["formula"] = formula(fit)
        published = family in ("lrx", "cyclic_transposition", "pancake", "burnt_pancake")
        beyond = {n: v for n, v in known.items() if n > max(diam) and published}
        out["fit_vs_known_beyond"] = {n: [str(predict(fit, n)), v] for n, v in beyond.items()}
        out["fit_agrees_beyond"] = [n for n, v in beyond.items() if predict(fit, n) == v]
        out["fit_fails_beyond"] = [n for n, v in beyond.items() if predict(fit, n) != v]
    if family == "lrx":
        out["farthest_involution_holds_for"] = [
            r["n"] for r in rows if r.get("farthest_is_conjectured_involution")]
    out["babai_refined_bound_n2_over_2_plus_4n_holds"] = all(
        d <= n * n / 2 + 4 * n for n, d in diam.items())
    return out


def verdict(s: dict) -> str:
    """One line on a fit: refuted, supported, or only weakly supported by the data."""
    fit = s["fit"]
    if s.get("fit_fails_beyond"):
        return f"refuted by the published values at n = {s['fit_fails_beyond']}"
    upto = max([fit["supported_up_to"], *s.get("fit_agrees_beyond", [])])
    checks = len(fit["checked_on"]) + len(s.get("fit_agrees_beyond", []))
    if fit["unchecked_classes"] and not s.get("fit_agrees_beyond"):
        return f"weak: only {checks} check(s) and classes {fit['unchecked_classes']} unchecked"
    return f"supported up to n = {upto} ({checks} values not used in the fit agree)"


def markdown(summaries: list[dict], rows: list[dict], meta: dict) -> str:
    ns = sorted({r["n"] for r in rows})
    lines = [
        "# Diameters of Cayley graphs of S_n",
        "",
        f"Device: {meta['device']}. Machine: {meta['cores']} cores, threads {meta['threads']}, torch "
        f"{meta['torch']}; load average (1 min) {meta['loadavg_start']:.1f} -> "
        f"{meta['loadavg_end']:.1f}; total {meta['total_s']:.0f} s. Full BFS for every entry "
        "(CPU: bitset backend, burnt pancakes with torch; GPU: torch backend on the device).",
        "",
        "## Computed diameters",
        "",
        "| family | " + " | ".join(f"n={n}" for n in ns) + " | published |",
        "|---|" + "---|" * len(ns) + "---|",
    ]
    for s in summaries:
        cells = [str(s["diameters"].get(n, "")) for n in ns]
        lines.append(f"| {s['family']} | " + " | ".join(cells) + f" | {s['source']} |")
    lines += ["", "## Checks and quasi-polynomial fits", ""]
    for s in summaries:
        checked = s["checked_against_known"]
        check = (f"matches the published values for n = {checked[0]}..{checked[-1]}"
                 if checked and not s["mismatches"] else
                 f"DIFFERS from the published values at n = {s['mismatches']}" if checked
                 else "no published values to compare")
        alt = [n for n, g in s["group"].items() if g == "A_n"]
        other = {n: g for n, g in s["group"].items() if g not in ("S_n", "A_n")}
        full = "B_n (signed permutations)" if s["family"] == "burnt_pancake" else "S_n"
        group = f"the generators give {full}" + (f" (A_n at n = {alt})" if alt else "") + (
            f", other groups at {other}" if other else "")
        lines.append(f"- **{s['family']}**: {check}; {group}.")
        fit = s["fit"]
        if fit is None:
            lines.append("  No quasi-polynomial of period <= 3 (quadratic per class, fitted on 3 "
                         "points per class, checked on at least one more point) fits the "
                         "computed range; more n are needed (e.g. `--big`) or the form fails.")
        else:
            lines.append(f"  Fit (period {fit['period']}, from n = {fit['n_min']}): "
                         f"d(n) = {s['formula']}; reproduces the computed values it was not "
                         f"fitted on, n = {fit['checked_on']}"
                         + (f" (classes {fit['unchecked_classes']} mod {fit['period']} only "
                            "fitted, not checked, on computed values)."
                            if fit["unchecked_classes"] else "."))
            if s["fit_vs_known_beyond"]:
                lines.append(f"  Against published values beyond the computed range: agrees at "
                             f"n = {s['fit_agrees_beyond'] or 'none'}, fails at "
                             f"n = {s['fit_fails_beyond'] or 'none'}.")
        if fit is not None:
            lines.append(f"  Verdict: {verdict(s)}.")
        if "farthest_involution_holds_for" in s:
            lines.append("  Farthest element unique and equal to (0 1)(2 n-1)(3 n-2)...: holds "
                         f"for n = {s['farthest_involution_holds_for']}.")
    ok = all(s["babai_refined_bound_n2_over_2_plus_4n_holds"] for s in summaries)
    lines += ["", f"Refined Babai-type bound d <= n^2/2 + 4n (paper's conjecture for undirected "
              f"generating sets): {'holds for every computed value' if ok else 'VIOLATED'} "
              "(the directed LX family included).", "",
              "## Cost of the largest runs", "",
              "| family | n | states | backend | seconds | engine bytes | peak RSS MB | "
              "device peak MB |", "|---|---|---|---|---|---|---|---|"]
    largest = {}
    for r in rows:
        if r["n"] >= largest.get(r["family"], {"n": -1})["n"]:
            largest[r["family"]] = r
    for r in largest.values():
        dev = "-" if r["device_peak_mb"] is None else f"{r['device_peak_mb']:.0f}"
        lines.append(f"| {r['family']} | {r['n']} | {r['order']} | {r['backend']} | "
                     f"{r['seconds']:.1f} | {r['peak_bytes']} | {r['rss_peak_mb']:.0f} | {dev} |")
    return "\n".join(lines) + "\n"


def plot(summaries: list[dict], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    for s in summaries:
        ns = sorted(s["diameters"])
        line = ax.plot(ns, [s["diameters"][n] for n in ns], "o", label=s["family"])[0]
        if s["fit"] is not None:
            xs = list(range(s["fit"]["n_min"], max(ns) + 3))
            ax.plot(xs, [float(predict(s["fit"], x)) for x in xs], "-", alpha=0.5,
                    color=line.get_color())
        known = {n: v for n, v in KNOWN.get(s["family"], {}).items() if n > max(ns) and n < 16}
        if known:
            ax.plot(list(known), list(known.values()), "x", color=line.get_color())
    ax.set_xlabel("n")
    ax.set_ylabel("diameter")
    ax.set_title("Cayley graph diameters (o computed, x published, lines: fits)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--big", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only rewrite the .md and .png next to a results JSON")
    args = parser.parse_args()
    if args.render:
        data = json.loads(args.render.read_text())
        for s in data["summaries"]:  # JSON made the integer keys strings
            s["diameters"] = {int(k): v for k, v in s["diameters"].items()}
            s["group"] = {r["n"]: _group_name(r["order"], r["n"], s["family"])
                          for r in data["rows"] if r["family"] == s["family"]}
            if s["fit"] is not None:
                s["fit"]["polynomials"] = {int(k): v for k, v in s["fit"]["polynomials"].items()}
        args.render.with_suffix(".md").write_text(
            markdown(data["summaries"], data["rows"], data["meta"]))
        plot(data["summaries"], args.render.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    t0 = time.perf_counter()
    meta = {"device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}
    rows, summaries = [], []
    stem = "cayley_diameters" + ("_quick" if args.quick else "_big" if args.big else "") + (
        "_cuda" if cuda else "")
    for family in args.families:
        kwargs, lo, hi, quick, big, n_fit = FAMILIES[family]
        top = quick if args.quick else big if args.big else hi
        if cuda and not args.quick:
            top = GPU[family]
        fam_rows = run_family(family, kwargs, range(lo, top + 1), args.device)
        rows += fam_rows
        summaries.append(summarise(family, fam_rows, n_fit))
        meta["loadavg_end"] = os.getloadavg()[0]
        meta["total_s"] = time.perf_counter() - t0
        write(args.out, stem, meta, summaries, rows)  # after each family: partial runs count
    print(markdown(summaries, rows, meta))


def write(out: Path, stem: str, meta: dict, summaries: list[dict], rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{stem}.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "summaries": summaries, "rows": rows}, indent=1))
    os.replace(tmp, out / f"{stem}.json")
    (out / f"{stem}.md").write_text(markdown(summaries, rows, meta))
    plot(summaries, out / f"{stem}.png")

if __name__ == "__main__":
    main()
