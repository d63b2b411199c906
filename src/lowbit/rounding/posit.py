"""Reference rounding to posit<n, es> (Standard for Posit Arithmetic, 2022).

The standard (§4, rounding) rounds the *infinitely precise posit bit string* of a real number:
write ``|x| = useed**k * 2**e * (1 + f)`` as regime (``k``), ``es`` exponent bits and
fraction bits, keep the first ``n - 1`` bits after the sign, and round the rest off to nearest
with ties to the even bit string. Where the exponent bits are cut off, the boundary between
the two neighbouring codes ``c`` and ``c + 1`` is the posit<n+1, es> code ``2c + 1`` — a
geometric (not arithmetic) midpoint. Two further rules of §4: a nonzero value never rounds to
zero (``0 < |x| < minpos`` gives ``minpos``) and never overflows (``|x| > maxpos`` gives
``maxpos``). §6.5 maps IEEE NaN and ±inf to NaR (returned here as NaN) and there is one zero,
so −0 gives +0.

This module does exactly that, literally and vectorized: it builds the integer code of the
truncated bit string, decides the round-up bit, and decodes the final code. Everything is
exact: the input's float64 fields are integers, codes have at most 32 bits, and decoded values
are ``ldexp`` of integers below 2**30. The fused kernel :mod:`lowbit.kernels.posit_numba`
takes a shortcut on float bits and must agree with this bit for bit.

Stochastic rounding (``mode="sr"``, not part of the standard) rounds the magnitude up to the
next posit with probability proportional to the *linear* distance, ``(|x| - lo) / (hi - lo)``,
with the same draw rule as the float reference: ``u = r >> (32 - rand_bits)``, up iff
``u < frac * 2**rand_bits``, evaluated exactly as ``u * (hi - lo) < (|x| - lo) * 2**rand_bits``
(both products are exact in float64: ``hi - lo`` is ``2**a`` or ``2**a * (2**j - 1)`` with
``j <= 16``). Values outside ``[minpos, maxpos]`` clamp as in RNE.
"""

from __future__ import annotations

import numpy as np

from lowbit.formats import PositFormat
from lowbit.rounding.modes import RoundMode
from lowbit.rounding.reference import EdgePolicy

_M52 = (1 << 52) - 1


def _bit_length(v: np.ndarray) -> np.ndarray:
    """Number of significant bits of non-negative int64 values below 2**53 (0 for 0)."""
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def decode_posit_codes(codes: np.ndarray, fmt: PositFormat) -> np.ndarray:
    """Values of posit codes (2022 standard §3, posit format); NaR decodes to NaN.

    Args:
        codes: integer array of n-bit patterns (only the low ``fmt.n`` bits are read).
        fmt: the posit format.

    Returns:
        float64 array of the exact values (every posit<n≤32, es≤4> value is a float64).
    """
    n, es = fmt.n, fmt.es
    nb = n - 1  # bits after the sign
    c = np.asarray(codes).astype(np.int64) & ((1 << n) - 1)
    neg = (c >> nb) == 1
    mag = np.where(neg, (-c) & ((1 << n) - 1), c)  # two's complement magnitude
    first = (mag >> (nb - 1)) & 1
    # The regime is the run of bits equal to the first one: count leading zeros of the
    # magnitude (or of its complement when the run is of ones) within nb bits.
    t = np.where(first == 1, ~mag & ((1 << nb) - 1), mag)
    run = nb - _bit_length(t)
    k = np.where(first == 1, run - 1, -run)
    rem = np.maximum(nb - run - 1, 0)  # bits left after the regime and its terminator
    body = mag & ((np.int64(1) << rem) - 1)
    eb = np.minimum(rem, es)  # exponent bits present; missing ones are zeros
    fb = rem - eb  # fraction bits present
    e = (body >> fb) << (es - eb)
    f = body & ((np.int64(1) << fb) - 1)
    scale = k * (1 << es) + e
    val = np.ldexp(((np.int64(1) << fb) + f).astype(np.float64), scale - fb)
    val = np.where(neg, -val, val)
    val = np.where(mag == 0, 0.0, val)
    return np.where(c == fmt.nar_code, np.nan, val)


