"""Numba kernels of :func:`lowbit.arith.approx.lmul_matmul`: L-Mul products summed in float32.

Operands arrive as int32 views of float32 arrays whose values are already rounded to e8mM
(``FloatFormat(8, M)``) with subnormals flushed to zero, so every operand is ±0, a normal
e8mM number, ±inf or NaN. The product of two such values is computed on their float32 bit
patterns (the semantics are those of :func:`lowbit.arith.approx.lmul`):

* carry form: ``r = |x|_bits + |y|_bits - cst`` with ``cst = (127 << 23) - 2^(23 - l(M))``;
  the integer add lets a mantissa carry ripple into the exponent, as an adder does;
* literal form: ``(1 + xm + ym + 2^-l)·2^(xe + ye)`` from the separate fields (no carry; an
  extra exponent step when the sum reaches 2, its mantissa halved, RNE for M = 23);

then ``r < 2^23`` (biased exponent <= 0) gives ±0, ``r >= 0x7F800000`` gives ±inf, a zero
operand gives ±0, and inf/NaN follow IEEE multiplication (0·inf = NaN). The sign is the XOR.

The products of one output row are added into a float32 accumulator in the order
k = 0, 1, ..., K-1, starting from −0 (so that the first addition returns the first product,
signed zeros included): ``c = fl32(c + p_k)``. :func:`lmul_gemm_fast` is the all-finite carry
form with one comparison pair per product (thresholds precomputed per left operand, zero
right operands encoded as a large negative magnitude); :func:`lmul_gemm` is the general one
(literal form, inf and NaN operands). Both vectorize over the output columns; ``prange`` over
output rows. Nothing compiles at import; each kernel compiles on first use and is cached.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

ABS32 = 0x7FFFFFFF
SIGN32 = -0x80000000  # the float32 sign bit as a (negative) int32
INF32 = 0x7F800000
QNAN32 = 0x7FC00000
MIN_NORMAL32 = 0x00800000
MAN32 = 0x007FFFFF
ZERO_ENC = -0x7F000000  # magnitude code of a zero right operand in the fast kernel
INT32_MAX = 0x7FFFFFFF


@intrinsic
def _i2f32(typingctx: Any, x: Any) -> Any:
    """Reinterpret the low 32 bits of an integer as a float32."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        v = args[0]
        if v.type.width > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif v.type.width < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


@njit(inline="always")
def _lmul_bits(x: Any, y: Any, cst: int, off: int, literal: bool) -> Any:
    """The float32 bit pattern (as an int64 in int32 range) of L-Mul of the patterns x, y."""
    xa = x & ABS32
    ya = y & ABS32
    s = (x ^ y) & SIGN32
    if literal:
        ssum = (xa & MAN32) + (ya & MAN32) + off
        base = ((xa >> 23) + (ya >> 23) - 127) << 23
        w = ssum + MIN_NORMAL32
        rl = base + (w >> 1) + (w & (w >> 1) & 1)
        r = base + ssum if ssum < MIN_NORMAL32 else rl
    else:
        r = xa + ya - cst
    r = 0 if r < MIN_NORMAL32 else r
    r = INF32 if r >= INF32 else r
    zero = (xa == 0) | (ya == 0)
    r = 0 if zero else r
    nonfin = (xa >= INF32) | (ya >= INF32)
    nan = (xa > INF32) | (ya > INF32) | (zero & nonfin)
    r = INF32 if nonfin else r
    return QNAN32 if nan else (r | s)


@njit(cache=True)
def lmul_vector(x: Any, y: Any, cst: int, off: int, literal: bool) -> Any:
    """Elementwise :func:`_lmul_bits` over two int32 vectors (for tests)."""
    out = np.empty(x.size, dtype=np.int32)
    for t in range(x.size):
        out[t] = _lmul_bits(np.int64(x[t]), np.int64(y[t]), cst, off, literal)
    return out


@njit(parallel=True, cache=True)
def lmul_gemm(A: Any, B: Any, ia: Any, ib: Any, C: Any, cst: int, off: int, literal: bool) -> None:
    """C[t, i, :] = sequential float32 sum over k of L-Mul(A[ia[t], i, k], B[ib[t], k, :])."""
    nt, M, _ = C.shape
    for row in prange(nt * M):
        _gen_row(A, B, ia, ib, C, cst, off, literal, row)


