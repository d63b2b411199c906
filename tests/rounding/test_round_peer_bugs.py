"""One regression test per bug found in the peers (pychop, qtorch, CPFloat, MATLAB chop), as
listed in the formats-and-rounding note. Expected values are worked out by hand here and
confirmed with the Fraction oracle."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import lowbit as lb
from oracle import FloatOracle, assert_same_bits

IMPLS = ("reference", "auto")


@functools.cache
def _oracle(name: str, subnormals: bool) -> FloatOracle:
    return FloatOracle(lb.get_format(name), subnormals)


def _check(x, name: str, mode: str, want, impl: str, **kw) -> None:
    x = np.asarray(x, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    o = _oracle(name, kw.get("subnormals", True))
    oracle = [o.round(float(v), mode, kw.get("overflow")) for v in x]
    assert_same_bits(oracle, want, x, f"oracle disagrees with the hand-worked values ({name})")
    assert_same_bits(lb.round(x, name, mode, impl=impl, **kw), want, x, f"{name} {mode} {impl}")


@pytest.mark.parametrize("impl", IMPLS)
def test_pychop_values_above_2_pow_emax_plus_1_become_zero(impl):
    """pychop: [2^(emax+1), 2^(emax+2)) gave 0 instead of overflowing."""
    x = [65536.0, 70000.0, 100000.0, 131071.0, -65536.0, -131071.0]
    _check(x, "fp16", "rne", [math.inf] * 4 + [-math.inf] * 2, impl)
    _check(x, "fp16", "rtz", [65504.0] * 4 + [-65504.0] * 2, impl)
    _check([256.0, 300.0, 511.0], "e4m3-ieee", "rne", [math.inf] * 3, impl)  # q43, emax 7
    _check([65536.0, 100000.0], "e5m2", "rne", [math.inf] * 2, impl)  # q52, emax 15


@pytest.mark.parametrize("impl", IMPLS)
def test_pychop_rtz_just_below_powers_of_two(impl):
    """pychop took the exponent from floor(log2|x|), which rounds up just below 2^k, so RTZ
    returned the wrong binade (197 of 201 of its test values)."""
    k = np.arange(-13, 16)  # 2^-13 .. 2^15: a normal binade lies below each
    for rel in (2.0**-53, 2.0**-40, 2.0**-20, 2.0**-12):
        x = np.ldexp(1.0 - rel, k)  # just below 2^k
        want = np.ldexp(1.0 - 2.0**-11, k)  # the largest fp16 value below 2^k
        _check(np.concatenate([x, -x]), "fp16", "rtz", np.concatenate([want, -want]), impl)
    x = np.ldexp(1.0 - 2.0**-30, np.arange(-5, 8))
    _check(x, "e4m3-ieee", "rtz", np.ldexp(1.0 - 2.0**-4, np.arange(-5, 8)), impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_pychop_qtorch_subnormal_double_rounding_from_fp32(impl):
    """Rounding an fp32 input to an fp16 subnormal must round the exact value once.
    x = 2^-25 + 2^-36 (exact in fp32): rounding to 11 significant bits first gives the tie
    2^-25, which then goes to 0 (even); the exact value is above half the smallest subnormal
    2^-24, so the answer is 2^-24."""
    x = np.float32(2.0**-25 + 2.0**-36)
    assert float(x) == 2.0**-25 + 2.0**-36
    double_rounded = float(np.float16(np.float32(2.0**-25)))  # what the two-step path gives
    assert double_rounded == 0.0
    for xx in (np.array([x, -x]), np.array([x, -x], dtype=np.float64)):
        got = lb.round(xx, "fp16", "rne", impl=impl)
        assert_same_bits(got, [2.0**-24, -(2.0**-24)], xx, f"fp16 {xx.dtype}")
    # the same slip higher up: 5·2^-25 + 2^-36 is just above the tie 2.5·2^-24, so 3·2^-24;
    # rounding to 11 bits first gives the tie itself, which goes to the even 2·2^-24
    y = np.float32(5 * 2.0**-25 + 2.0**-36)
    assert float(np.float16(np.float32(5 * 2.0**-25))) == 2 * 2.0**-24
    _check([float(y), -float(y)], "fp16", "rne", [3 * 2.0**-24, -3 * 2.0**-24], impl)
    # and for e4m3fn from fp32: 2^-10 + 2^-20 (just above half of 2^-9) → 2^-9
    _check([2.0**-10 + 2.0**-20], "e4m3fn", "rne", [2.0**-9], impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_pychop_round_to_odd_changes_exact_values(impl):
    """pychop set the last bit even for exact inputs: 1.0, 2.0, 0.5 (even significands)."""
    x = np.array([1.0, 2.0, 0.5, 65504.0, -1.0, 2.0**-24, 2.0**-14, 1.5, -0.0, 0.0])
    assert_same_bits(lb.round(x, "fp16", "ro", impl=impl), x, x, "fp16 ro exact")
    x8 = np.array([448.0, 256.0, 2.0**-9, -(2.0**-6), 1.0])
    assert_same_bits(lb.round(x8, "e4m3fn", "ro", impl=impl), x8, x8, "e4m3fn ro exact")
    _check([1.0 + 2.0**-12], "fp16", "ro", [1.0 + 2.0**-10], impl)  # inexact → odd neighbour


@pytest.mark.parametrize("impl", IMPLS)
def test_pychop_ties_to_zero_and_away_swapped_for_negatives(impl):
    t = 1.0 + 2.0**-11  # tie between 1 and 1 + 2^-10 in fp16
    _check([-t, t], "fp16", "rnz", [-1.0, 1.0], impl)
    _check([-t, t], "fp16", "rna", [-(1.0 + 2.0**-10), 1.0 + 2.0**-10], impl)
    _check([-5.0, 5.0], "e2m1", "rnz", [-4.0, 4.0], impl)
    _check([-5.0, 5.0], "e2m1", "rna", [-6.0, 6.0], impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["fp16", "bf16", "e4m3fn", "e5m2", "e2m1"])
def test_pychop_qtorch_negative_zero_becomes_positive_zero(name, impl):
    x = np.array([-0.0, -1e-45, -(2.0**-200)])  # below half of every min_subnormal here
    for mode in ("rne", "rna", "rnz", "rtz", "ru"):  # (rd and ro give -min_subnormal)
        got = lb.round(x, name, mode, impl=impl)
        assert np.all(got == 0) and np.all(np.signbit(got)), (mode, got)
    for dt in (np.float32, np.float16):
        with np.errstate(under="ignore"):
            xd = np.array([-0.0, -1e-45]).astype(dt)
        got = lb.round(xd, name, impl=impl)
        assert np.all(got == 0) and np.all(np.signbit(got))


@pytest.mark.parametrize("impl", IMPLS)
def test_qtorch_nearest_is_ties_away(impl):
    """qtorch's 'nearest' was ties-away; RNE must send a tie to the even neighbour."""
    u = 2.0**-10
    _check([1 + u / 2, 1 + 3 * u / 2, -(1 + u / 2)], "fp16", "rne", [1.0, 1 + 2 * u, -1.0], impl)
    _check([1 + 2.0**-8, 2.5], "bf16", "rne", [1.0, 2.5], impl)
    _check([0.25, 0.75, 2.5], "e2m1", "rne", [0.0, 1.0, 2.0], impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_qtorch_cpfloat_e4m3_max_480_e5m2_max_114688(impl):
    """qtorch saturated at 480 (e4m3) and 114688 (e5m2); CPFloat's E4M3 has max 480. The OFP8
    values are 448 and 57344."""
    assert lb.get_format("e4m3fn").max == 448.0 and lb.get_format("e5m2").max == 57344.0
    _check(
        [464.0, 465.0, 480.0, 500.0], "e4m3fn", "rne", [448.0, math.nan, math.nan, math.nan], impl
    )
    _check(
        [464.0, 465.0, 480.0, -500.0],
        "e4m3fn",
        "rne",
        [448.0, 448.0, 448.0, -448.0],
        impl,
        overflow="saturate",
    )
    _check([61439.0, 61440.0, 114688.0], "e5m2", "rne", [57344.0, math.inf, math.inf], impl)
    _check([114688.0, -1e9], "e5m2", "rne", [57344.0, -57344.0], impl, overflow="saturate")


@pytest.mark.parametrize("impl", IMPLS)
def test_cpfloat_signalling_nan_becomes_inf(impl):
    """CPFloat turned a signalling NaN into inf; NaN must stay NaN."""
    snan32 = np.array([0x7F800001, 0xFF800001, 0x7FA00000], dtype=np.uint32).view(np.float32)
    snan64 = np.array([0x7FF0000000000001], dtype=np.uint64).view(np.float64)
    for name in ("fp16", "bf16", "e5m2", "e4m3fn", "e2m1"):
        for x in (snan32, snan64):
            assert np.all(np.isnan(lb.round(x, name, impl=impl))), name


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("name", "smin"),
    [("fp16", 2.0**-24), ("e4m3-ieee", 2.0**-9), ("e5m2", 2.0**-16), ("bf16", 2.0**-133)],
)
def test_chop_subnormal_slip_half_to_056_smallest_subnormal(name, smin, impl):
    """MATLAB chop (with subnormals) turned |x| in (0.5, ~0.56)·min_subnormal into 0; the
    exact answer is min_subnormal."""
    f = np.array([0.5 + 2.0**-20, 0.51, 0.53, 0.55, 0.5599])
    x = np.concatenate([f * smin, -f * smin])
    _check(x, name, "rne", np.concatenate([np.full(5, smin), np.full(5, -smin)]), impl)
    _check([0.5 * smin, -0.5 * smin], name, "rne", [0.0, -0.0], impl)  # the tie goes to even 0


@pytest.mark.parametrize("impl", IMPLS)
def test_chop_no_subnormals_slip_just_below_half_min_normal(impl):
    """MATLAB chop without subnormals turned |x| just below min_normal/2 (0.4875·min_normal in
    q43) into min_normal; the exact answer is 0 (and exactly min_normal/2 goes to min_normal)."""
    mn = 2.0**-6  # q43 = e4m3-ieee
    x = [0.4875 * mn, -0.4875 * mn, 0.49 * mn, 0.5 * mn, -0.5 * mn, 0.52 * mn]
    want = [0.0, -0.0, 0.0, mn, -mn, mn]
    _check(x, "e4m3-ieee", "rne", want, impl, subnormals=False)
    _check([0.4875 * 2.0**-14], "fp16", "rne", [0.0], impl, subnormals=False)
