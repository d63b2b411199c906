"""Posit rounding (Standard for Posit Arithmetic 2022, §4) against three independent oracles.

* An exact Fraction oracle written from the standard's definition: the boundary between
  adjacent codes c and c+1 is the posit<n+1, es> value of code 2c+1, ties go to the even code,
  nonzero values never round to 0 (→ ±minpos) and never overflow (→ ±maxpos).
* softposit (the reference C library): its ``posit8``/``posit16`` are the *old* formats
  posit<8,0> and posit<16,1> (maxpos 64 and 2^28), compared with PositFormat(8, 0) and
  PositFormat(16, 1); its ``posit_2`` (``convertDoubleToPX2``) is posit<n,2> for any n.
* ``PositFormat.decode_exact`` for the value of every code.

The fused numba kernel must equal the reference bit for bit (NaN == NaN).
"""

from __future__ import annotations

import bisect
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from lowbit.formats import PositFormat
from lowbit.kernels import posit_numba
from lowbit.rounding import decode, encode
from lowbit.rounding.api import resolve_policy, round_reference_numpy
from lowbit.rounding.posit import decode_posit_codes, posit_codes, round_posit_reference

SMALL = [(n, es) for n in range(3, 11) for es in range(5)]
KERNEL_FORMATS = [
    (3, 0),
    (4, 4),
    (5, 1),
    (8, 0),
    (8, 2),
    (12, 3),
    (16, 1),
    (16, 2),
    (18, 3),
    (24, 0),
    (32, 2),
    (32, 3),
    (32, 4),
]