@njit(cache=True)
def _gen_row(
    A: Any, B: Any, ia: Any, ib: Any, C: Any, cst: int, off: int, literal: bool, row: int
) -> None:
    _, M, N = C.shape
    K = A.shape[2]
    t = row // M
    i = row - t * M
    ba = ia[t]
    bb = ib[t]
    acc = np.empty(N, dtype=np.float32)
    for j in range(N):
        acc[j] = np.float32(-0.0)
    for k in range(K):
        x = np.int64(A[ba, i, k])
        for j in range(N):
            acc[j] += _i2f32(_lmul_bits(x, np.int64(B[bb, k, j]), cst, off, literal))
    for j in range(N):
        C[t, i, j] = acc[j]


@njit(parallel=True, cache=True)
def lmul_gemm_fast(A: Any, Bm: Any, Bs: Any, ia: Any, ib: Any, C: Any, cst: int) -> None:
    """:func:`lmul_gemm` (carry form) for finite operands, B given as magnitude codes ``Bm``
    (``ZERO_ENC`` for zeros) and sign bits ``Bs``.

    For a left operand of magnitude bits ``xa`` the product magnitude is ``base + ym`` with
    ``base = xa - cst``; it underflows exactly when ``ym < 2^23 - base`` and overflows when
    ``ym >= 0x7F800000 - base``: both thresholds are per-``x`` scalars, and every quantity
    that is compared stays in int32 range (the sum itself is used only where neither holds,
    where it lies in [2^23, 0x7F800000)).
    """
    nt, M, _ = C.shape
    for row in prange(nt * M):
        _fast_row(A, Bm, Bs, ia, ib, C, cst, row)


@njit(cache=True)
def _fast_row(A: Any, Bm: Any, Bs: Any, ia: Any, ib: Any, C: Any, cst: int, row: int) -> None:
    _, M, N = C.shape
    K = A.shape[2]
    t = row // M
    i = row - t * M
    ba = ia[t]
    bb = ib[t]
    acc = np.empty(N, dtype=np.float32)
    for j in range(N):
        acc[j] = np.float32(-0.0)
    for k in range(K):
        x = np.int64(A[ba, i, k])
        xa = x & ABS32
        sa = x & SIGN32
        if xa == 0:
            b64 = np.int64(0)
            lo64 = np.int64(INT32_MAX)
            hi64 = np.int64(INT32_MAX)
        else:
            b64 = xa - cst
            lo64 = MIN_NORMAL32 - b64
            hi64 = min(INF32 - b64, INT32_MAX)
        # int32 operands throughout (numba widens them; LLVM narrows the loop back to 32-bit
        # lanes): base + ym may wrap only where a threshold selects 0 or inf instead
        base = np.int32(b64)
        lo = np.int32(lo64)
        hi = np.int32(hi64)
        sa32 = np.int32(sa)
        for j in range(N):
            ym = Bm[bb, k, j]
            r = base + ym
            r = INF32 if ym >= hi else r
            r = 0 if ym < lo else r
            acc[j] += _i2f32(r | (sa32 ^ Bs[bb, k, j]))
    for j in range(N):
        C[t, i, j] = acc[j]


__all__ = ["lmul_gemm", "lmul_gemm_fast", "lmul_vector"]


@njit(cache=True)
def prepare_f32(x: Any, m: int) -> Any:
    """float32 bit patterns (a 1-D int32 array) rounded RNE to e8mM, subnormal
    results flushed to ±0, NaN made the canonical quiet NaN (new int32 array).

    RNE by integer addition: add ``2^(22-m) - 1`` plus the lowest kept bit, clear the dropped
    ``23 - m`` bits; a carry out of the mantissa moves to the next binade (to inf above the
    largest finite number), exactly as IEEE rounding does, subnormals included (their
    quantum at the same bit position is e8mM's subnormal quantum).
    """
    flat = x
    out = np.empty(flat.size, dtype=np.int32)
    sh = 23 - m
    half = (1 << sh) >> 1
    keep = -(1 << sh)
    for t in range(flat.size):
        b = np.int64(flat[t])
        a = b & ABS32
        s = b & SIGN32
        if sh > 0:
            r = (a + (half - 1) + ((a >> sh) & 1)) & keep
        else:
            r = a
        r = s if r < MIN_NORMAL32 else (r | s)
        r = b if a >= INF32 else r
        out[t] = QNAN32 if a > INF32 else r
    return out


@njit(cache=True)
def split_operand(x: Any) -> tuple[Any, Any]:
    """(magnitude codes with ZERO_ENC for ±0, sign bits) of finite prepared patterns."""
    flat = x.reshape(-1)
    mag = np.empty(flat.size, dtype=np.int32)
    sgn = np.empty(flat.size, dtype=np.int32)
    for t in range(flat.size):
        b = flat[t]
        a = b & ABS32
        mag[t] = ZERO_ENC if a == 0 else a
        sgn[t] = b & SIGN32
    return mag.reshape(x.shape), sgn.reshape(x.shape)