def _truncated_code(ax: np.ndarray, fmt: PositFormat) -> tuple[np.ndarray, ...]:
    """Cut the infinitely precise bit string of ``minpos < ax < maxpos`` after n-1 bits.

    Returns ``(trunc, disc, half)``: the magnitude code of the kept bits, the discarded bits as
    an integer, and the value of a discarded 1 followed by zeros (the tie point).
    """
    n, es = fmt.n, fmt.es
    nb = n - 1
    ub = ax.view(np.uint64)
    s = (ub >> np.uint64(52)).astype(np.int64) - 1023  # floor(log2 ax); ax is normal here
    m = (ub & np.uint64(_M52)).astype(np.int64)  # the 52 fraction bits of ax
    k = s >> es  # regime: s = k * 2**es + e with 0 <= e < 2**es
    e = s - (k << es)
    pos = k >= 0
    # k >= 0: k+1 ones then a 0; k < 0: -k zeros then a 1 (the terminator).
    regime = np.where(pos, ((np.int64(1) << np.where(pos, k + 1, 0)) - 1) << 1, 1)
    rem = nb - np.where(pos, k + 2, 1 - k)  # >= 0 strictly inside (minpos, maxpos)
    body = (e << 52) | m  # exponent bits then the (finite) fraction bits of ax
    nd = es + 52 - rem  # how many body bits fall off (>= 23)
    trunc = (regime << rem) | (body >> nd)
    disc = body & ((np.int64(1) << nd) - 1)
    half = np.int64(1) << (nd - 1)
    return trunc, disc, half


def posit_codes(
    flat: np.ndarray, fmt: PositFormat, pol: EdgePolicy, r: np.ndarray | None
) -> np.ndarray:
    """Round float64 values to posit codes (int64 holding the n-bit patterns).

    Args:
        flat: 1-D float64 array.
        fmt: target posit format.
        pol: resolved policy; ``pol.mode`` is ``RoundMode.RNE`` or ``RoundMode.SR``.
        r: uint32 random draws, one per element (``SR`` only).

    Returns:
        int64 array of codes in ``[0, 2**n)``; NaN and ±inf give NaR.
    """
    if pol.mode not in (RoundMode.RNE, RoundMode.SR):
        raise ValueError(f"posits support modes 'rne' and 'sr'; got {pol.mode.value!r}")
    x = np.asarray(flat, dtype=np.float64)
    n = fmt.n
    maxpos, minpos = fmt.max, fmt.min_normal
    ax = np.abs(x)
    finite = np.isfinite(x)
    inside = finite & (ax > minpos) & (ax < maxpos)
    axi = np.where(inside, ax, 1.0)  # placeholder keeps the bit arithmetic in range
    trunc, disc, half = _truncated_code(axi, fmt)
    if pol.mode is RoundMode.RNE:
        up = (disc > half) | ((disc == half) & ((trunc & 1) == 1))
    else:
        if r is None:
            raise ValueError("mode 'sr' needs random draws r")
        lo = decode_posit_codes(trunc, fmt)
        hi = decode_posit_codes(trunc + 1, fmt)
        u = (np.asarray(r, dtype=np.uint32) >> np.uint32(32 - pol.rand_bits)).astype(np.float64)
        up = u * (hi - lo) < np.ldexp(axi - lo, pol.rand_bits)
    mag = trunc + up.astype(np.int64)
    mag = np.where(ax >= maxpos, (1 << (n - 1)) - 1, mag)  # never overflow: maxpos
    mag = np.where(ax <= minpos, 1, mag)  # never underflow: minpos ...
    mag = np.where(ax == 0, 0, mag)  # ... except for zero itself
    code = np.where(np.signbit(x) & (mag != 0), (-mag) & ((1 << n) - 1), mag)
    return np.where(finite, code, fmt.nar_code)


def round_posit_reference(
    flat: np.ndarray, fmt: PositFormat, pol: EdgePolicy, r: np.ndarray | None
) -> np.ndarray:
    """Round float64 values to posit<n, es> (2022 standard, §4), returning float64 values.

    Args:
        flat: 1-D float64 array (any finite or non-finite values).
        fmt: target posit format.
        pol: resolved policy; modes ``RNE`` (the standard's) and ``SR`` only.
        r: uint32 random draws, one per element, for ``SR``; ignored for ``RNE``.

    Returns:
        float64 array: the rounded values; NaN for NaN/±inf inputs (NaR), +0 for ±0.
    """
    return decode_posit_codes(posit_codes(flat, fmt, pol, r), fmt)


__all__ = ["decode_posit_codes", "posit_codes", "round_posit_reference"]
