"""Exact rounding oracle: slow, plain, obviously right; independent of lowbit's rounding code.

Everything here is rational arithmetic with :class:`fractions.Fraction`. A format object is read
only for its bit layout (exponent/mantissa widths, bias, special-value convention, fixed-point
widths); its values are decoded here from the bits, by a decoder written from the layout
(IEEE 754-2019 §3.4 for the binary encoding, OCP OFP8 §5 for ``fn``, the AMD/Graphcore
convention for ``fnuz``, OCP MX v1.0 §5.3 for ``none``). Tests check that this decoder agrees
with ``FloatFormat.decode_exact``.

Rounding of a real x (:meth:`FloatOracle.round`): find the neighbours lo ≤ x ≤ hi among the
format's finite values (bisect on the sorted list), extended by one step above the largest
value, ``ext = max + 2**(emax - man_bits)`` (the value the format would have next with an
unbounded exponent: ``2**(emax+1)`` for IEEE/"none" formats, 480 for OCP E4M3); then apply the
mode. A result of ±ext, or an x beyond ±ext, is an overflow, handled per IEEE 754 §7.4:
nearest modes → ±inf, RTZ → ±max, RU → +inf / −max, RD → +max / −inf; RO (not in IEEE) → ±max
like truncation. "±inf" becomes NaN in formats without infinities (``overflow="nan"``), and
``overflow="saturate"`` clamps every overflow and infinite input to ±max.

Conventions where "even"/"odd" is ambiguous (documented, not derived from lowbit): the parity of
a value is that of its integral significand ``|v| / 2**(max(floor(log2|v|), emin) - man_bits)``.
With precision 1 (``man_bits == 0``) every nonzero value is odd, so a round-to-nearest-even tie
goes away from zero and round-to-odd truncates. With ``subnormals=False`` the neighbours 0 and
min_normal are both even: the RNE tie goes to min_normal (as MATLAB chop does) and round-to-odd
gives min_normal for any inexact x between them.

Fixed point (:class:`FixedOracle`): the grid k·2^-f for all integers k (unbounded), rounded in
the mode (parity of k for ties/odd), then the code k is clamped (``saturate``) or reduced modulo
2^bits into the two's complement range (``wrap``). Fixed point has a single zero (+0); ±inf
saturate to the extreme values, or give NaN under ``wrap`` (no wrapped value exists).

:func:`oracle_table` evaluates the oracle for a whole array at once: inputs are classified by
exact float64 comparisons against the grid and its midpoints (all exact in float64 for formats of
at most 16 bits), and the Fraction oracle is run once per distinct (interval, position) class.
Tests validate that shortcut against :meth:`round` element by element on random subsets.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import numpy as np

DETERMINISTIC_MODES = ("rne", "rna", "rnz", "rtz", "ru", "rd", "ro")
NAN = float("nan")

# --------------------------------------------------------------------------------------------
# Decoders written from the bit layout


def decode_float_code(
    code: int, exp_bits: int, man_bits: int, bias: int, special: str, signed: bool = True
) -> Fraction | str:
    """Value of one code: a Fraction, or ``"nan"``, ``"+inf"``, ``"-inf"``, ``"-0"``."""
    man = code % (1 << man_bits)
    ef = (code >> man_bits) % (1 << exp_bits)
    s = (code >> (exp_bits + man_bits)) & 1 if signed else 0
    all_ones_e = (1 << exp_bits) - 1
    all_ones_m = (1 << man_bits) - 1
    if special == "ieee" and ef == all_ones_e:
        if man:
            return "nan"
        return "-inf" if s else "+inf"
    if special == "fn" and ef == all_ones_e and man == all_ones_m:
        return "nan"
    if special == "fnuz" and s == 1 and ef == 0 and man == 0:
        return "nan"
    if ef == 0:  # zero and subnormals: 0.man × 2^(1 - bias)
        mag = Fraction(man, 1 << man_bits) * Fraction(2) ** (1 - bias)
    else:  # normal: 1.man × 2^(ef - bias)
        mag = (1 + Fraction(man, 1 << man_bits)) * Fraction(2) ** (ef - bias)
    if mag == 0 and s:
        return "-0"
    return -mag if s else mag


def decode_fixed_code(code: int, bits: int, frac_bits: int, signed: bool) -> Fraction:
    """Value of a two's complement (or unsigned) ``bits``-wide code scaled by 2^-frac_bits."""
    k = code - (1 << bits) if signed and code >= (1 << (bits - 1)) else code
    return Fraction(k) / Fraction(2) ** frac_bits


