"""Fused numba kernels of :func:`lowbit.matmul`: emulated GEMM, bit-identical to the reference.

The semantics (what is rounded where, and which random draw each stochastic rounding uses) are
defined in :mod:`lowbit.arith.matmul`; this module only makes them fast. Three kernels, one per
accumulation order, each ``@njit(parallel=True, cache=True)`` with a ``prange`` over output rows
(batch × M) and the columns processed in chunks of ``jb`` so that the running accumulators and
the row of products stay in L1 while a chunk of B streams through L2 (cache blocking).

Every rounding goes through :func:`_rnd`, a scalar rounding of a float64 onto any float format
given by runtime integers (``man_bits``, ``emin``, largest finite value, overflow value, whether
the format has −0, mode, random bits): one compiled kernel serves every format and mode. It is
integer bit manipulation with selects only (no data-dependent branches), so the inner loops over
columns vectorize. Its decisions mirror :func:`lowbit.rounding.reference.round_float_grid`
(float64 input, subnormals kept) bit for bit, NaN and signed zeros included.

Round-to-nearest-even, the common case, has a cheaper exact path (:func:`_rne`): the float64
hardware rounds ``v + 1.5·2^(q+52)`` at the format's quantum 2^q. Each hot loop lives in its own
small function specialised (by a constant argument) for RNE, the other deterministic modes, or
the stochastic ones, so that it vectorizes and compiles once for every kernel.

Exact sums use error-free transformations: ``two_sum`` then round-to-odd (:func:`_odd53`) for
two terms; for more terms (fp64 operands whose products are double-double pairs, the exact group
sums of ``order="blocked"`` when the fast two-level accumulator is not provably exact) the
partials algorithm of CPython's ``math.fsum`` (Shewchuk's nonoverlapping expansion, then a
correctly rounded collapse), followed by the sign of the exact residual, which gives the
round-to-odd value. Rounding that float64 to a format of precision p <= 51 equals rounding the
exact sum (Boldo & Melquiond 2008); stochastic modes need p + rand_bits <= 52 (checked by the
caller).

Random draws are the counter-based hash of :mod:`lowbit.kernels.randbits`, recomputed inline
(``bits(seed_keys(stream_seed), index)``) with the indices documented in
:mod:`lowbit.arith.matmul`. Blocked sums use plain float64 additions when the caller has proved
from the operands (lowest set bit, largest magnitude) that every partial sum of a block is exact
in float64 — always the case for fp8 operands and blocks of 32.

L-Mul products (``mult="lmulN"``): every kernel takes ``lmc``, the carry-form constant in the
float64 layout (:func:`lmul_constant64`; 0 means ordinary products); :func:`_lmul64` adds the
operands' bit fields as integers, which is the same computation as the float32-layout one of
:mod:`lowbit.arith.approx` with a wider mantissa field. ``acc="quire"``: :func:`gemm_quire`,
a binned exact accumulation (plan and proof in :func:`lowbit.arith.matmul.quire_plan`).

Nothing compiles at import time; each kernel compiles on first use and is cached on disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from lowbit.kernels._nbutil import rand_bits_lohi

# Mode ids (same order as lowbit.kernels._nbutil.MODE_IDS / RoundMode declaration order).
RNE, RNA, RNZ, RTZ, RU, RD, RO, SR, SR_EQUAL, SR_BITS = range(10)
# What a rounding stage does: nothing (exact value kept), float64 RNE (native), or emulate.
NONE, NATIVE, EMUL = 0, 1, 2

_ABS = 0x7FFFFFFFFFFFFFFF
_SIGN = -0x8000000000000000
_MANT = (1 << 52) - 1
_HID = 1 << 52
_INFB = 0x7FF0000000000000
_QNAN = 0x7FF8000000000000
_MASK32 = 0xFFFFFFFF
_NPART = 64  # capacity of a partials expansion: 2098 bits / 53 per component, with room


# ---- bit casts (one LLVM bitcast each) -----------------------------------------------------------
@intrinsic
def _f2i(typingctx: Any, x: Any) -> Any:
    if x != types.float64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _i2f(typingctx: Any, x: Any) -> Any:
    if x != types.int64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# ---- counter-based random bits (randbits.bits_int) ----------------------------------------------
@njit(inline="always")
def _bits(index: Any, k0: Any, k1: Any) -> Any:
    """The 32 random bits of draw ``index`` (an int64 >= 0) under keys (k0, k1).

    The hash runs on uint32 values (``_nbutil``'s): on int64 lanes its two multiplies per
    round are 64-bit vector multiplies, several times dearer; measured on 1e7 elements,
    ``arith.add``/``mul`` in SR mode took 26.5 ms with the int64 hash and 23.7/20.4 ms with this.
    """
    lo = np.uint32(index & _MASK32)
    hi = np.uint32(index >> 32)
    return np.int64(rand_bits_lohi(lo, hi, np.uint32(k0), np.uint32(k1)))


@njit(cache=True)
def draws(index: Any, k0: int, k1: int) -> Any:
    """Vector of ``_bits`` (for tests: must equal ``randbits.bits_numpy``)."""
    out = np.empty(index.size, dtype=np.int64)
    for t in range(index.size):
        out[t] = _bits(index[t], k0, k1)
    return out


# ---- error-free transformations ------------------------------------------------------------------
@njit(inline="always")
def _two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(inline="always")
def _two_prod(a: float, b: float) -> tuple[float, float]:
    """Dekker's product with Veltkamp splitting (exactly :func:`lowbit.arith.eft.two_prod`)."""
    p = a * b
    c = 134217729.0 * a
    ah = c - (c - a)
    al = a - ah
    c = 134217729.0 * b
    bh = c - (c - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@njit(inline="always")
def _odd53(hi: float, lo: float) -> float:
    """Round hi + lo (hi = fl(hi + lo)) to odd in float64, as :func:`lowbit.arith.eft.odd53`."""
    hb = _f2i(hi)
    move = (lo != 0.0) & ((hb & _INFB) != _INFB) & ((hb & 1) == 0)
    up = (lo > 0.0) == (hb >= 0)  # away from zero when lo has hi's sign
    nb = hb + 1 if up else hb - 1
    if hi == 0.0:
        nb = 1 | (_f2i(lo) & _SIGN)
    return _i2f(nb) if move else hi


@njit(inline="always")
def _odd53_ts(hi: float, lo: float) -> float:
    """:func:`_odd53` for a ``two_sum`` pair (hi == 0 implies lo == 0, so no zero case)."""
    hb = _f2i(hi)
    move = (lo != 0.0) & ((hb & _INFB) != _INFB) & ((hb & 1) == 0)
    nb = hb + 1 if (lo > 0.0) == (hb >= 0) else hb - 1
    return _i2f(nb) if move else hi


@njit(inline="always")
def _zero_sum(c: float, t: float, rd: bool) -> float:
    """The signed zero of an exact zero sum c + t (IEEE 754 §6.3; -0 in RD unless both +0)."""
    cn = _f2i(c) < 0
    tn = _f2i(t) < 0
    cz = c == 0.0
    tz = t == 0.0
    pos = cz & (not cn) & tz & (not tn)
    neg = (cz & cn & tz & tn) | (rd & (not pos))
    return -0.0 if neg else 0.0


# ---- scalar rounding onto a float format ---------------------------------------------------------
@njit(inline="always")
def _rnd(
    v: float,
    m: int,
    emin: int,
    fmax: float,
    infv: float,
    mode: int,
    fnuz: bool,
    rb: int,
    r: int,
    stoch: bool,
) -> float:
    """Round the float64 ``v`` onto the format (``man_bits=m``, ``emin``, largest ``fmax``).

    ``infv`` is what an overflow to infinity becomes (inf, NaN or ``fmax`` when saturating);
    ``fnuz`` marks formats without −0; ``r`` holds the 32 random bits of a stochastic mode.
    ``stoch`` is a constant at each call site: ``False`` compiles the deterministic modes only
    (no random-bit arithmetic in those loops).

    Mirrors ``round_float_grid``: quantum 2^q with q = max(floor(log2|v|), emin) - m; the
    dropped part ``rem`` of the integer significand decides per mode; IEEE 754 §7.4 overflow.
    """
    u = _f2i(v)
    neg = u < 0
    au = u & _ABS
    ef = au >> 52
    sig = (au & _MANT) | (_HID if ef != 0 else 0)
    e = ef - 1023
    ex = ef - 1075 if ef != 0 else -1074  # v = sig * 2^ex
    q = (e if e > emin else emin) - m
    s = q - ex  # number of dropped bits (>= 0 for finite v)
    sc = s if s < 60 else 60  # sig < 2^53: beyond 60 every bit is dropped either way
    sc = sc if sc > 0 else 0
    rem = sig & ((1 << sc) - 1)
    kept = sig >> sc
    rem2 = rem << 1
    full = 1 << sc
    inexact = rem != 0
    odd = (kept & 1) != 0
    pos = not neg
    near_up = (rem2 > full) | ((rem2 == full) & (((mode == RNE) & odd) | (mode == RNA)))
    dir_up = inexact & (((mode == RU) & pos) | ((mode == RD) & neg) | ((mode == RO) & (not odd)))
    up = near_up if mode <= RNZ else dir_up
    if stoch:
        # frac = rem / 2^s; sr: u < ceil(frac 2^rb); sr_bits: floor(frac 2^rb) + u >= 2^rb
        lsh = rb - s
        lsh = lsh if lsh > 0 else 0
        rsh = s - rb
        rsh = rsh if rsh > 0 else 0
        rsh = rsh if rsh < 62 else 62
        left = s <= rb
        shl = rem << lsh
        shr = rem >> rsh
        y = shl if left else shr + ((rem & ((1 << rsh) - 1)) != 0)
        f = shl if left else shr
        uu = r >> (32 - rb)
        if mode == SR:
            up = uu < y
        elif mode == SR_EQUAL:
            up = inexact & ((r >> 31) != 0)
        elif mode == SR_BITS:
            up = f + uu >= (1 << rb)
    n = kept + (1 if up else 0)
    pq = _i2f((q + 1023) << 52) if q >= -1022 else _i2f(1 << (q + 1074))
    mag = np.float64(n) * pq
    over = mag > fmax
    to_max = (mode == RTZ) | (mode == RO) | ((mode == RU) & neg) | ((mode == RD) & pos)
    mag = (fmax if to_max else infv) if over else mag
    mag = infv if au == _INFB else mag
    mb = _f2i(mag)
    if fnuz:
        ob = (mb ^ _SIGN) if (neg & (mag != 0.0)) else mb
    else:
        ob = (mb & _ABS) | (u & _SIGN)
    return _i2f(_QNAN if au > _INFB else ob)


@njit(inline="always")
def _rne(v: float, m: int, emin: int, qmax: int, fmax: float, infv: float, fnuz: bool) -> float:
    """:func:`_rnd` for mode RNE, by the float64 hardware: ``(v + C) - C`` with
    ``C = 1.5 * 2^(q + 52)`` rounds v to a multiple of 2^q, ties to even, exactly (the sum lies
    in the binade [2^(q+52), 2^(q+53)) whose spacing is 2^q, since |v| < 2^(q+51) for
    m <= 50). q is clamped to ``qmax = emax - m + 1``: larger |v| overflow either way.
    The caller guarantees ``qmax + 1075 <= 2046`` (C finite).
    """
    u = _f2i(v)
    au = u & _ABS
    e = (au >> 52) - 1023
    q = (e if e > emin else emin) - m
    q = q if q < qmax else qmax
    c = _i2f(((q + 1075) << 52) | (1 << 51))
    mag = abs((v + c) - c)  # +-inf stay infinite, so they take the overflow value below
    mag = infv if mag > fmax else mag
    mb = _f2i(mag)  # its sign bit is clear (NaN overflow values included)
    if fnuz:
        ob = (mb ^ _SIGN) if ((u < 0) & (mag != 0.0)) else mb
    else:
        ob = mb | (u & _SIGN)
    return _i2f(_QNAN if au > _INFB else ob)


@njit(cache=True)
def rne_vector(x: Any, m: int, emin: int, qmax: int, fmax: float, infv: float, fnuz: bool) -> Any:
    """``_rne`` over a float64 vector (tests it against the reference)."""
    out = np.empty_like(x)
    for t in range(x.size):
        out[t] = _rne(x[t], m, emin, qmax, fmax, infv, fnuz)
    return out


@njit(cache=True)
def _rnd_any(
    v: float, m: int, emin: int, fmax: float, infv: float, mode: int, fnuz: bool, rb: int, r: int
) -> float:
    """:func:`_rnd` for any mode (an ordinary call: used off the vectorized paths)."""
    return _rnd(v, m, emin, fmax, infv, mode, fnuz, rb, r, True)


@njit(cache=True)
def round_vector(
    x: Any,
    m: int,
    emin: int,
    fmax: float,
    infv: float,
    mode: int,
    fnuz: bool,
    rb: int,
    k0: int,
    k1: int,
    offset: int,
) -> Any:
    """``_rnd`` over a float64 vector, draws ``offset + i`` (tests it against the reference)."""
    out = np.empty_like(x)
    for t in range(x.size):
        r = _bits(offset + t, k0, k1) if mode >= SR else 0
        out[t] = _rnd_any(x[t], m, emin, fmax, infv, mode, fnuz, rb, r)
    return out


@njit(cache=True)
def _stage(v: float, P: Any, idx: int) -> float:
    """Round an odd53 value ``v`` in stage ``P`` (NATIVE: ``v`` must then be the RN value)."""
    kind, m, emin, fmax, infv, mode, fnuz, rb, k0, k1, _ = P
    if kind != EMUL:
        return v
    r = _bits(idx, k0, k1) if mode >= SR else 0
    return _rnd_any(v, m, emin, fmax, infv, mode, fnuz, rb, r)


# ---- exact sums of several doubles (CPython's math.fsum partials) --------------------------------
@njit(cache=True)
def _msum_add(part: Any, n: int, x: float) -> int:
    """Add x to the nonoverlapping expansion part[:n] (increasing magnitudes); new length."""
    i = 0
    for t in range(n):
        y = part[t]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            part[i] = lo
            i += 1
        x = hi
    part[i] = x
    return i + 1


@njit(cache=True)
def _msum_rn(part: Any, n: int) -> float:
    """Correctly rounded (RNE) value of the expansion part[:n] (CPython's fsum collapse)."""
    if n == 0:
        return 0.0
    n -= 1
    hi = part[n]
    lo = 0.0
    while n > 0:
        x = hi
        n -= 1
        y = part[n]
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and part[n - 1] < 0.0) or (lo > 0.0 and part[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        yr = x - hi
        if y == yr:
            hi = x
    return hi


@njit(cache=True)
def _sum_exact(
    vals: Any, n: int, part: Any, negz: bool, posz: bool, rd: bool
) -> tuple[float, float]:
    """(RN, round-to-odd) float64 values of the exact sum of vals[:n].

    ``negz``/``posz``: every logical term is −0 / +0 (an exact zero sum is −0 if all terms are
    −0, or in RD unless all are +0; else +0). Non-finite terms: NaN if any NaN or both
    infinities, else the infinity.
    """
    nan = False
    pinf = False
    ninf = False
    for t in range(n):
        x = vals[t]
        if x != x:
            nan = True
        elif x == np.inf:
            pinf = True
        elif x == -np.inf:
            ninf = True
    if nan or (pinf and ninf):
        return np.nan, np.nan
    if pinf:
        return np.inf, np.inf
    if ninf:
        return -np.inf, -np.inf
    k = 0
    for t in range(n):
        k = _msum_add(part, k, vals[t])
    hi = _msum_rn(part, k)
    if hi == 0.0:
        z = -0.0 if (negz or (rd and not posz)) else 0.0
        return z, z
    k = _msum_add(part, k, -hi)  # the exact residual; its sign is its largest component's
    res = 0.0
    for t in range(k - 1, -1, -1):
        if part[t] != 0.0:
            res = part[t]
            break
    return hi, _odd53(hi, res)


@njit(cache=True)
def sum_exact(vals: Any, negz: bool, posz: bool, rd: bool) -> tuple[float, float]:
    """Python-callable :func:`_sum_exact` (for tests)."""
    part = np.empty(_NPART + vals.size)
    return _sum_exact(vals, vals.size, part, negz, posz, rd)


@njit(inline="always")
def _is_negz(x: float) -> bool:
    return (x == 0.0) & (_f2i(x) < 0)


@njit(inline="always")
def _is_posz(x: float) -> bool:
    return (x == 0.0) & (_f2i(x) >= 0)


# ---- operand statistics (no temporaries) ---------------------------------------------------------
@njit(cache=True)
def operand_stats(x: Any) -> tuple[bool, bool, int, float]:
    """One pass over an array: (every value has <= 26 significant bits and is 0, non-finite or
    in [2^-500, 2^500]; every value is finite; exponent of the lowest set bit over the nonzero
    values; max |x|)."""
    short = True
    finite = True
    lsb = 1 << 20
    amax = 0.0
    flat = x.reshape(-1)
    for t in range(flat.size):
        v = np.float64(flat[t])
        u = _f2i(v) & _ABS
        ef = u >> 52
        if ef == 2047:
            finite = False
            continue
        if u == 0:
            continue
        sig = (u & _MANT) | (_HID if ef != 0 else 0)
        ex = ef - 1075 if ef != 0 else -1074
        low = sig & -sig  # lowest set bit: a power of two <= 2^52, exact as a float64
        tz = (_f2i(np.float64(low)) >> 52) - 1023
        sig = sig >> tz
        lsb = min(lsb, ex + tz)
        av = abs(v)
        amax = max(amax, av)
        if sig >= (1 << 26) or av < 2.0**-500 or av > 2.0**500:
            short = False
    return short, finite, lsb, amax


# ---- products ------------------------------------------------------------------------------------
_LMUL_LO = (1023 - 126) << 52  # L-Mul results below 2^-126 flush to zero
_LMUL_HI = (1023 + 128) << 52  # ... and from 2^128 up overflow to infinity


def lmul_constant64(man_bits: int) -> int:
    """The carry-form constant of L-Mul with ``man_bits`` mantissa bits in the float64 layout:
    ``(1023 << 52) - 2^(52 - l(m))`` (never 0, so 0 can mean "exact products")."""
    sh = man_bits if man_bits <= 3 else (3 if man_bits == 4 else 4)
    return (1023 << 52) - (1 << (52 - sh))


@njit(inline="always")
def _lmul64(a: float, b: float, lmc: int) -> float:
    """L-Mul (carry form) of two e8mM values ±0 / normal / ±inf / NaN, on their float64 bits.

    The same integer add as :func:`lowbit.arith.approx.lmul` does on float32 bits, with the
    mantissa field 29 bits wider: results below 2^-126 become ±0, from 2^128 up ±inf; zero
    operands give ±0, inf/NaN follow IEEE multiplication. ``(|a| - lmc) + |b|`` cannot
    overflow for finite e8mM operands (|a|, |b| < 2^128); the non-finite cases are selected
    away.
    """
    ua = _f2i(a)
    ub = _f2i(b)
    xa = ua & _ABS
    xb = ub & _ABS
    s = (ua ^ ub) & _SIGN
    r = (xa - lmc) + xb
    r = 0 if r < _LMUL_LO else r
    r = _INFB if r >= _LMUL_HI else r
    zero = (xa == 0) | (xb == 0)
    r = 0 if zero else r
    nonfin = (xa >= _INFB) | (xb >= _INFB)
    nan = (xa > _INFB) | (xb > _INFB) | (zero & nonfin)
    r = _INFB if nonfin else r
    return _i2f(_QNAN if nan else (r | s))


@njit(cache=True)
def lmul_vector64(x: Any, y: Any, lmc: int) -> Any:
    """:func:`_lmul64` over two float64 vectors (for tests)."""
    out = np.empty(x.size)
    for t in range(x.size):
        out[t] = _lmul64(x[t], y[t], lmc)
    return out


@njit(cache=True)
def _lmul_terms(
    a: float,
    B: Any,
    bb: int,
    k: int,
    j0: int,
    jn: int,
    th: Any,
    tl: Any,
    P: Any,
    base: int,
    sj: int,
    lmc: int,
) -> None:
    """th[:jn] = L-Mul products a ∘ B[bb, k, j0:j0+jn] (rounded in stage P), tl[:jn] = 0."""
    for jj in range(jn):
        th[jj] = _lmul64(a, np.float64(B[bb, k, j0 + jj]), lmc)
        tl[jj] = 0.0
    if P[0] == EMUL:
        for jj in range(jn):
            th[jj] = _stage(th[jj], P, base + jj * sj)


@njit(cache=True)
def _term(a: float, b: float, exact: bool, P: Any, idx: int, lmc: int) -> tuple[float, float]:
    """One term: (hi, lo) with hi + lo the exact product (the L-Mul product when ``lmc``),
    or the product rounded in stage P (then lo = 0)."""
    if lmc != 0:
        ph = _lmul64(a, b, lmc)
        pl = 0.0
    elif exact:
        ph = a * b
        pl = 0.0
    else:
        ph, pl = _two_prod(a, b)
        if (_f2i(ph) & _INFB) == _INFB:
            pl = 0.0
    if P[0] == NONE:
        return ph, pl
    if P[0] == NATIVE:
        return ph, 0.0
    return _stage(_odd53(ph, pl), P, idx), 0.0


@njit(inline="always")
def _fast_terms(
    a: float,
    B: Any,
    bb: int,
    k: int,
    j0: int,
    jn: int,
    th: Any,
    P: Any,
    base: int,
    sj: int,
    stoch: bool,
    rne: bool,
) -> None:
    """th[:jn] = round(a * B[bb, k, j0:j0+jn]) for exact products (vectorized loop); the draw
    of column jj has index base + jj * sj."""
    _, m, emin, fmax, infv, mode, fnuz, rb, k0, k1, qmax = P
    if rne:
        for jj in range(jn):
            th[jj] = _rne(a * np.float64(B[bb, k, j0 + jj]), m, emin, qmax, fmax, infv, fnuz)
    else:
        for jj in range(jn):
            r = _bits(base + jj * sj, k0, k1) if stoch else 0
            th[jj] = _rnd(
                a * np.float64(B[bb, k, j0 + jj]), m, emin, fmax, infv, mode, fnuz, rb, r, stoch
            )


@njit(cache=True)
def _terms_det(
    a: float, B: Any, bb: int, k: int, j0: int, jn: int, th: Any, P: Any, base: int, sj: int
) -> None:
    _fast_terms(a, B, bb, k, j0, jn, th, P, base, sj, False, False)


@njit(cache=True)
def _terms_sr(
    a: float, B: Any, bb: int, k: int, j0: int, jn: int, th: Any, P: Any, base: int, sj: int
) -> None:
    _fast_terms(a, B, bb, k, j0, jn, th, P, base, sj, True, False)


@njit(cache=True)
def _terms_rne(
    a: float, B: Any, bb: int, k: int, j0: int, jn: int, th: Any, P: Any, base: int, sj: int
) -> None:
    _fast_terms(a, B, bb, k, j0, jn, th, P, base, sj, False, True)


@njit(cache=True)
def _fill_terms(
    a: float,
    B: Any,
    bb: int,
    k: int,
    j0: int,
    jn: int,
    th: Any,
    tl: Any,
    exact: bool,
    P: Any,
    base: int,
    sj: int,
    lmc: int,
) -> None:
    """th[:jn], tl[:jn] = the terms of a * B[bb, k, j0:j0+jn] (L-Mul products when ``lmc``);
    draw index base + jj * sj."""
    if lmc != 0:
        _lmul_terms(a, B, bb, k, j0, jn, th, tl, P, base, sj, lmc)
    elif exact and P[0] == EMUL:
        if P[5] >= SR:
            _terms_sr(a, B, bb, k, j0, jn, th, P, base, sj)
        elif P[5] == RNE and P[10] + 1075 <= 2046:
            _terms_rne(a, B, bb, k, j0, jn, th, P, base, sj)
        else:
            _terms_det(a, B, bb, k, j0, jn, th, P, base, sj)
        for jj in range(jn):
            tl[jj] = 0.0
    elif exact:
        for jj in range(jn):
            th[jj] = a * np.float64(B[bb, k, j0 + jj])
            tl[jj] = 0.0
    else:
        for jj in range(jn):
            h, lo = _term(a, np.float64(B[bb, k, j0 + jj]), exact, P, base + jj * sj, 0)
            th[jj] = h
            tl[jj] = lo


# ---- accumulation steps --------------------------------------------------------------------------
@njit(cache=True)
def _add_terms(
    ch: float, cl: float, th: float, tl: float, Q: Any, idx: int, part: Any, vals: Any
) -> float:
    """Round the exact sum of two logical terms (ch + cl) + (th + tl) in accumulator stage Q."""
    rd = Q[5] == RD
    if cl == 0.0 and tl == 0.0:
        s, e = _two_sum(ch, th)
        if s == 0.0:
            s = _zero_sum(ch, th, rd)
        return _stage(s if Q[0] == NATIVE else _odd53(s, e), Q, idx)
    vals[0] = ch
    vals[1] = cl
    vals[2] = th
    vals[3] = tl
    hi, v = _sum_exact(vals, 4, part, _is_negz(ch) & _is_negz(th), _is_posz(ch) & _is_posz(th), rd)
    return _stage(hi if Q[0] == NATIVE else v, Q, idx)


@njit(inline="always")
def _fast_add(
    ch: Any, rh: Any, jn: int, Q: Any, base: int, sj: int, stoch: bool, rne: bool
) -> None:
    """ch[jj] = round(ch[jj] + rh[jj]) for single-double terms (vectorized loop).

    Outside RD the float64 sum already carries the right sign of an exact zero.
    """
    _, m, emin, fmax, infv, mode, fnuz, rb, k0, k1, qmax = Q
    rd = mode == RD
    if rne:
        for jj in range(jn):
            s, e = _two_sum(ch[jj], rh[jj])
            ch[jj] = _rne(_odd53_ts(s, e), m, emin, qmax, fmax, infv, fnuz)
        return
    for jj in range(jn):
        c = ch[jj]
        t = rh[jj]
        s, e = _two_sum(c, t)
        v = _zero_sum(c, t, rd) if s == 0.0 else _odd53_ts(s, e)
        r = _bits(base + jj * sj, k0, k1) if stoch else 0
        ch[jj] = _rnd(v, m, emin, fmax, infv, mode, fnuz, rb, r, stoch)


@njit(cache=True)
def _add_det(ch: Any, rh: Any, jn: int, Q: Any, base: int, sj: int) -> None:
    _fast_add(ch, rh, jn, Q, base, sj, False, False)


@njit(cache=True)
def _add_sr(ch: Any, rh: Any, jn: int, Q: Any, base: int, sj: int) -> None:
    _fast_add(ch, rh, jn, Q, base, sj, True, False)


@njit(cache=True)
def _add_rne(ch: Any, rh: Any, jn: int, Q: Any, base: int, sj: int) -> None:
    _fast_add(ch, rh, jn, Q, base, sj, False, True)


@njit(cache=True)
def _acc_add(
    ch: Any,
    cl: Any,
    rh: Any,
    rl: Any,
    jn: int,
    Q: Any,
    base: int,
    sj: int,
    lo_zero: bool,
    part: Any,
    vals: Any,
) -> None:
    """ch[:jn] = round(ch + cl + rh + rl) elementwise in stage Q (cl = rl = 0 if lo_zero)."""
    if lo_zero and Q[0] == EMUL:
        if Q[5] >= SR:
            _add_sr(ch, rh, jn, Q, base, sj)
        elif Q[5] == RNE and Q[10] + 1075 <= 2046:
            _add_rne(ch, rh, jn, Q, base, sj)
        else:
            _add_det(ch, rh, jn, Q, base, sj)
    elif lo_zero and Q[0] == NATIVE:
        for jj in range(jn):  # float64 RNE: the IEEE sum, signed zeros included
            ch[jj] = ch[jj] + rh[jj]
    else:
        for jj in range(jn):
            ch[jj] = _add_terms(ch[jj], cl[jj], rh[jj], rl[jj], Q, base + jj * sj, part, vals)


# ---- order = "sequential" ------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def gemm_sequential(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    Q: Any,
    jb: int,
    si: int,
    sj: int,
    lmc: int,
) -> None:
    """C[t, i, j] = the sequential emulated dot product of A[ia[t], i, :] and B[ib[t], :, j].

    Step k rounds c + t_k in stage Q (k = 0: t_0 alone); draws of the product (P) and the
    accumulator (Q) stages use index k * n_out + o, with o = t·M·N + i·si + j·sj the flat index
    of the output element in the caller's problem (si = N, sj = 1; or si = 1, sj = M' when the
    caller passes the transposed problem).
    """
    nb, M, _ = C.shape
    for row in prange(nb * M):
        _seq_row(A, B, ia, ib, C, exact, P, Q, jb, si, sj, row, lmc)


@njit(cache=True)
def _seq_row(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    Q: Any,
    jb: int,
    si: int,
    sj: int,
    row: int,
    lmc: int,
) -> None:
    """One output row of :func:`gemm_sequential`, in column chunks of ``jb``."""
    nb, M, N = C.shape
    K = A.shape[2]
    n_out = nb * M * N
    lo_zero = exact or P[0] != NONE
    t = row // M
    i = row - t * M
    ba = ia[t]
    bb = ib[t]
    th = np.empty(jb)
    tl = np.empty(jb)
    cc = np.empty(jb)
    cl = np.zeros(jb)
    part = np.empty(_NPART)
    vals = np.empty(4)
    for j0 in range(0, N, jb):
        jn = min(jb, N - j0)
        o0 = t * M * N + i * si + j0 * sj
        for k in range(K):
            base = k * n_out + o0
            _fill_terms(np.float64(A[ba, i, k]), B, bb, k, j0, jn, th, tl, exact, P, base, sj, lmc)
            if k == 0:
                for jj in range(jn):
                    h = th[jj]
                    cc[jj] = _stage(h if Q[0] == NATIVE else _odd53(h, tl[jj]), Q, base + jj * sj)
            else:
                _acc_add(cc, cl, th, tl, jn, Q, base, sj, lo_zero, part, vals)
        if K == 0:
            for jj in range(jn):
                cc[jj] = 0.0
        for jj in range(jn):
            C[t, i, j0 + jj] = cc[jj]


# ---- order = "pairwise" --------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def gemm_pairwise(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    Q: Any,
    jb: int,
    si: int,
    sj: int,
    lmc: int,
) -> None:
    """Pairwise (binary tree) summation of the K terms, every internal node rounded in Q.

    The tree pairs neighbours level by level (an odd last element moves up unpaired); it is
    built here with a binary counter (a stack of complete subtrees, merged when two have the
    same size, and from the top after the last term), which gives the same tree. The node
    whose right child starts at term m uses draw index (m - 1) * n_out + o; a lone term
    (K = 1) uses o.
    """
    nb, M, _ = C.shape
    for row in prange(nb * M):
        _pair_row(A, B, ia, ib, C, exact, P, Q, jb, si, sj, row, lmc)


@njit(cache=True)
def _pair_row(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    Q: Any,
    jb: int,
    si: int,
    sj: int,
    row: int,
    lmc: int,
) -> None:
    """One output row of :func:`gemm_pairwise`."""
    nb, M, N = C.shape
    K = A.shape[2]
    n_out = nb * M * N
    lo_zero = exact or P[0] != NONE
    depth = 2  # stack of complete subtrees: at most log2(K) + 2 entries
    while (1 << (depth - 2)) <= K:
        depth += 1
    t = row // M
    i = row - t * M
    ba = ia[t]
    bb = ib[t]
    sh = np.empty((depth, jb))
    sl = np.empty((depth, jb))
    start = np.empty(depth, dtype=np.int64)
    size = np.empty(depth, dtype=np.int64)
    part = np.empty(_NPART)
    vals = np.empty(4)
    for j0 in range(0, N, jb):
        jn = min(jb, N - j0)
        o0 = t * M * N + i * si + j0 * sj
        d = 0
        for k in range(K + 1):
            if k < K:
                _fill_terms(
                    np.float64(A[ba, i, k]),
                    B,
                    bb,
                    k,
                    j0,
                    jn,
                    sh[d],
                    sl[d],
                    exact,
                    P,
                    k * n_out + o0,
                    sj,
                    lmc,
                )
                start[d] = k
                size[d] = 1
                d += 1
            # merge equal-size neighbours; after the last term, merge everything
            while d >= 2 and (size[d - 1] == size[d - 2] or k == K):
                lh = sh[d - 2]
                ll = sl[d - 2]
                _acc_add(
                    lh,
                    ll,
                    sh[d - 1],
                    sl[d - 1],
                    jn,
                    Q,
                    (start[d - 1] - 1) * n_out + o0,
                    sj,
                    lo_zero,
                    part,
                    vals,
                )
                for jj in range(jn):
                    ll[jj] = 0.0
                size[d - 2] += size[d - 1]
                d -= 1
        for jj in range(jn):
            if K == 0:
                C[t, i, j0 + jj] = 0.0
            elif K == 1:
                h = sh[0, jj]
                C[t, i, j0 + jj] = _stage(
                    h if Q[0] == NATIVE else _odd53(h, sl[0, jj]), Q, o0 + jj * sj
                )
            else:
                C[t, i, j0 + jj] = sh[0, jj]


# ---- order = "blocked" ---------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def gemm_blocked(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    Q: Any,
    jb: int,
    si: int,
    sj: int,
    bk: int,
    fma: bool,
    plain: bool,
    lmc: int,
) -> None:
    """Blocks of ``bk`` terms summed exactly, then folded into the accumulator.

    ``fma=False``: the block sum g is rounded in Q (draw step 2b), then c = round(c + g) (step
    2b + 1); the first block initialises c. ``fma=True``: c = round(c + exact block sum) once
    (step b). Draw index: step * n_out + o.

    The exact block sum: with ``plain`` (the caller proved that every partial sum of a block is
    exact in float64) a plain float64 sum; otherwise a two-level accumulator (s, l) whose
    second level is checked for exactness. A column whose check failed, that saw a non-finite
    term, or whose block sum is zero (its sign needs every term) is recomputed with the
    partials algorithm.
    """
    nb, M, _ = C.shape
    for row in prange(nb * M):
        _blk_row(A, B, ia, ib, C, exact, P, Q, jb, si, sj, bk, fma, plain, row, lmc)


