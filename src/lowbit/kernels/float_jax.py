"""Float and fixed-point rounding for jax, on integer bit patterns under ``jax.jit``.

XLA's CPU backend runs with denormals-are-zero and flush-to-zero, so float arithmetic on
subnormal inputs or results silently gives 0. This kernel therefore never computes with the
float values: it splits the float32 bit pattern into an integer significand and exponent,
makes the rounding decision with uint32 arithmetic, and assembles the result's bits. The
decision rules are those of :mod:`lowbit.rounding.reference`, which the tests hold it to.

Limits: float32/float16/bfloat16 inputs (float64 goes through the numpy reference on the host),
formats whose grid near the input is representable in float32 (every preset), fixed point of at
most 31 bits.
"""

from __future__ import annotations

from typing import Any

from lowbit.formats import FixedFormat, FloatFormat, IntFormat
from lowbit.rounding.modes import RoundMode
from lowbit.rounding.reference import EdgePolicy

_TO_INF = (
    RoundMode.RNE,
    RoundMode.RNA,
    RoundMode.RNZ,
    RoundMode.SR,
    RoundMode.SR_EQUAL,
    RoundMode.SR_BITS,
)


def _shl(jnp: Any, v: Any, s: Any) -> Any:
    """v << s for 0 <= s, giving 0 when s >= 32 (XLA leaves that case undefined)."""
    s = jnp.asarray(s, jnp.int32)
    return jnp.where(s >= 32, jnp.uint32(0), v << jnp.clip(s, 0, 31).astype(jnp.uint32))


def _shr(jnp: Any, v: Any, s: Any) -> Any:
    """v >> s for 0 <= s, giving 0 when s >= 32."""
    s = jnp.asarray(s, jnp.int32)
    return jnp.where(s >= 32, jnp.uint32(0), v >> jnp.clip(s, 0, 31).astype(jnp.uint32))


def _decompose(jnp: Any, lax: Any, bits: Any) -> tuple[Any, ...]:
    """fp32 bits -> (neg, is_nan, is_inf, sig, e2, e): |x| = sig * 2^e2, leading bit at 2^e."""
    neg = (bits >> 31) == 1
    ef = ((bits >> 23) & 0xFF).astype(jnp.int32)
    man = bits & jnp.uint32(0x7FFFFF)
    is_nan = (ef == 255) & (man != 0)
    is_inf = (ef == 255) & (man == 0)
    sig = jnp.where(ef > 0, man | jnp.uint32(0x800000), man)
    e2 = jnp.maximum(ef, 1) - 150
    top = 31 - lax.clz(sig).astype(jnp.int32)  # -1 for zero
    e = e2 + top
    return neg, is_nan, is_inf, sig, e2, e


def _ceil_scaled(jnp: Any, rem: Any, d: Any, k: int) -> Any:
    """ceil(rem * 2^(k-d)) as uint32, for rem < 2^min(d, 24) (the SR threshold)."""
    up_shift = k - d
    left = _shl(jnp, rem, jnp.maximum(up_shift, 0))
    s = jnp.maximum(-up_shift, 0)
    floor_r = _shr(jnp, rem, s)
    exact = _shl(jnp, floor_r, s) == rem
    right = floor_r + jnp.where(exact, jnp.uint32(0), jnp.uint32(1))
    return jnp.where(up_shift >= 0, left, right)


def _floor_scaled(jnp: Any, rem: Any, d: Any, k: int) -> Any:
    """floor(rem * 2^(k-d)) as uint32."""
    up_shift = k - d
    return jnp.where(
        up_shift >= 0,
        _shl(jnp, rem, jnp.maximum(up_shift, 0)),
        _shr(jnp, rem, jnp.maximum(-up_shift, 0)),
    )


