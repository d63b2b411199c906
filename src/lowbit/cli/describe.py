"""Describe formats for the command line: properties, code layout, special encodings.

Everything here is derived from the format objects of :mod:`lowbit.formats` with exact
arithmetic (``fractions.Fraction``); nothing is rounded except for display.
"""

from __future__ import annotations

import math
from fractions import Fraction

from lowbit.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    PositFormat,
    get_format,
    known_names,
)

__all__ = [
    "aliases_by_name",
    "bit_fields",
    "classify",
    "code_of",
    "family",
    "fmt_num",
    "hex_code",
    "hexf",
    "layout",
    "nan_code_ranges",
    "nan_convention",
    "pow2",
    "special_codes",
]


def aliases_by_name() -> dict[str, list[str]]:
    """Canonical preset name -> the other names that resolve to it (sorted)."""
    out: dict[str, list[str]] = {}
    for name in known_names():
        canon = get_format(name).name
        if name != canon:
            out.setdefault(canon, []).append(name)
    return {k: sorted(v) for k, v in out.items()}


def fmt_num(v: float) -> str:
    """Compact display of a format property: ``2^k`` for far powers of two, else short decimal."""
    if math.isnan(v) or math.isinf(v):
        return repr(v)
    if v == 0:
        return "0"
    m, e = math.frexp(abs(v))
    if m == 0.5 and not -4 <= e - 1 <= 16:
        return f"{'-' if v < 0 else ''}2^{e - 1}"
    r = repr(v)
    if r.endswith(".0"):
        r = r[:-2]
    return r if len(r) <= 10 else f"{v:.6g}"


def hexf(v: float) -> str:
    """``float.hex`` without trailing zeros: ``0x1.cp+8``, ``0x1p-6``."""
    h = float.hex(v)
    if "p" not in h:
        return h
    mant, exp = h.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{exp}"


def pow2(v: float) -> str:
    """``2^k`` when ``|v|`` is a power of two, else ``""``."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return ""
    m, e = math.frexp(abs(v))
    return f"{'-' if v < 0 else ''}2^{e - 1}" if m == 0.5 else ""


def family(fmt: Format | BlockFormat) -> str:
    """One word naming the family: float, posit, fixed, int, block."""
    if isinstance(fmt, FloatFormat):
        return "float"
    if isinstance(fmt, PositFormat):
        return "posit"
    if isinstance(fmt, FixedFormat):
        return "fixed"
    if isinstance(fmt, IntFormat):
        return "int"
    return "block"


def layout(fmt: Format) -> str:
    """Short field layout: ``e4m3``, ``n=16 es=2``, ``Q3.12``, ``int8``."""
    if isinstance(fmt, FloatFormat):
        s = f"e{fmt.exp_bits}m{fmt.man_bits}"
        return s if fmt.signed else s + " unsigned"
    if isinstance(fmt, PositFormat):
        return f"n={fmt.n} es={fmt.es}"
    if isinstance(fmt, FixedFormat):
        return f"{'' if fmt.signed else 'U'}Q{fmt.int_bits}.{fmt.frac_bits}"
    return f"{'' if fmt.signed else 'u'}int{fmt.bits}"


def hex_code(code: int, bits: int) -> str:
    """``0x`` + the code in hex, zero-padded to the format's width."""
    return f"0x{code:0{(bits + 3) // 4}x}"


def nan_code_ranges(fmt: Format) -> list[tuple[int, int]]:
    """Every NaN (or NaR) code, as inclusive ranges ``(lo, hi)``."""
    if isinstance(fmt, PositFormat):
        return [(fmt.nar_code, fmt.nar_code)]
    if not isinstance(fmt, FloatFormat) or not fmt.has_nan:
        return []
    if fmt.special == "ieee" and fmt.bits > 16:  # nan_codes() enumerates; do it in closed form
        inf = ((1 << fmt.exp_bits) - 1) << fmt.man_bits
        sign = 1 << (fmt.exp_bits + fmt.man_bits)
        top = (1 << fmt.man_bits) - 1
        return [(inf + 1, inf + top), (sign | inf + 1, sign | inf + top)]
    codes = fmt.nan_codes()
    ranges: list[tuple[int, int]] = []
    for c in codes:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    return ranges