def floor_log2(v: Fraction) -> int:
    """floor(log2 v) for v > 0, exactly."""
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e > v:
        e -= 1
    assert Fraction(2) ** e <= v < Fraction(2) ** (e + 1)
    return e


def _as_float(v: Fraction) -> float:
    f = float(v)
    assert Fraction(f) == v, f"{v} is not exact in float64"
    return f


# --------------------------------------------------------------------------------------------
# The shared mode rule


def pick(x: Fraction, lo: Fraction, hi: Fraction, mode: str, is_odd) -> Fraction:
    """Round x with lo < x < hi, adjacent values of a grid (0 is a grid value, so lo and hi
    never straddle 0). ``is_odd(v)`` gives the parity of a grid value."""
    assert lo < x < hi
    toward0, away = (lo, hi) if x > 0 else (hi, lo)
    if mode == "rtz":
        return toward0
    if mode == "ru":
        return hi
    if mode == "rd":
        return lo
    if mode in ("rne", "rna", "rnz"):
        d_t, d_a = abs(x - toward0), abs(away - x)
        if d_t != d_a:
            return toward0 if d_t < d_a else away
        if mode == "rna":
            return away
        if mode == "rnz":
            return toward0
        odd_t, odd_a = is_odd(toward0), is_odd(away)
        if odd_t != odd_a:
            return toward0 if odd_a else away
        return away  # both odd (precision 1) or both even (0 / min_normal): see module doc
    if mode == "ro":
        if is_odd(toward0):
            return toward0
        return away  # away is odd, or both even (0 / min_normal without subnormals)
    raise ValueError(f"not a deterministic mode: {mode!r}")


def _split_input(x: float | Fraction) -> tuple[str, Fraction | None, bool]:
    """('nan'|'inf'|'zero'|'real', exact value, negative)."""
    if isinstance(x, Fraction):
        return ("zero" if x == 0 else "real"), x, x < 0
    x = float(x)
    if math.isnan(x):
        return "nan", None, False
    neg = math.copysign(1.0, x) < 0
    if math.isinf(x):
        return "inf", None, neg
    if x == 0:
        return "zero", Fraction(0), neg
    return "real", Fraction(x), neg


# --------------------------------------------------------------------------------------------
# Floating point