def _decide_up(
    jnp: Any, pol: EdgePolicy, i: Any, rem: Any, d: Any, neg: Any, tiny: Any, r: Any
) -> Any:
    """Round-up decision for the magnitude: the integer twin of reference._magnitude_up."""
    mode = pol.mode
    inexact = rem != 0
    half = _shl(jnp, jnp.uint32(1), jnp.maximum(d - 1, 0))
    d_ok = (d >= 1) & (d <= 32)  # with d > 32 the fraction is below one half (sig < 2^24)
    gt_half = d_ok & (rem > half)
    eq_half = d_ok & (rem == half)
    ge_half = gt_half | eq_half
    odd = (i & 1) == 1
    if mode is RoundMode.RNE:
        return gt_half | (eq_half & (odd | tiny))
    if mode is RoundMode.RNA:
        return ge_half
    if mode is RoundMode.RNZ:
        return gt_half
    if mode is RoundMode.RTZ:
        return jnp.zeros_like(inexact)
    if mode is RoundMode.RU:
        return inexact & ~neg
    if mode is RoundMode.RD:
        return inexact & neg
    if mode is RoundMode.RO:
        return inexact & ~odd
    R = pol.rand_bits
    u = r >> jnp.uint32(32 - R)
    if mode is RoundMode.SR:
        return u < _ceil_scaled(jnp, rem, d, R)
    if mode is RoundMode.SR_EQUAL:
        return inexact & ((r >> jnp.uint32(31)) == 1)
    fl = _floor_scaled(jnp, rem, d, R)
    return u > jnp.uint32((1 << R) - 1) - fl


def _split(jnp: Any, sig: Any, e2: Any, qexp: Any) -> tuple[Any, Any, Any]:
    """|x| / 2^qexp = i + rem / 2^d with d = qexp - e2 (d <= 0: exact, i = sig << -d)."""
    d = qexp - e2
    i = jnp.where(d > 0, _shr(jnp, sig, jnp.maximum(d, 0)), _shl(jnp, sig, jnp.maximum(-d, 0)))
    mask = _shl(jnp, jnp.uint32(1), jnp.clip(d, 0, 32)) - jnp.uint32(1)
    rem = jnp.where(d > 0, jnp.where(d >= 32, sig, sig & mask), jnp.uint32(0))
    return i, rem, d


def _assemble(jnp: Any, lax: Any, i: Any, qexp: Any) -> Any:
    """fp32 bits of i * 2^qexp (i < 2^25); values past fp32's range give +inf bits."""
    top = 31 - lax.clz(i).astype(jnp.int32)
    eo = top + qexp
    norm_m = jnp.where(
        top <= 23, _shl(jnp, i, jnp.maximum(23 - top, 0)), _shr(jnp, i, jnp.maximum(top - 23, 0))
    ) & jnp.uint32(0x7FFFFF)
    normal = ((eo + 127).astype(jnp.uint32) << 23) | norm_m
    sub = _shl(jnp, i, jnp.maximum(qexp + 149, 0))
    out = jnp.where(eo >= -126, normal, sub)
    out = jnp.where(eo > 127, jnp.uint32(0x7F800000), out)
    return jnp.where(i == 0, jnp.uint32(0), out)


def _f32_bits(x: float) -> int:
    import numpy as np

    return int(np.array(x, dtype=np.float32).view(np.uint32))