def nan_convention(fmt: Format) -> str:
    """How NaN is encoded, in a few words."""
    if isinstance(fmt, PositFormat):
        return f"NaR {hex_code(fmt.nar_code, fmt.bits)}"
    if not isinstance(fmt, FloatFormat):
        return "none"
    if fmt.special == "ieee":
        return "IEEE"
    ranges = nan_code_ranges(fmt)
    codes = ", ".join(hex_code(lo, fmt.bits) for lo, _ in ranges)
    if fmt.special == "fn":
        return f"fn: {codes}" if fmt.signed else f"{codes}"
    if fmt.special == "fnuz":
        return f"fnuz: {codes}"
    return "none"


def special_codes(fmt: Format) -> dict[str, str]:
    """Hex codes of +inf, -inf, NaN/NaR and -0 ("none" where the format lacks one)."""
    out: dict[str, str] = {}
    if isinstance(fmt, FloatFormat):
        spec = fmt.special_encodings()
        out["+inf"] = ", ".join(hex_code(c, fmt.bits) for c in spec["+inf"]) or "none"
        out["-inf"] = ", ".join(hex_code(c, fmt.bits) for c in spec["-inf"]) or "none"
        neg0 = ", ".join(hex_code(c, fmt.bits) for c in spec["-0"]) or "none"
    else:
        out["+inf"] = out["-inf"] = "none"
        neg0 = "none"
    ranges = nan_code_ranges(fmt)
    if ranges:
        n = sum(hi - lo + 1 for lo, hi in ranges)
        parts = [
            hex_code(lo, fmt.bits)
            if lo == hi
            else f"{hex_code(lo, fmt.bits)}..{hex_code(hi, fmt.bits)}"
            for lo, hi in ranges
        ]
        label = "NaR" if isinstance(fmt, PositFormat) else "NaN"
        out[label] = ", ".join(parts) + (f" ({n} codes)" if n > 1 else "")
    else:
        out["NaN"] = "none"
    out["-0"] = neg0
    return out


def _posit_signed(code: int, n: int) -> int:
    return code - (1 << n) if code >> (n - 1) else code


def code_of(value: float, fmt: Format) -> int:
    """The code of ``value``, which must be exactly representable in ``fmt``.

    A plain exact scalar encoder used for display (and as the fallback where
    ``lowbit.rounding.encode`` is not available). NaN maps to the format's canonical NaN:
    IEEE quiet NaN (mantissa MSB set), the positive all-ones code of "fn" formats, the
    sign-only code of "fnuz" formats, posit NaR.

    Raises:
        ValueError: ``value`` is not a value of ``fmt``.
    """
    if isinstance(fmt, FloatFormat):
        return _float_code(value, fmt)
    if isinstance(fmt, PositFormat):
        return _posit_code(value, fmt)
    fixed = fmt.fixed if isinstance(fmt, IntFormat) else fmt
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{value!r} is not a value of {fmt}")
    q = Fraction(value) * Fraction(2) ** fixed.frac_bits
    if q.denominator != 1 or not fixed.code_min <= q <= fixed.code_max:
        raise ValueError(f"{value!r} is not a value of {fmt}")
    return int(q) % (1 << fixed.bits)


def _float_code(value: float, fmt: FloatFormat) -> int:
    m = fmt.man_bits
    sign = 1 << (fmt.exp_bits + m) if fmt.signed else 0
    all_e = (1 << fmt.exp_bits) - 1
    if math.isnan(value):
        if fmt.special == "ieee" and m > 0:
            return (all_e << m) | (1 << (m - 1))
        if fmt.special == "fnuz":
            return sign
        if fmt.special == "fn":
            return (all_e << m) | ((1 << m) - 1)
        raise ValueError(f"{fmt} has no NaN")
    neg = math.copysign(1.0, value) < 0
    if neg and not fmt.signed and value != 0:
        raise ValueError(f"{value!r} is not a value of {fmt} (unsigned)")
    sbit = sign if neg else 0
    if math.isinf(value):
        if not fmt.has_inf:
            raise ValueError(f"{fmt} has no infinities")
        return sbit | (all_e << m)
    if value == 0:
        if not fmt.has_zero:
            raise ValueError(f"{fmt} has no zero")
        return sbit if fmt.has_neg_zero else 0
    a = Fraction(abs(value))
    if a > fmt.max_exact:
        raise ValueError(f"{value!r} is beyond the largest value of {fmt}")
    if fmt.has_zero and a < Fraction(2) ** fmt.emin:
        q = a / Fraction(2) ** (fmt.emin - m)
        if q.denominator != 1:
            raise ValueError(f"{value!r} is not a value of {fmt}")
        return sbit | int(q)
    e = math.frexp(abs(value))[1] - 1  # exact: value is a float
    if e < fmt.emin:
        raise ValueError(f"{value!r} is below the smallest value of {fmt}")
    q = (a / Fraction(2) ** e - 1) * (1 << m)
    if q.denominator != 1:
        raise ValueError(f"{value!r} is not a value of {fmt}")
    return sbit | ((e + fmt.bias) << m) | int(q)  # type: ignore[operator]


