"""``make bench``: throughput of lowbit's rounding against ``np.copyto`` and the peers.

Every rounding is timed on the same standard-normal float32 array as ``np.copyto`` into a
preallocated array, in the same run, and reported as a ratio of throughputs (``copy_time /
time``): absolute speeds on these machines vary by 2× between runs, ratios much less. Each
number is the best of ``--repeat`` calls (default 3) after one warm-up call (which compiles
the numba/jax kernels). Peak extra memory of one call is measured separately, as the larger of
``tracemalloc``'s peak (numpy allocations) and the growth of the process's peak resident set
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``), in units of the input array.

Backends are measured one after the other (all formats and modes on numpy with ``out=``,
then numpy, torch, jax), because torch's and jax's thread pools keep spinning for a while
after a call and would slow the next backend down. Paths far from every target (below
``--slow-eps`` elements/s on two timed calls, such as the float64 reference) stop after those
two calls, without a memory measurement. Entries too slow to matter at the large size (a 1e6
call that extrapolates to more than ``--max-call-s`` per call) are skipped there and reported
at 1e6, and each size gets its share of ``--budget-s``, so a run stays within about fifteen
minutes. pychop is measured at 1e6 only (it runs at a few million elements per second).

Usage::

    python benchmarks/run.py                 # 1e6 and 1e8 elements -> benchmarks/RESULTS.md
    python benchmarks/run.py --quick         # 1e6 only
    python benchmarks/run.py --size 1e7 --formats bf16 e4m3 --modes rne sr --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import os
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

import lowbit as lb
from lowbit.kernels import buffers

HERE = Path(__file__).resolve().parent
FORMATS = ("bf16", "fp16", "e4m3", "e5m2", "e3m2", "e2m1", "posit16", "mxfp8_e4m3", "int8")
DETERMINISTIC = ("rne", "rna", "rnz", "rtz", "ru", "rd", "ro")
STOCHASTIC = ("sr", "sr_equal", "sr_bits")
MODES = DETERMINISTIC + STOCHASTIC
SR_BITS = 8  # rand_bits of mode sr_bits
BACKENDS = ("numpy_out", "numpy", "torch", "torch_out", "jax")
BACKEND_LABEL = {
    "numpy_out": "numpy out=",
    "numpy": "numpy",
    "torch": "torch CPU",
    "torch_out": "torch out=",
    "jax": "jax",
}
ML_DTYPES = {
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m1": ml_dtypes.float4_e2m1fn,
}
TORCH_DTYPES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "e4m3": "float8_e4m3fn",
    "e5m2": "float8_e5m2",
}
# pychop.Chop(exp_bits, sig_bits, rmode): IEEE-like formats only (its e4m3 is e4m3-ieee, max
# 240; its e3m2/e2m1 keep a top binade for inf/NaN): compared for speed, not for the values.
PYCHOP_FORMATS = {
    "bf16": (8, 7),
    "fp16": (5, 10),
    "e4m3": (4, 3),
    "e5m2": (5, 2),
    "e3m2": (3, 2),
    "e2m1": (2, 1),
}
PYCHOP_RMODE = {
    "rne": 1,
    "ru": 2,
    "rd": 3,
    "rtz": 4,
    "sr": 5,
    "sr_equal": 6,
    "rnz": 7,
    "rna": 8,
    "ro": 9,
}
PYCHOP_SIZE = 10**6


# ---------------------------------------------------------------------------------------------
# machine and measurement helpers
# ---------------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """CPU model, cores, memory, library versions and the date."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} ({usable} usable)",
        "memory": mem,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ml_dtypes": ml_dtypes.__version__,
        "lowbit": lb.__version__,
    }
    try:
        info["load average (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    for mod in ("numba", "torch", "jax", "pychop", "qtorch"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # any import failure means "not available"
            info[mod] = "not installed"
    try:
        import numba

        # the layer is chosen at the first parallel launch; small arrays run serially
        lb.round(np.zeros(1 << 22, np.float32), "bf16")
        info["numba threading layer"] = numba.threading_layer()
    except Exception:  # reported as unknown rather than failing the benchmark
        info["numba threading layer"] = "unknown"
    return info


def best_time(fn: Callable[[], Any], repeat: int, warmup: bool = True) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up call)."""
    if warmup:
        fn()
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def time_entry(fn: Callable[[], Any], repeat: int, n: int, slow_eps: float) -> tuple[float, bool]:
    """(best time, slow?) of one entry.

    One warm-up call (it compiles), then timed calls. When the first two timed calls both run
    below ``slow_eps`` elements per second (a path far from every target, such as the float64
    reference), the entry stops there, so that slow paths do not eat the time budget;
    otherwise the best of ``repeat`` timed calls is kept.
    """
    fn()
    times: list[float] = []
    for i in range(max(repeat, 2)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if i == 1 and n / min(times) < slow_eps:
            return min(times), True
    return min(times), False


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def peak_extra_bytes(fn: Callable[[], Any]) -> float:
    """Peak memory one call allocates beyond what was live before it (bytes).

    The larger of tracemalloc's peak (sees numpy's allocations, not numba's or torch's) and
    the peak-RSS growth (sees everything that touches fresh pages; undercounts memory reused
    from the allocator's free lists, so small sizes are lower bounds).
    """
    gc.collect()
    # a pooled buffer would hide the result's own pages: count every result as fresh memory
    buffers.clear_buffer_cache()
    rss = 0.0
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        res = fn()
        rss = max(0, _status_kib("VmHWM") - before) * 1024.0
        del res
    except OSError:
        pass
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    cur0 = tracemalloc.get_traced_memory()[0]
    res = fn()
    peak = tracemalloc.get_traced_memory()[1] - cur0
    tracemalloc.stop()
    del res
    return max(rss, float(peak))


@dataclass
class Row:
    """Measurements of one (format, mode) at one size; ratios are throughput / copy's."""

    fmt: str
    mode: str
    seconds: dict[str, float] = field(default_factory=dict)  # best call time per backend
    ratio: dict[str, float] = field(default_factory=dict)
    mem: dict[str, float] = field(default_factory=dict)  # peak extra, in input arrays
    note: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# what gets timed
# ---------------------------------------------------------------------------------------------
def _mx() -> Callable[..., Any] | None:
    """``quantize_mx`` from the public API (``lb.quantize_mx``, else ``lowbit.blocks``)."""
    import importlib

    for mod in ("lowbit", "lowbit.blocks", "lowbit.blocks.mx"):
        try:
            fn = getattr(importlib.import_module(mod), "quantize_mx", None)
        except ImportError:
            fn = None
        if fn is not None:
            return fn
    return None


def modes_of(fmt: str, modes: tuple[str, ...]) -> list[str]:
    """Modes that apply to a format (posits: rne and sr only)."""
    if fmt == "posit16":
        return [m for m in modes if m in ("rne", "sr")]
    return list(modes)


def make_call(fmt: str, mode: str, backend: str, arrays: dict[str, Any]) -> Callable[[], Any]:
    """A zero-argument call rounding the benchmark array; raises ValueError if unsupported."""
    kw: dict[str, Any] = {"seed": 1} if mode in STOCHASTIC else {}
    if mode == "sr_bits":
        kw["rand_bits"] = SR_BITS
    if fmt.startswith("mx"):
        qmx = _mx()
        if qmx is None:
            raise ValueError("lowbit.blocks.quantize_mx not available")
        if backend != "numpy":
            raise ValueError("MX is measured on numpy without out= only")
        x = arrays["x"]
        return lambda: qmx(x, fmt, mode=mode, **kw)
    if backend == "numpy":
        x = arrays["x"]
        return lambda: lb.round(x, fmt, mode, **kw)
    if backend == "numpy_out":
        x, y = arrays["x"], arrays["y"]
        return lambda: lb.round(x, fmt, mode, out=y, **kw)
    if backend == "torch":
        tx = arrays.get("tx")
        if tx is None:
            raise ValueError("torch not installed")
        return lambda: lb.round(tx, fmt, mode, **kw)
    if backend == "torch_out":
        tx, ty = arrays.get("tx"), arrays.get("ty")
        if tx is None:
            raise ValueError("torch not installed")
        return lambda: lb.round(tx, fmt, mode, out=ty, **kw)
    jx = arrays.get("jx")
    if jx is None:
        raise ValueError("jax not installed")
    return lambda: lb.round(jx, fmt, mode, **kw).block_until_ready()


def make_arrays(n: int, backends: tuple[str, ...]) -> dict[str, Any]:
    """The standard-normal float32 input (seed 0) and its views/copies per backend."""
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    arrays: dict[str, Any] = {"x": x, "y": np.empty_like(x), "copy_dst": np.empty_like(x)}
    arrays["y"].fill(0)
    arrays["copy_dst"].fill(0)
    if any(b.startswith("torch") for b in backends):
        try:
            import torch

            arrays["torch"] = torch
            arrays["tx"] = torch.from_numpy(x)  # zero-copy
            arrays["ty"] = torch.from_numpy(arrays["y"])
        except ImportError:
            pass
    if "jax" in backends:
        try:
            import jax.numpy as jnp

            arrays["jx"] = jnp.asarray(x)
            arrays["jx"].block_until_ready()
        except ImportError:
            pass
    return arrays


class Copy:
    """np.copyto timing of the current size; re-measured during the run, best kept."""

    def __init__(self, arrays: dict[str, Any], repeat: int) -> None:
        self.x, self.dst, self.repeat = arrays["x"], arrays["copy_dst"], repeat
        self.t = math.inf
        self.measure()

    def measure(self) -> float:
        t = best_time(lambda: np.copyto(self.dst, self.x), max(self.repeat, 5))
        self.t = min(self.t, t)
        return self.t


def fmt_n(n: int) -> str:
    """1e8 for 100000000."""
    e = round(math.log10(n))
    return f"1e{e}" if 10**e == n else f"{n:.3g}"


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
@dataclass
class SizeResult:
    """All measurements at one size."""

    n: int
    copy_s: float
    rows: list[Row]
    peers: dict[str, dict[str, float]]  # peer -> fmt/mode key -> ratio to copy
    skipped: list[str]


def log(msg: str) -> None:
    """Progress on stderr."""
    print(msg, file=sys.stderr, flush=True)


def run_size(
    n: int, args: argparse.Namespace, small: SizeResult | None, deadline: float
) -> SizeResult:
    """Measure every format × mode × backend (and the peers) on ``n`` elements."""
    arrays = make_arrays(n, tuple(args.backends))
    copy = Copy(arrays, args.repeat)
    log(f"[{fmt_n(n)}] np.copyto: {n / copy.t / 1e9:.2f} G elem/s")
    rows = [Row(fmt, mode) for fmt in args.formats for mode in modes_of(fmt, tuple(args.modes))]
    skipped: list[str] = []
    small_rows = {(r.fmt, r.mode): r for r in small.rows} if small else {}
    # Backend-major order: the thread pools of torch and jax keep spinning for a while after
    # a call, so interleaving backends would slow the next backend's numbers down.
    for be in args.backends:
        for count, row in enumerate(rows):
            fmt, mode = row.fmt, row.mode
            try:
                call = make_call(fmt, mode, be, arrays)
            except ValueError as e:
                row.note[be] = str(e)
                continue
            prev = small_rows.get((fmt, mode))
            if prev is not None and be in prev.ratio and small is not None:
                est = small.copy_s / prev.ratio[be] * (n / small.n)
                if est > args.max_call_s:
                    row.note[be] = (
                        f"skipped: {est:.1f} s per call extrapolated from {fmt_n(small.n)}"
                    )
                    skipped.append(f"{fmt} {mode} {BACKEND_LABEL[be]}")
                    continue
            if time.monotonic() > deadline:
                row.note[be] = "skipped: time budget (--budget-s)"
                skipped.append(f"{fmt} {mode} {BACKEND_LABEL[be]}")
                continue
            try:
                t, slow = time_entry(call, args.repeat, n, args.slow_eps)
            except (ValueError, TypeError, NotImplementedError) as e:
                row.note[be] = f"error: {str(e).splitlines()[0]}"
                continue
            row.seconds[be] = t
            row.ratio[be] = copy.t / t  # provisional; final ratios use the best copy
            if slow:
                row.note[be] = "slow path: best of 2 after warm-up; memory not measured"
            else:
                row.mem[be] = peak_extra_bytes(call) / arrays["x"].nbytes
            log(
                f"[{fmt_n(n)}] {BACKEND_LABEL[be]:>10} {fmt:>10} {mode:<8} "
                f"{row.ratio[be]:.3f}× copy{' (slow path)' if slow else ''}"
            )
            if count % 20 == 19:
                copy.measure()
        time.sleep(0.5)  # let the backend's threads go idle before the next one
    copy.measure()
    for row in rows:  # ratios against the best copy time of this size's run (conservative)
        row.ratio = {be: copy.t / t for be, t in row.seconds.items()}
    peers = measure_peers(n, arrays, copy, args)
    return SizeResult(n, copy.t, rows, peers, skipped)


def measure_peers(
    n: int, arrays: dict[str, Any], copy: Copy, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """ml_dtypes round trips, torch's own casts, pychop (1e6 only) and qtorch if present."""
    x = arrays["x"]
    peers: dict[str, dict[str, float]] = {
        "ml_dtypes": {},
        "torch": {},
        "pychop": {},
        "qtorch": {},
        "fresh": {},
    }
    # lowbit's allocating call with the output-buffer pool off: every result is new memory
    limit = buffers.buffer_cache_limit()
    buffers.set_buffer_cache_limit(0)
    try:
        for fmt in ML_DTYPES:
            if fmt in args.formats:
                t = best_time(lambda fmt=fmt: lb.round(x, fmt), args.repeat)
                peers["fresh"][fmt] = copy.t / t
                log(f"[{fmt_n(n)}] lowbit {fmt} rne, pool off: {copy.t / t:.3f}× copy")
    finally:
        buffers.set_buffer_cache_limit(limit)
    for fmt, dt in ML_DTYPES.items():
        if fmt in args.formats:
            t = best_time(lambda dt=dt: x.astype(dt).astype(np.float32), args.repeat)
            peers["ml_dtypes"][fmt] = copy.t / t
            log(f"[{fmt_n(n)}] ml_dtypes {fmt}: {copy.t / t:.3f}× copy")
    torch = arrays.get("torch")
    if torch is not None:
        tx = arrays["tx"]
        for fmt, name in TORCH_DTYPES.items():
            if fmt in args.formats and hasattr(torch, name):
                tdt = getattr(torch, name)
                t = best_time(lambda tdt=tdt: tx.to(tdt).to(torch.float32), args.repeat)
                peers["torch"][fmt] = copy.t / t
                log(f"[{fmt_n(n)}] torch .to({name}).to(float32): {copy.t / t:.3f}× copy")
    if n == PYCHOP_SIZE and not args.no_pychop:
        try:
            import pychop
        except ImportError:
            pychop = None
        if pychop is not None:
            import warnings

            for fmt, (e, s) in PYCHOP_FORMATS.items():
                if fmt not in args.formats:
                    continue
                for mode in args.modes:
                    if mode not in PYCHOP_RMODE:
                        continue
                    try:
                        ch = pychop.Chop(exp_bits=e, sig_bits=s, rmode=PYCHOP_RMODE[mode])
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            t = best_time(lambda ch=ch: ch(x), 2)
                    except Exception as err:  # a peer's failure is reported, not fatal
                        log(f"[{fmt_n(n)}] pychop {fmt} {mode}: failed ({err})")
                        continue
                    peers["pychop"][f"{fmt} {mode}"] = copy.t / t
                    log(f"[{fmt_n(n)}] pychop {fmt} {mode}: {copy.t / t:.5f}× copy")
    try:
        import qtorch  # noqa: F401
    except ImportError:
        pass
    else:
        log("qtorch is importable but not wired into this benchmark")
    return peers


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _r(v: float | None, digits: int = 2) -> str:
    if v is None or math.isnan(v):
        return "—"
    return f"{v:.{digits}f}×" if v >= 0.01 else f"{v:.2e}×"


def size_table(res: SizeResult, backends: list[str]) -> list[str]:
    """Markdown table of one size: ratio to copy per backend, G/s and peak memory."""
    head = [
        "format",
        "mode",
        *[BACKEND_LABEL[b] for b in backends],
        "numpy G/s",
        "peak extra mem (numpy out= / numpy), × input",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    gps = res.n / res.copy_s / 1e9
    for r in res.rows:
        cells = []
        for b in backends:
            if b in r.ratio:
                cells.append(_r(r.ratio[b]))
            elif r.note.get(b, "").startswith("skipped"):
                cells.append("skipped")
            else:
                cells.append("—")
        best_np = r.ratio.get("numpy_out", r.ratio.get("numpy"))
        g = f"{best_np * gps:.3f}" if best_np else "—"
        mem = " / ".join(f"{r.mem[b]:.2f}" if b in r.mem else "—" for b in ("numpy_out", "numpy"))
        lines.append(f"| {r.fmt} | {r.mode} | " + " | ".join(cells) + f" | {g} | {mem} |")
    return lines


def peers_table(res: SizeResult) -> list[str]:
    """ml_dtypes and torch casts next to lowbit's RNE at the same size."""
    by = {(r.fmt, r.mode): r for r in res.rows}
    lines = [
        "| format | lowbit numpy (rne) | ml_dtypes round trip | lowbit / ml_dtypes | "
        "lowbit numpy, pool off | pool off / ml_dtypes | "
        "lowbit torch CPU (rne) | torch .to(dtype).to(float32) | lowbit torch / torch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt in FORMATS:
        md, tc = res.peers["ml_dtypes"].get(fmt), res.peers["torch"].get(fmt)
        if md is None and tc is None:
            continue
        r = by.get((fmt, "rne"))
        ours = r.ratio.get("numpy") if r else None
        ourt = r.ratio.get("torch") if r else None
        sp = f"{ours / md:.2f}" if ours and md else "—"
        spt = f"{ourt / tc:.2f}" if ourt and tc else "—"
        fr = res.peers.get("fresh", {}).get(fmt)
        spf = f"{fr / md:.2f}" if fr and md else "—"
        lines.append(
            f"| {fmt} | {_r(ours)} | {_r(md)} | {sp} | {_r(fr)} | {spf} | {_r(ourt)} | {_r(tc)} "
            f"| {spt} |"
        )
    return lines


def pychop_table(res: SizeResult) -> list[str]:
    """pychop (numpy backend, default chunking) next to lowbit numpy at 1e6."""
    by = {(r.fmt, r.mode): r for r in res.rows}
    lines = [
        "| format | mode | pychop, × copy | pychop G/s | lowbit numpy, × copy | lowbit / pychop |",
        "|---|---|---:|---:|---:|---:|",
    ]
    gps = res.n / res.copy_s / 1e9
    for key, pr in res.peers["pychop"].items():
        fmt, mode = key.split()
        r = by.get((fmt, mode))
        ours = r.ratio.get("numpy") if r else None
        sp = f"{ours / pr:.0f}" if ours else "—"
        lines.append(f"| {fmt} | {mode} | {_r(pr)} | {pr * gps:.4f} | {_r(ours)} | {sp} |")
    return lines


@dataclass
class Check:
    """One acceptance criterion of issue 3 and its outcome."""

    target: str
    measured: str
    ok: bool | None  # None: not measured


def _worst(
    rows: list[Row], fmt: str, modes: tuple[str, ...], be: str
) -> tuple[float | None, str, bool]:
    """Smallest ratio over ``modes`` (None if none measured), its mode, and whether complete."""
    vals = [
        (r.ratio[be], r.mode) for r in rows if r.fmt == fmt and r.mode in modes and be in r.ratio
    ]
    wanted = [r for r in rows if r.fmt == fmt and r.mode in modes]
    if not vals:
        return None, "", False
    v, m = min(vals)
    return v, m, len(vals) == len(wanted)


def acceptance(results: list[SizeResult]) -> list[Check]:
    """The acceptance targets of issue 3 evaluated on the largest size measured."""
    big = results[-1]
    small = results[0]
    checks: list[Check] = []
    elem_fmts = ("bf16", "fp16", "e4m3", "e5m2", "e3m2", "e2m1")

    def ratio_check(
        label: str,
        fmt: str,
        modes: tuple[str, ...],
        be: str,
        target: float,
    ) -> None:
        v, m, complete = _worst(big.rows, fmt, modes, be)
        where = fmt_n(big.n)
        if v is not None and complete:
            checks.append(Check(label, f"{_r(v)} (worst: {m})", v >= target))
            return
        sv, sm, _ = _worst(small.rows, fmt, modes, be)
        if sv is None:
            checks.append(Check(label, "not measured", None))
            return
        notes = [
            r.note.get(be, "")
            for r in big.rows
            if r.fmt == fmt and r.mode in modes and be not in r.ratio
        ]
        if any("extrapolated" in n for n in notes):  # too slow to run at the large size
            checks.append(
                Check(
                    label,
                    f"{_r(sv)} ({sm}) at {fmt_n(small.n)}; too slow to run at {where}",
                    sv >= target,
                )
            )
        else:  # ran out of time budget: not measured at the size the target is defined on
            checks.append(
                Check(
                    label,
                    f"{_r(sv)} ({sm}) at {fmt_n(small.n)}; not measured at {where} (--budget-s)",
                    None,
                )
            )

    for fmt in elem_fmts:
        ratio_check(
            f"{fmt} deterministic modes, numpy out= ≥ 0.8× copy",
            fmt,
            DETERMINISTIC,
            "numpy_out",
            0.8,
        )
    for fmt in elem_fmts:
        ratio_check(
            f"{fmt} deterministic modes, numpy without out= ≥ 0.5× copy",
            fmt,
            DETERMINISTIC,
            "numpy",
            0.5,
        )
    for fmt in elem_fmts:
        ratio_check(f"{fmt} SR modes, numpy out= ≥ 0.4× copy", fmt, STOCHASTIC, "numpy_out", 0.4)
    by = {(r.fmt, r.mode): r for r in big.rows}
    for fmt, target in (("bf16", 3.0), ("e4m3", 20.0)):
        r, md = by.get((fmt, "rne")), big.peers["ml_dtypes"].get(fmt)
        label = f"{fmt} rne numpy ≥ {target:g}× ml_dtypes round trip"
        if r is None or "numpy" not in r.ratio or md is None:
            checks.append(Check(label, "not measured", None))
        else:
            sp = r.ratio["numpy"] / md
            checks.append(Check(label, f"{sp:.2f}×", sp >= target))
    pres = next((res for res in results if res.peers["pychop"]), None)
    if pres is None:
        checks.append(
            Check("≥ 100× pychop (every format and mode both have)", "not measured", None)
        )
    else:
        pby = {(r.fmt, r.mode): r for r in pres.rows}
        for fmt in elem_fmts:
            sps = []
            for key, pr in pres.peers["pychop"].items():
                f, m = key.split()
                r = pby.get((f, m))
                if f == fmt and r is not None and "numpy" in r.ratio:
                    sps.append((r.ratio["numpy"] / pr, m))
            label = f"{fmt} ≥ 100× pychop's default, every mode both have (at {fmt_n(pres.n)})"
            if not sps:
                checks.append(Check(label, "not measured", None))
            else:
                sp, m = min(sps)
                checks.append(Check(label, f"{sp:.0f}× (worst: {m})", sp >= 100))
    r, tc = by.get(("bf16", "rne")), big.peers["torch"].get("bf16")
    label = "torch CPU bf16 rne ≥ torch .to(bfloat16).to(float32)"
    if r is None or "torch" not in r.ratio or tc is None:
        checks.append(Check(label, "not measured", None))
    else:
        checks.append(Check(label, f"{r.ratio['torch'] / tc:.2f}×", r.ratio["torch"] >= tc))
    ratio_check("mxfp8_e4m3 quantize_mx (numpy) ≥ 0.25× copy", "mxfp8_e4m3", MODES, "numpy", 0.25)
    ratio_check("posit16 (numpy out=) ≥ 0.1× copy", "posit16", ("rne", "sr"), "numpy_out", 0.1)
    for be, bound in (
        ("numpy_out", 1.0),
        ("numpy", 2.0),
        ("torch_out", 1.0),
        ("torch", 2.0),
        ("jax", 2.0),
    ):
        mems = [(r.mem[be], f"{r.fmt} {r.mode}") for r in big.rows if be in r.mem]
        label = (
            f"{BACKEND_LABEL[be]}: peak extra memory ≤ {bound:g}× input "
            f"({'no temporary beyond' if bound == 1 else 'output + at most'} one array)"
        )
        if not mems:
            checks.append(Check(label, "not measured", None))
            continue
        m, where = max(mems)
        unmeasured = sum(1 for r in big.rows if be in r.ratio and be not in r.mem)
        extra = f"; {unmeasured} slow entries not measured" if unmeasured else ""
        checks.append(Check(label, f"{m:.2f}× (largest: {where}{extra})", m <= bound + 0.05))
    return checks


OTHERS_CPU = "other processes' CPU use during the run, cores"  # machine-table row


def cpu_times() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children),
    or ``None`` where ``/proc/stat`` is missing. Their difference over a run is what other
    processes took: the load average cannot tell, since this run's own threads count in it."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq ...: busy = all but idle and iowait
    busy = sum(fields[:3]) + sum(fields[5:7])
    own = sum(
        getattr(resource.getrusage(who), t)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for t in ("ru_utime", "ru_stime")
    )
    return busy / os.sysconf("SC_CLK_TCK"), own


def others_cpu(start: tuple[float, float] | None, seconds: float) -> float | None:
    """Mean number of cores other processes kept busy since ``start`` (from :func:`cpu_times`)."""
    end = cpu_times()
    if start is None or end is None or seconds <= 0:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / seconds


def _busy_warning(info: dict[str, str]) -> list[str]:
    """A warning paragraph when other processes used the CPU during the run."""
    if OTHERS_CPU not in info:
        return []
    used = float(info[OTHERS_CPU])
    if used > 0.1:
        cores = os.cpu_count() or 1
        return [
            f"**Warning:** other processes kept {used:.2f} of the {cores} cores busy on "
            "average during this run: they competed for the CPU, and parallel kernels "
            "suffer most from that. Rerun on an idle machine before reading the ratios.",
            "",
        ]
    return []


def write_report(
    path: Path,
    info: dict[str, str],
    results: list[SizeResult],
    args: argparse.Namespace,
    seconds: float,
) -> None:
    """Write RESULTS.md."""
    cmd = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    out = [
        "# lowbit benchmarks",
        "",
        f"Written by `make bench` (`{cmd.strip()}`) in {seconds / 60:.1f} min. Regenerate "
        "with `make bench`; numbers from another run or machine are not comparable, ratios "
        "from the same run are.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        *_busy_warning(info),
        "## Method",
        "",
        "Input: standard-normal float32 array (numpy `default_rng(0)`). Each entry is the "
        f"best of {args.repeat} calls after one warm-up call (slow paths, listed below each "
        "table: best of 2), as a throughput ratio to "
        "`np.copyto(dst, x)` into a preallocated float32 array of the same size, measured in "
        "the same run (best of several copy timings during the run). `numpy out=` writes into "
        "a preallocated array; `numpy` allocates its result (results of 16 MiB and more come "
        "from lowbit's output-buffer pool, so after the warm-up call a dropped result's pages "
        "are reused; the peers tables add the same call with the pool off, every result in "
        "freshly faulted memory); `torch CPU` passes a zero-copy "
        "`torch.from_numpy` view; `jax` includes `block_until_ready()`. Stochastic modes use "
        f"seed 1; `sr_bits` uses {SR_BITS} random bits. `mxfp8_e4m3` is "
        "`lowbit.blocks.quantize_mx` (blocks of 32 along the last axis, dequantized result). "
        "`int8` is element-wise rounding to the int8 grid (no scale). Peak extra memory: "
        "larger of tracemalloc's peak and the growth of the peak RSS during one call, in units "
        "of the input array (the result counts as one when not preallocated; the pool is "
        "emptied before this measurement).",
        "",
    ]
    for res in results:
        out += [
            f"## {fmt_n(res.n)} elements (np.copyto {res.n / res.copy_s / 1e9:.2f} G elem/s)",
            "",
            *size_table(res, list(args.backends)),
            "",
        ]
        if res.skipped:
            out += [
                f"Skipped at {fmt_n(res.n)} (too slow: extrapolated > {args.max_call_s:g} "
                "s per call from the smaller size, or past --budget-s): "
                + ", ".join(res.skipped)
                + ".",
                "",
            ]
        notes = sorted(
            {
                f"{r.fmt} {BACKEND_LABEL[b]}: {v}"
                for r in res.rows
                for b, v in r.note.items()
                if not v.startswith(("skipped", "slow"))
            }
        )
        if notes:
            out += ["Not measured: " + "; ".join(notes) + ".", ""]
        slow = []
        for b in args.backends:
            hit = [f"{r.fmt} {r.mode}" for r in res.rows if r.note.get(b, "").startswith("slow")]
            total = sum(1 for r in res.rows if b in r.ratio)
            if hit:
                slow.append(
                    f"{BACKEND_LABEL[b]}: "
                    + (
                        f"all {total} entries"
                        if len(hit) == total
                        else f"{len(hit)} of {total} ({', '.join(hit)})"
                    )
                )
        if slow:
            out += [
                f"Slow paths (below {args.slow_eps:.0e} elements/s on two timed calls after "
                "the warm-up; best of those 2, memory not measured): " + "; ".join(slow) + ".",
                "",
            ]
        if res.peers["ml_dtypes"] or res.peers["torch"]:
            out += [
                f"### Peers at {fmt_n(res.n)}: ml_dtypes and torch casts (RNE)",
                "",
                *peers_table(res),
                "",
            ]
        if res.peers["pychop"]:
            out += [
                f"### pychop at {fmt_n(res.n)}",
                "",
                "pychop is measured at 1e6 elements only: it runs at a few million elements "
                "per second (numpy backend, default chunk_size). `pychop.Chop(exp_bits, "
                "sig_bits, rmode)` has IEEE-like formats only (its e4m3 is e4m3-ieee with "
                "max 240, its e3m2/e2m1 reserve a binade for inf/NaN), so these rows "
                "compare speed, not the same values.",
                "",
                *pychop_table(res),
                "",
            ]
    qt = info.get("qtorch", "not installed")
    out += [f"qtorch: {qt}" + (" (not measured)" if qt == "not installed" else ""), ""]
    quick = len(results) == 1 and results[0].n < 10**8
    out += ["## Acceptance (issue 3)", ""]
    if quick:
        out += [
            f"Evaluated on {fmt_n(results[-1].n)} elements: indicative only; issue 3 "
            "defines the targets on 1e8 elements (`make bench`).",
            "",
        ]
    out += ["| target | measured | result |", "|---|---|---|"]
    for c in acceptance(results):
        res_s = "n/a" if c.ok is None else ("PASS" if c.ok else "FAIL")
        out.append(f"| {c.target} | {c.measured} | {res_s} |")
    out.append("")
    path.write_text("\n".join(out))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="1e6 elements only")
    p.add_argument(
        "--size",
        type=float,
        nargs="+",
        default=None,
        help="array sizes (default 1e6 1e8; --quick: 1e6)",
    )
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--repeat", type=int, default=3, help="timed calls per entry (best kept)")
    p.add_argument(
        "--max-call-s",
        type=float,
        default=1.0,
        help="skip an entry at a large size when its smaller-size time extrapolates "
        "beyond this many seconds per call (default 1.0)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=900.0,
        help="after this many seconds, skip the remaining lowbit entries (the peers "
        "are still measured; pychop takes about a minute)",
    )
    p.add_argument(
        "--slow-eps",
        type=float,
        default=5e7,
        help="entries whose first two timed calls run below this many elements/s "
        "stop there, without a memory measurement (default 5e7)",
    )
    p.add_argument("--no-pychop", action="store_true", help="do not measure pychop")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="report path")
    args = p.parse_args(argv)
    if args.size is None:
        args.size = [1e6] if args.quick else [1e6, 1e8]
    args.size = sorted(int(s) for s in args.size)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    args = parse_args(argv)
    t0 = time.monotonic()
    cpu0 = cpu_times()
    info = machine()
    log(
        f"lowbit bench on {info['cpu']}, {info['cores']} cores; sizes "
        f"{', '.join(fmt_n(n) for n in args.size)}"
    )
    results: list[SizeResult] = []
    for i, n in enumerate(args.size):  # each size may use its share of the budget, and more
        stage_deadline = t0 + args.budget_s * (i + 1) / len(args.size)  # if earlier ones left time
        results.append(run_size(n, args, results[-1] if results else None, stage_deadline))
    seconds = time.monotonic() - t0
    others = others_cpu(cpu0, seconds)
    if others is not None:
        info[OTHERS_CPU] = f"{others:.2f}"
    write_report(args.out, info, results, args, seconds)
    log(f"wrote {args.out} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