def round_float_bits(bits: Any, fmt: FloatFormat, pol: EdgePolicy, r: Any) -> Any:
    """Round fp32 bit patterns (uint32) to ``fmt``; returns fp32 bit patterns."""
    import jax.numpy as jnp
    from jax import lax

    neg, is_nan, is_inf, sig, e2, e = _decompose(jnp, lax, bits)
    m, emin = fmt.man_bits, fmt.emin
    qexp = jnp.maximum(e, emin) - m
    tiny = jnp.zeros_like(neg)
    if not pol.subnormals and fmt.has_subnormals:
        tiny = e < emin
        qexp = jnp.where(tiny, emin, qexp)
    i, rem, d = _split(jnp, sig, e2, qexp)
    up = _decide_up(jnp, pol, i, rem, d, neg, tiny, r)
    mag = _assemble(jnp, lax, i + up.astype(jnp.uint32), qexp)

    max_bits = jnp.uint32(_f32_bits(fmt.max))
    over = mag > max_bits
    mode = pol.mode
    if mode in _TO_INF:
        to_inf = over
    elif mode is RoundMode.RU:
        to_inf = over & ~neg
    elif mode is RoundMode.RD:
        to_inf = over & neg
    else:
        to_inf = jnp.zeros_like(over)
    nan_bits = jnp.uint32(0x7FC00000)
    if pol.overflow == "saturate":  # clamps every overflow (and ±inf inputs) to ±max
        inf_bits = max_bits
    elif fmt.has_inf:
        inf_bits = jnp.uint32(0x7F800000)
    else:
        inf_bits = nan_bits
    mag = jnp.where(over & ~to_inf, max_bits, mag)
    mag = jnp.where(to_inf | is_inf, inf_bits, mag)
    sign = jnp.uint32(0x80000000)
    if not fmt.has_zero:
        mag = jnp.where(mag == 0, jnp.uint32(_f32_bits(fmt.min_normal)), mag)
        mag = jnp.where((bits & jnp.uint32(0x7FFFFFFF)) == 0, nan_bits, mag)
    if fmt.has_neg_zero:
        out = jnp.where(neg & (mag != nan_bits), mag | sign, mag)
    elif fmt.signed:
        out = jnp.where(neg & (mag != 0) & (mag != nan_bits), mag | sign, mag)
    else:
        out = jnp.where(neg & ((bits & jnp.uint32(0x7FFFFFFF)) != 0), nan_bits, mag)
    return jnp.where(is_nan, nan_bits, out)


def round_fixed_bits(bits: Any, fmt: FixedFormat | IntFormat, pol: EdgePolicy, r: Any) -> Any:
    """Round fp32 bit patterns to a fixed-point grid; returns fp32 bit patterns."""
    import jax.numpy as jnp
    from jax import lax

    f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
    if f.bits > 30:
        raise ValueError(f"{f} has {f.bits} bits; the jax kernel handles at most 30")
    neg, is_nan, is_inf, sig, e2, e = _decompose(jnp, lax, bits)
    neg = neg & ((bits & jnp.uint32(0x7FFFFFFF)) != 0)
    qexp = jnp.full(bits.shape, -f.frac_bits, jnp.int32)
    i, rem, d = _split(jnp, sig, e2, qexp)  # i is exact modulo 2^32 (what wrap needs)
    big = (sig != 0) & (e - qexp >= 30)  # |code| >= 2^30: beyond every <= 30-bit range
    up = _decide_up(jnp, pol, i, rem, d, neg, jnp.zeros_like(neg), r)
    mag_u = i + up.astype(jnp.uint32)
    lo, hi = f.code_min, f.code_max
    if pol.overflow == "wrap":
        code_u = jnp.where(neg, jnp.uint32(0) - mag_u, mag_u) & jnp.uint32((1 << f.bits) - 1)
        code = code_u.astype(jnp.int32)
        if f.signed:
            code = jnp.where(code >= (1 << (f.bits - 1)), code - (1 << f.bits), code)
        bad = is_inf | is_nan
    else:
        mag = jnp.where(big, jnp.uint32(1 << 30), mag_u).astype(jnp.int32)
        code = jnp.clip(jnp.where(neg, -mag, mag), lo, hi)
        code = jnp.where(is_inf, jnp.where(neg, lo, hi), code)
        bad = is_nan
    nz = code != 0
    a = jnp.abs(code).astype(jnp.uint32)
    out = _assemble(jnp, lax, a, jnp.full(bits.shape, -f.frac_bits, jnp.int32))
    out = jnp.where((code < 0) & nz, out | jnp.uint32(0x80000000), out)
    return jnp.where(bad, jnp.uint32(0x7FC00000), out)
