"""Throughput of ``lowbit.matmul`` against a naive torch-eager emulation of the same arithmetic.

The naive baseline is what one writes without a fused kernel: a Python loop over k in which
every multiply and every add is followed by a generic round-to-format written with torch
tensor operations (``frexp``/``ldexp``/``round``, as MATLAB chop or pychop do), on float64
tensors. For fp16 products and fp16 accumulation with RNE it computes exactly what
``lowbit.matmul(A, B, prod="fp16", acc="fp16")`` computes (float64 holds every exact product
and sum of fp16 values), and the benchmark checks that the two results are bit-identical.
A second, stronger baseline uses torch's native fp16 cast (``.half()``) for the rounding; it
only exists for fp16/bf16 and is reported for information.

Operands are float32 arrays holding fp16 values (lowbit reads float32 without a copy).
Numbers: G multiply-adds per second (M·N·K / seconds, best of ``repeat`` calls after a warm-up
that compiles the kernels), the ratio to the naive generic baseline measured in the same run,
and the peak extra memory of one call in units of the operands' bytes (the larger of
tracemalloc's peak and the growth of the process's peak RSS). Absolute speeds on shared
machines vary; ratios from one run are what to compare.

Usage::

    python benchmarks/bench_matmul.py            # 512 x 512 x 512
    python benchmarks/bench_matmul.py --quick    # 256 x 256 x 256, fewer rows
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import lowbit as lb
from lowbit.arith.matmul import matmul


def _status_kib(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_extra_bytes(fn: Callable[[], Any]) -> float:
    """Peak extra memory of one call: max(tracemalloc peak, growth of peak RSS)."""
    gc.collect()
    rss = 0.0
    try:
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    tracemalloc.start()
    try:
        res = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if reset:
        rss = max(0, _status_kib("VmHWM") - before) * 1024.0
    del res
    return float(max(peak, rss))


def best_time(fn: Callable[[], Any], repeat: int, warmup: bool = True) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) of ``repeat`` calls, after one
    warm-up call (which compiles the kernels) unless ``warmup=False``."""
    if warmup:
        fn()
    best = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu


# ---- naive torch-eager baselines -----------------------------------------------------------------
def chop_torch(x: Any, man_bits: int = 10, emin: int = -14, xmax: float = 65504.0) -> Any:
    """Generic round-to-nearest-even onto a float format with torch ops (chop's algorithm)."""
    import torch

    _, e = torch.frexp(x)  # x = f * 2^e with 0.5 <= |f| < 1
    q = torch.clamp(e - 1, min=emin) - man_bits  # quantum exponent, subnormals included
    y = torch.ldexp(torch.round(torch.ldexp(x, -q)), q)  # torch.round: half to even
    return torch.where(y.abs() > xmax, torch.copysign(torch.full_like(y, float("inf")), y), y)


def naive_chop(A: Any, B: Any) -> Any:
    """C = chop(C + chop(a_k b_k)) over k, every rounding a generic torch expression."""
    import torch

    C = chop_torch(A[:, :1] * B[:1, :])
    for k in range(1, A.shape[1]):
        C = chop_torch(C + chop_torch(A[:, k : k + 1] * B[k : k + 1, :]))
    return C.to(torch.float64)


def naive_cast(A: Any, B: Any) -> Any:
    """The same loop with torch's native fp16 cast as the rounding (fp16-specific)."""
    import torch

    C = (A[:, :1] * B[:1, :]).half().double()
    for k in range(1, A.shape[1]):
        C = (C + (A[:, k : k + 1] * B[k : k + 1, :]).half().double()).half().double()
    return C.to(torch.float64)


# ---- the benchmark -------------------------------------------------------------------------------
CASES: list[tuple[str, dict[str, Any]]] = [
    ("fp16 products + fp16 acc, RNE (per-product rounding)", {"prod": "fp16", "acc": "fp16"}),
    ("exact products + fp16 acc, RNE", {"acc": "fp16"}),
    ("preset fp32-acc (exact products, fp32 acc)", {"preset": "fp32-acc"}),
    ("preset fp8-tensorcore (e4m3, blocks of 32, fp32 acc)", {"preset": "fp8-tensorcore"}),
    (
        "fp16 products + fp16 acc, SR (seeded)",
        {"prod": "fp16", "acc": "fp16", "prod_mode": "sr", "acc_mode": "sr", "seed": 0},
    ),
    ("exact products + fp16 acc, pairwise", {"acc": "fp16", "order": "pairwise"}),
    ("exact products + bf16 acc, RD", {"acc": "bf16", "acc_mode": "rd"}),
]


