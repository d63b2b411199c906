"""Hypothesis properties of ``lowbit.round``: monotonicity, idempotence, sign symmetry,
RU(−x) = −RD(x), and random minifloat formats (as Brevitas' ``random_minifloat_format``)
checked against the exact oracle."""

from __future__ import annotations

import functools
import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lowbit as lb
from oracle import DETERMINISTIC_MODES, FloatOracle, assert_same_bits

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PRESETS = [
    "fp16",
    "bf16",
    "e5m2",
    "e4m3fn",
    "e4m3-ieee",
    "e4m3fnuz",
    "e5m2fnuz",
    "e3m2",
    "e2m3",
    "e2m1",
    "tf32",
    "fp32",
    "int8",
    "q3.12",
    "uq0.8",
]
SIGNED = [p for p in PRESETS if p != "uq0.8"]  # symmetry needs −x in the format
SYMMETRIC = ("rne", "rna", "rnz", "rtz", "ro")


@st.composite
def minifloat_formats(draw) -> lb.FloatFormat:
    """A random small float format: exponent 1..6 bits, mantissa 0..7, any special rule,
    bias the IEEE default or one off it."""
    special = draw(st.sampled_from(["ieee", "fn", "fnuz", "none"]))
    exp_bits = draw(st.integers(2 if special == "ieee" else 1, 6))
    man_bits = draw(st.integers(0, 7))
    bias = (1 << (exp_bits - 1)) - 1 + draw(st.integers(-1, 1))
    try:
        return lb.FloatFormat(exp_bits, man_bits, bias, special)
    except ValueError:
        assume(False)
        raise


@functools.cache
def _oracle(fmt: lb.FloatFormat, subnormals: bool) -> FloatOracle:
    return FloatOracle(fmt, subnormals)


@st.composite
def inputs_for(draw, fmt: lb.FloatFormat, n: int = 40) -> np.ndarray:
    """Values around the format's grid: grid points, midpoints, their float64 neighbours,
    values beyond the range and far below it, zeros, infinities and NaN."""
    o = _oracle(fmt, True)
    grid = [float(v) for v in o.grid]
    xs = []
    for _ in range(n):
        kind = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(grid) - 2))
        a, b = grid[i], grid[i + 1]
        if kind == 0:
            xs.append(a)
        elif kind == 1:
            xs.append((a + b) / 2)
        elif kind == 2:
            t = draw(st.floats(0, 1))
            xs.append(a + (b - a) * t)
        elif kind == 3:
            xs.append(float(np.nextafter((a + b) / 2, draw(st.sampled_from([-np.inf, np.inf])))))
        elif kind == 4:
            xs.append(draw(st.floats(allow_nan=True, allow_infinity=True)))
        else:
            sign = draw(st.sampled_from([1.0, -1.0]))  # tiny values, ±0 included
            xs.append(sign * draw(st.floats(0, 1)) * grid[-1] * 2.0 ** -draw(st.integers(0, 80)))
    return np.array(xs)


def _overflow(fmt: lb.FloatFormat) -> str:
    """An overflow option under which results stay ordered (no NaN for finite inputs)."""
    return "inf" if fmt.has_inf else "saturate"


@SETTINGS
@given(
    data=st.data(),
    fmt=minifloat_formats(),
    mode=st.sampled_from(DETERMINISTIC_MODES),
    subnormals=st.booleans(),
)
def test_random_minifloats_match_the_oracle(data, fmt, mode, subnormals):
    o = _oracle(fmt, subnormals)
    x = data.draw(inputs_for(fmt))
    for ov in o.overflow_options():
        want = np.array([o.round(float(v), mode, ov) for v in x])
        for impl in ("reference", "auto"):
            got = lb.round(x, fmt, mode, overflow=ov, subnormals=subnormals, impl=impl)
            assert_same_bits(got, want, x, f"{fmt!r} {mode} {ov} subn={subnormals} {impl}")


def _finite_floats():
    return st.floats(allow_nan=False, allow_infinity=True, width=64)


@SETTINGS
@given(
    name=st.sampled_from(PRESETS),
    mode=st.sampled_from(DETERMINISTIC_MODES),
    xs=st.lists(_finite_floats(), min_size=2, max_size=30),
    subnormals=st.booleans(),
)
def test_monotone(name, mode, xs, subnormals):
    fmt = lb.get_format(name)
    ov = _overflow(fmt) if isinstance(fmt, lb.FloatFormat) else "saturate"
    x = np.sort(np.array(xs))
    r = lb.round(x, fmt, mode, overflow=ov, subnormals=subnormals)
    assert not np.any(np.isnan(r))
    assert np.all(r[1:] >= r[:-1]), (x, r)


