"""Fused numba kernels: round float arrays to float-format and fixed-point grids in one pass.

Held bit for bit against :func:`lowbit.rounding.reference.round_float_grid` /
``round_fixed_grid`` followed by the cast to the input dtype that the public API applies.

Why integer bits rather than float arithmetic: an fp32 input is ``sig * 2^ex`` with a 24-bit
integer ``sig``; rounding to a grid of quantum ``2^q`` is an integer shift by ``s = q - ex``
and a decision on the ``s`` dropped bits. Every step is exact, there is no float64
temporary, and the loop body is a few dozen 32-bit integer operations with selects only (no
data-dependent branches), so LLVM vectorizes it:

* in the target's normal range ``s = 23 - man_bits`` is a constant: adding a rounding bias to
  the input pattern and clearing the ``s`` low bits is the result (a carry walks into the
  exponent, past the largest binade into the inf pattern, as it should);
* below ``min_normal`` (the target's subnormals, or its ±0/±min_normal without them) the
  quantum is fixed, so ``s`` varies per element; the same add-and-clear works while
  ``s <= 23``, and for ``s >= 24`` the kept part is 0 and the result is ``0`` or ``2^q``,
  decided by one comparison of the input with a threshold — the branch-free subnormal step
  that keeps fp16/e4m3 as fast as bf16.

Everything else goes through float64: fp64 inputs and fixed point use the kernels of
:mod:`lowbit.kernels.float_numba_fp64`; fp16/bf16 inputs, and fp32 inputs whose format's
grid is not inside fp32 (``fp64``, wide exponents, E8M0, unsigned), are widened exactly in
cache-sized chunks and narrowed back with the same ``astype`` the reference result goes
through, so the final cast (numpy's correctly rounded float64->float16, ml_dtypes'
float64->bfloat16 via float32) is the reference's by construction.

Stochastic modes draw ``bits(seed, offset + flat_index)`` from the counter-based hash of
:mod:`lowbit.kernels.randbits`, computed inline; decisions follow ``NumpyOps.sr_up`` /
``srbits_up`` / ``top_bit`` exactly (integer forms of the same inequalities).

Nothing compiles at import time; each kernel compiles on first use and is cached on disk.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
from numba import njit, prange, set_parallel_chunksize

from lowbit.formats import FixedFormat, FloatFormat, IntFormat
from lowbit.kernels import buffers
from lowbit.kernels import float_numba_fp64 as k64
from lowbit.kernels._nbutil import line_head, mix32, prefer_wide_vectors, u32, u64
from lowbit.kernels.randbits import seed_keys
from lowbit.rounding.modes import RoundMode
from lowbit.rounding.reference import EdgePolicy

_U0 = np.uint32(0)
_U1 = np.uint32(1)
_U2 = np.uint32(2)
_SIGN = np.uint32(0x80000000)
_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_QNAN = np.uint32(0x7FC00000)
_HID = np.uint32(0x800000)
_ALL = np.uint32(0xFFFFFFFF)
_C23 = np.uint32(23)
_C24 = np.uint32(24)
_C31 = np.uint32(31)
_C32 = np.uint32(32)
_LO32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)

_BF16 = np.dtype(ml_dtypes.bfloat16)


# ---- the fp32 core ---------------------------------------------------------------------------
@njit
def core32(
    a: Any,
    r: Any,
    stochastic: Any,
    s_norm: Any,
    tiny_bits: Any,
    qt_a: Any,
    pq: Any,
    maxb: Any,
    ovf_pos: Any,
    ovf_neg: Any,
    infb: Any,
    hm: Any,
    om: Any,
    c1: Any,
    pm: Any,
    nm: Any,
    rom: Any,
    thr_p: Any,
    thr_n: Any,
    nzm: Any,
    sr_kind: Any,
    himask: Any,
    big_lim: Any,
    finite: Any,
) -> Any:
    """Round one fp32 bit pattern ``a``; returns the result's fp32 bits.

    Every mode dependence is a loop-invariant value, never a per-mode branch, so the body
    if-converts into one short vector loop (see :func:`_params32` for the values):

    * deterministic modes add ``bias = ((mask >> 1) & hm) + (odd & om) + c1 + (mask & (side |
      rom & even))`` to the pattern, masked to the ``s`` dropped bits (``mask``), and clear
      them: RNE ``half-1+odd``, RNA ``half``, RNZ ``half-1``, RTZ 0, RU/RD ``mask`` on their
      side, RO ``mask`` when the kept LSB is even; the carry out of the dropped bits is the
      decision. Below ``min_normal``, where the kept part is 0 (``s > big_lim``), the input
      is compared with a per-sign threshold instead (``2^(q-1)`` for nearest modes, 0 for
      directed ones);
    * stochastic modes compare the draw's top ``rand_bits`` bits with ``frac * 2^rand_bits``
      (ceiled for sr, floored for sr_bits) or take its top bit when inexact (sr_equal);
    * overflow goes to ``ovf_pos``/``ovf_neg`` (IEEE 754 §7.4: inf or max per mode and
      sign), inf inputs to ``infb``; a NaN in gives +qNaN out, as the reference does
      (``finite``, a constant, drops that step for callers whose inputs are all finite).
    """
    sgn = u32(a & _SIGN)
    ax = u32(a & _ABS)
    neg = sgn != _U0
    e1 = u32(ax >> _C23)
    e1 = e1 if e1 > _U1 else _U1
    tiny = ax < tiny_bits
    s = u32(qt_a - e1) if tiny else s_norm
    big = s > big_lim  # below min_normal, kept part 0: the result is 0 or 2^q
    sc = s if s < _C24 else _C24
    mask = u32(u32(_U1 << sc) - _U1)
    sig = u32(ax - u32(u32(e1 << _C23) - _HID))  # significand, hidden bit included
    odd = u32(u32(sig >> sc) & _U1)
    if stochastic:
        rem = u32(sig & mask)  # the dropped bits: frac = rem / 2^s
        if sr_kind == 2:
            up = (rem != _U0) & (r > _ABS)
        else:
            # F = frac * 2^32 = rem * 2^(32 - s) = (rem << ta) >> tb, one shift being 0;
            # exact for s <= 32, floored beyond (tb capped at 31: rem < 2^24 is gone by then).
            # H = r & himask = R * 2^(32 - rand_bits), R the draw's top rand_bits bits.
            le = s <= _C32
            ta = u32(_C32 - s) if le else _U0
            ta = ta if ta < _C31 else _C31  # s = 0 only with rem = 0
            tb = _U0 if le else u32(s - _C32)
            tb = tb if tb < _C31 else _C31
            h = u32(r & himask)
            if sr_kind == 0:
                # R < frac * 2^rb  iff  H < F  iff  H <= ceil(F) - 1 = floor((rem*2^ta - 1)
                # / 2^tb)  (rem >= 1; an integer below F is below ceil(F))
                up = (rem != _U0) & (h <= u32(u32(u32(rem << ta) - _U1) >> tb))
            else:
                # floor(frac * 2^rb) + R >= 2^rb  iff  A + H >= 2^32 with A = floor(F) &
                # himask  iff  H > ~A. Compared as signed after flipping both sign bits: LLVM
                # turns the unsigned form into an add-with-overflow that does not vectorize.
                fl = u32(u32(u32(rem << ta) >> tb) & himask)
                up = np.int32(h ^ _SIGN) > np.int32(u32(~fl) ^ _SIGN)
        mag_n = u32(u32(ax & ~mask) + (u32(_U1 << sc) if up else _U0))
    else:
        side = nm if neg else pm
        bias = u32(
            u32(u32(mask >> _U1) & hm)
            + u32(odd & om)
            + c1
            + u32(mask & u32(side | u32(rom & u32(odd - _U1))))
        )
        mag_n = u32(u32(ax + u32(bias & mask)) & ~mask)
        up = ax > (thr_n if neg else thr_p)
    mag = (pq if up else _U0) if big else mag_n
    if mag > maxb:
        mag = ovf_neg if neg else ovf_pos
    res = u32(mag | u32(sgn & u32(nzm | (_ALL if mag != _U0 else _U0))))
    if not finite and ax >= _INF:
        res = u32(infb | sgn) if ax == _INF else _QNAN
    return res


@njit(cache=True, fastmath=False)
def _fill32(xs: Any, ds: Any, x0: Any, p: Any, k0: Any, k1: Any, off: Any) -> None:
    """``ds[k] = round(xs[k])``, the draw of element ``k`` indexed ``off + x0 + k``.

    The few elements before ``ds`` reaches a cache-line boundary are done on their own, so
    that every 512-bit store of the vector loop writes one whole line: a store that straddles
    two lines costs two, and numpy's large arrays start 16 bytes past a line. Measured on
    1e8 fp32 with ``out=``: 0.85-0.90x ``np.copyto`` unaligned, 0.90-0.97x aligned.
    """
    head = line_head(ds)
    if head > 0:
        _fill32_span(xs[:head], ds[:head], x0, p, k0, k1, off)
    _fill32_span(xs[head:], ds[head:], x0 + head, p, k0, k1, off)


@njit(cache=True, fastmath=False)
def _fill32_span(xs: Any, ds: Any, x0: Any, p: Any, k0: Any, k1: Any, off: Any) -> None:
    """:func:`_fill32` on one span, the vectorized inner loop.

    It takes slices rather than start offsets because an index
    ``start + k`` that numba cannot prove non-negative gets a wrap-around select, which
    turns the loop's loads and stores into gathers and scatters. The draw index is carried
    as two 32-bit words so that the hash stays in 32-bit lanes; the high word only changes
    where the low word wraps, so the slice is split there and each part keeps it constant.
    """
    if p[0] == _U0:
        _fill32_det(xs, ds, p)
        return
    start = u64(off + u64(x0))
    lo0 = u32(start & _LO32)
    hi0 = u32(start >> _S32)
    first = min(xs.size, np.int64(1 << 32) - np.int64(lo0))  # elements before the wrap
    _fill32_sr(xs[:first], ds[:first], p, lo0, u32(hi0 ^ k1), k0)
    if first < xs.size:
        _fill32_sr(xs[first:], ds[first:], p, _U0, u32(u32(hi0 + _U1) ^ k1), k0)


@njit(cache=True, fastmath=False)
def _fill32_det(xs: Any, ds: Any, p: Any) -> None:
    """:func:`_fill32` for the deterministic modes."""
    prefer_wide_vectors()
    # Read as uint32 locals before the loop: values truncated from int64 inside the loop
    # would let LLVM turn 32-bit selects into 64-bit ones, halving the vector width.
    s_norm = p[1]
    tiny_bits = p[2]
    qt_a = p[3]
    pq = p[4]
    maxb = p[5]
    ovf_pos = p[6]
    ovf_neg = p[7]
    infb = p[8]
    hm = p[9]
    om = p[10]
    c1 = p[11]
    pm = p[12]
    nm = p[13]
    rom = p[14]
    thr_p = p[15]
    thr_n = p[16]
    nzm = p[17]
    big_lim = p[20]
    for k in range(xs.size):
        ds[k] = core32(
            xs[k],
            _U0,
            False,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            ovf_pos,
            ovf_neg,
            infb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            _U0,
            _U0,
            big_lim,
            False,
        )


@njit(cache=True, fastmath=False)
def _fill32_sr(xs: Any, ds: Any, p: Any, lo0: Any, hk: Any, k0: Any) -> None:
    """:func:`_fill32` for the stochastic modes: element ``k`` draws
    ``mix32(mix32((lo0 + k) ^ k0) ^ hk)`` (``hk`` = high index word ^ key1; no wrap here).

    One loop per SR kind with the kind a constant, so that each loop carries only its own
    decision (one generic loop that selects among the three runs ~1.5x slower). Overflow
    goes to the same result for both signs in every SR mode (they overflow as the nearest
    modes do, IEEE 754 §7.4), so ``ovf_pos`` serves both.
    """
    prefer_wide_vectors()
    s_norm = p[1]
    tiny_bits = p[2]
    qt_a = p[3]
    pq = p[4]
    maxb = p[5]
    ovf = p[6]
    infb = p[8]
    nzm = p[17]
    sr_kind = p[18]
    himask = p[19]
    big_lim = p[20]
    if sr_kind == _U0:
        for k in range(xs.size):
            r = mix32(u32(mix32(u32(u32(lo0 + u32(k)) ^ k0)) ^ hk))
            ds[k] = core32(
                xs[k],
                r,
                True,
                s_norm,
                tiny_bits,
                qt_a,
                pq,
                maxb,
                ovf,
                ovf,
                infb,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                nzm,
                _U0,
                himask,
                big_lim,
                False,
            )
    elif sr_kind == _U1:
        for k in range(xs.size):
            r = mix32(u32(mix32(u32(u32(lo0 + u32(k)) ^ k0)) ^ hk))
            ds[k] = core32(
                xs[k],
                r,
                True,
                s_norm,
                tiny_bits,
                qt_a,
                pq,
                maxb,
                ovf,
                ovf,
                infb,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                nzm,
                _U1,
                himask,
                big_lim,
                False,
            )
    else:
        for k in range(xs.size):
            r = mix32(u32(mix32(u32(u32(lo0 + u32(k)) ^ k0)) ^ hk))
            ds[k] = core32(
                xs[k],
                r,
                True,
                s_norm,
                tiny_bits,
                qt_a,
                pq,
                maxb,
                ovf,
                ovf,
                infb,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                _U0,
                nzm,
                _U2,
                himask,
                big_lim,
                False,
            )


_BLOCK = 1 << 16  # elements per parallel work item (256 KiB of fp32)


@njit(parallel=True, cache=True, fastmath=False)
def _round_f32(xb: Any, ob: Any, p: Any, k0: Any, k1: Any, off: Any) -> None:
    """fp32 bits -> fp32 bits; ``p`` is the array of :func:`_params32`.

    The parallel loop runs over blocks (handed out dynamically by the caller's chunk size),
    each block being one vectorized :func:`_fill32` call.
    """
    n = xb.size
    nblk = (n + _BLOCK - 1) // _BLOCK
    for b in prange(nblk):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        _fill32(xb[lo:hi], ob[lo:hi], lo, p, k0, k1, off)


# ---- parameters ----------------------------------------------------------------------------
_ALL_ONES = -1  # all ones once stored as uint32
# IEEE 754 §7.4: does an overflow go to inf (else to max), for (positive, negative) results
_OVERFLOW_TO_INF = {
    RoundMode.RTZ: (False, False),
    RoundMode.RO: (False, False),
    RoundMode.RU: (True, False),
    RoundMode.RD: (False, True),
}
_SR_KIND = {RoundMode.SR: 0, RoundMode.SR_BITS: 1, RoundMode.SR_EQUAL: 2}
# bias terms (hm, om, c1, pm, nm, rom; see core32) of each deterministic mode
BIAS = {
    RoundMode.RNE: (_ALL_ONES, 1, 0, 0, 0, 0),
    RoundMode.RNA: (_ALL_ONES, 0, 1, 0, 0, 0),
    RoundMode.RNZ: (_ALL_ONES, 0, 0, 0, 0, 0),
    RoundMode.RTZ: (0, 0, 0, 0, 0, 0),
    RoundMode.RU: (0, 0, 0, _ALL_ONES, 0, 0),
    RoundMode.RD: (0, 0, 0, 0, _ALL_ONES, 0),
    RoundMode.RO: (0, 0, 0, 0, 0, _ALL_ONES),
}


def _pow2_bits32(k: int) -> int:
    return int(np.float32(2.0**k).view(np.uint32)) if k >= -149 else 0


def thresholds(mode: RoundMode, hb: int, tie_up: bool) -> tuple[int, int]:
    """Rounds up iff ``|x| > thr`` when the kept part is 0 (``|x| < 2^q``, ``hb`` = bits of
    ``2^(q-1)``), for (positive, negative) inputs; ``-1`` (all ones) means never."""
    never = _ALL_ONES
    if mode is RoundMode.RNE:
        t = hb - 1 if tie_up else hb  # ties go to the even 0, or up without subnormals
        return t, t
    return {
        RoundMode.RNA: (hb - 1, hb - 1),
        RoundMode.RNZ: (hb, hb),
        RoundMode.RTZ: (never, never),
        RoundMode.RU: (0, never),
        RoundMode.RD: (never, 0),
        RoundMode.RO: (0, 0),
    }.get(mode, (never, never))


def _params32(fmt: FloatFormat, pol: EdgePolicy) -> np.ndarray | None:
    """Kernel constants for ``fmt``, or ``None`` when the fp32 core does not cover it.

    The fp32 core needs every grid point (and ``2^q`` of the subnormal quantum) to be an fp32
    number and the target's normal range to start at an fp32 normal binade, so that the
    per-element shift is ``23 - man_bits`` there. Unsigned formats and formats without zero
    (E8M0) take the 64-bit core, which carries their extra rules.

    A uint32 array: stochastic, ``23 - man_bits``, bits of ``min_normal``, ``q + 150`` for the
    quantum ``2^q`` below ``min_normal``, bits of ``2^q``, bits of ``max``, overflow results
    (positive, negative), result of an inf input, the five bias terms, the thresholds below
    ``2^q`` (positive, negative), -0 kept, SR kind, the mask of the draw's top rand_bits
    bits, the shift above which the kept part is 0
    (23; 22 without subnormals, where an fp32 subnormal input has shift 23 but no kept part).
    """
    m, emin, emax = fmt.man_bits, fmt.emin, fmt.emax
    if m > 23 or emin < -126 or emax > 127 or not fmt.signed or not fmt.has_zero:
        return None
    mode = pol.mode
    tie_up = (not pol.subnormals) and fmt.has_subnormals
    q_t = emin if tie_up else emin - m
    maxb = int(np.float32(fmt.max).view(np.uint32))
    if pol.overflow == "saturate":  # clamps every overflow and ±inf input, inf or not
        infb = maxb
    elif fmt.has_inf:
        infb = 0x7F800000
    else:
        infb = 0x7FC00000
    to_inf_pos, to_inf_neg = _OVERFLOW_TO_INF.get(mode, (True, True))
    rb = pol.rand_bits
    vals = (
        int(mode.stochastic),
        23 - m,
        _pow2_bits32(emin),
        q_t + 150,
        _pow2_bits32(q_t),
        maxb,
        infb if to_inf_pos else maxb,
        infb if to_inf_neg else maxb,
        infb,
        *BIAS.get(mode, (0,) * 6),
        *thresholds(mode, _pow2_bits32(q_t - 1), tie_up),
        _ALL_ONES if fmt.has_neg_zero else 0,
        _SR_KIND.get(mode, 0),
        ((1 << rb) - 1) << (32 - rb),
        22 if tie_up else 23,
    )
    return np.array([v & 0xFFFFFFFF for v in vals], dtype=np.uint32)


def _keys(pol: EdgePolicy, seed: int) -> tuple[np.uint32, np.uint32]:
    k0, k1 = seed_keys(seed) if pol.mode.stochastic else (0, 0)
    return np.uint32(k0), np.uint32(k1)


# ---- dispatch ---------------------------------------------------------------------------------
# Elements per chunk on the widen-round-narrow path (two float64 buffers: 4 MiB).
_CHUNK = 1 << 18


def _run_f32(
    xb: np.ndarray, ob: np.ndarray, p32: np.ndarray, k0: np.uint32, k1: np.uint32, offset: int
) -> None:
    off = np.uint64(offset)
    if xb.size < 2 * _BLOCK:  # waking the thread team costs more than the work
        _fill32(xb, ob, 0, p32, k0, k1, off)
        return
    # Blocks are handed out one at a time: a thread that the OS preempts (a busy machine)
    # then delays the call by one block instead of by its whole static share.
    old = set_parallel_chunksize(1)
    try:
        _round_f32(xb, ob, p32, k0, k1, off)
    finally:
        set_parallel_chunksize(old)


def _run_f64(
    fmt: Any,
    pol: EdgePolicy,
    p64: tuple[int, ...] | None,
    x64: np.ndarray,
    o64: np.ndarray,
    k0: np.uint32,
    k1: np.uint32,
    offset: int,
) -> None:
    """Round a flat float64 array into ``o64`` (may be ``x64``) with the 64-bit kernels."""
    xb = x64.view(np.uint64)
    off = np.uint64(offset)
    serial = x64.size < 2 * k64.BLOCK
    old = set_parallel_chunksize(1)
    try:
        if p64 is not None:
            ob = o64.view(np.uint64)
            if serial:
                k64.fill_f64(xb, ob, 0, p64, k0, k1, off)
            else:
                k64.round_f64(xb, ob, p64, k0, k1, off)
        else:
            f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
            q, step = k64.fixed_params(fmt, pol), 2.0**-f.frac_bits
            if serial:
                k64.fill_fixed(xb, o64, 0, q, step, k0, k1, off)
            else:
                k64.round_fixed(xb, o64, q, step, k0, k1, off)
    finally:
        set_parallel_chunksize(old)


def round_numpy(
    x: np.ndarray, fmt: Any, pol: EdgePolicy, seed: int, offset: int, out: np.ndarray | None
) -> np.ndarray | None:
    """Round ``x`` with a fused kernel; ``None`` when no kernel covers the case.

    ``x`` is a numpy float64/float32/float16/bfloat16 array; the result (``out`` when given,
    else a new array) has its dtype and shape. ``offset`` is the flat index of ``x``'s first
    element in the logical array the random draws are indexed by.
    """
    dt = x.dtype
    if dt not in _DTYPES or not isinstance(fmt, (FloatFormat, FixedFormat, IntFormat)):
        return None
    if offset < 0 or offset + x.size > 1 << 64:
        return None
    p32 = p64 = None
    if isinstance(fmt, FloatFormat):
        p32 = _params32(fmt, pol) if dt != np.float64 else None
        if p32 is None:
            p64 = k64.params64(fmt, pol)
            if p64 is None:  # grid outside fp64 (extreme biases): the reference handles it
                return None
    xc = np.ascontiguousarray(x).reshape(-1)
    direct = out is not None and out.flags.c_contiguous and out.flags.writeable
    res = out if direct else buffers.empty(x.shape, dt)
    assert res is not None
    flat = res.reshape(-1)
    k0, k1 = _keys(pol, seed)
    n = xc.size
    if n == 0:
        pass
    elif p32 is not None and dt == np.float32:
        _run_f32(xc.view(np.uint32), flat.view(np.uint32), p32, k0, k1, offset)
    elif p32 is not None:  # fp16/bf16: widening to fp32 is exact, the fp32 result then rounds
        # to the 16-bit type exactly as the reference's float64 result does (it is an fp32
        # number, so one correctly rounded cast either way)
        w_in = np.empty(min(n, _CHUNK), dtype=np.float32)
        w_out = np.empty_like(w_in)
        for c0 in range(0, n, _CHUNK):
            c1 = min(n, c0 + _CHUNK)
            wi, wo = w_in[: c1 - c0], w_out[: c1 - c0]
            with np.errstate(invalid="ignore"):  # signalling NaNs
                np.copyto(wi, xc[c0:c1], casting="unsafe")
            _run_f32(wi.view(np.uint32), wo.view(np.uint32), p32, k0, k1, offset + c0)
            with np.errstate(over="ignore", invalid="ignore"):  # as the reference's astype
                np.copyto(flat[c0:c1], wo, casting="unsafe")
    elif dt == np.float64:
        _run_f64(fmt, pol, p64, xc, flat, k0, k1, offset)
    else:  # narrower input, float64 kernel: the same astype as the reference's result
        buf = np.empty(min(n, _CHUNK), dtype=np.float64)
        for c0 in range(0, n, _CHUNK):
            c1 = min(n, c0 + _CHUNK)
            b = buf[: c1 - c0]
            with np.errstate(invalid="ignore"):  # signalling NaNs
                np.copyto(b, xc[c0:c1], casting="unsafe")
            _run_f64(fmt, pol, p64, b, b, k0, k1, offset + c0)
            with np.errstate(over="ignore", invalid="ignore"):  # as the reference's astype
                np.copyto(flat[c0:c1], b, casting="unsafe")
    if out is not None and not direct:
        np.copyto(out, res)
        return out
    return res


_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16), _BF16)

__all__ = ["round_numpy"]
