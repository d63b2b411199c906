"""numba kernel of :func:`lowbit.arith.intgemm.int_matmul`: integer GEMM into a P-bit accumulator.

The semantics (sequential accumulation in k order, what counts as an overflow, wrap and
saturate) are defined by the Python-int reference in :mod:`lowbit.arith.intgemm`; this kernel
only makes them fast and is held equal to it in ``tests/arith/test_intgemm.py``.

Why the arithmetic is safe in int64: the caller runs this kernel only when
``K · max|a| · max|b| <= 2**63 - 1``, so every product and every exact partial sum fits in
int64. The step ``acc + p`` may still leave int64 (``acc`` can be up to ``2**63 - 1`` for a
64-bit accumulator), so it is done in uint64 (wrapping, as numba's unsigned arithmetic does)
and the signed overflow of that add is detected from the signs: it can only happen when the
exact sum lies outside int64 and therefore outside every accumulator range this kernel serves
(signed P <= 64, unsigned P <= 63). Wrapping to P bits only needs the sum modulo ``2**P``,
which the wrapped 64-bit sum still carries.

Loop order: per output row ``i``, ``k`` outer and the columns ``j`` inner, each column keeping
its own accumulator; every output still accumulates in k order, and the inner loop runs along
contiguous memory. Serial (no ``prange``): the callers are evaluation loops on shared machines.
Nothing compiles at import time (``cache=True``, compiled on first use).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

WRAP, SATURATE = 0, 1


@njit(cache=True)
def intgemm_kernel(
    a: Any,
    b: Any,
    lo: int,
    hi: int,
    acc_bits: int,
    signed: bool,
    mode: int,
    values: Any,
    counts: Any,
    maxabs: Any,
) -> None:
    """Fill ``values``, ``counts`` (overflow steps) and ``maxabs`` (largest |exact partial sum|)
    of every output of ``a @ b``; all arrays int64, ``a`` (B, M, K), ``b`` (B, K, N), outputs
    (B, M, N).

    ``lo``/``hi``: the accumulator range; ``mode``: WRAP or SATURATE.
    """
    nb, m, kk = a.shape
    n = b.shape[2]
    full = acc_bits == 64  # signed 64-bit: wrapping to P bits is the uint64 wrap itself
    mask = np.int64(0) if full else np.int64((np.int64(1) << np.int64(acc_bits)) - 1)
    span = np.int64(0) if full else np.int64(np.int64(1) << np.int64(acc_bits))
    acc = np.zeros(n, dtype=np.int64)
    exact = np.zeros(n, dtype=np.int64)
    cnt = np.zeros(n, dtype=np.int64)
    mx = np.zeros(n, dtype=np.int64)
    for bi in range(nb):
        for i in range(m):
            acc[:] = 0
            exact[:] = 0
            cnt[:] = 0
            mx[:] = 0
            for k in range(kk):
                aik = a[bi, i, k]
                for j in range(n):
                    p = aik * b[bi, k, j]
                    t = exact[j] + p
                    exact[j] = t
                    at = -t if t < 0 else t
                    if at > mx[j]:
                        mx[j] = at
                    c = acc[j]
                    s = np.int64(np.uint64(c) + np.uint64(p))
                    # signed overflow of c + p: both operands have the sign opposite to s
                    o64 = ((c ^ s) & (p ^ s)) < 0
                    if o64 or s < lo or s > hi:
                        cnt[j] += 1
                        if mode == WRAP:
                            if not full:
                                s = s & mask
                                if signed and s > hi:
                                    s -= span
                        elif o64:
                            s = hi if p > 0 else lo
                        else:
                            s = hi if s > hi else lo
                    acc[j] = s
            for j in range(n):
                values[bi, i, j] = acc[j]
                counts[bi, i, j] = cnt[j]
                maxabs[bi, i, j] = mx[j]
