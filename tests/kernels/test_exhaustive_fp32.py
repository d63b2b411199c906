"""All 2^32 fp32 inputs: the fused kernel in RNE equals an independent cast round trip.

bf16, e4m3fn and e5m2 go through ml_dtypes (``x.astype(fmt).astype(float32)``); fp16 through
torch's cast (the hardware ``vcvtps2ph``; numpy's float16 cast gives the same bits but is two
orders of magnitude slower on overflowing inputs), or numpy when torch is absent. Both
sides use the formats' defaults: IEEE overflow to inf, NaN for e4m3fn (as ml_dtypes). Bits
are compared with any NaN equal to any NaN. Chunks of 2^26 inputs keep memory near 1 GiB.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np
import pytest
from numba import njit, prange

import lowbit as lb

CHUNK = 1 << 26


@njit(parallel=True)
def _count_differences(a: np.ndarray, b: np.ndarray) -> int:
    """Positions whose fp32 bit patterns differ, any NaN matching any NaN."""
    n = 0
    for i in prange(a.size):
        x, y = a[i], b[i]
        nan_x = (x & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        nan_y = (y & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        n += 0 if (x == y or (nan_x and nan_y)) else 1
    return n


def _cast_round_trip(name: str, x: np.ndarray) -> np.ndarray:
    """The oracle on one piece (numpy/ml_dtypes casts release the GIL for some dtypes, so the
    caller runs two pieces on two threads)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "fp16":
            try:
                import torch
            except ImportError:
                return x.astype(np.float16).astype(np.float32)
            return torch.from_numpy(x).to(torch.float16).to(torch.float32).numpy()
        dt = {
            "bf16": ml_dtypes.bfloat16,
            "e4m3fn": ml_dtypes.float8_e4m3fn,
            "e5m2": ml_dtypes.float8_e5m2,
        }[name]
        return x.astype(dt).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bf16", "fp16", "e4m3fn", "e5m2"])
def test_every_fp32_input_rne(name: str) -> None:
    t0 = time.perf_counter()
    out = np.empty(CHUNK, dtype=np.float32)
    want = np.empty(CHUNK, dtype=np.float32)
    half = CHUNK // 2
    total = 0
    pool = ThreadPoolExecutor(2)
    for start in range(0, 1 << 32, CHUNK):
        x = np.arange(start, start + CHUNK, dtype=np.uint64).astype(np.uint32).view(np.float32)
        lb.round(x, name, "rne", out=out, impl="kernel")
        pieces = [x[:half], x[half:]]
        for sl, part in zip(
            (slice(0, half), slice(half, CHUNK)),
            pool.map(_cast_round_trip, [name, name], pieces),
            strict=True,
        ):
            want[sl] = part
        bad = _count_differences(out.view(np.uint32), want.view(np.uint32))
        if bad:
            b, w = out.view(np.uint32), want.view(np.uint32)
            idx = np.flatnonzero(b != w)[:5]
            raise AssertionError(
                f"{name}: {bad} differences in chunk {start:#x}, e.g. inputs "
                f"{[hex(start + int(i)) for i in idx]} -> kernel "
                f"{[hex(int(v)) for v in b[idx]]}, cast "
                f"{[hex(int(v)) for v in w[idx]]}"
            )
        total += x.size
    pool.shutdown()
    assert total == 1 << 32
    print(f"{name}: all 2^32 fp32 inputs agree ({time.perf_counter() - t0:.1f} s)")