def _posit_code(value: float, fmt: PositFormat) -> int:
    n = fmt.n
    if math.isnan(value) or math.isinf(value):
        return fmt.nar_code
    target = Fraction(value)
    lo, hi = -((1 << (n - 1)) - 1), (1 << (n - 1)) - 1  # posit order = two's complement order
    while lo <= hi:
        mid = (lo + hi) // 2
        v = fmt.decode_exact(mid % (1 << n))
        assert v is not None
        if v == target:
            return mid % (1 << n)
        if v < target:
            lo = mid + 1
        else:
            hi = mid - 1
    raise ValueError(f"{value!r} is not a value of {fmt}")


def classify(fmt: Format, code: int) -> str:
    """Class of a code: normal, subnormal, zero, inf, nan (posits: nar; fixed/int: finite)."""
    v = fmt.decode(code)
    if isinstance(fmt, PositFormat):
        if code == fmt.nar_code:
            return "nar"
        return "zero" if v == 0 else "normal"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    if v == 0:
        return "zero"
    if isinstance(fmt, FloatFormat):
        return "subnormal" if abs(v) < fmt.min_normal else "normal"
    return "finite"


def bit_fields(code: int, fmt: Format) -> tuple[str, str]:
    """The code's bits split into fields with ``|``, and the field names.

    Floats: sign|exponent|mantissa. Posits: sign|regime|exponent|fraction for non-negative
    codes; a negative posit is stored as a two's complement, so its raw bits after the sign
    are shown unsplit. Fixed point: sign|integer|fraction. Integers: sign|magnitude bits.
    """
    n = fmt.bits
    b = format(code, f"0{n}b")
    if isinstance(fmt, FloatFormat):
        parts, names = [], []
        if fmt.signed:
            parts.append(b[0])
            names.append("sign")
        start = int(fmt.signed)
        parts.append(b[start : start + fmt.exp_bits])
        names.append("exponent")
        if fmt.man_bits:
            parts.append(b[start + fmt.exp_bits :])
            names.append("mantissa")
        return "|".join(parts), "|".join(names)
    if isinstance(fmt, PositFormat):
        if b[0] == "1":
            return f"{b[0]}|{b[1:]}", "sign|two's complement of the rest"
        rest = b[1:]
        run = 1
        while run < len(rest) and rest[run] == rest[0]:
            run += 1
        reg_end = min(run + 1, len(rest))
        regime, tail = rest[:reg_end], rest[reg_end:]
        exp, frac = tail[: fmt.es], tail[fmt.es :]
        parts = [b[0], regime] + [p for p in (exp, frac) if p]
        names = ["sign", "regime"] + [nm for nm, p in (("exponent", exp), ("fraction", frac)) if p]
        return "|".join(parts), "|".join(names)
    if isinstance(fmt, FixedFormat):
        parts, names = [], []
        start = 0
        if fmt.signed:
            parts.append(b[0])
            names.append("sign")
            start = 1
        if fmt.int_bits:
            parts.append(b[start : start + fmt.int_bits])
            names.append("integer")
        if fmt.frac_bits > 0:
            parts.append(b[start + fmt.int_bits :])
            names.append("fraction")
        return "|".join(p for p in parts if p), "|".join(names)
    if fmt.signed:
        return f"{b[0]}|{b[1:]}", "sign|bits (two's complement)"
    return b, "bits"