@njit(cache=True)
def _blk_sum2(th: Any, tl: Any, ss: Any, ls: Any, bad: Any, jn: int) -> None:
    """Two-level exact accumulation of th + tl into (ss, ls); bad marks inexact/non-finite."""
    for jj in range(jn):
        x = th[jj]
        s, e = _two_sum(ss[jj], x)
        s, e2 = _two_sum(s, tl[jj])
        l1, f1 = _two_sum(ls[jj], e)
        l2, f2 = _two_sum(l1, e2)
        ss[jj] = s
        ls[jj] = l2
        fin = (_f2i(x) & _INFB) != _INFB
        bad[jj] = bad[jj] | (f1 != 0.0) | (f2 != 0.0) | (not fin)


@njit(cache=True)
def _blk_row(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    Q: Any,
    jb: int,
    si: int,
    sj: int,
    bk: int,
    fma: bool,
    plain: bool,
    row: int,
    lmc: int,
) -> None:
    """One output row of :func:`gemm_blocked`."""
    nb, M, N = C.shape
    K = A.shape[2]
    n_out = nb * M * N
    nblk = (K + bk - 1) // bk
    rd = Q[5] == RD
    native = Q[0] == NATIVE
    t = row // M
    i = row - t * M
    ba = ia[t]
    bb = ib[t]
    th = np.empty(jb)
    tl = np.empty(jb)
    cc = np.empty(jb)
    ss = np.empty(jb)
    ls = np.empty(jb)
    bad = np.empty(jb, dtype=np.bool_)
    part = np.empty(_NPART + 2 * bk + 2)
    vals = np.empty(2 * bk + 2)
    for j0 in range(0, N, jb):
        jn = min(jb, N - j0)
        o0 = t * M * N + i * si + j0 * sj
        for g in range(nblk):
            ka = g * bk
            kb = min(K, ka + bk)
            for jj in range(jn):
                ss[jj] = 0.0
                ls[jj] = 0.0
                bad[jj] = False
            for k in range(ka, kb):
                a = np.float64(A[ba, i, k])
                if plain:
                    for jj in range(jn):
                        ss[jj] += a * np.float64(B[bb, k, j0 + jj])
                else:
                    _fill_terms(a, B, bb, k, j0, jn, th, tl, exact, P, k * n_out + o0, sj, lmc)
                    _blk_sum2(th, tl, ss, ls, bad, jn)
            for jj in range(jn):
                o = o0 + jj * sj
                c = cc[jj]
                with_c = fma and g > 0
                hi, lo = _two_sum(ss[jj], ls[jj])
                if bad[jj] or hi == 0.0:  # recompute with the partials algorithm
                    negz = _is_negz(c) or not with_c
                    posz = _is_posz(c) or not with_c
                    n = 0
                    if with_c:
                        vals[0] = c
                        n = 1
                    for k in range(ka, kb):
                        h, lo = _term(
                            np.float64(A[ba, i, k]),
                            np.float64(B[bb, k, j0 + jj]),
                            exact,
                            P,
                            k * n_out + o,
                            lmc,
                        )
                        negz = negz & _is_negz(h)
                        posz = posz & _is_posz(h)
                        vals[n] = h
                        vals[n + 1] = lo
                        n += 2
                    hi, v = _sum_exact(vals, n, part, negz, posz, rd)
                elif with_c:  # a nonzero block sum: no zero-sign rule needs the terms
                    vals[0] = c
                    vals[1] = hi
                    vals[2] = lo
                    hi, v = _sum_exact(vals, 3, part, False, False, rd)
                else:
                    v = _odd53(hi, lo)
                if fma:
                    cc[jj] = _stage(hi if native else v, Q, g * n_out + o)
                else:
                    gv = _stage(hi if native else v, Q, 2 * g * n_out + o)
                    if g == 0:
                        cc[jj] = gv
                    else:
                        cc[jj] = _add_terms(c, 0.0, gv, 0.0, Q, (2 * g + 1) * n_out + o, part, vals)
        for jj in range(jn):
            C[t, i, j0 + jj] = cc[jj] if K > 0 else 0.0


