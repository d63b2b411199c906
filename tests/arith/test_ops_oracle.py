"""lowbit.arith against exact rational arithmetic.

Exhaustive over every pair of finite e4m3 / e5m2 / e3m2 operands for add, sub, mul and fma
(with sampled third operands): those exact results are exact in float64, so the vectorized
Fraction oracle of ``tests/oracle.py`` classifies them. Division and square root have inexact
results; they are checked per element with Fractions (exact quotient, and for sqrt the exact
comparison of the candidate's neighbours' squares).
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest

import lowbit as lb
from lowbit import arith
from oracle import DETERMINISTIC_MODES, FloatOracle, assert_same_bits, oracle_table, pick

SMALL = ["e4m3", "e5m2", "e3m2"]


def _finite_values(name: str) -> np.ndarray:
    f = lb.get_format(name)
    vals = [f.decode(c) for c in range(1 << f.bits)]
    return np.array([v for v in vals if math.isfinite(v)])


def _pairs(name: str) -> tuple[np.ndarray, np.ndarray]:
    v = _finite_values(name)
    x, y = np.meshgrid(v, v)
    return x.ravel(), y.ravel()


def _zero_sign(
    exact_zero: np.ndarray, x: np.ndarray, y: np.ndarray, mode: str, expected: np.ndarray
) -> np.ndarray:
    """IEEE 754 §6.3: x + y == 0 exactly is +0, -0 only in RD or when both are -0."""
    both_neg = np.signbit(x) & np.signbit(y)
    neg = both_neg | (mode == "rd") & ~(~np.signbit(x) & ~np.signbit(y))
    z = np.where(neg, -0.0, 0.0)
    return np.where(exact_zero, z, expected)


@pytest.mark.parametrize("name", [*SMALL, "e4m3fnuz", "e2m1"])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("inputs", ["check", "round"])  # "round": the fused numba kernel
def test_exhaustive_pairs(name: str, op: str, inputs: str) -> None:
    x, y = _pairs(name)
    fmt = lb.get_format(name)
    exact = {"add": x + y, "sub": x - y, "mul": x * y}[op]  # exact in float64 for these
    oracle = FloatOracle(fmt)
    table = oracle_table(oracle, exact, DETERMINISTIC_MODES)
    for mode in DETERMINISTIC_MODES:
        got = getattr(arith, op)(x, y, name, mode, inputs=inputs)
        want = table[(mode, oracle.overflow_options()[0])]
        if op in ("add", "sub"):
            yy = y if op == "add" else -y
            want = _zero_sign(exact == 0, x, yy, mode, want)
            if not fmt.has_neg_zero:  # fnuz: one zero, +0
                want = np.where(want == 0, 0.0, want)
        assert_same_bits(got, want, exact, f"{op} {name} {mode} inputs={inputs}")


@pytest.mark.parametrize("name", SMALL)
def test_fma_sampled_third_operand(name: str) -> None:
    x, y = _pairs(name)
    rng = np.random.default_rng(5)
    z = rng.choice(_finite_values(name), size=x.size)
    exact = x * y + z  # exact in float64: products of 4-bit significands, small exponent span
    assert np.array_equal(exact - z, x * y)
    fmt = lb.get_format(name)
    oracle = FloatOracle(fmt)
    table = oracle_table(oracle, exact, DETERMINISTIC_MODES)
    for mode in DETERMINISTIC_MODES:
        got = arith.fma(x, y, z, name, mode, inputs="check")
        want = _zero_sign(exact == 0, x * y, z, mode, table[(mode, oracle.overflow_options()[0])])
        assert_same_bits(got, want, exact, f"fma {name} {mode}")


def _exact_round(oracle: FloatOracle, v: Fraction, mode: str) -> float:
    return oracle.round(v, mode)


@pytest.mark.parametrize("name", SMALL)
def test_exhaustive_division(name: str) -> None:
    x, y = _pairs(name)
    fmt = lb.get_format(name)
    oracle = FloatOracle(fmt)
    for mode in DETERMINISTIC_MODES:
        got = arith.div(x, y, name, mode, inputs="check")
        want = np.empty_like(x)
        for i, (a, b) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
            if b == 0:
                q = math.nan if a == 0 else math.copysign(math.inf, a) * math.copysign(1, b)
                want[i] = oracle.round(q, mode)
            elif a == 0:
                want[i] = oracle.round(math.copysign(0.0, a) * math.copysign(1, b), mode)
            else:
                want[i] = _exact_round(oracle, Fraction(a) / Fraction(b), mode)
        assert_same_bits(got, want, x, f"div {name} {mode}")


def _sqrt_round(fmt: lb.FloatFormat, a: float, mode: str) -> float:
    """Exact sqrt rounding by comparing squares: no square root is computed."""
    if a < 0:
        return math.nan
    if a == 0 or math.isinf(a):
        return a
    oracle = FloatOracle(fmt)
    fa = Fraction(a)
    grid = [g for g in oracle.values if g >= 0]
    lo = max(g for g in grid if g * g <= fa)
    if lo * lo == fa:
        return float(lo)
    hi = min(g for g in grid if g * g > fa)
    if mode in ("rne", "rna", "rnz"):
        mid = (lo + hi) / 2
        if mid * mid != fa:  # sqrt(a) is irrational or off the midpoint: no tie
            return float(lo if fa < mid * mid else hi)
    # every remaining case: pick() on any point strictly between with the same relation
    x = (lo + hi) / 2 if (lo + hi) ** 2 / 4 == fa else (lo + (hi - lo) / 3)
    return float(pick(x, lo, hi, mode, oracle.is_odd))


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e3m2"])
def test_exhaustive_sqrt(name: str) -> None:
    fmt = lb.get_format(name)
    v = _finite_values(name)
    for mode in DETERMINISTIC_MODES:
        got = arith.sqrt(v, name, mode, inputs="check")
        want = np.array([_sqrt_round(fmt, a, mode) for a in v.tolist()])
        assert_same_bits(got, want, v, f"sqrt {name} {mode}")


def _round_fraction(fmt: lb.FloatFormat, x: Fraction, mode: str) -> float:
    """Exact rounding of a nonzero Fraction inside the finite range of any FloatFormat."""
    from oracle import floor_log2

    e = max(floor_log2(abs(x)), fmt.emin)
    q = Fraction(2) ** (e - fmt.man_bits)
    lo = (x / q).__floor__() * q
    if lo == x:
        return float(x)

    def is_odd(v: Fraction) -> bool:
        if v == 0:
            return False
        ev = max(floor_log2(abs(v)), fmt.emin)
        return (abs(v) / Fraction(2) ** (ev - fmt.man_bits)).numerator % 2 == 1

    r = pick(x, lo, lo + q, mode, is_odd)
    return float(r) if r != 0 else math.copysign(0.0, x)


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp32"])
def test_random_pairs_wide_formats(name: str) -> None:
    fmt = lb.get_format(name)
    rng = np.random.default_rng(17)
    n = 3000
    x = lb.round(rng.standard_normal(n) * 2.0 ** rng.integers(-10, 10, n), name)
    y = lb.round(rng.standard_normal(n) * 2.0 ** rng.integers(-10, 10, n), name)
    y[:200] = -x[:200] * (1 + fmt.eps)  # cancellation
    y[200:400] = x[200:400] * fmt.eps / 2  # ties and sticky bits
    tiny = fmt.min_subnormal
    x[400:600] = rng.integers(1, 50, 200) * tiny  # subnormal operands
    x, y = lb.round(x, name), lb.round(y, name)
    for mode in DETERMINISTIC_MODES:
        for op, f in (
            ("add", lambda a, b: a + b),
            ("mul", lambda a, b: a * b),
            ("div", lambda a, b: a / b),
        ):
            got = getattr(arith, op)(x, y, name, mode, inputs="check")
            want = []
            for a, b in zip(x.tolist(), y.tolist(), strict=True):
                if op == "div" and b == 0:
                    want.append(math.nan)  # x/0: covered by the IEEE special-case test
                    continue
                ex = f(Fraction(a), Fraction(b))
                if ex == 0:
                    want.append(
                        _zero_sign(
                            np.array(True), np.array(a), np.array(b), mode, np.array(0.0)
                        ).item()
                    )
                elif abs(ex) >= Fraction(fmt.max):
                    want.append(math.nan)  # overflow: checked separately
                else:
                    want.append(_round_fraction(fmt, ex, mode))
            want_a = np.array(want)
            keep = ~np.isnan(want_a)
            assert_same_bits(
                np.asarray(got, dtype=np.float64)[keep],
                want_a[keep],
                x[keep],
                f"{op} {name} {mode}",
            )


def test_overflow_and_specials_follow_ieee() -> None:
    # fp16: 65504 + 16 is exactly halfway to 65536 (the would-be next value): RNE -> inf
    assert arith.add(65504.0, 16.0, "fp16", "rne") == math.inf
    assert arith.add(65504.0, 16.0, "fp16", "rtz") == 65504.0
    assert arith.add(-65504.0, -16.0, "fp16", "ru") == -65504.0
    assert arith.add(-65504.0, -16.0, "fp16", "rd") == -math.inf
    assert math.isnan(arith.add(math.inf, -math.inf, "fp16"))
    assert arith.div(1.0, -0.0, "fp16") == -math.inf
    assert math.copysign(1, arith.sqrt(-0.0, "fp16")) == -1
    assert math.isnan(arith.sqrt(-1.0, "fp16"))
    # e4m3fn has no inf: overflow is NaN by default and 448 with saturation
    assert math.isnan(arith.mul(448.0, 2.0, "e4m3"))
    assert arith.mul(448.0, 2.0, "e4m3", overflow="saturate") == 448.0


def test_inputs_policy() -> None:
    with pytest.raises(ValueError, match="not representable"):
        arith.add(0.1, 1.0, "bf16", inputs="check")
    assert arith.add(0.1, 0.0, "bf16") == float(lb.round(0.1, "bf16"))
    with pytest.raises(ValueError, match="inputs="):
        arith.add(1.0, 1.0, "bf16", inputs="sometimes")
    with pytest.raises(ValueError, match="no format"):
        arith.add(1.0, 1.0)
    with pytest.raises(ValueError, match="mantissa bits"):
        arith.add(1.0, 1.0, "fp64")


def test_stochastic_add_probability_is_exact() -> None:
    # 1 + 3*2^-13 lies 3/8 of the way from 1 to the next fp16 value (1 + 2^-10)
    n = 40000
    x = np.ones(n)
    y = np.full(n, 3 * 2.0**-13)
    got = arith.add(x, y, "fp16", "sr", seed=3, inputs="exact")
    up = np.mean(got == 1 + 2.0**-10)
    assert set(np.unique(got)) <= {1.0, 1 + 2.0**-10}
    sigma = math.sqrt(3 / 8 * 5 / 8 / n)
    assert abs(up - 3 / 8) < 5 * sigma


def test_precision_context_advances_draws_and_reproduces() -> None:
    def run() -> list[float]:
        out = []
        with lb.precision("bf16", "sr", seed=9):
            s = 0.0
            for k in range(1, 200):
                s = arith.add(s, 1.0 / k)
                out.append(s)
        return out

    a, b = run(), run()
    assert a == b
    assert lb.arith.current() is None


def test_harmonic_series_fp16_stagnates_at_published_value() -> None:
    # Higham & Pranesh (SISC 2019): fp16 RNE partial sums stop growing at 7.0859375, n = 513.
    s, n = 0.0, 1
    while True:
        t = arith.add(s, arith.div(1.0, n, "fp16"), "fp16")
        if t == s:
            break
        s, n = t, n + 1
    assert (s, n) == (7.0859375, 513)
    exact = sum(Fraction(1, k) for k in range(1, 513))
    assert abs(float(exact) - s) > 0  # the stagnated value is not the exact partial sum


def test_explicit_seed_with_running_offset_tracks_the_exact_sum() -> None:
    # Reusing one seed with offset=0 would hand every call the same draw; a running offset
    # gives fresh draws and SR follows the exact harmonic sum instead of stagnating.
    exact = float(sum(Fraction(1, k) for k in range(1, 3001)))
    s = 0.0
    for k in range(1, 3001):
        t = arith.div(1.0, k, "fp16", "sr", seed=1, offset=2 * k)
        s = arith.add(s, t, "fp16", "sr", seed=1, offset=2 * k + 1)
    assert abs(s - exact) < 0.1
    assert arith.minimum(2.0, 3.0, "fp16", "rne") == 2.0


def _random_operands(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random operands of a format with subnormals, ties, overflow neighbours and signed zeros,
    drawn within an exponent span that keeps sums and products exact in float64."""
    fmt = lb.get_format(name)
    rng = np.random.default_rng(seed)
    e = rng.integers(max(fmt.emin - fmt.man_bits, -40), min(fmt.emax, 40) + 1, size=(2, n))
    v = rng.uniform(1, 2, size=(2, n)) * np.ldexp(1.0, e) * rng.choice([-1, 1], size=(2, n))
    x, y = lb.round(v[0], name), lb.round(v[1], name)
    k = n // 8
    y[:k] = -x[:k]  # exact cancellation (signed zeros)
    y[k : 2 * k] = lb.round(x[k : 2 * k] * fmt.eps / 2, name)  # ties at the last place
    x[2 * k : 3 * k] = fmt.max * rng.choice([-1, 1], k)  # overflow boundary
    y[2 * k : 3 * k] = rng.choice([fmt.max * fmt.eps / 4, fmt.max * fmt.eps / 2, 1.0, 2.0], k)
    x[3 * k : 4 * k] = fmt.min_subnormal * rng.integers(-64, 64, k)  # subnormals and zeros
    x[4 * k : 4 * k + 64] = -0.0
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_hundreds_of_thousands_of_random_pairs(name: str, op: str) -> None:
    x, y = _random_operands(name, 300_000, seed=zlib.crc32(f"{name} {op}".encode()))
    exact = {"add": x + y, "sub": x - y, "mul": x * y}[op]
    if op != "mul":  # keep pairs whose float64 sum is exact (Knuth's TwoSum error is zero)
        b = y if op == "add" else -y
        bb = exact - x
        err = (x - (exact - bb)) + (b - bb)
        keep = (err == 0) & np.isfinite(exact)
        x, y, exact = x[keep], y[keep], exact[keep]
    oracle = FloatOracle(lb.get_format(name))
    table = oracle_table(oracle, exact, DETERMINISTIC_MODES)
    for mode in DETERMINISTIC_MODES:
        got = getattr(arith, op)(x, y, name, mode, inputs="check")
        want = table[(mode, oracle.overflow_options()[0])]
        if op != "mul":
            want = _zero_sign(exact == 0, x, y if op == "add" else -y, mode, want)
        assert_same_bits(got, want, exact, f"{op} {name} {mode}")
    assert x.size > 200_000


