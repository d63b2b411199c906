"""Summation error vs n in fp16 and bf16: recursive, pairwise and Kahan against their bounds.

For each n, ``--trials`` vectors of uniform [0, 1) numbers (rounded to the format) are summed
with every addition correctly rounded to the format (``lowbit.linalg.sum``). The measured
relative error ``|s - sum x| / sum |x|`` (exact sum by ``math.fsum``, which is correctly
rounded to float64) is compared with the a-priori bounds of Higham, *Accuracy and Stability of
Numerical Algorithms*, ch. 4: recursive ``gamma_{n-1}``, pairwise ``gamma_{ceil(log2 n)}``,
Kahan ``3u + C_n u^2`` (proved with explicit constants in ``lowbit.linalg.summation``; the
literature's ``2u + O(n u^2)`` has no explicit second-order constant). Recursive summation
with stochastic rounding is shown too (its bound uses ``2u``; its typical error grows like
``sqrt(n) u``).

Run: ``.venv/bin/python examples/summation.py [--max-log2n 13] [--trials 32]``; writes
``docs/results/summation.png`` and ``docs/results/summation.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

import lowbit as lb
from lowbit.linalg import bound
from lowbit.linalg import sum as lbsum

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"
CONFIGS = (("recursive", "rne"), ("pairwise", "rne"), ("kahan", "rne"), ("recursive", "sr"))
FORMATS = ("fp16", "bf16")


def measure(fmt: str, ns: list[int], trials: int, seed: int) -> dict[tuple[str, str], list]:
    """Max and mean relative error per (algorithm, mode) and n."""
    rng = np.random.default_rng(seed)
    out: dict[tuple[str, str], list] = {c: [] for c in CONFIGS}
    work = [(n, c) for n in ns for c in CONFIGS]
    for n, (alg, mode) in tqdm(work, desc=f"summation {fmt}", unit="case"):
        x = np.asarray(lb.round(rng.random((n, trials)), fmt), dtype=np.float64)
        s = lbsum(x, fmt, mode, algorithm=alg, axis=0, seed=seed)
        exact = np.array([math.fsum(x[:, j].tolist()) for j in range(trials)])
        abs_sum = np.array([math.fsum(np.abs(x[:, j]).tolist()) for j in range(trials)])
        rel = np.abs(s - exact) / abs_sum
        out[(alg, mode)].append((n, float(rel.max()), float(rel.mean()), bound(n, fmt, alg, mode)))
    return out


def plot(results: dict[str, dict], path: Path) -> None:
    """Measured max error (markers) and bounds (dashed) vs n, one panel per format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(11, 4.3))
    for ax, (fmt, res) in zip(axes, results.items(), strict=True):
        for k, ((alg, mode), rows) in enumerate(res.items()):
            color = f"C{k}"
            n = np.array([r[0] for r in rows])
            mx = np.array([r[1] for r in rows])
            bd = np.array([r[3] for r in rows])
            label = f"{alg} ({mode})"
            ax.plot(n, mx, "o-", color=color, ms=4, label=f"{label}: measured")
            fin = np.isfinite(bd)
            ax.plot(n[fin], bd[fin], "--", color=color, lw=1, label=f"{label}: bound")
        u = lb.get_format(fmt).unit_roundoff
        ax.axhline(u, color="grey", lw=0.8, ls=":")
        ax.text(n[0], u * 1.15, "u", color="grey", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(u / 4, 3)
        ax.set_xlabel("n")
        ax.set_title(f"{fmt}: max relative error over trials (uniform [0,1) data)", fontsize=10)
        ax.set_ylabel("|s - exact| / sum |x|")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(results: dict[str, dict], trials: int) -> str:
    """A table per format: measured max error / bound for every configuration and n."""
    lines = [
        f"Max relative error over {trials} uniform [0, 1) vectors (measured / a-priori "
        "bound; `inf`: the bound is vacuous because (n-1)u >= 1).\n"
    ]
    for fmt, res in results.items():
        heads = [f"{a} ({m})" for a, m in res]
        lines.append(f"**{fmt}**\n")
        lines.append("| n | " + " | ".join(heads) + " |")
        lines.append("|---" * (len(heads) + 1) + "|")
        ns = [r[0] for r in next(iter(res.values()))]
        for i, n in enumerate(ns):
            cells = [f"{rows[i][1]:.2e} / {rows[i][3]:.2e}" for rows in res.values()]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure, plot and tabulate."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-log2n", type=int, default=13)
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    ns = [2**k for k in range(3, args.max_log2n + 1)]
    results = {fmt: measure(fmt, ns, args.trials, args.seed) for fmt in FORMATS}
    for res in results.values():  # every finite bound holds
        for rows in res.values():
            assert all(r[1] <= r[3] for r in rows), rows
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "summation.png")
    md = markdown(results, args.trials) + "\n![summation error vs n](summation.png)\n"
    (args.out / "summation.md").write_text(md)
    print(md)
    print(f"wrote {args.out / 'summation.png'} and {args.out / 'summation.md'}")


if __name__ == "__main__":
    main()
