"""The 64-bit fused kernels: float64 inputs (float formats and fixed point).

The integer method of :mod:`lowbit.kernels.float_numba` on float64 bit patterns (53-bit
significands in ``uint64`` lanes), with one difference: the rounding decision is a plain
branch on the mode id (:func:`_decide64`) instead of the fp32 core's branch-free bias, since
fp64 inputs are not on the memory-speed path; the two independent formulations are held to
the same reference by the tests.

Used for fp64 inputs, and through an exact widening to float64 for narrower inputs whose
format's grid does not fit fp32 (``fp64``, ``e11m3``, e8m0's 2^-127, unsigned formats) and
for fixed point. Fixed point: the grid step is the constant ``2^-frac_bits``, so the shift
only depends on the input exponent; overflow saturates or wraps exactly (two's complement
modulo ``2^bits`` on the integer code, whatever the input's magnitude).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from lowbit.formats import FixedFormat, FloatFormat, IntFormat
from lowbit.kernels._nbutil import (
    MODE_IDS,
    RD,
    RNA,
    RNE,
    RNZ,
    RO,
    RTZ,
    RU,
    SR,
    SR_EQUAL,
    rand_bits_at,
    u64,
)
from lowbit.rounding.reference import EdgePolicy

_V0 = np.uint64(0)
_V1 = np.uint64(1)
_SIGN = np.uint64(0x8000000000000000)
_ABS = np.uint64(0x7FFFFFFFFFFFFFFF)
_INF = np.uint64(0x7FF0000000000000)
_QNAN = np.uint64(0x7FF8000000000000)
_MANT = np.uint64(0x000FFFFFFFFFFFFF)
_HID = np.uint64(0x0010000000000000)
_C31 = np.uint64(31)
_C32 = np.uint64(32)
_C52 = np.uint64(52)
_C53 = np.uint64(53)
_C54 = np.uint64(54)
_C63 = np.uint64(63)
BLOCK = 1 << 15  # elements per parallel work item


@njit
def _decide64(
    mode: Any,
    odd: Any,
    rem: Any,
    sc: Any,
    s: Any,
    tie_up: Any,
    neg: Any,
    r: Any,
    rb: Any,
    srb_lim: Any,
) -> Any:
    """Whether the magnitude rounds up; ``rem`` holds the ``s`` dropped bits, ``sc = min(s, 54)``.

    ``frac = rem / 2^s``; comparisons with 1/2 use ``2*rem`` vs ``2^sc`` (exact: the kept part
    is 0 whenever ``s > 53``). SR needs ``frac * 2^rb`` exactly: ``rem << (rb - s)`` when
    ``s <= rb``, else ``rem >> (s - rb)``, floored for sr_bits and ceiled for sr (``u < y``
    iff ``u < ceil(y)`` for an integer ``u``); shifts are capped at 63 where the result no
    longer changes.
    """
    full = u64(_V1 << sc)
    rem2 = u64(rem << _V1)
    gt = rem2 > full
    eq = rem2 == full
    inexact = rem != _V0
    if mode == RNE:
        return gt | (eq & (odd | tie_up))
    if mode == RNA:
        return gt | eq
    if mode == RNZ:
        return gt
    if mode == RTZ:
        return False
    if mode == RU:
        return inexact & (not neg)
    if mode == RD:
        return inexact & neg
    if mode == RO:
        return inexact & (not odd)
    r64 = u64(r)
    if mode == SR_EQUAL:
        return inexact & ((r64 >> _C31) != _V0)
    le = s <= rb
    tl = u64(rb - s) if le else _V0
    tl = tl if tl < _C63 else _C63
    tr = _V0 if le else u64(s - rb)
    tr = tr if tr < _C63 else _C63
    shl = u64(rem << tl)
    shr = u64(rem >> tr)
    u = u64(r64 >> u64(_C32 - rb))
    if mode == SR:
        lost = u64(rem - u64(shr << tr)) != _V0
        thr = shl if le else u64(shr + (_V1 if lost else _V0))
        return u < thr
    fl = shl if le else shr
    return u > u64(srb_lim - fl)


@njit
def core64(a: Any, r: Any, p: Any) -> Any:
    """Round one float64 bit pattern to the format described by ``p`` (see :func:`params64`).

    Returns float64 bits. The input is ``sig * 2^ex``; the quantum is ``2^(e - man_bits)`` in
    the normal range (shift ``52 - man_bits``) and ``2^q`` below ``min_normal`` (shift
    ``q - ex``). Clearing the dropped bits of the pattern and adding ``up`` there is the
    rounded value (a carry walks into the exponent, past the top binade into inf); when the
    shift is 53 or more the kept part is 0 and the result is 0 or ``2^q``. The edge rules
    follow ``round_float_grid`` line by line: IEEE 754 §7.4 overflow per mode, inf inputs,
    formats without zero (E8M0), the three sign conventions, NaN in -> +qNaN out.
    """
    mode = p[0]
    s_norm = u64(p[1])
    tiny_bits = u64(p[2])
    qt_a = u64(p[3])
    pq = u64(p[4])
    maxb = u64(p[5])
    infb = u64(p[6])
    tie_tiny = p[7] != 0
    sign_kind = p[8]
    has_zero = p[9] != 0
    rb = u64(p[10])
    srb_lim = u64(p[11])
    sgn = u64(a & _SIGN)
    ax = u64(a & _ABS)
    neg = sgn != _V0
    ax0 = ax if ax < _INF else _V0
    e = u64(ax0 >> _C52)
    e1 = e if e != _V0 else _V1
    sig = u64(u64(ax0 & _MANT) | (_HID if e != _V0 else _V0))
    tiny = ax0 < tiny_bits
    s = u64(qt_a - e1) if tiny else s_norm
    sc = s if s < _C54 else _C54
    i = u64(sig >> sc)
    rem = u64(sig - u64(i << sc))
    odd = (i & _V1) != _V0
    up = _decide64(mode, odd, rem, sc, s, tiny & tie_tiny, neg, r, rb, srb_lim)
    inc = _V1 if up else _V0
    mag = u64(u64(ax0 - rem) + u64(inc << sc)) if s < _C53 else (pq if up else _V0)
    if mode == RTZ or mode == RO:
        to_inf = False
    elif mode == RU:
        to_inf = not neg
    elif mode == RD:
        to_inf = neg
    else:
        to_inf = True
    if mag > maxb:
        mag = infb if to_inf else maxb
    if ax == _INF:
        mag = infb
    if not has_zero:
        mag = tiny_bits if mag == _V0 else mag
        mag = _QNAN if ax == _V0 else mag
    if sign_kind == 0:
        res = u64(mag | sgn)
    elif sign_kind == 1:
        res = u64(mag | sgn) if (neg and mag != _V0) else mag
    else:
        res = _QNAN if (neg and ax != _V0) else mag
    return _QNAN if ax > _INF else res


@njit(cache=True, fastmath=False)
def fill_f64(xs: Any, ds: Any, x0: Any, p: Any, k0: Any, k1: Any, off: Any) -> None:
    """``ds[k] = round(xs[k])`` on fp64 bits (draw index ``off + x0 + k``); serial."""
    if p[0] >= SR:
        for k in range(xs.size):
            ds[k] = core64(xs[k], rand_bits_at(u64(off + u64(x0 + k)), k0, k1), p)
    else:
        for k in range(xs.size):
            ds[k] = core64(xs[k], np.uint32(0), p)


@njit(parallel=True, cache=True, fastmath=False)
def round_f64(xb: Any, ob: Any, p: Any, k0: Any, k1: Any, off: Any) -> None:
    """fp64 bits -> fp64 bits for a float format (``p`` from :func:`params64`), in parallel
    blocks of ``BLOCK`` elements."""
    n = xb.size
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        fill_f64(xb[lo:hi], ob[lo:hi], lo, p, k0, k1, off)


def _pow2_bits64(k: int) -> int:
    return int(np.float64(2.0**k).view(np.uint64))


def params64(fmt: FloatFormat, pol: EdgePolicy) -> tuple[int, ...] | None:
    """Kernel constants of :func:`core64`, or ``None`` when the grid is not inside fp64.

    Layout: mode id, ``52 - man_bits``, bits of ``min_normal``,
    ``q + 1075`` for the quantum ``2^q`` below ``min_normal``, bits of ``2^q``, bits of
    ``max``, the magnitude an overflow to "inf" produces (inf, max or qNaN), RNE ties-up flag
    below min_normal (``subnormals=False``), sign convention (0 has -0, 1 signed without -0,
    2 unsigned), has_zero, rand_bits, ``2^rand_bits - 1``.
    """
    m, emin, emax = fmt.man_bits, fmt.emin, fmt.emax
    if m > 52 or emin < -1022 or emax > 1023:
        return None
    tie_tiny = (not pol.subnormals) and fmt.has_subnormals
    q_t = emin if tie_tiny else emin - m
    maxb = int(np.float64(fmt.max).view(np.uint64))
    if pol.overflow == "saturate":  # clamps every overflow and ±inf input, inf or not
        infb = maxb
    elif fmt.has_inf:
        infb = 0x7FF0000000000000
    else:
        infb = 0x7FF8000000000000
    sign_kind = 0 if fmt.has_neg_zero else (1 if fmt.signed else 2)
    return (
        MODE_IDS[pol.mode],
        52 - m,
        _pow2_bits64(emin),
        q_t + 1075,
        _pow2_bits64(q_t),
        maxb,
        infb,
        int(tie_tiny),
        sign_kind,
        int(fmt.has_zero),
        pol.rand_bits,
        (1 << pol.rand_bits) - 1,
    )


# ---- fixed point -------------------------------------------------------------------------------
@njit
def fixed_core(a: Any, r: Any, q: Any, step: Any) -> Any:
    """Round float64 bits ``a`` to the fixed-point grid ``q`` (see :func:`fixed_params`) of
    step ``step = 2^-frac_bits``.

    Returns the float64 value (not bits). The integer code is exact for any input: a
    magnitude of ``sig * 2^sh`` with ``sh >= 0`` is compared with the limit as
    ``sig > lim >> sh`` and reduced modulo ``2^bits`` as ``(sig << sh) & mask``.
    """
    mode = q[0]
    frac_bits = q[1]
    lim_pos = u64(q[2])
    lim_neg = u64(q[3])
    mask = u64(q[4])
    wrap = q[5] != 0
    signed = q[6] != 0
    rb = u64(q[7])
    srb_lim = u64(q[8])
    vmax = np.float64(lim_pos) * step
    vmin = -(np.float64(lim_neg) * step) if lim_neg != _V0 else 0.0
    ax = u64(a & _ABS)
    neg = ((a & _SIGN) != _V0) and ax != _V0
    ax0 = ax if ax < _INF else _V0
    e = u64(ax0 >> _C52)
    e1 = e if e != _V0 else _V1
    sig = u64(u64(ax0 & _MANT) | (_HID if e != _V0 else _V0))
    sh = np.int64(e1) - np.int64(1075) + frac_bits  # x * 2^frac_bits = sig * 2^sh
    s = u64(-sh) if sh < 0 else _V0
    sc = s if s < _C54 else _C54
    i = u64(sig >> sc)
    rem = u64(sig - u64(i << sc))
    odd = (i & _V1) != _V0
    up = _decide64(mode, odd, rem, sc, s, False, neg, r, rb, srb_lim)
    mag = u64(i + (_V1 if up else _V0))
    shl = u64(sh) if sh > 0 else _V0
    shl = shl if shl < _C63 else _C63
    lim = lim_neg if neg else lim_pos
    if wrap:
        low = u64(u64(sig << shl) & mask) if sh >= 0 else u64(mag & mask)
        low = low if sh < 64 else _V0
        low = u64(u64(_V0 - low) & mask) if neg else low
        # two's complement: codes at or above 2^(bits-1) are negative
        code = (
            np.int64(low) - np.int64(mask) - np.int64(1)
            if (signed and low >= lim_neg)
            else np.int64(low)
        )
        val = np.float64(code) * step
    else:
        over = sig > u64(lim >> shl) if sh >= 0 else mag > lim
        cm = lim if over else (u64(sig << shl) if sh >= 0 else mag)
        val = np.float64(cm) * step
        val = -val if (neg and cm != _V0) else val
    if ax == _INF:
        val = np.nan if wrap else (vmin if neg else vmax)
    return np.nan if ax > _INF else val


@njit(cache=True, fastmath=False)
def fill_fixed(xs: Any, ds: Any, x0: Any, q: Any, step: Any, k0: Any, k1: Any, off: Any) -> None:
    """``ds[k]`` = float64 value of ``xs[k]`` (fp64 bits) on a fixed-point grid; serial."""
    if q[0] >= SR:
        for k in range(xs.size):
            ds[k] = fixed_core(xs[k], rand_bits_at(u64(off + u64(x0 + k)), k0, k1), q, step)
    else:
        for k in range(xs.size):
            ds[k] = fixed_core(xs[k], np.uint32(0), q, step)


@njit(parallel=True, cache=True, fastmath=False)
def round_fixed(xb: Any, of: Any, q: Any, step: Any, k0: Any, k1: Any, off: Any) -> None:
    """fp64 bits ``xb`` -> float64 values ``of`` on a fixed-point grid, in parallel blocks."""
    n = xb.size
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        fill_fixed(xb[lo:hi], of[lo:hi], lo, q, step, k0, k1, off)


def fixed_params(fmt: FixedFormat | IntFormat, pol: EdgePolicy) -> tuple[int, ...]:
    """Kernel constants of :func:`fixed_core`: mode id, frac_bits, largest positive code,
    largest negated negative code, ``2^bits - 1``, wrap, signed, rand_bits,
    ``2^rand_bits - 1``."""
    f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
    return (
        MODE_IDS[pol.mode],
        f.frac_bits,
        f.code_max,
        -f.code_min,
        (1 << f.bits) - 1,
        int(pol.overflow == "wrap"),
        int(f.signed),
        pol.rand_bits,
        (1 << pol.rand_bits) - 1,
    )