class FloatOracle:
    """Exact rounding to a signed FloatFormat of at most 16 bits.

    Args:
        fmt: a lowbit ``FloatFormat`` (only its layout fields are read).
        subnormals: ``False`` drops the values 0 < |v| < min_normal from the grid.
    """

    def __init__(self, fmt, subnormals: bool = True) -> None:
        if not fmt.signed or not fmt.has_zero:
            raise NotImplementedError("the oracle covers signed formats with a zero")
        e, m = fmt.exp_bits, fmt.man_bits
        self.fmt = fmt
        self.man_bits = m
        self.special = fmt.special
        self.bits = 1 + e + m
        assert self.bits <= 16, "enumerating codes is for formats of at most 16 bits"
        self.has_inf = fmt.special == "ieee"
        self.has_nan = fmt.special != "none"
        self.codes: dict[int, Fraction | str] = {
            c: decode_float_code(c, e, m, fmt.bias, fmt.special) for c in range(1 << self.bits)
        }
        finite = {v for v in self.codes.values() if isinstance(v, Fraction)}
        self.has_neg_zero = "-0" in self.codes.values()
        self.emin = 1 - fmt.bias
        self.min_normal = Fraction(2) ** self.emin
        if not subnormals:
            finite = {v for v in finite if v == 0 or abs(v) >= self.min_normal}
        self.subnormals = subnormals
        self.values: list[Fraction] = sorted(finite)
        self.max = self.values[-1]
        assert self.values[0] == -self.max
        self.emax = floor_log2(self.max)
        self.ext = self.max + Fraction(2) ** (self.emax - m)
        self.grid: list[Fraction] = [-self.ext, *self.values, self.ext]
        self._grid_f = [_as_float(v) for v in self.grid]
        self._float = dict(zip(self.grid, self._grid_f, strict=True))
        self._odd: dict[Fraction, bool] = {}

    def __repr__(self) -> str:
        return f"FloatOracle({self.fmt.name}, subnormals={self.subnormals})"

    def is_odd(self, v: Fraction) -> bool:
        """Parity of the integral significand (unbounded exponent, floored at emin)."""
        if v in self._odd:
            return self._odd[v]
        if v == 0:
            return False
        q = abs(v) / Fraction(2) ** (max(floor_log2(abs(v)), self.emin) - self.man_bits)
        assert q.denominator == 1, (v, q)
        self._odd[v] = q.numerator % 2 == 1
        return self._odd[v]

    def overflow_options(self) -> tuple[str, ...]:
        """Accepted ``overflow=`` values of lowbit for this format (first: the default)."""
        if self.has_inf:
            return ("inf", "saturate")
        if self.has_nan:
            return ("nan", "saturate")
        return ("saturate",)

    def _signed_zero(self, neg: bool) -> float:
        return -0.0 if (neg and self.has_neg_zero) else 0.0

    def _infinity(self, neg: bool, overflow: str) -> float:
        """What a would-be ±inf becomes."""
        if overflow == "saturate":
            return -float(self.max) if neg else float(self.max)
        if self.has_inf:
            return -math.inf if neg else math.inf
        assert self.has_nan, "formats without NaN always saturate"
        return NAN

    def _overflow(self, neg: bool, mode: str, overflow: str) -> float:
        """IEEE 754 §7.4: the result of an overflow, per mode."""
        to_max = {"rtz": True, "ro": True, "ru": neg, "rd": not neg}.get(mode, False)
        if to_max:
            return -float(self.max) if neg else float(self.max)
        return self._infinity(neg, overflow)

    def locate(self, x: Fraction) -> tuple[Fraction, Fraction] | None:
        """Neighbours lo ≤ x ≤ hi in the extended grid; None beyond ±ext."""
        if abs(x) > self.ext:
            return None
        g = self.grid
        i = bisect.bisect_left(self._grid_f, float(x))  # a first guess, corrected exactly:
        i = min(max(i, 1), len(g) - 1)
        while g[i - 1] >= x and i > 1:
            i -= 1
        while g[i] < x:
            i += 1
        if g[i - 1] == x:
            return x, x
        assert g[i - 1] < x <= g[i]
        return (x, x) if g[i] == x else (g[i - 1], g[i])

    def round_all(
        self, x: float | Fraction, modes=DETERMINISTIC_MODES, overflows=None
    ) -> dict[tuple[str, str], float]:
        """Exact rounding of one value under several (mode, overflow) pairs at once."""
        overflows = overflows or self.overflow_options()
        for ov in overflows:
            assert ov in self.overflow_options(), (ov, self.fmt)
        kind, v, neg = _split_input(x)
        nb = self.locate(v) if kind == "real" else None  # type: ignore[arg-type]
        out = {}
        for mode in modes:
            if kind == "real":
                assert v is not None
                if nb is None:
                    r = None
                else:
                    lo, hi = nb
                    r = self._float[lo if lo == hi else pick(v, lo, hi, mode, self.is_odd)]
                    if abs(r) == self._grid_f[-1]:
                        r = None
            for ov in overflows:
                if kind == "nan":
                    out[(mode, ov)] = NAN
                elif kind == "inf":
                    out[(mode, ov)] = self._infinity(neg, ov)
                elif kind == "zero" or r == 0:
                    out[(mode, ov)] = self._signed_zero(neg)
                elif r is None:
                    out[(mode, ov)] = self._overflow(neg, mode, ov)
                else:
                    out[(mode, ov)] = r
        return out

    def round(self, x: float | Fraction, mode: str, overflow: str | None = None) -> float:
        """Exact rounding of one value (a float, possibly ±0/±inf/NaN, or a Fraction)."""
        ov = overflow or self.overflow_options()[0]
        return self.round_all(x, (mode,), (ov,))[(mode, ov)]

    def sr_split(self, x: Fraction) -> tuple[Fraction, Fraction, Fraction]:
        """(toward-zero neighbour, away neighbour, P(away)) for stochastic rounding of x."""
        nb = self.locate(x)
        assert nb is not None
        lo, hi = nb
        if lo == hi:
            return lo, lo, Fraction(0)
        toward0, away = (lo, hi) if x > 0 else (hi, lo)
        return toward0, away, abs(x - toward0) / (hi - lo)

    # ---- vectorized classification (the shortcut of oracle_table) --------------------------
    def classify(self, x: np.ndarray) -> tuple[np.ndarray, dict[int, float | Fraction]]:
        """Key per element and a representative input per key (see :func:`oracle_table`)."""
        g = np.array([_as_float(v) for v in self.grid])
        pairs = zip(self.grid[:-1], self.grid[1:], strict=True)
        mids = np.array([_as_float((a + b) / 2) for a, b in pairs])
        x = np.asarray(x, dtype=np.float64)
        keys = np.full(x.shape, -1, dtype=np.int64)  # NaN
        with np.errstate(invalid="ignore"):
            keys[x == np.inf] = -2
            keys[x == -np.inf] = -3
            keys[(x == 0) & ~np.signbit(x)] = -4
            keys[(x == 0) & np.signbit(x)] = -5
            keys[np.isfinite(x) & (x > g[-1])] = -6
            keys[np.isfinite(x) & (x < g[0])] = -7
            inside = (x >= g[0]) & (x <= g[-1]) & (x != 0)
        xi = x[inside]
        j = np.searchsorted(g, xi, side="right") - 1
        j = np.minimum(j, len(g) - 1)
        jm = np.minimum(j, len(mids) - 1)
        cls = np.where(g[j] == xi, 0, np.where(xi < mids[jm], 1, np.where(xi == mids[jm], 2, 3)))
        keys[inside] = 4 * j + cls
        reps: dict[int, float | Fraction] = {
            -1: NAN,
            -2: math.inf,
            -3: -math.inf,
            -4: 0.0,
            -5: -0.0,
            -6: 2 * self.ext,
            -7: -2 * self.ext,
        }
        for k in np.unique(keys[inside]).tolist():
            jj, c = divmod(k, 4)
            lo = self.grid[jj]
            reps[k] = lo if c == 0 else lo + (self.grid[jj + 1] - lo) * Fraction(c, 4)
        return keys, reps


