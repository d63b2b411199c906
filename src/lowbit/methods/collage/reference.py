"""Plain scalar reference of the MCF operations: exact rationals, one bf16 rounding per op.

Each value is a ``fractions.Fraction``; each arithmetic step computes the exact result and
rounds it to bf16 with round-to-nearest-even (:func:`bf16_round`, written from the format's
definition: 8 significant bits, exponents down to -126, subnormals spaced 2⁻¹³³). The torch
versions in :mod:`lowbit.methods.collage.mcf` must agree with these bit for bit (tests check
it on random inputs); the reference is slow and meant for tests only.
"""

from __future__ import annotations

from fractions import Fraction

_P = 8  # significant bits of bf16
_EMIN = -126  # exponent of the smallest normal number
_MAX = Fraction(2**_P - 1, 2 ** (_P - 1)) * Fraction(2) ** 127  # largest finite bf16


def bf16_round(x: Fraction) -> Fraction:
    """``x`` rounded to bf16, round to nearest, ties to even.

    Raises:
        OverflowError: the result would be ±inf (the reference covers finite values only).
    """
    if x == 0:
        return Fraction(0)
    sign = -1 if x < 0 else 1
    a = abs(x)
    # exponent e with 2^e <= a < 2^(e+1)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    quantum = Fraction(2) ** (max(e, _EMIN) - (_P - 1))  # spacing of bf16 numbers near a
    q, rem = divmod(a, quantum)  # a = q * quantum + rem, 0 <= rem < quantum
    half = quantum / 2
    if rem > half or (rem == half and q % 2 == 1):
        q += 1
    out = q * quantum
    if out > _MAX:
        raise OverflowError(f"{float(x)!r} overflows bf16")
    return sign * out


def is_bf16(x: Fraction) -> bool:
    """Whether ``x`` is a (finite) bf16 number."""
    return bf16_round(x) == x


def fast2sum_ref(a: Fraction, b: Fraction) -> tuple[Fraction, Fraction]:
    """``s = bf16(a + b)``, ``e = bf16(b - bf16(s - a))``."""
    s = bf16_round(a + b)
    return s, bf16_round(b - bf16_round(s - a))


def grow_ref(m: Fraction, r: Fraction, v: Fraction) -> tuple[Fraction, Fraction]:
    """Grow, one rounding per op, in the order of :func:`lowbit.methods.collage.mcf.grow`."""
    s = bf16_round(m + v)
    r = bf16_round(r + bf16_round(v - bf16_round(s - m)))
    m2 = bf16_round(s + r)
    return m2, bf16_round(r - bf16_round(m2 - s))


def mult_mc_ref(
    m: Fraction, r: Fraction, a_m: Fraction, a_r: Fraction
) -> tuple[Fraction, Fraction]:
    """MultMC with an exact fma for the product error (the definition, not an emulation)."""
    p = bf16_round(m * a_m)
    e = bf16_round(m * a_m - p)
    r = bf16_round(bf16_round(bf16_round(r * a_m) + bf16_round(m * a_r)) + e)
    m2 = bf16_round(p + r)
    return m2, bf16_round(r - bf16_round(m2 - p))


__all__ = ["bf16_round", "fast2sum_ref", "grow_ref", "is_bf16", "mult_mc_ref"]
