"""Fused numba kernels for MX quantize-dequantize of contiguous float32 along the last axis.

Per block of ``block`` elements: a vectorized max of the magnitude bit patterns gives amax (a
pattern at or above inf's marks a NaN block), the shared exponent follows from amax's exponent
field (OCP MX v1.0 §6.3), then every element is rounded onto the element grid scaled by 2^e
and written back as float32 bits. Two entry points:

* :func:`mx_fp32_rne` — round to nearest even, integer/float32 lanes only;
* :func:`mx_fp32_modes` — every mode, stochastic ones included: the elements go through
  ``core32`` of :mod:`lowbit.kernels.float_numba` (the fp32 core of ``lowbit.round``), whose
  grid parameters are set per block; stochastic modes draw the counter-based bits of each
  element's flat index, exactly as the reference's ``lowbit.round`` of the scaled elements.

Blocks the fast forms do not cover (subnormal amax, element grids below fp32's normal range)
take an exact per-element float64 path. Everything must agree bit for bit with
:func:`lowbit.blocks.mx._mx_reference`; the tests hold it to that.

numba notes: bit views are taken in Python and passed in (a view made inside a parallel
kernel loses writes); indices are unsigned so that numba emits no negative-index wraparound
selects, which would keep LLVM from vectorizing; scalar bitcasts are LLVM intrinsics.
Compiled lazily (``cache=True``) on first use; importing this module compiles nothing, and it
is only imported when a call qualifies for the fast path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from lowbit.formats import FixedFormat, FloatFormat
from lowbit.kernels import float_numba as _fn
from lowbit.kernels._nbutil import MODE_IDS, SR, mix32, prefer_wide_vectors, rand_bits_at, u32
from lowbit.kernels.float_numba import core32
from lowbit.kernels.float_numba_fp64 import core64
from lowbit.kernels.randbits import seed_keys
from lowbit.rounding.modes import RoundMode


@intrinsic
def _f64_bits(typingctx: Any, x: Any) -> Any:
    """Bit pattern of a float64 as int64 (an LLVM bitcast; no memory round trip)."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx: Any, b: Any) -> Any:
    """float64 with the given int64 bit pattern."""
    if not isinstance(b, types.Integer) or b.bitwidth != 64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _f32_bits(typingctx: Any, x: Any) -> Any:
    """Bit pattern of a float32 as int32."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx: Any, b: Any) -> Any:
    """float32 with the given int32 bit pattern."""
    if not isinstance(b, types.Integer) or b.bitwidth != 32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, inline="always")
def _pow2(e: int) -> float:
    """2.0**e for -1022 <= e <= 1023, built from its bit pattern."""
    return _bits_f64(np.int64(e + 1023) << np.int64(52))


@njit(cache=True, inline="always")
def _round_exact(
    xv: float,
    neg: bool,
    e: int,
    emin_b: int,
    man_bits: int,
    fixed: bool,
    c_gt: bool,
    c_eq: bool,
    c_eqodd: bool,
    c_pos: bool,
    c_neg: bool,
    c_even: bool,
) -> float:
    """One element, exactly, from its float64 image (any block; used where the grid reaches
    below fp32's normal range). ``|xv|`` is below the block's saturation value."""
    ax = abs(xv)
    d = _f64_bits(ax)
    ex = ((d >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023)
    sig = (d & ((np.int64(1) << np.int64(52)) - np.int64(1))) | (np.int64(1) << np.int64(52))
    if ax == 0.0:
        sig = np.int64(0)
    if fixed:
        qexp = np.int64(e - man_bits)
    else:
        qexp = max(ex, np.int64(emin_b)) - np.int64(man_bits)
    s = min(qexp - ex + np.int64(52), np.int64(54))
    iq = sig >> s
    rem = sig & ((np.int64(1) << s) - np.int64(1))
    half = np.int64(1) << (s - np.int64(1))
    odd = (iq & np.int64(1)) != 0
    inexact = rem != 0
    up = (
        (rem > half and c_gt)
        or (rem == half and (c_eq or (c_eqodd and odd)))
        or (inexact and ((c_pos and not neg) or (c_neg and neg) or (c_even and not odd)))
    )
    mag = iq + np.int64(up)
    return np.float64(mag) * _pow2(int(qexp))


@njit(cache=True, inline="always")
def _shared_exp(
    ab: int, emax_elem: int, elem_max: float, ceil_rule: bool, scale_lo: int, scale_hi: int
) -> int:
    """Shared exponent (OCP MX v1.0 §6.3) of a finite block whose largest magnitude pattern
    is ``ab``, from the exact float64 image of amax; clamped to the scale's range."""
    if ab == 0:
        return scale_lo
    ef = ab >> 23
    if ef == 0:
        amax = np.float64(ab) * _pow2(-149)
    else:
        amax = np.float64((ab & 0x7FFFFF) | 0x800000) * _pow2(ef - 150)
    fl = ((_f64_bits(amax) >> 52) & 0x7FF) - 1023
    e = fl - emax_elem
    if ceil_rule and amax > elem_max * _pow2(e):
        e += 1
    return min(max(e, scale_lo), scale_hi)


@njit(cache=True, inline="always")
def _vmax_bits(vmax: float) -> int:
    """fp32 pattern of the saturation value ``vmax`` (exact: an element value times 2^e).

    Below fp32's normals (MXINT8 at the smallest scales) it is the subnormal pattern; from
    2^128 on (``scale_rule="ceil"`` blocks next to fp32's max) it lies at or above inf's
    pattern, so a min on patterns never clamps there and a value rounded up to 2^128 stays
    inf, as the reference's float64 -> float32 cast makes it.
    """
    if vmax < _pow2(-126):
        return np.int64(vmax * _pow2(149))
    return (_f64_bits(vmax) >> 29) - np.int64(896 << 23)


@njit(cache=True, inline="always")
def _block_amax(xb: np.ndarray, start: np.uint64, cnt: int) -> int:
    """Largest magnitude pattern of ``xb[start:start+cnt]`` (≥ 0x7F800000: NaN or inf).

    An int32 max over a loop of runtime length: LLVM vectorizes that reduction (with a
    constant 32 it unrolls first and leaves a chain of dependent compare-and-moves; a uint32
    max becomes branches), so callers pass the count as a runtime value.
    """
    m = np.int32(0)
    for t in range(cnt):
        m = max(m, np.int32(xb[start + np.uint64(t)] & np.uint32(0x7FFFFFFF)))
    return np.int64(m)


@njit(cache=True, inline="always")
def _block_fast(
    xb: np.ndarray,
    ob: np.ndarray,
    start: int,
    cnt: int,
    vmax_bits: int,
    qa: int,
    qb: int,
    zero_sign: int,
    c_gt: int,
    c_eq: int,
    c_eqodd: int,
    c_pos: int,
    c_neg: int,
    c_even: int,
) -> None:
    """Round one block on fp32 bit patterns, branch-free, in any deterministic mode (the
    ``c_*`` flags; :func:`mx_fp32_rne` only uses RNE).

    Elements are rounded on their fp32 bit pattern ``a = ((Ef' - 1) << 23) + sig`` (with
    ``Ef' = max(Ef, 1)``, so subnormals fit the same formula): the grid step is ``2^s``
    pattern units, ``s = q - Ef' + 23`` with ``q = max(Ef' + qa, qb)``; for ``s <= 23`` the
    result is the pattern with its ``s`` low bits cleared plus ``up << s`` (carries walk into
    the exponent); for ``s >= 24`` it is 0 or the step itself. Saturation is a min on
    magnitude patterns.
    """
    for t in range(cnt):
        b = np.int64(xb[start + np.uint64(t)])
        sign = b & np.int64(0x80000000)
        a = b & np.int64(0x7FFFFFFF)
        efp = max(a >> 23, np.int64(1))
        sig = (a & 0x7FFFFF) | ((a >= 0x800000) * np.int64(0x800000))
        q = max(efp + qa, qb)
        s = q - efp + 23
        sc = min(s, np.int64(25))
        iq = sig >> sc
        rem = sig & ((np.int64(1) << sc) - 1)
        half = np.int64(1) << (sc - 1)
        odd = iq & 1
        inexact = np.int64(rem != 0)
        neg = sign >> 31
        gt = np.int64(rem > half)
        eq = np.int64(rem == half)
        up = (
            (c_gt & gt)
            | (eq & (c_eq | (c_eqodd & odd)))
            | (inexact & ((c_pos & (neg ^ 1)) | (c_neg & neg) | (c_even & (odd ^ 1))))
        )
        kept = ((efp - 1) << 23) + ((iq + up) << sc)
        qpat = (q << 23) if q >= 1 else (np.int64(1) << (q + 22))
        res = kept if s <= 23 else qpat * up
        res = min(res, vmax_bits)
        keep = zero_sign if res == 0 else np.int64(0x80000000)
        ob[start + np.uint64(t)] = np.uint32(res | (sign & keep))


_I32 = np.int32
_SIGN32 = np.int32(-2147483648)


@njit(cache=True, inline="always")
def _block_rne(
    xf: np.ndarray,
    ob: np.ndarray,
    start: int,
    cnt: int,
    vmax_bits: np.int32,
    d: np.int32,
    tiny: np.int32,
    c: np.float32,
    zero_sign: np.int32,
) -> None:
    """Round one block to nearest even, branch-free on int32/float32 lanes.

    At or above the element grid's smallest normal (pattern ``tiny``) the grid keeps
    ``23 - d`` mantissa bits: add ``2^(d-1) - 1`` plus the kept LSB to the pattern and clear
    ``d`` bits (IEEE RNE by integer carry). Below it the step is constant, and
    ``(|x| + c) - c`` with ``c = step * 2^23`` is exactly |x| rounded to that step in RNE
    (the float32 adder's own rounding; numba does not reassociate without fastmath). A
    fixed-point element passes ``tiny`` = inf's pattern, so every element takes that path.
    """
    one = _I32(1)
    low = _I32(_I32(one << d) - one)
    bias = _I32(_I32(one << _I32(d - one)) - one)
    for t in range(cnt):
        xv = xf[start + np.uint64(t)]
        b = _f32_bits(xv)
        sign = _I32(b & _SIGN32)
        a = _I32(b & _I32(0x7FFFFFFF))
        sub = _f32_bits((abs(xv) + c) - c)
        nrm = _I32(_I32(a + _I32(bias + _I32(_I32(a >> d) & one))) & _I32(~low))
        res = sub if a < tiny else nrm
        res = min(res, vmax_bits)
        keep = zero_sign if res == _I32(0) else _SIGN32
        ob[start + np.uint64(t)] = np.uint32(_I32(res | _I32(sign & keep)))


@njit(cache=True, inline="always")
def _bounds(k: int, whole: bool, n: int, nb: int, block: int) -> tuple[np.uint64, int]:
    """(first flat index, element count) of block ``k``; unsigned, so numba skips its
    negative-index wraparound selects, which would keep LLVM from vectorizing the loops."""
    if whole:
        return np.uint64(k * block), block
    r = k // nb
    j = k - r * nb
    return np.uint64(r * n + j * block), min(block, n - j * block)


@njit(cache=True)
def _mx_block(
    xf: np.ndarray,
    xb: np.ndarray,
    out: np.ndarray,
    ob: np.ndarray,
    scales: np.ndarray,
    k: int,
    start: np.uint64,
    cnt: int,
    ab: int,
    emax_elem: int,
    elem_max: float,
    man_bits: int,
    emin_elem: int,
    fixed: bool,
    ceil_rule: bool,
    scale_lo: int,
    scale_hi: int,
    scale_bias: int,
    scale_nan: int,
    mode: int,
    c_gt: int,
    c_eq: int,
    c_eqodd: int,
    c_pos: int,
    c_neg: int,
    c_even: int,
    zero_sign: int,
) -> None:
    """Scale and elements of one block whose largest magnitude pattern is ``ab``."""
    if ab >= 0x7F800000:  # NaN or inf in the block: the block is NaN
        scales[k] = scale_nan
        for t in range(cnt):
            ob[start + np.uint64(t)] = np.uint32(0x7FC00000)
        return
    e = _shared_exp(ab, emax_elem, elem_max, ceil_rule, scale_lo, scale_hi)
    scales[k] = np.uint8(e + scale_bias)
    vmax = elem_max * _pow2(e)  # saturation value, in fp32's range for fp32 inputs
    emin_b = emin_elem + e
    if not fixed and emin_b < -126:  # grid below fp32 normals: exact float64 path
        for t in range(cnt):
            i = start + np.uint64(t)
            neg = (xb[i] >> np.uint32(31)) != np.uint32(0)
            xv = np.float64(xf[i])
            if abs(xv) >= vmax:
                res = vmax
            else:
                res = _round_exact(
                    xv,
                    neg,
                    e,
                    emin_b,
                    man_bits,
                    fixed,
                    c_gt != 0,
                    c_eq != 0,
                    c_eqodd != 0,
                    c_pos != 0,
                    c_neg != 0,
                    c_even != 0,
                )
            out[i] = np.float32(-res if neg else res)
        return
    vmax_bits = _vmax_bits(vmax)
    if fixed:  # pattern exponent of the constant step; "qa" makes max(.) pick "qb"
        qa = np.int64(-1000)
        qb = np.int64(e - man_bits + 127)
    else:
        qa = np.int64(-man_bits)
        qb = np.int64(emin_b + 127 - man_bits)
    c_exp = (e if fixed else emin_b) - man_bits + 23
    if mode == 0 and c_exp <= 127:  # RNE: the cheap form (its constant c must be finite)
        if fixed:
            d32 = _I32(1)
            tiny = _I32(0x7F800000)
            c = np.float32(_pow2(e - man_bits + 23))
        else:
            d32 = _I32(23 - man_bits)
            tiny = _I32((emin_b + 127) << 23)
            c = np.float32(_pow2(emin_b - man_bits + 23))
        zs = _I32(0) if fixed else _SIGN32
        if cnt == 32:
            _block_rne(xf, ob, start, 32, _I32(vmax_bits), d32, tiny, c, zs)
        else:
            _block_rne(xf, ob, start, cnt, _I32(vmax_bits), d32, tiny, c, zs)
    elif cnt == 32:
        _block_fast(
            xb,
            ob,
            start,
            32,
            vmax_bits,
            qa,
            qb,
            zero_sign,
            c_gt,
            c_eq,
            c_eqodd,
            c_pos,
            c_neg,
            c_even,
        )
    else:
        _block_fast(
            xb,
            ob,
            start,
            cnt,
            vmax_bits,
            qa,
            qb,
            zero_sign,
            c_gt,
            c_eq,
            c_eqodd,
            c_pos,
            c_neg,
            c_even,
        )


@njit(parallel=True, cache=True)
def mx_fp32_rne(
    xf: np.ndarray,
    xb: np.ndarray,
    out: np.ndarray,
    ob: np.ndarray,
    scales: np.ndarray,
    rows: int,
    n: int,
    block: int,
    emax_elem: int,
    elem_max: float,
    man_bits: int,
    emin_elem: int,
    fixed: bool,
    ceil_rule: bool,
    scale_lo: int,
    scale_hi: int,
    scale_bias: int,
    scale_nan: int,
    max_bits: int,
) -> None:
    """Quantize-dequantize ``xf`` (flat float32, ``rows`` rows of ``n``) into ``out``, RNE.

    ``xb`` / ``ob`` are the uint32 views of ``xf`` / ``out`` (taken by the caller: views made
    inside a parallel kernel lose writes in numba 0.68). ``scales`` receives the biased scale
    codes, one per block. For a fixed-point element (MXINT8) ``man_bits`` is its
    ``frac_bits`` and the grid step is constant; for a float element the step is
    2^(max(ex, emin_elem + e) - man_bits). The per-block work is in integers only:
    ``max_bits`` is the fp32 pattern of the element format's largest value. The shared
    exponent comes from amax's exponent field (and, for ``ceil``, a compare of mantissa
    fields); the saturation value, the grid's smallest normal and the constant ``c`` of
    :func:`_block_rne` are built as patterns. Blocks outside that easy range (subnormal
    amax, grids below fp32 normals, steps so coarse that ``c`` exceeds fp32) go through the
    general :func:`_mx_block`.
    """
    nb = (n + block - 1) // block
    total = rows * nb
    whole = n % block == 0
    max_mant = max_bits & 0x7FFFFF
    zs = _I32(0) if fixed else _SIGN32
    d32 = _I32(1) if fixed else _I32(23 - man_bits)
    zero_sign = np.int64(0) if fixed else np.int64(0x80000000)
    for k in prange(total):
        start, cnt = _bounds(k, whole, n, nb, block)
        ab = _block_amax(xb, start, cnt)
        ef = ab >> 23
        e = ef - 127 - emax_elem
        if ceil_rule and (ab & 0x7FFFFF) > max_mant:
            e += 1
        e = min(max(e, scale_lo), scale_hi)
        lo_exp = e if fixed else emin_elem + e  # exponent of the grid's smallest normal
        if (
            ab >= 0x7F800000
            or ef == 0
            or lo_exp + emax_elem - emin_elem < -126
            or (not fixed and lo_exp < -126)
            or lo_exp - man_bits + 23 > 127
        ):
            _mx_block(
                xf,
                xb,
                out,
                ob,
                scales,
                k,
                start,
                cnt,
                ab,
                emax_elem,
                elem_max,
                man_bits,
                emin_elem,
                fixed,
                ceil_rule,
                scale_lo,
                scale_hi,
                scale_bias,
                scale_nan,
                0,
                1,
                0,
                1,
                0,
                0,
                0,
                zero_sign,
            )
            continue
        scales[k] = np.uint8(e + scale_bias)
        vmax_bits = _I32(max_bits + (e << 23))
        if fixed:
            tiny = _I32(0x7F800000)
            c = _bits_f32(_I32((e - man_bits + 23 + 127) << 23))
        else:
            tiny = _I32((lo_exp + 127) << 23)
            c = _bits_f32(_I32((lo_exp - man_bits + 23 + 127) << 23))
        if cnt == 32:
            _block_rne(xf, ob, start, 32, vmax_bits, d32, tiny, c, zs)
        else:
            _block_rne(xf, ob, start, cnt, vmax_bits, d32, tiny, c, zs)


# ---- every mode: the element core of lowbit.kernels.float_numba on a per-block grid ---------
_U0 = np.uint32(0)
_U1 = np.uint32(1)
_U2 = np.uint32(2)
_ALL = np.uint32(0xFFFFFFFF)
_B23 = np.uint32(23)  # core32's big_lim with subnormals (MX elements always have them)
_LO32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(cache=True, inline="always")
def _pat32(k: int) -> np.uint32:
    """fp32 pattern of 2^k, -149 <= k <= 128 (2^128 as inf's pattern, which is what a value
    rounded up to it becomes in the reference's cast to float32)."""
    if k > 127:
        return np.uint32(0x7F800000)
    if k >= -126:
        return np.uint32((k + 127) << 23)
    return np.uint32(1 << (k + 149))


@njit(cache=True, inline="always")
def _elems_core32(
    xb: np.ndarray,
    ob: np.ndarray,
    start: np.uint64,
    cnt: int,
    variant: int,
    lo0: np.uint32,
    hk: np.uint32,
    k0: np.uint32,
    s_norm: np.uint32,
    tiny_bits: np.uint32,
    qt_a: np.uint32,
    pq: np.uint32,
    maxb: np.uint32,
    hm: np.uint32,
    om: np.uint32,
    c1: np.uint32,
    pm: np.uint32,
    nm: np.uint32,
    rom: np.uint32,
    thr_p: np.uint32,
    thr_n: np.uint32,
    nzm: np.uint32,
    himask: np.uint32,
) -> None:
    """``ob[i] = core32(xb[i])`` for ``i`` in ``start .. start+cnt-1``.

    Element ``t`` draws ``mix32(mix32((lo0 + t) ^ k0) ^ hk)`` (``hk`` = high word of the
    flat index ^ key1; the low word must not wrap inside). ``variant``: 0 deterministic,
    1 sr, 2 sr_bits, 3 sr_equal. Callers pass it as a constant, so that each inlined copy
    of the loop carries only its own decision (one loop selecting among the SR kinds at
    run time is ~1.5x slower). Every overflow saturates to ``maxb``; the block is finite
    (NaN blocks never get here).
    """
    stochastic = variant != 0
    kind = np.uint32(variant - 1) if stochastic else _U0
    for t in range(cnt):
        i = start + np.uint64(t)
        r = mix32(u32(mix32(u32(u32(lo0 + u32(t)) ^ k0)) ^ hk)) if stochastic else _U0
        ob[i] = core32(
            xb[i],
            r,
            stochastic,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            maxb,
            maxb,
            maxb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            kind,
            himask,
            _B23,
            True,
        )


@njit(cache=True, inline="always")
def _elems_variant(
    xb: np.ndarray,
    ob: np.ndarray,
    start: np.uint64,
    cnt: int,
    variant: int,
    lo0: np.uint32,
    hk: np.uint32,
    k0: np.uint32,
    s_norm: np.uint32,
    tiny_bits: np.uint32,
    qt_a: np.uint32,
    pq: np.uint32,
    maxb: np.uint32,
    hm: np.uint32,
    om: np.uint32,
    c1: np.uint32,
    pm: np.uint32,
    nm: np.uint32,
    rom: np.uint32,
    thr_p: np.uint32,
    thr_n: np.uint32,
    nzm: np.uint32,
    himask: np.uint32,
) -> None:
    """:func:`_elems_core32` with a run-time ``variant``: one constant copy per variant."""
    if variant == 0:
        _elems_core32(
            xb,
            ob,
            start,
            cnt,
            0,
            lo0,
            hk,
            k0,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            himask,
        )
    elif variant == 1:
        _elems_core32(
            xb,
            ob,
            start,
            cnt,
            1,
            lo0,
            hk,
            k0,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            himask,
        )
    elif variant == 2:
        _elems_core32(
            xb,
            ob,
            start,
            cnt,
            2,
            lo0,
            hk,
            k0,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            himask,
        )
    else:
        _elems_core32(
            xb,
            ob,
            start,
            cnt,
            3,
            lo0,
            hk,
            k0,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            himask,
        )


@njit(cache=True)
def _elems_any(
    xb: np.ndarray,
    ob: np.ndarray,
    start: np.uint64,
    cnt: int,
    variant: int,
    k0: np.uint32,
    k1: np.uint32,
    s_norm: np.uint32,
    tiny_bits: np.uint32,
    qt_a: np.uint32,
    pq: np.uint32,
    maxb: np.uint32,
    hm: np.uint32,
    om: np.uint32,
    c1: np.uint32,
    pm: np.uint32,
    nm: np.uint32,
    rom: np.uint32,
    thr_p: np.uint32,
    thr_n: np.uint32,
    nzm: np.uint32,
    himask: np.uint32,
    off: np.uint64,
) -> None:
    """:func:`_elems_core32` for any count (draw index ``off + start + t``), split where the
    index's low word wraps."""
    prefer_wide_vectors()
    d0 = np.uint64(start + off)
    lo0 = u32(d0 & _LO32)
    hi0 = u32(d0 >> _S32)
    first = min(cnt, np.int64(1 << 32) - np.int64(lo0))  # elements before the wrap
    _elems_variant(
        xb,
        ob,
        start,
        first,
        variant,
        lo0,
        u32(hi0 ^ k1),
        k0,
        s_norm,
        tiny_bits,
        qt_a,
        pq,
        maxb,
        hm,
        om,
        c1,
        pm,
        nm,
        rom,
        thr_p,
        thr_n,
        nzm,
        himask,
    )
    if first < cnt:
        _elems_variant(
            xb,
            ob,
            start + np.uint64(first),
            cnt - first,
            variant,
            _U0,
            u32(u32(hi0 + _U1) ^ k1),
            k0,
            s_norm,
            tiny_bits,
            qt_a,
            pq,
            maxb,
            hm,
            om,
            c1,
            pm,
            nm,
            rom,
            thr_p,
            thr_n,
            nzm,
            himask,
        )


@njit(cache=True)
def _nan_block(
    ob: np.ndarray, scales: np.ndarray, k: int, start: np.uint64, cnt: int, scale_nan: int
) -> None:
    """A block holding NaN or ±inf: NaN scale, all-NaN elements."""
    scales[k] = scale_nan
    for t in range(cnt):
        ob[start + np.uint64(t)] = np.uint32(0x7FC00000)


@njit(cache=True)
def _block_exact64(
    xf: np.ndarray,
    out: np.ndarray,
    start: np.uint64,
    cnt: int,
    e: int,
    vmax: float,
    emin_elem: int,
    man_bits: int,
    mode_id: int,
    rb: int,
    k0: np.uint32,
    k1: np.uint32,
    off: np.uint64,
) -> None:
    """One block whose float grid reaches below fp32's normals, exactly: each element
    widened to float64 and rounded by the 64-bit core onto the element format scaled by
    2^e (every mode; saturating), then stored as float32 (the reference's cast)."""
    emin_b = emin_elem + e
    q_t = emin_b - man_bits
    maxb = _f64_bits(vmax)
    p = (
        np.int64(mode_id),
        np.int64(52 - man_bits),
        _f64_bits(_pow2(emin_b)),
        np.int64(q_t + 1075),
        _f64_bits(_pow2(q_t)),
        maxb,
        maxb,
        np.int64(0),
        np.int64(0),
        np.int64(1),
        np.int64(rb),
        np.int64((1 << rb) - 1),
    )
    for t in range(cnt):
        i = start + np.uint64(t)
        a = np.uint64(_f64_bits(np.float64(xf[i])))
        r = rand_bits_at(np.uint64(i + off), k0, k1) if mode_id >= SR else _U0
        out[i] = np.float32(_bits_f64(np.int64(core64(a, r, p))))


@njit(cache=True)
def _mx_chunk(
    xf: np.ndarray,
    xb: np.ndarray,
    out: np.ndarray,
    ob: np.ndarray,
    scales: np.ndarray,
    k_lo: int,
    k_hi: int,
    n: int,
    nb: int,
    block: int,
    whole: bool,
    emax_elem: int,
    elem_max: float,
    man_bits: int,
    emin_elem: int,
    fixed: bool,
    ceil_rule: bool,
    scale_lo: int,
    scale_hi: int,
    scale_bias: int,
    scale_nan: int,
    max_bits: int,
    mc: np.ndarray,
    mode_id: int,
    rb: int,
    k0: np.uint32,
    k1: np.uint32,
    off: np.uint64,
) -> None:
    """Blocks ``k_lo .. k_hi-1`` (one parallel work item of :func:`mx_fp32_modes`).

    Per block: amax, the shared exponent, then the element grid scaled by 2^e as a float
    format (minimum normal 2^(emin_elem + e), at least fp32's) or, for a fixed-point element,
    a grid of constant step 2^(e - frac_bits) that the core reaches by calling every element
    "below minimum normal". NaN blocks go through :func:`_nan_block`, blocks whose float
    grid reaches below fp32's normals through :func:`_block_exact64`.
    """
    prefer_wide_vectors()
    variant = mc[0]
    hm, om, c1, pm, nm, rom = mc[1], mc[2], mc[3], mc[4], mc[5], mc[6]
    tp_mul, tp_add, tn_mul, tn_add, himask = mc[7], mc[8], mc[9], mc[10], mc[11]
    if fixed:
        s_norm = _U0
        nzm = _U0  # fixed point has one zero
    else:
        s_norm = np.uint32(23 - man_bits)
        nzm = _ALL
    tiny_fixed = np.uint32(0x7F800000)  # a fixed-point grid: every element "below normal"
    max_mant = max_bits & 0x7FFFFF
    top = (max_bits >> 23) - 127  # exponent of the element's max: vmax is 2^(e + top) * m
    for k in range(k_lo, k_hi):
        start, cnt = _bounds(k, whole, n, nb, block)
        ab = _block_amax(xb, start, cnt)
        # the common block in integers only: amax normal, and the grid's minimum normal,
        # half its quantum and the saturation value all fp32 normals (the pattern of 2^j is
        # (j + 127) << 23); the rest through the exact float64 image of amax
        ef = ab >> 23
        e = ef - 127 - emax_elem
        if ceil_rule and (ab & 0x7FFFFF) > max_mant:
            e += 1
        e = min(max(e, scale_lo), scale_hi)
        q_t = (e if fixed else emin_elem + e) - man_bits
        if (
            ef == 0
            or ab >= 0x7F800000
            or q_t - 1 < -126
            or q_t > 127
            or e + top > 127
            or e + top < -126
            or (not fixed and emin_elem + e < -126)
        ):
            if ab >= 0x7F800000:  # NaN or inf in the block: the block is NaN
                _nan_block(ob, scales, k, start, cnt, scale_nan)
                continue
            e = _shared_exp(ab, emax_elem, elem_max, ceil_rule, scale_lo, scale_hi)
            scales[k] = np.uint8(e + scale_bias)
            vmax = elem_max * _pow2(e)
            if not fixed and emin_elem + e < -126:
                _block_exact64(
                    xf, out, start, cnt, e, vmax, emin_elem, man_bits, mode_id, rb, k0, k1, off
                )
                continue
            q_t = (e if fixed else emin_elem + e) - man_bits
            pq = _pat32(q_t)
            hb = _pat32(q_t - 1)  # half the quantum: the nearest modes' threshold below it
            maxb = np.uint32(_vmax_bits(vmax))
        else:
            scales[k] = np.uint8(e + scale_bias)
            pq = np.uint32((q_t + 127) << 23)
            hb = np.uint32((q_t + 126) << 23)
            maxb = np.uint32(max_bits + (e << 23))
        tiny_bits = tiny_fixed if fixed else np.uint32((emin_elem + e + 127) << 23)
        thr_p = u32(u32(tp_mul * hb) + tp_add)
        thr_n = u32(u32(tn_mul * hb) + tn_add)
        qt_a = np.uint32(q_t + 150)
        d0 = np.uint64(start + off)  # the draw index of the block's first element
        lo0 = u32(d0 & _LO32)
        if cnt == 32 and lo0 <= np.uint32(0xFFFFFFE0):  # the common case: 32, no wrap
            _elems_variant(
                xb,
                ob,
                start,
                32,
                variant,
                lo0,
                u32(u32(d0 >> _S32) ^ k1),
                k0,
                s_norm,
                tiny_bits,
                qt_a,
                pq,
                maxb,
                hm,
                om,
                c1,
                pm,
                nm,
                rom,
                thr_p,
                thr_n,
                nzm,
                himask,
            )
        else:
            _elems_any(
                xb,
                ob,
                start,
                cnt,
                variant,
                k0,
                k1,
                s_norm,
                tiny_bits,
                qt_a,
                pq,
                maxb,
                hm,
                om,
                c1,
                pm,
                nm,
                rom,
                thr_p,
                thr_n,
                nzm,
                himask,
                off,
            )


_CHUNK_BLOCKS = 1024  # blocks per parallel work item


@njit(parallel=True, cache=True)
def mx_fp32_modes(
    xf: np.ndarray,
    xb: np.ndarray,
    out: np.ndarray,
    ob: np.ndarray,
    scales: np.ndarray,
    rows: int,
    n: int,
    block: int,
    emax_elem: int,
    elem_max: float,
    man_bits: int,
    emin_elem: int,
    fixed: bool,
    ceil_rule: bool,
    scale_lo: int,
    scale_hi: int,
    scale_bias: int,
    scale_nan: int,
    max_bits: int,
    mc: np.ndarray,
    mode_id: int,
    rb: int,
    k0: np.uint32,
    k1: np.uint32,
    off: np.uint64,
) -> None:
    """:func:`mx_fp32_rne` for every mode, stochastic ones included, on 32-bit lanes.

    The elements go through :func:`lowbit.kernels.float_numba.core32`, the fp32 element core
    of ``lowbit.round``, on the element grid scaled by each block's 2^e (see
    :func:`_mx_chunk`). Stochastic modes draw the counter-based bits of ``(seed, off +
    flat C-order index)``, as the reference's ``lowbit.round`` of the scaled elements does.
    ``mc`` from :func:`mode_consts`; ``mode_id`` and ``rb`` (rand_bits) feed the 64-bit core.
    The parallel loop runs over chunks of ``_CHUNK_BLOCKS`` blocks.
    """
    nb = (n + block - 1) // block
    total = rows * nb
    whole = n % block == 0
    nch = (total + _CHUNK_BLOCKS - 1) // _CHUNK_BLOCKS
    for c in prange(nch):
        k_lo = c * _CHUNK_BLOCKS
        k_hi = min(total, k_lo + _CHUNK_BLOCKS)
        _mx_chunk(
            xf,
            xb,
            out,
            ob,
            scales,
            k_lo,
            k_hi,
            n,
            nb,
            block,
            whole,
            emax_elem,
            elem_max,
            man_bits,
            emin_elem,
            fixed,
            ceil_rule,
            scale_lo,
            scale_hi,
            scale_bias,
            scale_nan,
            max_bits,
            mc,
            mode_id,
            rb,
            k0,
            k1,
            off,
        )


def mode_consts(mode: RoundMode, rand_bits: int) -> np.ndarray:
    """The mode's constants for :func:`mx_fp32_modes` (uint32).

    Layout: variant (0 deterministic, 1 sr, 2 sr_bits, 3 sr_equal), the six bias terms of
    ``core32`` (``hm om c1 pm nm rom``), the thresholds below the quantum as ``mul * hb +
    add`` (positive, then negative inputs; ``hb`` = pattern of half the quantum, set per
    block), the mask of the draw's top ``rand_bits`` bits.
    """
    if mode.stochastic:
        variant = 1 + {RoundMode.SR: 0, RoundMode.SR_BITS: 1, RoundMode.SR_EQUAL: 2}[mode]
        bias = (0,) * 6
        thr: tuple[int, ...] = (0, 0, 0, 0)
    else:
        variant = 0
        bias = _fn.BIAS[mode]
        # the thresholds are affine in hb: read both terms off hb = 0 and hb = 1
        t0 = _fn.thresholds(mode, 0, False)
        t1 = _fn.thresholds(mode, 1, False)
        thr = (t1[0] - t0[0], t0[0], t1[1] - t0[1], t0[1])
    himask = ((1 << rand_bits) - 1) << (32 - rand_bits)
    vals = (variant, *bias, *thr, himask)
    return np.array([v & 0xFFFFFFFF for v in vals], dtype=np.uint32)


def _max_bits(elem: FloatFormat | FixedFormat) -> int:
    """fp32 pattern of the element format's largest value."""
    return int(np.array(elem.max, dtype=np.float32).view(np.uint32))


def kernel_args(elem: FloatFormat | FixedFormat) -> tuple[int, int, bool]:
    """(man_bits or frac_bits, emin_elem, fixed) for the kernel."""
    if isinstance(elem, FixedFormat):
        return elem.frac_bits, 0, True
    return elem.man_bits, elem.emin, False


def run(
    x: np.ndarray,
    out: np.ndarray,
    scales: np.ndarray,
    block: int,
    emax_elem: int,
    elem: FloatFormat | FixedFormat,
    ceil_rule: bool,
    scale_lo: int,
    scale_hi: int,
    scale_bias: int,
    scale_nan: int,
    mode: RoundMode,
    seed: int = 0,
    rand_bits: int = 32,
    offset: int = 0,
) -> None:
    """Call the kernel on C-contiguous float32 ``x`` (last axis blocked) into ``out``.

    ``seed``, ``rand_bits`` and ``offset`` are used by the stochastic modes: element ``i`` of
    the flat array draws counter ``offset + i`` of ``seed``, as ``lowbit.round`` does.
    """
    n = x.shape[-1] if x.ndim else 1
    rows = x.size // n if n else 0
    if x.size == 0:
        return
    xf = x.reshape(-1)
    xb = xf.view(np.uint32)
    of = out.reshape(-1)
    man, emin, fixed = kernel_args(elem)
    if mode is RoundMode.RNE:
        max_bits = _max_bits(elem)
        mx_fp32_rne(
            xf,
            xb,
            of,
            of.view(np.uint32),
            scales.reshape(-1),
            rows,
            n,
            block,
            emax_elem,
            float(elem.max),
            man,
            emin,
            fixed,
            ceil_rule,
            scale_lo,
            scale_hi,
            scale_bias,
            scale_nan,
            max_bits,
        )
        return
    k0, k1 = seed_keys(seed) if mode.stochastic else (0, 0)
    mx_fp32_modes(
        xf,
        xb,
        of,
        of.view(np.uint32),
        scales.reshape(-1),
        rows,
        n,
        block,
        emax_elem,
        float(elem.max),
        man,
        emin,
        fixed,
        ceil_rule,
        scale_lo,
        scale_hi,
        scale_bias,
        scale_nan,
        _max_bits(elem),
        mode_consts(mode, rand_bits),
        MODE_IDS[mode],
        rand_bits,
        np.uint32(k0),
        np.uint32(k1),
        np.uint64(offset),
    )
