"""Experiment: AutoNumerics — evolved approximations of 2^x against Horner baselines.

Four parts, all on 2^x over [0, 1] (the AutoNumerics-Zero kernel, argument reduction assumed):

1. Baselines: minimax (LP on 3001 points) and Taylor Horner programs of degree 0..10 scored
   by the real-number evaluator (max relative error on 16385 points), beside the AutoNumerics
   note's table and a Remez exchange in mpmath.
2. Real-number mode: NSGA-II from scratch on (max relative error, operations), 2 workers,
   time-limited; the front against the minimax line for <= 10 operations.
3. In-format mode, bf16 and fp16: every input of the format in [0, 1], every operation
   correctly rounded (RNE, lowbit.arith), error in ulps of the true result; the front against
   the minimax polynomials with coefficients rounded to the format, and against the same
   polynomials with tuned coefficients. Bounds: 1 ulp (bf16), 2 ulps (fp16).
4. Short real-number fronts for log2 on [1, 2] and erf on [0, 1].

Writes ``autonumerics.md`` (tables, emitted programs, settings), ``autonumerics_*.png`` and
``autonumerics/*.json`` (full results, and ``meta.json``: run time and settings) to ``--out``.

Usage::

    python experiments/autonumerics.py                 # ~13 min on 2 cores
    python experiments/autonumerics.py --quick         # smoke test, ~2 min
    python experiments/autonumerics.py --report-only   # page and plots from the saved JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lowbit.methods.autonumerics import (
    FormatProblem,
    SearchResult,
    minimax_coefficients,
    real_baselines,
    remez,
    search,
)
from lowbit.methods.autonumerics.problem import FIXED_ULP

NOTE_MINIMAX = {2: 1.7e-3, 3: 7.5e-5, 4: 2.6e-6, 5: 7.5e-8, 6: 1.9e-9, 7: 4.0e-11, 8: 7.7e-13}
NOTE_TAYLOR = {5: 8.5e-5, 8: 5.5e-8}


def g(v: Any) -> str:
    """Three significant digits, or a dash."""
    if v is None:
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def md_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of dict rows (same keys)."""
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(g(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(out)


def part_baselines(quick: bool) -> tuple[str, list[dict[str, Any]]]:
    degrees = range(0, 11)
    bl = {(b.kind, b.degree): b for b in real_baselines("exp2", (0.0, 1.0), degrees)}
    rows = []
    for d in degrees:
        mm = bl[("minimax", d)].error
        row = {
            "degree = ops": d,
            "minimax (LP)": mm,
            "note": NOTE_MINIMAX.get(d),
            "LP / note": mm / NOTE_MINIMAX[d] if d in NOTE_MINIMAX else None,
            "Remez (mpmath)": None,
            "taylor": bl[("taylor", d)].error,
            "taylor note": NOTE_TAYLOR.get(d),
            "minimax in fixed ulps": mm / FIXED_ULP,
        }
        if 2 <= d <= (5 if quick else 8):
            row["Remez (mpmath)"] = remez("exp2", (0.0, 1.0), d, grid=2001)[1]
        rows.append(row)
    return md_table(rows), rows


def front_section(res: SearchResult, bound: float | None, title: str, png: str) -> str:
    lines = [
        f"### {title}",
        "",
        f"{res.children} programs generated, {res.fits} distinct structures fitted, "
        f"{res.generations} generations, {res.elapsed:.0f} s of evolution. Error unit: "
        f"{res.unit}.",
        "",
        res.markdown(),
        "",
        f"![{title}]({png})",
        "",
    ]
    if bound is not None:
        best = res.cheapest(bound)
        base = res.cheapest_baseline(bound)
        tuned = res.cheapest_baseline(bound, "minimax+tuned")
        lines += [
            f"Bound {bound:g}: cheapest evolved program "
            f"{f'{best.ops} ops ({best.error:.4g})' if best else 'none found'}; "
            f"cheapest minimax polynomial with rounded coefficients "
            f"{f'{base.ops} ops ({base.error:.4g})' if base else 'none'}; with tuned "
            f"coefficients {f'{tuned.ops} ops ({tuned.error:.4g})' if tuned else 'none'}.",
            "",
        ]
        if best is not None:
            lines += [
                "```python",
                res.numpy_code(best).rstrip(),
                "",
                "",
                res.arith_code(best).rstrip(),
                "```",
                "",
            ]
    lines += ["<details><summary>every front program</summary>", "", "```"]
    lines += [f"{e.ops:2d} ops  {e.error:.4g}  {e.program}" for e in res.front]
    lines += ["```", "</details>", ""]
    return "\n".join(lines)


def run_searches(out: Path, quick: bool, workers: int, seed: int) -> float:
    """Run parts 2-4 and save every SearchResult as JSON; returns the seconds taken."""
    t0 = time.time()
    res = search(
        "exp2",
        (0.0, 1.0),
        budget=100_000,
        seed=seed,
        max_ops=10,
        population=32,
        workers=workers,
        time_limit=20 if quick else 330,
        progress=True,
        polish=3,
    )
    res.save(out / "autonumerics" / "exp2_real.json")
    print(res.markdown(), flush=True)
    for fmt in ("bf16", "fp16"):
        res = search(
            "exp2",
            (0.0, 1.0),
            fmt=fmt,
            budget=20_000,
            seed=seed,
            max_ops=6,
            population=32,
            workers=workers,
            time_limit=15 if quick else 150,
            progress=True,
            polish=3,
        )
        res.save(out / "autonumerics" / f"exp2_{fmt}.json")
        print(res.markdown(), flush=True)
    for fn, iv in OTHERS:
        res = search(
            fn,
            iv,
            budget=20_000,
            seed=seed,
            max_ops=8,
            population=32,
            workers=workers,
            time_limit=10 if quick else 45,
            progress=True,
            polish=2,
            baseline_degrees=range(0, 9),
        )
        res.save(out / "autonumerics" / f"{fn}_real.json")
    return time.time() - t0


OTHERS = (("log2", (1.0, 2.0)), ("erf", (0.0, 1.0)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/results", help="output folder")
    ap.add_argument("--quick", action="store_true", help="smoke test (about two minutes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the page and plots from the saved JSON results",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "autonumerics").mkdir(parents=True, exist_ok=True)
    meta_path = out / "autonumerics" / "meta.json"
    if args.report_only:
        meta = json.loads(meta_path.read_text())
    else:
        t_search = run_searches(out, args.quick, args.workers, args.seed)
        meta = {
            "search_s": round(t_search, 1),
            "quick": args.quick,
            "seed": args.seed,
            "workers": args.workers,
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
        }
        meta_path.write_text(json.dumps(meta, indent=1))
    q = bool(meta["quick"])

    # 1. baselines (seconds; recomputed each time)
    table, rows = part_baselines(q)
    load = {
        name: SearchResult.load(out / "autonumerics" / f"{name}.json")
        for name in ("exp2_real", "exp2_bf16", "exp2_fp16", *(f"{fn}_real" for fn, _ in OTHERS))
    }

    # 2. real-number mode
    res_real = load["exp2_real"]
    res_real.plot(out / "autonumerics_exp2_real.png")
    mm = res_real.baseline_line("minimax")
    verdict_real = []
    for n in range(0, 11):
        best = min((e.error for e in res_real.front if e.ops <= n), default=None)
        # first time the archive (errors on the 1025 fit points) reached the line at <= n ops
        reached = next(
            (
                h["elapsed"]
                for h in res_real.history
                if any(o <= n and float(e) <= mm[n] * (1 + 1e-3) for o, e in h["front"])
            ),
            None,
        )
        verdict_real.append(
            {
                "ops": n,
                "best evolved with <= n ops": best,
                "minimax": mm.get(n),
                "evolved / minimax": None if best is None else f"{best / mm[n]:.4f}",
                "on or below (<= 1 % above)": None if best is None else bool(best <= mm[n] * 1.01),
                "reached after (s)": reached,
            }
        )

    # 3. in-format
    fmt_results = {}
    for fmt, bound in (("bf16", 1.0), ("fp16", 2.0)):
        res = load[f"exp2_{fmt}"]
        res.plot(out / f"autonumerics_exp2_{fmt}.png", bound=bound)
        fmt_results[fmt] = (res, bound)
    # the exact-arithmetic floor of a quadratic in fp16 ulps (why 2 ops miss 2 ulps)
    prob16 = FormatProblem("exp2", (0.0, 1.0), "fp16")
    _, floor16 = minimax_coefficients(prob16.x, prob16.truth, prob16.ulps, 2)

    # 4. other targets
    others = [load[f"{fn}_real"] for fn, _ in OTHERS]
    for r in others:
        r.plot(out / f"autonumerics_{r.function}_real.png")
    total = float(meta["search_s"])

    # ---- report ----
    bf, bf_bound = fmt_results["bf16"]
    fp, fp_bound = fmt_results["fp16"]
    bf_best, bf_base = bf.cheapest(bf_bound), bf.cheapest_baseline(bf_bound)
    fp_best, fp_base = fp.cheapest(fp_bound), fp.cheapest_baseline(fp_bound)
    fp_two = [e for e in fp.front if e.ops <= 2]

    def structural_wins(res: SearchResult) -> str:
        """Sizes where the evolved program beats the tuned Horner polynomial of that size."""
        tuned = res.baseline_line("minimax+tuned")
        wins = [
            f"{e.ops} ops: {e.error:.3g} vs {tuned[e.ops]:.3g}"
            for e in res.front
            if e.ops in tuned and e.error < tuned[e.ops] * (1 - 1e-9)
        ]
        return "; ".join(wins) if wins else "none"

    def below_line(res: SearchResult) -> str:
        mm_r = res.baseline_line("minimax")
        pts = [
            f"{e.ops} ops: {e.error:.3g} vs {mm_r[e.ops]:.3g}"
            for e in res.front
            if e.ops in mm_r and e.error < mm_r[e.ops] * (1 - 1e-3)
        ]
        return "; ".join(pts) if pts else "none (on the line)"

    md = [
        "# AutoNumerics: evolved approximations of 2^x, in float64 and exhaustively in a format",
        "",
        "Generated by `experiments/autonumerics.py`"
        + (" (--quick)" if q else "")
        + f"; searches took {total / 60:.1f} min with {meta['workers']} worker processes on "
        f"{meta['cores']} cores shared with other jobs, Python {meta['python']}, seed "
        f"{meta['seed']}.",
        "API: `lowbit.methods.autonumerics.search(...)`; CLI: `lowbit autonumerics ...`.",
        "",
        "Programs are straight-line DAGs of add / sub / mul / fma / scale-by-constant vertices "
        "on one input (constants are free leaves; every operation costs 1, an fma included, so "
        "a degree-n Horner polynomial costs n). The outer loop is NSGA-II from random "
        "1-3-operation programs (mutations: insert, remove, rewire, change op; a quarter of "
        "the parents drawn from the best program of a random size); the inner loop fits the "
        "constants: a linear program (minimax, HiGHS with iterative refinement) when the "
        "output is affine in them, else Levenberg-Marquardt then sequential LP. In a format, "
        "constants are rounded to the format and walked over neighbouring format values "
        "while the exhaustive error drops; the best three structures of each size get a "
        "longer walk with joint moves of two constants at the end (polish).",
        "",
        "## 1. Baselines: 2^x on [0, 1], max relative error (real-number evaluator)",
        "",
        "Minimax: LP on 3001 points; Taylor: about 0; both as Horner programs, scored on "
        "16385 points. 'note' is the table of papers.md §4b; Remez is an independent mpmath "
        "exchange (levelled error). Fixed ulps: error / 2^-23 (the paper's unit).",
        "",
        table,
        "",
        "The degree-5 minimax program scores "
        f"{rows[5]['minimax (LP)']:.4g} (acceptance: ≈ 7.5e-8); every degree 2-8 is within "
        f"{max(abs(r['LP / note'] - 1) for r in rows if r['LP / note'] is not None) * 100:.1f}"
        " % of the note.",
        "",
        "## 2. Real-number mode (float64, max relative error on 16385 points)",
        "",
        front_section(
            res_real, None, "exp2 on [0, 1], real-number mode", "autonumerics_exp2_real.png"
        ),
        "Front against the minimax line (best evolved program with at most n operations):",
        "",
        md_table(verdict_real),
        "",
        "## 3. In-format mode: every input, every operation rounded (RNE)",
        "",
        "Error in ulps of the true result (`|p(x) - 2^x| / ulp(2^x)`, the format's ulp), "
        "maximum over every value of the format in [0, 1] (bf16: 16257 inputs, fp16: 15361). "
        "Baselines: ulp-weighted minimax polynomial with coefficients rounded to the format "
        "(as Sollya with rounded coefficients), the same with coefficients tuned by the "
        "polish walk, and Taylor about 0.",
        "",
        front_section(bf, bf_bound, "exp2 on [0, 1] in bf16", "autonumerics_exp2_bf16.png"),
        front_section(fp, fp_bound, "exp2 on [0, 1] in fp16", "autonumerics_exp2_fp16.png"),
        "### Verdict",
        "",
        f"* bf16, bound 1 ulp: evolved "
        f"{f'{bf_best.ops} ops ({bf_best.error:.4g} ulp)' if bf_best else 'none'} vs the "
        f"cheapest rounded minimax polynomial "
        f"{f'{bf_base.ops} ops ({bf_base.error:.4g} ulp)' if bf_base else 'none'}: "
        + (
            "fewer operations. "
            if bf_best and bf_base and bf_best.ops < bf_base.ops
            else "not fewer operations. "
        )
        + "At that size the gain comes from the exhaustive in-format fitness tuning the "
        "constants, not from a new structure: the program is a Horner quadratic, and the "
        "'minimax+tuned' row shows the same polynomial with tuned coefficients. Where the "
        "evolved structure itself beats the tuned Horner polynomial of the same size: "
        f"{structural_wins(bf)}.",
        f"* fp16, bound 2 ulps: evolved "
        f"{f'{fp_best.ops} ops ({fp_best.error:.4g} ulp)' if fp_best else 'none'} vs the "
        f"cheapest rounded minimax polynomial "
        f"{f'{fp_base.ops} ops ({fp_base.error:.4g} ulp)' if fp_base else 'none'}: no "
        "gain. Best program found with at most 2 operations: "
        f"{g(min((e.error for e in fp_two), default=None))} ulp. With exact intermediate "
        f"arithmetic the best quadratic is {floor16:.3g} ulp off somewhere, and rounding the "
        "final result moves it by at most 0.5 ulp, so no quadratic with exact intermediates "
        f"can be within {floor16 - 0.5:.2f} ulp; rounded intermediates and the other shapes "
        "two operations can build (e.g. fma(x, x, c) then fma(t, x, d)) are not covered by "
        "this argument, and the search found none that meets the bound. Structural wins over "
        f"the tuned Horner polynomial of the same size: {structural_wins(fp)}.",
        "",
        "## 4. Other targets (real-number mode, short runs, absolute error)",
        "",
    ]
    for r in others:
        png = f"autonumerics_{r.function}_real.png"
        md.append(
            front_section(r, None, f"{r.function} on [{r.interval[0]:g}, {r.interval[1]:g}]", png)
        )
        md += [f"Points more than 0.1 % below the minimax line: {below_line(r)}.", ""]
    md += [
        "## Reproduce",
        "",
        "```",
        "python experiments/autonumerics.py            # this page",
        "lowbit autonumerics --function exp2 --interval 0,1 --format bf16 --ops add,mul,fma "
        "--budget 20000 --seed 0 --bound 1",
        "```",
        "",
        "Full results (fronts, baselines, per-generation history) are in "
        "`docs/results/autonumerics/*.json` (`SearchResult.load`).",
        "",
    ]
    (out / "autonumerics.md").write_text("\n".join(md))
    print(f"wrote {out / 'autonumerics.md'} (searches: {total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