def _round_fraction_ieee(fmt: lb.FloatFormat, x: Fraction, mode: str) -> float:
    """Exact rounding of a nonzero Fraction with IEEE 754 §7.4 overflow: a result beyond
    ``max`` rounds between ``max`` and ``ext = 2^(emax+1)`` (the next value with an unbounded
    exponent); reaching ``ext``, or starting beyond it, overflows to ±inf in the nearest modes,
    RU for positive and RD for negative results, and to ±max otherwise (RTZ, RO, and RU/RD
    toward zero)."""
    top = Fraction(fmt.max)
    if abs(x) <= top:
        return _round_fraction(fmt, x, mode)
    neg = x < 0
    ext = Fraction(2) ** (fmt.emax + 1)
    if abs(x) < ext:  # max is odd (all-ones significand), ext is even
        lo, hi = (-ext, -top) if neg else (top, ext)
        r = pick(x, lo, hi, mode, lambda v: abs(v) == top)
        if abs(r) == top:
            return float(r)
    to_max = mode in ("rtz", "ro") or (mode == "ru" and neg) or (mode == "rd" and not neg)
    big = float(fmt.max) if to_max else math.inf
    return -big if neg else big


def _fp32_expected(op: str, a: float, b: float, mode: str, fmt: lb.FloatFormat) -> float:
    """IEEE 754 result of ``a op b`` in fp32 from the exact rational value."""
    sign_neg = (math.copysign(1, a) < 0) != (math.copysign(1, b) < 0)
    if op == "div" and b == 0:
        return math.nan if a == 0 else (-math.inf if sign_neg else math.inf)
    fa, fb = Fraction(a), Fraction(b)
    ex = {"add": fa + fb, "sub": fa - fb, "mul": fa * fb, "div": fa / fb if b else None}[op]
    if ex != 0:
        return _round_fraction_ieee(fmt, ex, mode)
    if op in ("mul", "div"):  # an exact zero product or quotient: the signs' XOR
        return -0.0 if sign_neg else 0.0
    bb = b if op == "add" else -b  # x - y is x + (-y) for the sign of an exact zero sum
    return _zero_sign(np.array(True), np.array(a), np.array(bb), mode, np.array(0.0)).item()


