"""Fused numba kernel of per-tensor integer fake quantization (the hot path of w8a8 training).

``out[i] = fl32(clamp(rint(x[i] / s), qmin, qmax) · s)`` with the quotient taken in float64:
the float64 quotient of two float32 numbers is never within rounding distance of a
half-integer it does not sit on, so ``rint`` (ties to even) rounds the exact quotient; the
product ``q·s`` is exact in float64 (``|q| < 2**24``), so the float32 result is one correct
rounding. One pass over memory instead of the nine of the torch formulation, which
:func:`lowbit.nn.functional.int_fake_quant` keeps as the plain path (equal at zero tolerance,
tested). Compiled on first use (``cache=True``), never at import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange, set_parallel_chunksize

_BLOCK = 1 << 16


@njit(cache=True, fastmath=False, inline="always")
def _fill(x: Any, out: Any, s: float, qmin: float, qmax: float) -> None:
    for i in range(x.size):
        q = np.rint(np.float64(x[i]) / s)
        if q < qmin:
            q = qmin
        elif q > qmax:
            q = qmax
        out[i] = np.float32((q + 0.0) * s)  # + 0.0: the code 0 has no sign


@njit(cache=True, fastmath=False)
def _fill_serial(x: Any, out: Any, s: float, qmin: float, qmax: float) -> None:
    _fill(x, out, s, qmin, qmax)


@njit(parallel=True, cache=True, fastmath=False)
def _fill_parallel(x: Any, out: Any, s: float, qmin: float, qmax: float) -> None:
    n = x.size
    nblk = (n + _BLOCK - 1) // _BLOCK
    for b in prange(nblk):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        _fill(x[lo:hi], out[lo:hi], s, qmin, qmax)


def int_fake_quant_f32(x: np.ndarray, scale: float, qmin: int, qmax: int) -> np.ndarray:
    """The kernel on a contiguous float32 array with one scale (float32-representable)."""
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    if flat.size < 2 * _BLOCK:  # waking the thread team costs more than the work
        _fill_serial(flat, out, float(scale), float(qmin), float(qmax))
    else:
        old = set_parallel_chunksize(1)  # one block at a time: robust on a busy machine
        try:
            _fill_parallel(flat, out, float(scale), float(qmin), float(qmax))
        finally:
            set_parallel_chunksize(old)
    return out.reshape(x.shape)