# ---- acc = "quire": the exact sum of all K terms, rounded once -----------------------------------
@njit(parallel=True, cache=True)
def gemm_quire(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    jb: int,
    si: int,
    sj: int,
    lmc: int,
    sig: Any,
    nbin: int,
    rd: bool,
    native: bool,
) -> None:
    """C[t, i, j] = the exact sum of the K terms of output (t, i, j), as a float64: its RN
    value (``native``) or its round-to-odd value (to be rounded once more by the caller).

    Binned exact accumulation (the plan ``sig``, ``nbin`` comes from
    :func:`lowbit.arith.matmul.quire_plan`, which proves it exact): bin b < nbin - 1 takes
    from each term t its part ``h = fl(fl(sig[b] + t) - sig[b])`` — t rounded to a multiple
    of the bin's quantum, exactly — and passes on the exact remainder ``t - h``; the last bin
    takes what is left. Every bin sum is exact by the plan, so the exact sum is the sum of
    the nbin bin values, which :func:`_sum_exact` rounds (RN and round-to-odd). A column whose
    bins are not finite (an inf/NaN term) is recomputed term by term with the partials
    algorithm; an exact zero sum gets its sign from the terms (IEEE 754 §6.3, as the other
    orders). ``nbin = 0`` (no plan: extreme exponent ranges) computes every column that way.
    """
    nb, M, _ = C.shape
    for row in prange(nb * M):
        _quire_row(A, B, ia, ib, C, exact, P, jb, si, sj, lmc, sig, nbin, rd, native, row)


