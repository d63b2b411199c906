"""Throughput of the DFP-16 GEMM (``lowbit.arith.dfp.matmul``) against the same-shape fp32 GEMM.

The DFP GEMM emulates INT16 x INT16 products accumulated in INT32 chunks of proven-safe length
and combined in fp32: exact integer chunk sums from float64 BLAS GEMMs, then one fused numba
pass that rounds each chunk sum to fp32 and adds it in order. The baseline is torch's fp32
matmul of the same (unquantized) operands, measured in the same run; the ratio
``t_fp32 / t`` is what to compare (absolute speeds on shared machines vary by 2x).

Rows (per shape): the fp32 baseline; the float64 GEMM alone (the exact-integer kernel's lower
bound); the DFP GEMM of pre-quantized DFP-16 operands (numpy and torch); the DFP GEMM of float
operands (quantization included); and the unchunked INT32 GEMM (``chunk=None, headroom=0``,
simulated step by step with its overflows counted) on the smallest shape only.
Numbers: G multiply-adds per second (M·N·K / seconds, best of ``repeat`` calls after a
warm-up that compiles the numba kernel), the ratio to fp32, the process CPU time per
multiply-add, and the chunk length and overflow count of the DFP GEMM.

Usage::

    python benchmarks/bench_dfp.py              # 512^3 and two convolution-shaped GEMMs
    python benchmarks/bench_dfp.py --quick      # 256^3 and one convolution shape
    python benchmarks/bench_dfp.py --quick --markdown benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os

# one BLAS thread for numpy as for torch (--threads): OpenBLAS's default threads spin-wait
# on small GEMMs and made the numpy rows several times slower on a shared machine
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lowbit.arith import dfp  # noqa: E402


def best_time(fn: Callable[[], Any], repeat: int, warmup: bool = True) -> tuple[float, float]:
    """Best wall time and best process CPU time of ``repeat`` calls (after one warm-up)."""
    if warmup:
        fn()
    best = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu


# (label, M, K, N): a square GEMM, the forward GEMM of a 3x3 convolution with 16 channels on
# 28x28 images (batch 32: rows = 32·28·28, K = 9·16), and its weight-gradient GEMM
SHAPES = {
    "square": (512, 512, 512),
    "conv fwd": (25088, 144, 16),
    "conv wgrad": (16, 25088, 144),
}
QUICK_SHAPES = {"square": (256, 256, 256), "conv fwd": (6272, 144, 16)}


def run(quick: bool = False, repeat: int = 3) -> list[dict[str, Any]]:
    """Run the benchmark; one dict per row (``case``, ``shape``, ``gmacs``, ``ratio_vs_fp32``,
    ``cpu_ns_per_mac``, ``seconds``, ``chunk``, ``overflows``)."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    shapes = QUICK_SHAPES if quick else SHAPES
    for i, (label, (m, k, n)) in enumerate(shapes.items()):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        qa, qb = dfp.quantize(a), dfp.quantize(b)
        tqa = dfp.DFPTensor(torch.from_numpy(qa.ints), qa.exp)
        tqb = dfp.DFPTensor(torch.from_numpy(qb.ints), qb.exp)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        macs = float(m) * k * n
        t_fp, c_fp = best_time(lambda ta=ta, tb=tb: ta @ tb, repeat)
        _, st = dfp.matmul(qa, qb)
        cases: list[tuple[str, Callable[[], Any], Any]] = [
            ("torch fp32 matmul (baseline)", lambda ta=ta, tb=tb: ta @ tb, None),
            (
                "numpy float64 matmul (exact-integer kernel alone)",
                lambda a64=a64, b64=b64: a64 @ b64,
                None,
            ),
            ("dfp.matmul, DFP-16 operands, numpy", lambda qa=qa, qb=qb: dfp.matmul(qa, qb), st),
            (
                "dfp.matmul, DFP-16 operands, torch",
                lambda tqa=tqa, tqb=tqb: dfp.matmul(tqa, tqb),
                st,
            ),
            (
                "dfp.matmul, fp32 operands (quantization included)",
                lambda ta=ta, tb=tb: dfp.matmul(ta, tb),
                st,
            ),
        ]
        if i == 0:
            _, un = dfp.matmul(qa, qb, chunk=None, headroom=0)
            cases.append(
                (
                    "dfp.matmul unchunked INT32, no head-room (simulated)",
                    lambda qa=qa, qb=qb: dfp.matmul(qa, qb, chunk=None, headroom=0),
                    un,
                )
            )
        for name, fn, stats in cases:
            if name.startswith("torch fp32"):
                t, c = t_fp, c_fp
            else:
                t, c = best_time(fn, repeat)
            rows.append(
                {
                    "case": name,
                    "label": label,
                    "shape": f"{m}x{k}x{n}",
                    "gmacs": macs / t / 1e9,
                    "ratio_vs_fp32": t_fp / t,
                    "cpu_ns_per_mac": c / macs * 1e9,
                    "seconds": t,
                    "chunk": None if stats is None else stats.chunk,
                    "overflows": None if stats is None else stats.overflow_count,
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| case | GEMM (M x K x N) | G MAC/s | x fp32 | CPU ns/MAC | chunk | INT32 overflows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chunk = "-" if r["chunk"] is None else str(r["chunk"])
        over = "-" if r["overflows"] is None else str(r["overflows"])
        lines.append(
            f"| {r['case']} | {r['label']} {r['shape']} | {r['gmacs']:.3f} | "
            f"{r['ratio_vs_fp32']:.3f} | {r['cpu_ns_per_mac']:.2f} | {chunk} | {over} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point: print the table (and append it to ``--markdown``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per row (best taken)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}")
    table = format_table(run(args.quick, args.repeat))
    print(table)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(
                "\n### DFP-16 GEMM (lowbit.arith.dfp.matmul: INT16 products, INT32 chunks "
                "of proven-safe length, fp32 combination) vs the fp32 GEMM of the same "
                f"shape{' (--quick)' if args.quick else ''}\n\n"
            )
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
