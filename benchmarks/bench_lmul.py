"""Throughput of the L-Mul GEMM and of the quire GEMM against float32 GEMMs of the same shape.

Rows (G multiply-adds per second = M·N·K·batch / seconds, best of ``repeat`` calls after a
warm-up call that compiles the kernels; CPU ns per multiply-add over all threads, comparable
across loads on a shared machine; and the time relative to numpy's float32 matmul of the same
shape measured in the same run):

* ``numpy`` / ``torch`` float32 matmul (BLAS: the speed of light, not an emulation);
* ``lowbit.arith.approx.lmul_matmul`` (L-Mul products summed in float32; numba kernel) on
  numpy and torch operands, carry and literal forms;
* ``lowbit.matmul(mult="lmul4", acc="fp32")`` — the same products through the general
  emulated GEMM (every fp32 addition emulated), for comparison;
* ``lowbit.matmul(mult="posit16" / "posit8", acc="quire", out=...)`` — exact accumulation
  rounded once — next to ``lowbit.matmul(mult=..., acc="fp32")`` (emulated fp32 sums).

Shapes: MiniLM attention (batch 8 × 12 heads, q·kᵀ 128×32 @ 32×128) and a square GEMM
(512³; 256³ with ``--quick``) for L-Mul; for the quire a LeNet-5 conv2-as-GEMM shape
(6400×150 @ 150×16) and the square GEMM.

Usage::

    python benchmarks/bench_lmul.py                     # full
    python benchmarks/bench_lmul.py --quick             # smaller shapes, fewer rows
    python benchmarks/bench_lmul.py --markdown benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import lowbit as lb
from lowbit.arith.approx import lmul_matmul


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best wall and best process CPU time of ``repeat`` calls after one warm-up call."""
    fn()
    best = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu


def machine() -> str:
    """One line describing the machine and the load it ran under."""
    try:
        load = "load avg " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "load unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba

    return (
        f"{cpu}, {os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}, "
        f"{platform.system()}, Python {platform.python_version()}, {load}"
    )


def _shape_macs(a: np.ndarray, b: np.ndarray) -> float:
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return float(np.prod(batch)) * a.shape[-2] * a.shape[-1] * b.shape[-1]


def run(quick: bool = False, repeat: int = 3) -> list[dict[str, Any]]:
    """Run the benchmark; one dict per row (``group``, ``name``, ``shape``, ``gmacs``,
    ``x_numpy`` = seconds / numpy-fp32 seconds, ``cpu_ns_per_mac``, ``seconds``)."""
    import torch

    rng = np.random.default_rng(0)
    n = 256 if quick else 512
    rows: list[dict[str, Any]] = []

    def add(
        group: str,
        name: str,
        a: np.ndarray,
        b: np.ndarray,
        fn: Callable[[], Any],
        t_np: float | None,
    ) -> float:
        t, c = best_time(fn, repeat)
        macs = _shape_macs(a, b)
        shape = f"{'x'.join(map(str, a.shape))} @ {'x'.join(map(str, b.shape))}"
        rows.append(
            {
                "group": group,
                "name": name,
                "shape": shape,
                "gmacs": macs / t / 1e9,
                "x_numpy": t / t_np if t_np else 1.0,
                "cpu_ns_per_mac": c / macs * 1e9,
                "seconds": t,
            }
        )
        return t

    lm_shapes = [
        (
            rng.standard_normal((8, 12, 128, 32)).astype(np.float32),
            rng.standard_normal((8, 12, 32, 128)).astype(np.float32),
        ),
        (
            rng.standard_normal((n, n)).astype(np.float32),
            rng.standard_normal((n, n)).astype(np.float32),
        ),
    ]
    for a, b in lm_shapes[:1] if quick else lm_shapes:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        t_np = add("L-Mul", "numpy float32 matmul", a, b, lambda a=a, b=b: a @ b, None)
        add("L-Mul", "torch float32 matmul", a, b, lambda ta=ta, tb=tb: ta @ tb, t_np)
        for m in (3, 4):
            add(
                "L-Mul",
                f"lmul_matmul m={m} (numpy)",
                a,
                b,
                lambda a=a, b=b, m=m: lmul_matmul(a, b, m),
                t_np,
            )
        add(
            "L-Mul",
            "lmul_matmul m=4 (torch)",
            a,
            b,
            lambda ta=ta, tb=tb: lmul_matmul(ta, tb, 4),
            t_np,
        )
        if not quick:
            add(
                "L-Mul",
                "lmul_matmul m=4 literal",
                a,
                b,
                lambda a=a, b=b: lmul_matmul(a, b, 4, literal=True),
                t_np,
            )
            if a.ndim == 2:
                add(
                    "L-Mul",
                    "lowbit.matmul mult=lmul4 acc=fp32 (emulated adds)",
                    a,
                    b,
                    lambda a=a, b=b: lb.matmul(a, b, mult="lmul4", acc="fp32"),
                    t_np,
                )

    q_shapes = [
        (
            rng.standard_normal((6400, 150)).astype(np.float32),
            (0.1 * rng.standard_normal((150, 16))).astype(np.float32),
        ),
        (
            rng.standard_normal((n, n)).astype(np.float32),
            rng.standard_normal((n, n)).astype(np.float32),
        ),
    ]
    for a, b in q_shapes[:1] if quick else q_shapes:
        t_np = add("quire", "numpy float32 matmul", a, b, lambda a=a, b=b: a @ b, None)
        for p in ("posit16", "posit8"):
            add(
                "quire",
                f"lowbit.matmul mult={p} acc=quire out={p}",
                a,
                b,
                lambda a=a, b=b, p=p: lb.matmul(a, b, mult=p, acc="quire", out=p),
                t_np,
            )
            add(
                "quire",
                f"lowbit.matmul mult={p} acc=fp32 out={p} (emulated fp32 sums)",
                a,
                b,
                lambda a=a, b=b, p=p: lb.matmul(a, b, mult=p, acc="fp32", out=p),
                t_np,
            )
        if not quick:
            add(
                "quire",
                "lowbit.matmul acc=quire (fp32 operands, float64 out)",
                a,
                b,
                lambda a=a, b=b: lb.matmul(a, b, acc="quire"),
                t_np,
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| group | case | shape | G MAC/s | time × numpy fp32 | CPU ns/MAC |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {r['name']} | {r['shape']} | {r['gmacs']:.3f} | "
            f"{r['x_numpy']:.1f} | {r['cpu_ns_per_mac']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point: print the table (and append it to ``--markdown``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes, fewer rows")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per row (best taken)")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    args = ap.parse_args()
    desc = machine()
    print(desc)
    table = format_table(run(args.quick, args.repeat))
    print(table)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(
                "\n### L-Mul GEMM and quire GEMM vs float32 GEMM (bench_lmul"
                f"{' --quick' if args.quick else ''})\n\nMachine: {desc}.\n\n"
            )
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
