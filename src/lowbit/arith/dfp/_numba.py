"""numba kernel of the DFP GEMM's fp32 combination (imported on first use; cached on disk).

One pass over a block of exact chunk sums does what :func:`lowbit.arith.dfp.gemm.matmul`
defines: convert each chunk sum to fp32 (one rounding), optionally scale it by ``2**e``
(float64 product of two power-of-two factors, then one rounding to fp32), and add it to the
fp32 accumulator in chunk order, while tracking the largest |chunk sum|. float32 arithmetic in
numba is IEEE single precision; the only fast-math flags are "no NaN / no inf" (the inputs are
finite integers), which let the max reduction vectorize and cannot reorder the additions, so
this equals the reference bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FLAGS = {"nnan", "ninf"}


@njit(cache=True, fastmath=_FLAGS)
def _absmax(row: np.ndarray) -> float:  # pragma: no cover - compiled
    m = 0.0
    for j in range(row.shape[0]):
        m = max(m, abs(row[j]))
    return m


@njit(cache=True, fastmath=_FLAGS)
def _first(
    row: np.ndarray, acc: np.ndarray, per_chunk: bool, f1: float, f2: float
) -> None:  # pragma: no cover - compiled
    if per_chunk:
        for j in range(row.shape[0]):
            acc[j] = np.float32((np.float64(np.float32(row[j])) * f1) * f2)
    else:
        for j in range(row.shape[0]):
            acc[j] = np.float32(row[j])


@njit(cache=True, fastmath=_FLAGS)
def _accumulate(
    row: np.ndarray, acc: np.ndarray, per_chunk: bool, f1: float, f2: float
) -> None:  # pragma: no cover - compiled
    if per_chunk:
        for j in range(row.shape[0]):
            acc[j] = acc[j] + np.float32((np.float64(np.float32(row[j])) * f1) * f2)
    else:
        for j in range(row.shape[0]):
            acc[j] = acc[j] + np.float32(row[j])


@njit(cache=True)
def combine_chunks(
    s: np.ndarray, acc: np.ndarray, started: bool, per_chunk: bool, f1: float, f2: float
) -> float:  # pragma: no cover - compiled
    """Add the chunk sums ``s`` (g x n float64, exact integers) to ``acc`` (n float32) in
    order; ``started`` says whether ``acc`` already holds a value. With ``per_chunk`` each
    value is scaled by ``f1 · f2`` (= 2**e) before the addition. Returns ``max |s|``."""
    mx = 0.0
    for i in range(s.shape[0]):
        mx = max(mx, _absmax(s[i]))
        if i == 0 and not started:
            _first(s[i], acc, per_chunk, f1, f2)
        else:
            _accumulate(s[i], acc, per_chunk, f1, f2)
    return mx
