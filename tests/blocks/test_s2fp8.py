"""S2FP8 (Cambier et al. 2020): statistics, rounding, decoding, invariances, edge cases.

Oracles: mpmath (40 digits) for the statistics and the transformed values, ``lb.round`` for the
round-to-nearest-even step, the plain counting reference for the fast search.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.blocks.s2fp8 import (
    _codes_reference,
    _grid,
    _key_tables,
    _ties_to_even,
    s2fp8_decode,
    s2fp8_encode,
    s2fp8_params,
    s2fp8_round,
)

U = 2.0**-3  # unit roundoff of e5m2 (3 significant bits)


def lognormal(seed: int, n: int, sigma: float, zeros: float = 0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0.0, sigma, n) * rng.choice([-1.0, 1.0], n)
    x[rng.random(n) < zeros] = 0.0
    return x.astype(dtype)


def mp_log2(v: float) -> mp.mpf:
    return mp.log(mp.mpf(abs(float(v))), 2)


def oracle_params(x: np.ndarray, emax: int = 15) -> tuple[mp.mpf, mp.mpf, list]:
    """alpha, beta and the log2-magnitudes of the non-zero entries, in 40-digit arithmetic."""
    with mp.workdps(40):
        L = [mp_log2(v) for v in x.reshape(-1) if v != 0]
        mu = mp.fsum(L) / len(L)
        alpha = emax / (max(L) - mu)
        return alpha, -alpha * mu, L


# ---- statistics --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_match_mpmath_and_transformed_logs_have_mean_0_max_15(dtype):
    x = (lognormal(0, 1500, 2.5, zeros=0.3) * 2.0**-12).astype(dtype)  # mu ~ -12
    alpha, beta = s2fp8_params(x)
    a_or, b_or, L = oracle_params(x)
    assert abs(alpha - float(a_or)) <= 1e-13 * float(a_or)
    assert abs(beta - float(b_or)) <= 1e-13 * max(1.0, abs(float(b_or)))
    with mp.workdps(40):
        t = [mp.mpf(alpha) * li + mp.mpf(beta) for li in L]  # our alpha/beta, exact logs
        assert abs(mp.fsum(t) / len(t)) < 1e-12
        assert abs(max(t) - 15) < 1e-12
        # the classic bug: log2|0| counted as 0 in the mean (as in a public implementation)
        mu_bug = mp.fsum(L) / x.size
        assert abs(-beta / alpha - float(mu_bug)) > 3


def test_zeros_are_excluded_from_the_statistics():
    x = lognormal(1, 600, 2.0)
    xz = np.zeros(1000)
    pos = np.sort(np.random.default_rng(2).choice(1000, 600, replace=False))
    xz[pos] = x
    (y, a, b), (yz, az, bz) = s2fp8_encode(x), s2fp8_encode(xz)
    assert abs(az - a) <= 1e-14 * a and abs(bz - b) <= 1e-14 * max(1.0, abs(b))
    assert np.array_equal(yz[pos], y)
    assert np.all(yz[np.setdiff1d(np.arange(1000), pos)] == 0)


# ---- rounding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["e5m2", "e4m3"])
def test_codes_by_thresholds_are_round_to_nearest_even_exhaustively(fmt):
    """With the identity transform the thresholds are the midpoints themselves: counting them
    must reproduce lb.round's RNE (ties included) on every grid value, midpoint and
    neighbour of a midpoint."""
    f = lb.get_format(fmt)
    v, _, _, tie_down = _grid(f)
    mid = (v[:-1] + v[1:]) / 2
    thr = _ties_to_even(mid, tie_down)
    xs = np.concatenate(
        [v, mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf), [f.max * 1.2, 1e30]]
    )
    want = lb.round(xs, f, "rne", overflow="saturate")
    assert np.array_equal(v[_codes_reference(xs, thr)], want)


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_encode_rounds_the_exact_transform_to_nearest(sigma):
    x = lognormal(3, 800, sigma, zeros=0.1)
    y, alpha, beta = s2fp8_encode(x)
    with mp.workdps(40):
        for xi, yi in zip(x, y, strict=True):
            if xi == 0:
                assert yi == 0
                continue
            t = mp.power(2, mp.mpf(alpha) * mp_log2(xi) + mp.mpf(beta))
            want = float(lb.round(float(t), "e5m2", "rne", overflow="saturate"))
            lo = float(lb.round(float(t), "e5m2", "rd"))
            hi = float(lb.round(float(t), "e5m2", "ru"))
            if lo != hi and abs(t - (mp.mpf(lo) + hi) / 2) < 1e-10 * t:
                continue  # a near-tie decided by float64 noise: no oracle
            assert abs(yi) == want and math.copysign(1, yi) == math.copysign(1, xi)


def test_round_trip_relative_error_bound_and_underflow():
    x = lognormal(4, 3000, 2.0)
    y, alpha, beta = s2fp8_encode(x)
    xr = s2fp8_round(x)
    assert np.array_equal(xr, s2fp8_decode(y, alpha, beta))
    normal = np.abs(y) >= lb.get_format("e5m2").min_normal
    rel = np.abs(xr[normal] / x[normal] - 1)
    bound = max((1 + U) ** (1 / alpha) - 1, 1 - (1 - U) ** (1 / alpha))
    assert rel.max() <= bound * (1 + 1e-12)
    assert rel.max() > 0.5 * bound  # the bound is not vacuous: rounding happened
    # entries flushed to zero are exactly those whose transform is below half the smallest
    # subnormal (2**-17)
    t = np.exp2(alpha * np.log2(np.abs(x)) + beta)
    assert np.array_equal(y == 0, t < 2.0**-17)
    assert np.count_nonzero(y == 0) > 0


# ---- invariance --------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [-20, -3, 7, 30])
def test_power_of_two_scaling_is_exact(k):
    x = lognormal(5, 2000, 2.5, zeros=0.2, dtype=np.float32)
    c = np.float32(2.0**k)
    (y, a, b), (yc, ac, bc) = s2fp8_encode(x), s2fp8_encode(x * c)
    assert ac == a and np.array_equal(yc, y)
    assert abs(bc - (b - a * k)) <= 1e-13 * max(1.0, abs(bc))
    assert np.array_equal(s2fp8_round(x * c), s2fp8_round(x) * c)
    xt = torch.from_numpy(x)
    assert torch.equal(s2fp8_round(xt * float(c)), s2fp8_round(xt) * float(c))
    # float64: the decoded value 2**u, u = (log2|y| - beta) / alpha, moves with beta's
    # rounding (|delta beta| / alpha in u) and the roundings of the subtraction and division
    # (an ulp of alpha·u over alpha, an ulp of u), times ln2 relative, plus exp2's own ulp
    x64 = x.astype(np.float64)
    (_, a64, b64), (_, _, bc64) = s2fp8_encode(x64), s2fp8_encode(x64 * 2.0**k)
    u_max = float(np.abs(np.log2(np.abs(x64[x64 != 0]))).max()) + abs(k) + 1
    du = (abs(bc64 - (b64 - a64 * k)) + np.spacing(a64 * u_max)) / a64 + 2 * np.spacing(u_max)
    np.testing.assert_allclose(
        s2fp8_round(x64 * 2.0**k),
        s2fp8_round(x64) * 2.0**k,
        rtol=math.log(2) * du + 2 * 2.0**-52,
        atol=0,
    )


def test_general_scaling_is_absorbed_by_beta():
    x = lognormal(6, 2000, 2.0, zeros=0.1)
    c = 3.7
    (y, a, b), (yc, ac, bc) = s2fp8_encode(x), s2fp8_encode(x * c)
    assert abs(ac - a) <= 1e-13 * a
    assert abs(bc - (b - a * math.log2(c))) <= 1e-12 * max(1.0, abs(b))
    assert np.array_equal(yc, y)
    # decoded values are 2**((log2|y| - beta) / alpha): off by ln2 · (beta's deviation above,
    # plus the roundings of the subtraction and division) / alpha, relative
    u_max = float(np.abs(np.log2(np.abs(x[x != 0]))).max()) + 4
    du = (1e-12 * max(1.0, abs(b)) + np.spacing(a * u_max)) / a + 2 * np.spacing(u_max)
    np.testing.assert_allclose(
        s2fp8_round(x * c), c * s2fp8_round(x), rtol=math.log(2) * du + 4 * 2.0**-52, atol=0
    )


# ---- fast path, backends -------------------------------------------------------------------------
CASES = [
    ("lognormal", lambda: lognormal(7, 3000, 3.0, zeros=0.2, dtype=np.float32)),
    ("normal", lambda: np.random.default_rng(8).standard_normal(3000)),
    # a narrow range: alpha ~ 4e3, several thresholds per search cell
    ("narrow", lambda: (1 + 0.001 * np.random.default_rng(9).random(3000)).astype(np.float32)),
]


@pytest.mark.parametrize("name,make", CASES)
@pytest.mark.parametrize("fmt", ["e5m2", "e4m3"])
def test_fast_search_equals_reference_bit_for_bit(name, make, fmt):
    x = make()
    for impl in ("auto", "reference"):
        assert np.array_equal(s2fp8_encode(x, fmt, impl=impl)[0], s2fp8_encode(x, fmt)[0])
    want = s2fp8_round(x, fmt, impl="reference")
    assert np.array_equal(s2fp8_round(x, fmt), want)
    y, a, b = s2fp8_encode(x, fmt)
    assert np.array_equal(s2fp8_decode(y, a, b), want)
    xt = torch.from_numpy(x)
    assert torch.equal(s2fp8_round(xt, fmt), torch.from_numpy(want))
    assert torch.equal(s2fp8_round(xt, fmt, impl="reference"), torch.from_numpy(want))
    for tdt in (torch.float16, torch.bfloat16, torch.float64):
        xl = xt.to(tdt)
        out = s2fp8_round(xl, fmt)
        assert out.dtype == tdt
        assert torch.equal(out, s2fp8_round(xl, fmt, impl="reference"))
        yl, al, bl = s2fp8_encode(xl, fmt)
        assert torch.equal(s2fp8_decode(yl, al, bl), out)
    if name == "narrow":
        thr = np.sort(np.exp2((_grid(lb.get_format(fmt))[2] - b) / a))
        assert _key_tables(thr, np.dtype(np.float32))[2] > 1


# ---- edge cases ----------------------------------------------------------------------------------
def test_degenerate_tensors():
    z = np.array([0.0, -0.0, 0.0])
    y, a, b = s2fp8_encode(z)
    assert (a, b) == (1.0, 0.0) and np.array_equal(np.signbit(y), np.signbit(z))
    assert s2fp8_round(np.zeros(0, np.float32)).shape == (0,)
    x = np.array([0.0, 3.0, -3.0, 3.0], dtype=np.float32)
    y, a, b = s2fp8_encode(x)
    assert a == 1.0 and abs(b + math.log2(3)) <= 1e-15 and np.array_equal(y, [0, 1, -1, 1])
    assert np.array_equal(s2fp8_round(x), x)
    one = np.array([0.1])
    assert abs(float(s2fp8_round(one)[0]) - 0.1) <= 1e-16


def test_nonfinite_inputs_raise_or_propagate():
    x = lognormal(10, 100, 2.0)
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[17] = bad
        with pytest.raises(ValueError, match="finite"):
            s2fp8_encode(xb)
        out = s2fp8_round(xb, nonfinite="propagate")
        assert np.isnan(out[17]) if np.isnan(bad) else out[17] == bad
        x0 = xb.copy()
        x0[17] = 0.0
        keep = np.arange(100) != 17
        assert np.array_equal(out[keep], s2fp8_round(x0)[keep])
        assert s2fp8_params(xb, nonfinite="propagate") == s2fp8_params(x0)


def test_bad_arguments():
    x = np.ones(3)
    with pytest.raises(ValueError, match="float format"):
        s2fp8_encode(x, "int8")
    with pytest.raises(ValueError, match="16 bits"):
        s2fp8_round(x, "fp32")
    with pytest.raises(ValueError, match="nonfinite"):
        s2fp8_round(x, nonfinite="ignore")
    with pytest.raises(ValueError, match="impl"):
        s2fp8_round(x, impl="fast")
    with pytest.raises(ValueError, match="alpha"):
        s2fp8_decode(x, 0.0, 1.0)
    with pytest.raises(ValueError, match="beta"):
        s2fp8_decode(x, 1.0, math.nan)
    with pytest.raises(TypeError):
        s2fp8_decode(x, True, 0.0)
    with pytest.raises(TypeError):
        s2fp8_round(np.arange(3))