# ---- helpers ------------------------------------------------------------------------------
def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def assert_same_bits(got: np.ndarray, expected: np.ndarray, x: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    bad = np.flatnonzero(_bits(got) != _bits(expected))
    g, e, xs = got.reshape(-1), expected.reshape(-1), x.reshape(-1)
    assert bad.size == 0, (
        f"{bad.size} differ; first x={xs[bad[:5]]} got={g[bad[:5]]} expected={e[bad[:5]]}"
    )


def _rne(fmt: PositFormat):
    return resolve_policy(fmt, "rne", None, True, None)


class PositOracle:
    """Exact RNE to posit<n, es> from the standard's definition (Fractions, bisect)."""

    def __init__(self, n: int, es: int) -> None:
        self.n = n
        fmt, up = PositFormat(n, es), PositFormat(n + 1, es)
        # boundaries between magnitude codes c and c+1, c = 1 .. 2^(n-1) - 2
        self.bounds = [up.decode_exact(2 * c + 1) for c in range(1, (1 << (n - 1)) - 1)]
        self.fmt = fmt

    def code(self, x: float) -> int:
        if x != x or x in (float("inf"), float("-inf")):
            return 1 << (self.n - 1)
        if x == 0:
            return 0
        a = abs(Fraction(x))
        i = bisect.bisect_left(self.bounds, a)  # bounds[i-1] < a <= bounds[i]
        c = i + 1  # below minpos -> 1, above maxpos -> maxpos
        if i < len(self.bounds) and a == self.bounds[i] and c % 2 == 1:
            c += 1  # tie: the even code
        return c if x > 0 else (-c) & ((1 << self.n) - 1)

    def midpoints(self) -> np.ndarray:
        """Every boundary and every posit value, each with its float64 neighbours, both signs."""
        pts = [float(b) for b in self.bounds]
        pts += [self.fmt.decode(c) for c in range(1, 1 << (self.n - 1))]
        p = np.array(pts)
        p = np.concatenate([p, np.nextafter(p, 0.0), np.nextafter(p, np.inf)])
        return np.concatenate([p, -p])


def _random_fp32(count: int, seed: int, quiet: bool = True) -> np.ndarray:
    """Random fp32 bit patterns; ``quiet`` replaces signalling NaNs (which casts warn about)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), x) if quiet else x


def _specials() -> np.ndarray:
    return np.array(
        [
            0.0,
            -0.0,
            np.nan,
            -np.nan,
            np.inf,
            -np.inf,
            1e-300,
            -1e-300,
            1e300,
            -1e300,
            5e-324,
            1.0,
            -1.0,
        ]
    )


def _specials32() -> np.ndarray:
    with np.errstate(over="ignore"):
        return _specials().astype(np.float32)


# ---- decoding -----------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "es"), [*SMALL, (16, 0), (16, 1), (16, 2)])
def test_decode_every_code_equals_decode_exact(n: int, es: int) -> None:
    fmt = PositFormat(n, es)
    codes = np.arange(1 << n)
    expected = np.array([fmt.decode(int(c)) for c in codes])  # decode_exact, NaR -> NaN
    got = decode(codes, fmt, np.float64)
    assert_same_bits(got, expected, codes)
    assert_same_bits(decode_posit_codes(codes, fmt), expected, codes)
    assert np.isnan(got[1 << (n - 1)])  # NaR


@pytest.mark.parametrize("es", range(5))
def test_decode_posit32_sample(es: int) -> None:
    fmt = PositFormat(32, es)
    rng = np.random.default_rng(es)
    codes = np.concatenate(
        [
            rng.integers(0, 1 << 32, 3000),
            [0, 1, 2, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 32) - 1],
        ]
    )
    expected = np.array([fmt.decode(int(c)) for c in codes])
    assert_same_bits(decode(codes.astype(np.uint32), fmt, np.float64), expected, codes)
    # the codes are what the values encode to (NaR <-> NaN)
    assert np.array_equal(encode(expected, fmt), codes.astype(np.uint32))


# ---- the exact oracle ---------------------------------------------------------------------
@pytest.mark.parametrize(("n", "es"), [*SMALL, (12, 2), (16, 2)])
def test_rne_matches_exact_oracle(n: int, es: int) -> None:
    oracle = PositOracle(n, es)
    x = np.concatenate(
        [oracle.midpoints(), _specials(), _random_fp32(2000, n * 10 + es).astype(np.float64)]
    )
    expected = np.array([oracle.code(float(v)) for v in x])
    fmt = oracle.fmt
    with np.errstate(all="ignore"):
        assert np.array_equal(posit_codes(x, fmt, _rne(fmt), None), expected)
        values = decode_posit_codes(expected, fmt)
        ref = round_posit_reference(x, fmt, _rne(fmt), None)
    assert_same_bits(ref, values, x)
    assert_same_bits(lb.round(x, fmt, impl="kernel"), values, x)
    assert np.array_equal(encode(x, fmt).astype(np.int64), expected)


def test_geometric_boundary_example() -> None:
    # posit<8,2>: 144179.2 lies between 65536 and 262144 but above the posit<9,2> boundary
    # 131072, so it rounds to 262144 although 65536 is nearer (the standard's bit-string rule).
    fmt = PositFormat(8, 2)
    assert fmt.decode(0x7C) == 65536 and fmt.decode(0x7D) == 262144
    assert lb.round(144179.2, fmt) == 262144.0
    assert lb.round(131072.0, fmt) == 65536.0  # the tie goes to the even code 0x7C
    assert lb.round(-131073.0, fmt) == -262144.0


def test_edges() -> None:
    for fmt in (PositFormat(8, 2), PositFormat(16, 1), PositFormat(32, 4), PositFormat(3, 0)):
        x = np.array(
            [
                1e-300,
                -1e-300,
                5e-324,
                1e300,
                -1e300,
                np.inf,
                -np.inf,
                np.nan,
                -0.0,
                0.0,
                fmt.max,
                fmt.min_normal,
            ]
        )
        for impl in ("reference", "kernel"):
            for mode in ("rne", "sr"):
                r = lb.round(x, fmt, mode, seed=3, impl=impl)
                mn, mx = fmt.min_normal, fmt.max
                assert list(r[:5]) == [mn, -mn, mn, mx, -mx]
                assert np.isnan(r[5:8]).all()
                assert_same_bits(r[8:10], np.zeros(2), x[8:10])  # -0 -> +0
                assert list(r[10:]) == [mx, mn]


def test_only_rne_and_sr() -> None:
    with pytest.raises(ValueError, match="posits support"):
        lb.round(np.ones(3), "posit16", "rtz")


# ---- softposit ----------------------------------------------------------------------------
def _softposit_inputs(n: int, es: int) -> tuple[np.ndarray, np.ndarray]:
    """(fp32 inputs, float64 inputs): every fp16 value, random fp32 bits; midpoints ±1 ulp."""
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    x32 = np.concatenate([f16, _random_fp32(100_000, n + es)])
    x64 = PositOracle(n, es).midpoints()
    return x32, x64


@pytest.mark.parametrize(
    ("n", "es", "conv"), [(8, 0, "convertDoubleToP8"), (16, 1, "convertDoubleToP16")]
)
def test_matches_softposit(n: int, es: int, conv: str) -> None:
    sp = pytest.importorskip("softposit")
    fmt = PositFormat(n, es)
    to_code = getattr(sp, conv)
    x32, x64 = _softposit_inputs(n, es)
    for x in (x32, x64):
        expected = np.array([to_code(float(v)).v for v in x])
        assert np.array_equal(encode(x, fmt).astype(np.int64), expected)
        values = decode(expected, fmt, x.dtype)
        assert_same_bits(lb.round(x, fmt, impl="kernel"), values, x)
        assert_same_bits(lb.round(x, fmt, impl="reference"), values, x)
    # softposit's own classes agree with the conversion function
    assert sp.posit8(1.5).v.v == 0x50 and sp.posit16(1e300).v.v == 0x7FFF


@pytest.mark.parametrize("n", [8, 12, 16, 32])
def test_matches_softposit_posit_es2(n: int) -> None:
    sp = pytest.importorskip("softposit")
    fmt = PositFormat(n, 2)
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    x = np.concatenate([f16, _random_fp32(30_000, n).astype(np.float64)])
    if n <= 16:
        x = np.concatenate([x, PositOracle(n, 2).midpoints()])
    expected = np.array([sp.convertDoubleToPX2(float(v), n).v >> (32 - n) for v in x])
    assert np.array_equal(encode(x, fmt).astype(np.int64), expected)


# ---- kernel == reference ------------------------------------------------------------------
def _kernel_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    all16 = np.arange(1 << 16, dtype=np.uint16)
    return {
        "fp16": all16.view(np.float16),
        "bf16": all16.view(ml_dtypes.bfloat16),
        "fp32": np.concatenate(
            [
                _random_fp32(60_000, 1, quiet=False),
                _specials32(),
                (rng.standard_normal(20_000) * 4.0 ** rng.integers(-20, 20, 20_000)).astype(
                    np.float32
                ),
            ]
        ),
        "fp64": np.concatenate(
            [
                rng.integers(0, 1 << 64, 60_000, dtype=np.uint64).view(np.float64),
                _specials(),
                rng.standard_normal(20_000) * 4.0 ** rng.integers(-70, 70, 20_000),
            ]
        ),
    }


@pytest.mark.parametrize(("n", "es"), KERNEL_FORMATS)
@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_kernel_equals_reference(n: int, es: int, mode: str) -> None:
    fmt = PositFormat(n, es)
    for name, x in _kernel_inputs().items():
        kw = {"seed": 12345, "offset": 3} if mode == "sr" else {}
        got = lb.round(x, fmt, mode, impl="kernel", **kw)
        with np.errstate(invalid="ignore"):  # the reference casts signalling NaNs
            ref = lb.round(x, fmt, mode, impl="reference", **kw)
        assert got.dtype == x.dtype, name
        assert_same_bits(got, ref, x)


def test_kernel_shapes_out_and_views() -> None:
    fmt = PositFormat(16, 2)
    x = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32) * 100
    ref = lb.round(x, fmt, impl="reference")
    assert_same_bits(lb.round(x, fmt, impl="kernel"), ref, x)
    out = np.empty_like(x)
    assert lb.round(x, fmt, out=out) is out
    assert_same_bits(out, ref, x)
    xt = x.T  # non-contiguous input and output
    outt = np.empty_like(x).T
    lb.round(xt, fmt, out=outt, impl="kernel")
    assert_same_bits(outt, ref.T, xt)
    assert lb.round(np.float32(3.3), fmt) == np.float32(ref.dtype.type(lb.round(3.3, fmt)))
    pol = resolve_policy(fmt, "rne", None, True, None)
    assert posit_numba.round_numpy(x, lb.get_format("bf16"), pol, 0, 0, None) is None


def test_sr_chunking_matches_offset() -> None:
    fmt = PositFormat(8, 2)
    x = np.random.default_rng(1).standard_normal(10_000)
    whole = lb.round(x, fmt, "sr", seed=99)
    part = lb.round(x[4000:], fmt, "sr", seed=99, offset=4000)
    assert_same_bits(part, whole[4000:], x[4000:])
    ref = round_reference_numpy(x, fmt, resolve_policy(fmt, "sr", None, True, None), 99)
    assert_same_bits(whole, ref, x)


# ---- stochastic rounding statistics -------------------------------------------------------
N_SR = 1 << 16


def _up_fraction(
    x: float, fmt: PositFormat, lo: float, hi: float, impl: str, rand_bits: int | None = None
) -> float:
    arr = np.full(N_SR, x)
    r = lb.round(arr, fmt, "sr", seed=2024, impl=impl, rand_bits=rand_bits)
    assert set(np.unique(np.abs(r))) <= {lo, hi}
    return float(np.mean(np.abs(r) == hi))


@pytest.mark.parametrize("impl", ["reference", "kernel"])
@pytest.mark.parametrize(
    "frac", [Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(5, 8), Fraction(15, 16)]
)
def test_sr_probability_is_linear(impl: str, frac: Fraction) -> None:
    """P(up) = (|x| - lo) / (hi - lo), on a fraction-bit step and on a geometric step.

    5 standard deviations of a binomial proportion: a 50/50 rule, round-to-nearest, or a
    probability taken from log distances (0.56 instead of 0.25 across the step 2^16 -> 2^20 of
    posit<8,2>) all fail this bound.
    """
    p = float(frac)
    tol = 5 * np.sqrt(p * (1 - p) / N_SR)
    cases = [
        (PositFormat(16, 2), 1.0, 1.0 + 2.0**-11),  # 11 fraction bits just above 1
        (PositFormat(8, 2), 65536.0, 262144.0),
    ]  # exponent bits cut: a factor-4 step
    for fmt, lo, hi in cases:
        assert fmt.decode(int(encode(lo, fmt)) + 1) == hi  # neighbours
        x = lo + p * (hi - lo)
        for sign in (1.0, -1.0):
            got = _up_fraction(sign * x, fmt, lo, hi, impl)
            assert abs(got - p) <= tol, (fmt, sign * x, got, p)


@pytest.mark.parametrize("impl", ["reference", "kernel"])
def test_sr_unbiased_mean_and_exact_values(impl: str) -> None:
    fmt = PositFormat(8, 0)
    x = np.full(N_SR, 0.3)  # between 0.28125 and 0.3125 in posit<8,0>
    r = lb.round(x, fmt, "sr", seed=5, impl=impl)
    lo, hi = 0.28125, 0.3125
    p = (0.3 - lo) / (hi - lo)
    sd = (hi - lo) * np.sqrt(p * (1 - p) / N_SR)
    assert abs(r.mean() - 0.3) <= 5 * sd
    exact = decode(np.arange(256), fmt, np.float64)
    exact = exact[~np.isnan(exact)]
    assert_same_bits(lb.round(exact, fmt, "sr", seed=5, impl=impl), exact + 0.0, exact)


@pytest.mark.parametrize("impl", ["reference", "kernel"])
def test_sr_rand_bits_resolution(impl: str) -> None:
    # With 2 random bits, u takes 4 values and P(up) = #{u < 4p} / 4: 1/4 -> exactly u == 0.
    fmt = PositFormat(16, 2)
    lo, hi = 1.0, 1.0 + 2.0**-11
    got = _up_fraction(lo + 0.25 * (hi - lo), fmt, lo, hi, impl, rand_bits=2)
    assert abs(got - 0.25) <= 5 * np.sqrt(0.25 * 0.75 / N_SR)
    got = _up_fraction(lo + 0.2 * (hi - lo), fmt, lo, hi, impl, rand_bits=2)
    assert abs(got - 0.25) <= 5 * np.sqrt(0.25 * 0.75 / N_SR)  # 0.2 * 4 = 0.8 > u only for 0