def run(quick: bool = False, repeat: int = 3) -> list[dict[str, Any]]:
    """Run the matmul benchmark; one dict per row.

    Args:
        quick: 256³ and the main rows only (else 512³, every row).
        repeat: timed calls per row (best taken) after a warm-up call.

    Returns:
        Rows with ``name``, ``size`` (M=N=K), ``gmacs`` (G multiply-adds/s), ``ratio_vs_naive``
        (throughput over the naive generic torch-eager emulation's), ``cpu_ns_per_mac``
        (process CPU time of the best call over all threads, per multiply-add: comparable
        across loads on a shared machine), ``peak_mem_x_operands`` and ``seconds`` (best
        call); the per-product fp16 row also has ``bit_identical_to_naive``.
    """
    import torch

    n = 256 if quick else 512
    rng = np.random.default_rng(0)
    A = lb.round(rng.standard_normal((n, n)).astype(np.float32), "fp16")
    B = lb.round(rng.standard_normal((n, n)).astype(np.float32), "fp16")
    op_bytes = A.nbytes + B.nbytes
    macs = float(n) ** 3
    tA = torch.from_numpy(A.astype(np.float64))
    tB = torch.from_numpy(B.astype(np.float64))
    rows: list[dict[str, Any]] = []

    # best of two for the baselines too: on a shared machine torch's threads stall at random
    t_chop, c_chop = best_time(lambda: naive_chop(tA, tB), 2, warmup=False)
    ref = naive_chop(tA, tB).numpy()
    rows.append(
        {
            "name": "naive torch-eager, generic chop rounding (baseline)",
            "size": n,
            "gmacs": macs / t_chop / 1e9,
            "ratio_vs_naive": 1.0,
            "cpu_ns_per_mac": c_chop / macs * 1e9,
            "peak_mem_x_operands": float("nan"),
            "seconds": t_chop,
        }
    )
    t_cast, c_cast = best_time(lambda: naive_cast(tA, tB), 2, warmup=False)
    rows.append(
        {
            "name": "naive torch-eager, native .half() casts",
            "size": n,
            "gmacs": macs / t_cast / 1e9,
            "ratio_vs_naive": t_chop / t_cast,
            "cpu_ns_per_mac": c_cast / macs * 1e9,
            "peak_mem_x_operands": float("nan"),
            "seconds": t_cast,
        }
    )
    cases = CASES[:4] if quick else CASES
    for name, kw in cases:

        def call(kw: dict[str, Any] = kw) -> Any:
            return matmul(A, B, **kw)

        t, c = best_time(call, repeat)
        mem = peak_extra_bytes(call) / op_bytes
        row = {
            "name": "lowbit.matmul " + name,
            "size": n,
            "gmacs": macs / t / 1e9,
            "ratio_vs_naive": t_chop / t,
            "cpu_ns_per_mac": c / macs * 1e9,
            "peak_mem_x_operands": mem,
            "seconds": t,
        }
        if kw == {"prod": "fp16", "acc": "fp16"}:
            got = np.asarray(call(), dtype=np.float64)
            row["bit_identical_to_naive"] = bool(np.array_equal(got, ref))
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| case | size | G MAC/s | × naive | CPU ns/MAC | peak mem (× operands) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = r["peak_mem_x_operands"]
        mem_s = "—" if mem != mem else f"{mem:.2f}"
        note = ""
        if "bit_identical_to_naive" in r:
            note = (
                " (bit-identical to naive)"
                if r["bit_identical_to_naive"]
                else " (DIFFERS from naive!)"
            )
        lines.append(
            f"| {r['name']}{note} | {r['size']}³ | {r['gmacs']:.3f} | "
            f"{r['ratio_vs_naive']:.1f} | {r['cpu_ns_per_mac']:.2f} | {mem_s} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point: print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="256³ and the main rows only")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per row (best taken)")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    args = ap.parse_args()
    print(f"threads: numba {os.environ.get('NUMBA_NUM_THREADS', 'default')}, cpus {os.cpu_count()}")
    table = format_table(run(args.quick, args.repeat))
    print(table)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(
                "\n### Emulated matmul (lowbit.matmul, 512x512x512 unless --quick; target "
                ">= 0.3 G MAC/s with per-product rounding and fp16 accumulation, >= 10x "
                "the naive torch-eager emulation, memory <= 2x the operands)\n\n"
            )
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