# --------------------------------------------------------------------------------------------
# Fixed point and integers


class FixedOracle:
    """Exact rounding to a FixedFormat or IntFormat (grid k·2^-f, two's complement codes)."""

    def __init__(self, fmt) -> None:
        if hasattr(fmt, "frac_bits"):
            self.frac_bits, self.signed = fmt.frac_bits, fmt.signed
            self.bits = fmt.int_bits + fmt.frac_bits + int(fmt.signed)
        else:  # IntFormat
            self.frac_bits, self.signed, self.bits = 0, fmt.signed, fmt.bits
        self.fmt = fmt
        self.kmin = -(1 << (self.bits - 1)) if self.signed else 0
        self.kmax = (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1
        self.step = Fraction(1) / Fraction(2) ** self.frac_bits
        if self.bits <= 16:
            vals = sorted(
                decode_fixed_code(c, self.bits, self.frac_bits, self.signed)
                for c in range(1 << self.bits)
            )
            assert vals == [k * self.step for k in range(self.kmin, self.kmax + 1)]
        self.max = self.kmax * self.step
        self.min = self.kmin * self.step

    def __repr__(self) -> str:
        return f"FixedOracle({self.fmt.name})"

    @staticmethod
    def overflow_options() -> tuple[str, ...]:
        return ("saturate", "wrap")

    def _is_odd(self, v: Fraction) -> bool:
        k = v / self.step
        assert k.denominator == 1
        return k.numerator % 2 == 1

    def _finish(self, k: int, overflow: str) -> float:
        if overflow == "saturate":
            k = min(max(k, self.kmin), self.kmax)
        else:
            k = (k - self.kmin) % (1 << self.bits) + self.kmin
        return _as_float(k * self.step) + 0.0  # +0.0: a single zero

    def round_all(
        self, x: float | Fraction, modes=DETERMINISTIC_MODES, overflows=None
    ) -> dict[tuple[str, str], float]:
        """Exact rounding of one value under several (mode, overflow) pairs at once."""
        overflows = overflows or self.overflow_options()
        kind, v, neg = _split_input(x)
        out = {}
        for mode in modes:
            if kind == "real":
                assert v is not None
                s = v / self.step
                k = math.floor(s)
                if s != k:
                    r = pick(v, k * self.step, (k + 1) * self.step, mode, self._is_odd)
                    k = int(r / self.step)
            for ov in overflows:
                assert ov in self.overflow_options()
                if kind == "nan" or (kind == "inf" and ov == "wrap"):
                    out[(mode, ov)] = NAN
                elif kind == "inf":
                    out[(mode, ov)] = float(self.min) if neg else float(self.max)
                elif kind == "zero":
                    out[(mode, ov)] = 0.0
                else:
                    out[(mode, ov)] = self._finish(k, ov)
        return out

    def round(self, x: float | Fraction, mode: str, overflow: str | None = None) -> float:
        """Exact rounding of one value (a float, possibly ±0/±inf/NaN, or a Fraction)."""
        ov = overflow or "saturate"
        return self.round_all(x, (mode,), (ov,))[(mode, ov)]

    def sr_split(self, x: Fraction) -> tuple[Fraction, Fraction, Fraction]:
        s = x / self.step
        k = math.floor(s)
        lo, hi = k * self.step, (k + 1) * self.step
        if s == k:
            return x, x, Fraction(0)
        toward0, away = (lo, hi) if x > 0 else (hi, lo)
        return toward0, away, abs(x - toward0) / self.step

    def classify(self, x: np.ndarray) -> tuple[np.ndarray, dict[int, float | Fraction]]:
        """Keys by sign, k = floor(|x|·2^f) and position in (k, k+1); exact in float64."""
        x = np.asarray(x, dtype=np.float64)
        keys = np.full(x.shape, -1, dtype=np.int64)
        reps: dict[int, float | Fraction] = {
            -1: NAN,
            -2: math.inf,
            -3: -math.inf,
            -4: 0.0,
            -5: -0.0,
        }
        with np.errstate(invalid="ignore"):
            keys[x == np.inf] = -2
            keys[x == -np.inf] = -3
            keys[(x == 0) & ~np.signbit(x)] = -4
            keys[(x == 0) & np.signbit(x)] = -5
            inside = np.isfinite(x) & (x != 0)
            huge = inside & (np.abs(np.ldexp(x, self.frac_bits)) >= 2.0**52)  # integers
        inside &= ~huge
        hv, hinv = np.unique(x[huge], return_inverse=True)
        keys[huge] = -10 - hinv.reshape(-1)
        reps.update({-10 - j: Fraction(float(v)) for j, v in enumerate(hv.tolist())})
        s = np.ldexp(x[inside], self.frac_bits)
        a = np.abs(s)  # magnitudes: a - floor(a) is exact, s - floor(s) is not for s < 0
        k = np.floor(a)
        fr = a - k
        cls = np.where(fr == 0, 0, np.where(fr < 0.5, 1, np.where(fr == 0.5, 2, 3)))
        key = 8 * k.astype(np.int64) + 2 * cls + (s < 0)
        keys[inside] = key
        for kk in np.unique(key).tolist():
            kq, rest = divmod(kk, 8)
            c, neg = divmod(rest, 2)
            reps[kk] = (-1 if neg else 1) * (kq + Fraction(c, 4)) * self.step
        return keys, reps


def oracle_for(fmt, subnormals: bool = True) -> FloatOracle | FixedOracle:
    """The oracle for a FloatFormat (signed, ≤ 16 bits), FixedFormat or IntFormat."""
    if hasattr(fmt, "exp_bits"):
        return FloatOracle(fmt, subnormals)
    return FixedOracle(fmt)


def oracle_table(
    oracle: FloatOracle | FixedOracle, x: np.ndarray, modes=DETERMINISTIC_MODES, overflows=None
) -> dict[tuple[str, str], np.ndarray]:
    """Oracle results (float64) for every element of ``x``, per (mode, overflow).

    Elements strictly between two adjacent grid values round alike, apart from the midpoint;
    so the Fraction oracle runs once per distinct (interval, below/at/above midpoint) class, on
    a representative of it, and the results are scattered back.
    """
    overflows = overflows or oracle.overflow_options()
    keys, reps = oracle.classify(x)
    uniq, inverse = np.unique(keys, return_inverse=True)
    per_key = [oracle.round_all(reps[k], modes, overflows) for k in uniq.tolist()]
    out = {}
    for mode in modes:
        for ov in overflows:
            vals = np.array([r[(mode, ov)] for r in per_key])
            out[(mode, ov)] = vals[inverse].reshape(np.shape(x))
    return out


# --------------------------------------------------------------------------------------------
# Inputs and comparison


def all_float16() -> np.ndarray:
    """Every fp16 code, upcast exactly to float64."""
    with np.errstate(invalid="ignore"):  # signalling NaN codes
        return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)


