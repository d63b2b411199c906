"""Elementwise ``lowbit.arith`` operations against the same numpy float32 operation.

Each lowbit call computes the exact result with error-free transformations, rounds it to odd
in float64 and rounds it once to the format (see ``lowbit.arith.ops``); the baseline is the
plain ``np.add``/``np.multiply`` on float32 arrays of the same length, timed in the same run
(best of ``repeat`` calls after a warm-up). ``inputs="exact"`` skips rounding the operands to
the format first (they already hold format values here); the default ``inputs="round"`` pays
for two more rounding passes.

Usage::

    python benchmarks/bench_arith.py [--n 10000000] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import lowbit as lb


def _best(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(n: int = 10_000_000, repeat: int = 5) -> list[dict[str, Any]]:
    """Rows: op, format, mode, inputs policy, seconds, ratio to numpy float32's op."""
    rng = np.random.default_rng(0)
    rows = []
    for fmt in ("fp16", "bf16", "e4m3"):
        x = lb.round(rng.standard_normal(n).astype(np.float32), fmt)
        y = lb.round(rng.standard_normal(n).astype(np.float32), fmt)
        for op, np_op in (("add", np.add), ("mul", np.multiply)):
            t_np = _best(lambda np_op=np_op, x=x, y=y: np_op(x, y), repeat)
            for mode in ("rne", "sr"):
                for inputs in ("exact", "round"):
                    f = getattr(lb.arith, op)
                    t = _best(
                        lambda f=f, mode=mode, inputs=inputs, x=x, y=y, fmt=fmt: f(
                            x, y, fmt, mode, seed=1, inputs=inputs
                        ),
                        repeat,
                    )
                    rows.append(
                        {
                            "op": op,
                            "format": fmt,
                            "mode": mode,
                            "inputs": inputs,
                            "seconds": t,
                            "ratio": t_np / t,
                            "numpy_s": t_np,
                        }
                    )
    return rows


def markdown(rows: list[dict[str, Any]], n: int) -> str:
    lines = [
        f"### Elementwise arithmetic ({n:.0e} float32 elements; ratio = numpy float32 op "
        "time / lowbit time, same run; target >= 0.3)",
        "",
        "| op | format | mode | inputs | lowbit s | numpy s | ratio | target |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ok = "PASS" if r["ratio"] >= 0.3 else "FAIL"
        lines.append(
            f"| {r['op']} | {r['format']} | {r['mode']} | {r['inputs']} | "
            f"{r['seconds']:.4f} | {r['numpy_s']:.4f} | {r['ratio']:.2f} | {ok} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per row (best kept)")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    a = ap.parse_args()
    rows = run(a.n, a.repeat)
    text = markdown(rows, a.n)
    print(text)
    if a.markdown:
        with open(a.markdown, "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
