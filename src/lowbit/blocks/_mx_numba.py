"""Fused numba kernels for MX quantize-dequantize of contiguous float32 along the last axis.

Per block of ``block`` elements (``prange`` over blocks): a vectorized max of the magnitude
bit patterns gives amax (a pattern at or above inf's marks a NaN block), the shared exponent
follows from amax's exponent field (OCP MX v1.0 §6.3), then every element is rounded onto the
element grid scaled by 2^e and written back as float32 bits. Two entry points:

* :func:`mx_fp32_rne` — round to nearest even, integer/float32 lanes only (the fast one);
* :func:`mx_fp32_lastaxis` — every deterministic mode (RNE, RNA, RNZ, RTZ, RU, RD, RO) through
  one branch-free decision on 64-bit lanes.

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
from lowbit.rounding.modes import RoundMode

#: Deterministic modes the kernel implements, as the small ints it takes.
MODE_CODES = {
    RoundMode.RNE: 0,
    RoundMode.RNA: 1,
    RoundMode.RNZ: 2,
    RoundMode.RTZ: 3,
    RoundMode.RU: 4,
    RoundMode.RD: 5,
    RoundMode.RO: 6,
}


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
def _round_exact(xv: float, neg: bool, e: int, emin_b: int, man_bits: int, fixed: bool,
                 c_gt: bool, c_eq: bool, c_eqodd: bool, c_pos: bool, c_neg: bool,
                 c_even: bool) -> float:
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
    up = (rem > half and c_gt) or (rem == half and (c_eq or (c_eqodd and odd))) or \
        (inexact and ((c_pos and not neg) or (c_neg and neg) or (c_even and not odd)))
    mag = iq + np.int64(up)
    return np.float64(mag) * _pow2(int(qexp))


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
def _block_fast(xb: np.ndarray, ob: np.ndarray, start: int, cnt: int, vmax_bits: int,
                qa: int, qb: int, zero_sign: int, c_gt: int, c_eq: int, c_eqodd: int,
                c_pos: int, c_neg: int, c_even: int) -> None:
    """Round one block on fp32 bit patterns, branch-free (see :func:`mx_fp32_lastaxis`)."""
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
        up = (c_gt & gt) | (eq & (c_eq | (c_eqodd & odd))) | \
            (inexact & ((c_pos & (neg ^ 1)) | (c_neg & neg) | (c_even & (odd ^ 1))))
        kept = ((efp - 1) << 23) + ((iq + up) << sc)
        qpat = (q << 23) if q >= 1 else (np.int64(1) << (q + 22))
        res = kept if s <= 23 else qpat * up
        res = min(res, vmax_bits)
        keep = zero_sign if res == 0 else np.int64(0x80000000)
        ob[start + np.uint64(t)] = np.uint32(res | (sign & keep))


_I32 = np.int32
_SIGN32 = np.int32(-2147483648)


@njit(cache=True, inline="always")
def _block_rne(xf: np.ndarray, ob: np.ndarray, start: int, cnt: int, vmax_bits: np.int32,
               d: np.int32, tiny: np.int32, c: np.float32, zero_sign: np.int32) -> None:
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


@njit(parallel=True, cache=True)
def mx_fp32_lastaxis(xf: np.ndarray, xb: np.ndarray, out: np.ndarray, ob: np.ndarray,
                     scales: np.ndarray, rows: int, n: int, block: int, emax_elem: int,
                     elem_max: float, man_bits: int, emin_elem: int, fixed: bool,
                     ceil_rule: bool, scale_lo: int, scale_hi: int, scale_bias: int,
                     scale_nan: int, mode: int) -> None:
    """Quantize-dequantize ``xf`` (flat float32, ``rows`` rows of ``n``) into ``out``.

    ``xb`` / ``ob`` are the uint32 views of ``xf`` / ``out`` (taken by the caller: views made
    inside a parallel kernel lose writes in numba 0.68). ``scales`` receives the biased scale
    codes, one per block. For a fixed-point element (MXINT8) ``man_bits`` is its
    ``frac_bits`` and the grid step is constant; for a float element the step is
    2^(max(ex, emin_elem + e) - man_bits).

    Elements are rounded on their fp32 bit pattern ``a = ((Ef' - 1) << 23) + sig`` (with
    ``Ef' = max(Ef, 1)``, so subnormals fit the same formula): the grid step is ``2^s``
    pattern units, ``s = q - Ef' + 23``; for ``s <= 23`` the result is the pattern with its
    ``s`` low bits cleared plus ``up << s`` (carries walk into the exponent); for ``s >= 24``
    it is 0 or the step itself. Saturation is a min on magnitude patterns. Branch-free, so
    LLVM vectorizes the loop (full 32-element blocks get a constant trip count). Blocks whose
    element grid reaches below fp32's smallest normal (only float elements with
    ``emin_elem + e < -126``) take the exact float64 path instead.
    """
    nb = (n + block - 1) // block
    total = rows * nb
    # the mode as flags of one branch-free decision (see reference._magnitude_up)
    c_gt = np.int64(mode == 0 or mode == 1 or mode == 2)
    c_eq = np.int64(mode == 1)
    c_eqodd = np.int64(mode == 0)
    c_pos = np.int64(mode == 4)
    c_neg = np.int64(mode == 5)
    c_even = np.int64(mode == 6)
    zero_sign = np.int64(0) if fixed else np.int64(0x80000000)  # fixed point: one zero
    whole = n % block == 0  # blocks tile the flat array: no division per block
    for k in prange(total):
        start, cnt = _bounds(k, whole, n, nb, block)
        ab = _block_amax(xb, start, cnt)
        _mx_block(xf, xb, out, ob, scales, k, start, cnt, ab, emax_elem,
                  elem_max, man_bits, emin_elem, fixed, ceil_rule, scale_lo, scale_hi,
                  scale_bias, scale_nan, mode, c_gt, c_eq, c_eqodd, c_pos, c_neg, c_even,
                  zero_sign)


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
def _mx_block(xf: np.ndarray, xb: np.ndarray, out: np.ndarray, ob: np.ndarray,
              scales: np.ndarray, k: int, start: np.uint64, cnt: int, ab: int,
              emax_elem: int, elem_max: float, man_bits: int, emin_elem: int, fixed: bool,
              ceil_rule: bool, scale_lo: int, scale_hi: int, scale_bias: int, scale_nan: int,
              mode: int, c_gt: int, c_eq: int, c_eqodd: int, c_pos: int, c_neg: int,
              c_even: int, zero_sign: int) -> None:
    """Scale and elements of one block whose largest magnitude pattern is ``ab``."""
    if ab >= 0x7F800000:  # NaN or inf in the block: the block is NaN
        scales[k] = scale_nan
        for t in range(cnt):
            ob[start + np.uint64(t)] = np.uint32(0x7FC00000)
        return
    # shared exponent (OCP MX v1.0 §6.3), from the exact float64 image of amax
    if ab == 0:
        e = scale_lo
    else:
        ef = ab >> 23
        if ef == 0:
            amax = np.float64(ab) * _pow2(-149)
        else:
            amax = np.float64((ab & 0x7FFFFF) | 0x800000) * _pow2(ef - 150)
        fl = ((_f64_bits(amax) >> 52) & 0x7FF) - 1023
        e = fl - emax_elem
        if ceil_rule and amax > elem_max * _pow2(e):
            e += 1
        e = min(max(e, scale_lo), scale_hi)
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
                res = _round_exact(xv, neg, e, emin_b, man_bits, fixed, c_gt != 0,
                                   c_eq != 0, c_eqodd != 0, c_pos != 0, c_neg != 0,
                                   c_even != 0)
            out[i] = np.float32(-res if neg else res)
        return
    if vmax < _pow2(-126):  # fp32 subnormal (MXINT8 at the smallest scales)
        vmax_bits = np.int64(vmax * _pow2(149))
    else:
        vmax_bits = (_f64_bits(vmax) >> 29) - np.int64(896 << 23)
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
        _block_fast(xb, ob, start, 32, vmax_bits, qa, qb, zero_sign, c_gt, c_eq,
                    c_eqodd, c_pos, c_neg, c_even)
    else:
        _block_fast(xb, ob, start, cnt, vmax_bits, qa, qb, zero_sign, c_gt, c_eq,
                    c_eqodd, c_pos, c_neg, c_even)


@njit(parallel=True, cache=True)
def mx_fp32_rne(xf: np.ndarray, xb: np.ndarray, out: np.ndarray, ob: np.ndarray,
                scales: np.ndarray, rows: int, n: int, block: int, emax_elem: int,
                elem_max: float, man_bits: int, emin_elem: int, fixed: bool, ceil_rule: bool,
                scale_lo: int, scale_hi: int, scale_bias: int, scale_nan: int,
                max_bits: int) -> None:
    """:func:`mx_fp32_lastaxis` for RNE, with the per-block work in integers only.

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
        if ab >= 0x7F800000 or ef == 0 or lo_exp + emax_elem - emin_elem < -126 or \
                (not fixed and lo_exp < -126) or lo_exp - man_bits + 23 > 127:
            _mx_block(xf, xb, out, ob, scales, k, start, cnt, ab, emax_elem, elem_max,
                      man_bits, emin_elem, fixed, ceil_rule, scale_lo, scale_hi, scale_bias,
                      scale_nan, 0, 1, 0, 1, 0, 0, 0, zero_sign)
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


def kernel_args(elem: FloatFormat | FixedFormat) -> tuple[int, int, bool]:
    """(man_bits or frac_bits, emin_elem, fixed) for the kernel."""
    if isinstance(elem, FixedFormat):
        return elem.frac_bits, 0, True
    return elem.man_bits, elem.emin, False


def run(x: np.ndarray, out: np.ndarray, scales: np.ndarray, block: int, emax_elem: int,
        elem: FloatFormat | FixedFormat, ceil_rule: bool, scale_lo: int, scale_hi: int,
        scale_bias: int, scale_nan: int, mode: RoundMode) -> None:
    """Call the kernel on C-contiguous float32 ``x`` (last axis blocked) into ``out``."""
    n = x.shape[-1] if x.ndim else 1
    rows = x.size // n if n else 0
    if x.size == 0:
        return
    xf = x.reshape(-1)
    xb = xf.view(np.uint32)
    of = out.reshape(-1)
    man, emin, fixed = kernel_args(elem)
    if mode is RoundMode.RNE:
        max_bits = int(np.array(elem.max, dtype=np.float32).view(np.uint32))
        mx_fp32_rne(xf, xb, of, of.view(np.uint32), scales.reshape(-1), rows, n, block,
                    emax_elem, float(elem.max), man, emin, fixed, ceil_rule, scale_lo,
                    scale_hi, scale_bias, scale_nan, max_bits)
        return
    mx_fp32_lastaxis(xf, xb, of, of.view(np.uint32), scales.reshape(-1), rows, n, block,
                     emax_elem,
                     float(elem.max), man, emin, fixed, ceil_rule, scale_lo, scale_hi,
                     scale_bias, scale_nan, MODE_CODES[mode])
