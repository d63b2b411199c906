"""The plain reference: round to a float or fixed-point grid with exact float arithmetic.

Written once against a small array namespace (numpy, torch or jax.numpy) so that the numpy
reference, the torch path (any device) and the jax path are the same algorithm. Every step is
exact in the compute dtype: ``frexp``/``ldexp`` scale by powers of two, ``floor`` and the
subtraction ``scaled - floor(scaled)`` lose nothing because ``scaled < 2**(man_bits + 2)``.
So the rounding decision is taken on the exact input value: no double rounding.

The fused kernels in :mod:`lowbit.kernels` must agree with this bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lowbit.formats import FixedFormat, FloatFormat, IntFormat
from lowbit.rounding.modes import RoundMode


@dataclass(frozen=True)
class EdgePolicy:
    """Resolved options of one rounding call (validated by the public API)."""

    mode: RoundMode
    overflow: str  # "nan" | "saturate" | "wrap"
    subnormals: bool
    rand_bits: int  # resolution of SR draws / width of SR_BITS noise


def _magnitude_up(ops: Any, frac: Any, odd: Any, neg: Any, tiny: Any, r: Any, pol: EdgePolicy):
    """Whether the magnitude rounds up, given the discarded fraction ``frac`` in [0, 1)."""
    mode = pol.mode
    inexact = frac > 0
    if mode is RoundMode.RNE:
        half = frac == 0.5
        tie_up = odd if tiny is None else (odd | tiny)  # without subnormals ties go up (chop)
        return (frac > 0.5) | (half & tie_up)
    if mode is RoundMode.RNA:
        return frac >= 0.5
    if mode is RoundMode.RNZ:
        return frac > 0.5
    if mode is RoundMode.RTZ:
        return ops.zeros_bool(frac)
    if mode is RoundMode.RU:
        return inexact & ~neg
    if mode is RoundMode.RD:
        return inexact & neg
    if mode is RoundMode.RO:
        return inexact & ~odd
    if mode is RoundMode.SR:
        return ops.sr_up(frac, r, pol.rand_bits)
    if mode is RoundMode.SR_EQUAL:
        return inexact & ops.top_bit(r)
    if mode is RoundMode.SR_BITS:
        return ops.srbits_up(frac, r, pol.rand_bits)
    raise AssertionError(mode)


def _overflows_to_inf(mode: RoundMode, neg: Any, ops: Any) -> Any:
    """IEEE 754 §7.4: which overflowing results go to ±inf (the rest go to ±max)."""
    if mode in (RoundMode.RTZ, RoundMode.RO):
        return ops.zeros_bool(neg)
    if mode is RoundMode.RU:
        return ~neg
    if mode is RoundMode.RD:
        return neg
    return ops.ones_bool(neg)


def round_float_grid(x: Any, fmt: FloatFormat, pol: EdgePolicy, r: Any, ops: Any) -> Any:
    """Round ``x`` (compute dtype) to ``fmt``; returns values in the compute dtype."""
    m = fmt.man_bits
    emin = fmt.emin
    neg = ops.signbit(x)
    ax = ops.abs(x)
    finite = ops.isfinite(x)
    ax0 = ops.where(finite, ax, 0.0)
    _, E = ops.frexp(ax0)
    e_eff = ops.maximum(E - 1, emin)
    tiny = None
    qexp = e_eff - m
    if not pol.subnormals and fmt.has_subnormals:
        tiny = ax0 < 2.0**emin
        qexp = ops.where(tiny, emin, qexp)
    scaled = ops.ldexp(ax0, -qexp)
    # A grid step far above the input (e.g. a subnormal fp64 input, step > 1) underflows the
    # scaled value to 0; the exact fraction is still positive, which directed modes need.
    scaled = ops.where((scaled == 0) & (ax0 > 0), 5e-324, scaled)
    i = ops.floor(scaled)
    frac = scaled - i
    odd = (i - 2.0 * ops.floor(i * 0.5)) == 1.0
    up = _magnitude_up(ops, frac, odd, neg, tiny, r, pol)
    mag = ops.ldexp(i + ops.as_float(up, i), qexp)

    fmax = fmt.max
    over = mag > fmax
    to_inf = over & _overflows_to_inf(pol.mode, neg, ops)
    mag = ops.where(over & ~to_inf, fmax, mag)
    if pol.overflow == "saturate":  # clamp every overflow (and ±inf inputs) to ±max
        inf_val = fmax
    elif fmt.has_inf:
        inf_val = float("inf")
    else:
        inf_val = float("nan")
    mag = ops.where(to_inf, inf_val, mag)
    # Infinite inputs are exact where the format has inf; else they follow the overflow rule.
    mag = ops.where(ops.isinf(x), inf_val, mag)
    if not fmt.has_zero:  # E8M0: no zero, so tiny positives clamp up to the smallest value
        mag = ops.where(mag == 0, fmt.min_normal, mag)
        mag = ops.where(ax == 0, float("nan"), mag)
    if fmt.has_neg_zero:
        out = ops.copysign(mag, x)
    elif fmt.signed:
        out = ops.where(neg & (mag != 0), -mag, mag)
    else:
        out = ops.where(neg & (ax != 0), float("nan"), mag)
    return ops.where(ops.isnan(x), float("nan"), out)


def round_fixed_grid(
    x: Any, fmt: FixedFormat | IntFormat, pol: EdgePolicy, r: Any, ops: Any
) -> Any:
    """Round ``x`` to a fixed-point grid; overflow saturates or wraps (two's complement)."""
    f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
    neg = ops.signbit(x) & (x != 0)
    ax = ops.abs(x)
    finite = ops.isfinite(x)
    ax0 = ops.where(finite, ax, 0.0)
    scaled = ops.ldexp(ax0, ops.full_int(ax0, f.frac_bits))
    scaled = ops.where((scaled == 0) & (ax0 > 0), 5e-324, scaled)  # as in round_float_grid
    i = ops.floor(scaled)
    frac = scaled - i
    odd = (i - 2.0 * ops.floor(i * 0.5)) == 1.0
    up = _magnitude_up(ops, frac, odd, neg, None, r, pol)
    mag_code = i + ops.as_float(up, i)
    code = ops.where(neg, 0.0 - mag_code, mag_code)
    lo, hi = float(f.code_min), float(f.code_max)
    if pol.overflow == "wrap":
        span = 2.0**f.bits
        # fmod is exact at any magnitude; the small remainder then reduces exactly into [lo, hi]
        # |x| * 2^frac_bits beyond float64's range is a multiple of 2^971: 0 modulo 2^bits
        code = ops.where(ops.isinf(code) & finite, 0.0, code)
        code = ops.fmod(code, span) - lo
        code = code - span * ops.floor(code / span) + lo
        inf_val = float("nan")
        out = ops.ldexp(code, ops.full_int(code, -f.frac_bits))
        out = ops.where(ops.isinf(x), inf_val, out)
    else:
        code = ops.minimum(ops.maximum(code, lo), hi)
        out = ops.ldexp(code, ops.full_int(code, -f.frac_bits))
        out = ops.where(ops.isinf(x) & ~neg, f.max, out)
        out = ops.where(ops.isinf(x) & neg, f.min, out)
    out = out + 0.0  # turn -0 into +0: fixed point has one zero
    return ops.where(ops.isnan(x), float("nan"), out)
