"""First-principles MX oracle for the tests: Fractions only, written from OCP MX v1.0 §6.3.

Independent of lowbit's code: element grids are built here from (emin, man_bits, max) read off
the spec's tables, not from lowbit's format objects.
"""

from __future__ import annotations

from fractions import Fraction

# element formats of OCP MX v1.0 §5.3: (emax_elem, emin, man_bits, max, fixed_point)
ELEMS = {
    "mxfp8_e4m3": (8, -6, 3, Fraction(448), False),
    "mxfp8_e5m2": (15, -14, 2, Fraction(57344), False),
    "mxfp6_e3m2": (4, -2, 2, Fraction(28), False),
    "mxfp6_e2m3": (2, 0, 3, Fraction(15, 2), False),
    "mxfp4": (2, 0, 1, Fraction(6), False),
    "mxint8": (0, 0, 6, Fraction(127, 64), True),  # Q1.6: step 2^-6, saturate to ±127/64
}


def floor_log2(v: Fraction) -> int:
    """Exact floor(log2 v) for v > 0."""
    assert v > 0
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e > v:
        e -= 1
    if Fraction(2) ** (e + 1) <= v:
        e += 1
    return e


def round_int(t: Fraction, mode: str) -> int:
    """Round a rational to an integer in one of the deterministic modes."""
    fl = t.numerator // t.denominator
    frac = t - fl
    if frac == 0:
        return fl
    if mode == "rtz":
        return fl if t > 0 else fl + 1
    if mode == "ru":
        return fl + 1
    if mode == "rd":
        return fl
    if mode == "ro":
        return fl if fl % 2 else fl + 1
    half = Fraction(1, 2)
    if frac != half:
        return fl + 1 if frac > half else fl
    if mode == "rne":
        return fl if fl % 2 == 0 else fl + 1
    if mode == "rna":
        return fl + 1 if t > 0 else fl
    if mode == "rnz":
        return fl if t > 0 else fl + 1
    raise ValueError(mode)


def round_elem(v: Fraction, name: str, mode: str = "rne") -> Fraction:
    """``v`` rounded onto the element grid of ``name`` with saturation to ±max."""
    _, emin, m, vmax, fixed = ELEMS[name]
    if v == 0:
        return Fraction(0)
    if fixed:
        q = Fraction(1, 64)
    else:
        q = Fraction(2) ** (max(floor_log2(abs(v)), emin) - m)
    r = round_int(v / q, mode) * q
    return max(-vmax, min(vmax, r))


def mx_block(
    values: list[Fraction], name: str, rule: str = "floor", mode: str = "rne"
) -> tuple[int, list[Fraction]]:
    """(shared exponent, element values) of one finite block."""
    emax, _, _, vmax, _ = ELEMS[name]
    amax = max(abs(v) for v in values)
    if amax == 0:
        return -127, [Fraction(0)] * len(values)
    e = floor_log2(amax) - emax
    if rule == "ceil" and amax / Fraction(2) ** e > vmax:
        e += 1
    e = max(-127, min(127, e))
    x = Fraction(2) ** e
    return e, [round_elem(v / x, name, mode) for v in values]