def all_bfloat16() -> np.ndarray:
    """Every bf16 code, upcast exactly to float64 (bits shifted into the top of an fp32)."""
    with np.errstate(invalid="ignore"):  # signalling NaN codes
        return (
            (np.arange(1 << 16, dtype=np.uint32) << np.uint32(16))
            .view(np.float32)
            .astype(np.float64)
        )


def mismatches(actual, expected) -> np.ndarray:
    """Indices where the float64 bit patterns differ (any NaN equals any NaN; −0 ≠ +0)."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        a = np.asarray(actual, dtype=np.float64).reshape(-1)
        e = np.asarray(expected, dtype=np.float64).reshape(-1)
    same = (a.view(np.uint64) == e.view(np.uint64)) | (np.isnan(a) & np.isnan(e))
    return np.flatnonzero(~same)


def assert_same_bits(actual, expected, inputs, what: str = "") -> None:
    """Fail with the first few differing inputs when the bit patterns differ."""
    bad = mismatches(actual, expected)
    if bad.size:
        with np.errstate(invalid="ignore"):
            a = np.asarray(actual, dtype=np.float64).reshape(-1)
            e = np.asarray(expected, dtype=np.float64).reshape(-1)
            x = np.asarray(inputs, dtype=np.float64).reshape(-1)
        rows = "\n".join(
            f"  x={x[i]!r} ({x[i].hex()}): got {a[i]!r}, expected {e[i]!r}" for i in bad[:8]
        )
        raise AssertionError(f"{what}: {bad.size} of {a.size} differ, e.g.\n{rows}")