@SETTINGS
@given(
    fmt=minifloat_formats(),
    mode=st.sampled_from(DETERMINISTIC_MODES),
    a=st.floats(-1e6, 1e6),
    b=st.floats(-1e6, 1e6),
    subnormals=st.booleans(),
)
def test_monotone_random_formats(fmt, mode, a, b, subnormals):
    x, y = sorted((a, b))
    ov = _overflow(fmt)
    rx, ry = lb.round(np.array([x, y]), fmt, mode, overflow=ov, subnormals=subnormals)
    assert rx <= ry, (x, y, rx, ry)


@SETTINGS
@given(
    name=st.sampled_from(PRESETS),
    mode=st.sampled_from(DETERMINISTIC_MODES),
    xs=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30),
    subnormals=st.booleans(),
)
def test_idempotent(name, mode, xs, subnormals):
    fmt = lb.get_format(name)
    x = np.array(xs)
    once = lb.round(x, fmt, mode, subnormals=subnormals)
    for m in DETERMINISTIC_MODES:  # a rounded value is exact: every mode keeps it
        twice = lb.round(once, fmt, m, subnormals=subnormals)
        assert_same_bits(twice, once, x, f"{name}: {mode} then {m}")


def _negate(r: np.ndarray, fmt) -> np.ndarray:
    """−r in the format: formats without −0 (fnuz, fixed point) give +0 for −0."""
    n = -r
    if not getattr(fmt, "has_neg_zero", False):
        n = n + 0.0
    return n


@SETTINGS
@given(
    name=st.sampled_from(SIGNED),
    mode=st.sampled_from(SYMMETRIC),
    xs=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30),
    subnormals=st.booleans(),
)
def test_sign_symmetry(name, mode, xs, subnormals):
    fmt = lb.get_format(name)
    x = np.array(xs)
    if isinstance(fmt, (lb.FixedFormat, lb.IntFormat)):  # symmetric only inside the range
        x = x[np.isfinite(x) & (np.abs(x) <= fmt.max)]
    pos = lb.round(x, fmt, mode, subnormals=subnormals)
    neg = lb.round(-x, fmt, mode, subnormals=subnormals)
    assert_same_bits(neg, _negate(pos, fmt), x, f"{name} {mode}")


@SETTINGS
@given(fmt=minifloat_formats(), mode=st.sampled_from(SYMMETRIC), data=st.data())
def test_sign_symmetry_random_formats(fmt, mode, data):
    x = data.draw(inputs_for(fmt, 20))
    for ov in _oracle(fmt, True).overflow_options():
        pos = lb.round(x, fmt, mode, overflow=ov)
        neg = lb.round(-x, fmt, mode, overflow=ov)
        assert_same_bits(neg, _negate(pos, fmt), x, f"{fmt!r} {mode} {ov}")


@SETTINGS
@given(
    name=st.sampled_from(SIGNED),
    xs=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30),
    subnormals=st.booleans(),
)
def test_ru_of_negation_is_negated_rd(name, xs, subnormals):
    fmt = lb.get_format(name)
    x = np.array(xs)
    if isinstance(fmt, (lb.FixedFormat, lb.IntFormat)):
        x = x[np.isfinite(x) & (np.abs(x) <= fmt.max)]
    ru = lb.round(-x, fmt, "ru", subnormals=subnormals)
    rd = lb.round(x, fmt, "rd", subnormals=subnormals)
    assert_same_bits(ru, _negate(rd, fmt), x, name)


@SETTINGS
@given(fmt=minifloat_formats(), data=st.data())
def test_ru_of_negation_is_negated_rd_random_formats(fmt, data):
    x = data.draw(inputs_for(fmt, 20))
    for ov in _oracle(fmt, True).overflow_options():
        ru = lb.round(-x, fmt, "ru", overflow=ov)
        rd = lb.round(x, fmt, "rd", overflow=ov)
        assert_same_bits(ru, _negate(rd, fmt), x, f"{fmt!r} {ov}")


@SETTINGS
@given(fmt=minifloat_formats(), mode=st.sampled_from(DETERMINISTIC_MODES), data=st.data())
def test_directed_modes_bracket_x(fmt, mode, data):
    """RD(x) ≤ x ≤ RU(x), RTZ never grows |x|, and every mode returns RD(x) or RU(x)."""
    x = data.draw(inputs_for(fmt, 20))
    x = x[np.isfinite(x)]
    ov = _overflow(fmt)
    rd = lb.round(x, fmt, "rd", overflow=ov)
    ru = lb.round(x, fmt, "ru", overflow=ov)
    r = lb.round(x, fmt, mode, overflow=ov)
    inside = np.abs(x) <= fmt.max
    assert np.all((rd <= x)[inside]) and np.all((x <= ru)[inside])
    assert np.all(((r == rd) | (r == ru))[inside])
    assert np.all(np.abs(lb.round(x, fmt, "rtz", overflow=ov)) <= np.abs(x))
    assert math.isfinite(float(np.sum(rd[inside])))