@njit(cache=True)
def _bin_add(x: Any, bins: Any, sig: Any, nbin: int, jn: int) -> None:
    """Distribute the terms x[:jn] over the bins (x is consumed)."""
    for b in range(nbin - 1):
        s = sig[b]
        bk = bins[b]
        for jj in range(jn):
            t = x[jj]
            h = (s + t) - s
            bk[jj] += h
            x[jj] = t - h
    last = bins[nbin - 1]
    for jj in range(jn):
        last[jj] += x[jj]


@njit(cache=True)
def _quire_row(
    A: Any,
    B: Any,
    ia: Any,
    ib: Any,
    C: Any,
    exact: bool,
    P: Any,
    jb: int,
    si: int,
    sj: int,
    lmc: int,
    sig: Any,
    nbin: int,
    rd: bool,
    native: bool,
    row: int,
) -> None:
    """One output row of :func:`gemm_quire`."""
    nb, M, N = C.shape
    K = A.shape[2]
    n_out = nb * M * N
    t = row // M
    i = row - t * M
    ba = ia[t]
    bb = ib[t]
    th = np.empty(jb)
    tl = np.empty(jb)
    nbk = nbin if nbin > 0 else 1
    bins = np.empty((nbk, jb))
    part = np.empty(_NPART + 2 * K + nbk)
    vals = np.empty(2 * K + nbk)
    for j0 in range(0, N, jb):
        jn = min(jb, N - j0)
        o0 = t * M * N + i * si + j0 * sj
        if nbin > 0:
            for b in range(nbin):
                for jj in range(jn):
                    bins[b, jj] = 0.0
            for k in range(K):
                _fill_terms(
                    np.float64(A[ba, i, k]),
                    B,
                    bb,
                    k,
                    j0,
                    jn,
                    th,
                    tl,
                    exact,
                    P,
                    k * n_out + o0,
                    sj,
                    lmc,
                )
                _bin_add(th, bins, sig, nbin, jn)
                if not exact:
                    _bin_add(tl, bins, sig, nbin, jn)
        for jj in range(jn):
            o = o0 + jj * sj
            fin = nbin > 0
            for b in range(nbin):
                vals[b] = bins[b, jj]
                fin = fin & ((_f2i(vals[b]) & _INFB) != _INFB)
            if fin:
                if nbin == 1:  # one exact float64
                    hi = vals[0]
                    v = hi
                elif nbin == 2:
                    hi, e = _two_sum(vals[0], vals[1])
                    v = _odd53_ts(hi, e)
                else:
                    hi, v = _sum_exact(vals, nbin, part, False, False, rd)
                if hi == 0.0:  # the sign of an exact zero sum needs every term
                    negz = True
                    posz = True
                    for k in range(K):
                        h, lo = _term(
                            np.float64(A[ba, i, k]),
                            np.float64(B[bb, k, j0 + jj]),
                            exact,
                            P,
                            k * n_out + o,
                            lmc,
                        )
                        negz = negz & _is_negz(h)
                        posz = posz & _is_posz(h)
                    z = -0.0 if (negz or (rd and not posz)) else 0.0
                    hi = z
                    v = z
            else:  # non-finite terms (or no plan): the partials algorithm on all terms
                negz = True
                posz = True
                n = 0
                for k in range(K):
                    h, lo = _term(
                        np.float64(A[ba, i, k]),
                        np.float64(B[bb, k, j0 + jj]),
                        exact,
                        P,
                        k * n_out + o,
                        lmc,
                    )
                    negz = negz & _is_negz(h)
                    posz = posz & _is_posz(h)
                    vals[n] = h
                    vals[n + 1] = lo
                    n += 2
                hi, v = _sum_exact(vals, n, part, negz, posz, rd)
            C[t, i, j0 + jj] = hi if native else v