FP32_SAMPLE = 9_000  # per (op, mode): 4 ops x 7 modes, each its own sample


def _fp32_operands(op: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``_random_operands`` seeded by (op, mode), plus subnormal second operands for part of
    the subnormal class (subnormal sums, exact zeros of subnormals, and divisions by zero).
    For ``sub`` the second operand is negated so that the classes built for ``x + y``
    (cancellation to zero, ties, the overflow boundary) are classes of ``x - y``."""
    fmt = lb.get_format("fp32")
    seed = zlib.crc32(f"{op} {mode}".encode())
    x, y = _random_operands("fp32", FP32_SAMPLE, seed=seed)
    k = FP32_SAMPLE // 8
    y[3 * k : 3 * k + k // 2] = fmt.min_subnormal * np.random.default_rng(seed).integers(
        -64, 64, k // 2
    )
    return (x, -y) if op == "sub" else (x, y)


@pytest.mark.slow
def test_random_fp32_pairs_against_fractions() -> None:
    """Each (op, mode) draws its own operands (seeded by the pair), so the union of distinct
    operand pairs checked against the exact Fraction result exceeds 200,000. Every class of
    ``_random_operands`` is kept: subnormal operands and results (underflow to signed zeros
    included), ties, the overflow boundary (results rounded per IEEE 754 §7.4) and signed
    zeros; the test counts the special results it checked."""
    name = "fp32"
    fmt = lb.get_format(name)
    seen: list[np.ndarray] = []
    special = {"inf": 0, "max": 0, "subnormal": 0, "-0": 0}
    for op in ("add", "sub", "mul", "div"):
        for mode in DETERMINISTIC_MODES:
            x, y = _fp32_operands(op, mode)
            got = np.asarray(getattr(arith, op)(x, y, name, mode, inputs="check"), np.float64)
            want = np.array(
                [
                    _fp32_expected(op, a, b, mode, fmt)
                    for a, b in zip(x.tolist(), y.tolist(), strict=True)
                ]
            )
            assert_same_bits(got, want, x, f"{op} fp32 {mode}")
            seen.append(np.stack([x.view(np.uint64), y.view(np.uint64)], axis=1))
            with np.errstate(invalid="ignore"):  # NaN from 0/0 compares false
                special["inf"] += int(np.isinf(want).sum())
                special["max"] += int((np.abs(want) == fmt.max).sum())
                special["subnormal"] += int(((want != 0) & (np.abs(want) < fmt.min_normal)).sum())
                special["-0"] += int(((want == 0) & np.signbit(want)).sum())
    distinct = np.unique(np.concatenate(seen), axis=0).shape[0]
    assert distinct >= 200_000, distinct
    assert min(special.values()) > 0, special
