"""Harmonic series in fp16 and bf16: round-to-nearest stagnates, stochastic rounding does not.

Reproduces Higham & Pranesh (SIAM J. Sci. Comput. 2019): summed left to right in fp16 with
round-to-nearest-even, 1 + 1/2 + 1/3 + ... stops growing at 7.0859375 from n = 513 on (bf16:
5.0625 from n = 65), while stochastic rounding keeps following the exact sum (computed with
``fractions.Fraction``). Every division and addition is correctly rounded by ``lb.arith``.

Run: ``.venv/bin/python examples/harmonic.py [--n 32768] [--runs 8]``; writes
``docs/results/harmonic.png`` and ``docs/results/harmonic.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowbit.reports.harmonic import harmonic

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def main() -> None:
    """Run the fp16/bf16 × RNE/SR table and plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2**15, help="number of terms (default 32768)")
    p.add_argument("--runs", type=int, default=8, help="stochastic runs per format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    res = harmonic(
        ["fp16", "bf16"],
        ["rne", "sr"],
        n=args.n,
        runs=args.runs,
        seed=args.seed,
        out_dir=args.out,
        progress=True,
    )
    print(res.markdown)
    print(f"wrote {res.plot_path} and {res.markdown_path}")


if __name__ == "__main__":
    main()
