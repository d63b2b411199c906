"""The oracle itself: its decoder, hand-worked roundings, ml_dtypes, and its vectorized shortcut.

The oracle must be right independently of lowbit, so it is checked here against hand-worked
values, against ml_dtypes (an implementation that shares no code with either), and its fast
table path against its own element-by-element path.
"""

from __future__ import annotations

import math
from fractions import Fraction as Fr

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from oracle import (
    DETERMINISTIC_MODES,
    FixedOracle,
    FloatOracle,
    all_float16,
    decode_float_code,
    floor_log2,
    mismatches,
    oracle_table,
)

SMALL_FLOATS = [
    "fp16",
    "bf16",
    "e5m2",
    "e4m3fn",
    "e4m3-ieee",
    "e4m3fnuz",
    "e5m2fnuz",
    "e3m2fn",
    "e2m3fn",
    "e2m1fn",
    "e3m4",
    "e6m5",
    "e2m0",
    "e5m2fn",
    "e3m3fnuz",
]
ML_DTYPES = {
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e4m3-ieee": ml_dtypes.float8_e4m3,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn,
    "e2m1fn": ml_dtypes.float4_e2m1fn,
    "e3m4": ml_dtypes.float8_e3m4,
}


@pytest.mark.parametrize("name", SMALL_FLOATS)
def test_own_decoder_agrees_with_float_format(name):
    fmt = lb.get_format(name)
    for code in range(1 << fmt.bits):
        mine = decode_float_code(code, fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.special)
        theirs = fmt.decode(code)
        if mine == "nan":
            assert math.isnan(theirs), code
        elif mine in ("+inf", "-inf"):
            assert theirs == float(mine), code
        elif mine == "-0":
            assert theirs == 0 and math.copysign(1, theirs) < 0, code
        else:
            assert fmt.decode_exact(code) == mine, code
            assert math.copysign(1, theirs) == (-1 if code >> (fmt.bits - 1) else 1), code


@pytest.mark.parametrize("name", ["int4", "int8", "uint8", "q3.12", "uq0.8", "q0.7", "uint4"])
def test_fixed_oracle_grid_agrees_with_fixed_format(name):
    fmt = lb.get_format(name)
    o = FixedOracle(fmt)  # asserts its decoded codes form the grid k·2^-f
    f = fmt.fixed if isinstance(fmt, lb.IntFormat) else fmt
    assert sorted(f.decode_exact(c) for c in range(1 << f.bits)) == [
        k * o.step for k in range(o.kmin, o.kmax + 1)
    ]
    assert o.max == f.max_exact


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_oracle_values_are_ml_dtypes_values(name):
    """Every finite value the oracle enumerates is exactly ml_dtypes' set of finite values."""
    o = FloatOracle(lb.get_format(name))
    dt = np.dtype(ML_DTYPES[name])
    codes = np.arange(1 << (8 * dt.itemsize), dtype=np.uint16 if dt.itemsize == 2 else np.uint8)
    if dt.itemsize == 1 and dt.type not in (
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2fnuz,
        ml_dtypes.float8_e3m4,
    ):
        codes = codes[: 1 << o.bits]  # fp6/fp4 live in the low bits of a byte
    with np.errstate(invalid="ignore"):  # signalling NaN codes
        vals = codes.view(dt).astype(np.float64)
    theirs = sorted({Fr(v) for v in vals[np.isfinite(vals)].tolist()})
    assert theirs == o.values
    assert int(np.isnan(vals).sum()) == sum(v == "nan" for v in o.codes.values())


def test_hand_worked_anchors():
    fp16 = FloatOracle(lb.get_format("fp16"))
    assert fp16.max == 65504 and fp16.ext == 65536
    assert min(v for v in fp16.values if v > 0) == Fr(1, 2**24)
    e4m3 = FloatOracle(lb.get_format("e4m3fn"))
    assert e4m3.max == 448 and e4m3.ext == 480
    assert e4m3.round(464.0, "rne") == 448.0  # tie between 448 (even) and 480: even wins
    assert math.isnan(e4m3.round(464.0, "rna"))
    assert e4m3.round(464.0, "rnz") == 448.0
    assert math.isnan(e4m3.round(465.0, "rne"))
    assert e4m3.round(465.0, "rne", "saturate") == 448.0
    assert e4m3.round(-1e30, "ru") == -448.0  # §7.4: RU of a negative overflow is -max
    assert math.isnan(e4m3.round(-1e30, "rd"))
    assert math.isnan(e4m3.round(math.inf, "rtz"))
    assert e4m3.round(-math.inf, "rtz", "saturate") == -448.0
    e5m2 = FloatOracle(lb.get_format("e5m2"))
    assert e5m2.max == 57344 and e5m2.ext == 65536
    assert e5m2.round(61440.0, "rne") == math.inf  # tie, 57344 = 1.11b·2^15 is odd
    assert e5m2.round(61440.0, "rnz") == 57344.0
    assert e5m2.round(1e9, "rtz") == 57344.0
    assert e5m2.round(-1e9, "rd") == -math.inf
    assert e5m2.round(1e9, "rd") == 57344.0
    e2m1 = FloatOracle(lb.get_format("e2m1"))
    assert [v for v in e2m1.values if v >= 0] == [0, Fr(1, 2), 1, Fr(3, 2), 2, 3, 4, 6]
    assert e2m1.ext == 8
    assert e2m1.round(5.0, "rne") == 4.0 and e2m1.round(5.0, "rna") == 6.0
    assert e2m1.round(7.0, "rne") == 6.0  # 7 ties between 6 (1.1b·4, odd) and 8 (even)...
    assert e2m1.round(7.0, "rna") == 6.0  # ...8 overflows; "none" formats always saturate
    assert e2m1.round(2.5, "ro") == 3.0 and e2m1.round(3.5, "ro") == 3.0
    assert e2m1.round(4.0, "ro") == 4.0  # exact values never move
    assert e2m1.round(-0.2, "rne") == 0.0 and math.copysign(1, e2m1.round(-0.2, "rne")) < 0
    fnuz = FloatOracle(lb.get_format("e4m3fnuz"))
    assert (
        math.copysign(1, fnuz.round(-1e-9, "rne")) > 0
        and math.copysign(1, fnuz.round(-0.0, "rne")) > 0
    )


def test_hand_worked_modes_on_fp16():
    o = FloatOracle(lb.get_format("fp16"))
    u = 2.0**-10
    tie, above = 1 + u / 2, 1 + 3 * u / 4
    want = {  # mode: (round(1+u/2), round(-(1+u/2)), round(1+3u/4), round(1+3u/2))
        "rne": (1.0, -1.0, 1 + u, 1 + 2 * u),
        "rna": (1 + u, -1 - u, 1 + u, 1 + 2 * u),
        "rnz": (1.0, -1.0, 1 + u, 1 + u),
        "rtz": (1.0, -1.0, 1.0, 1 + u),
        "ru": (1 + u, -1.0, 1 + u, 1 + 2 * u),
        "rd": (1.0, -1 - u, 1.0, 1 + u),
        "ro": (1 + u, -1 - u, 1 + u, 1 + u),
    }
    for mode, w in want.items():
        got = (
            o.round(tie, mode),
            o.round(-tie, mode),
            o.round(above, mode),
            o.round(1 + 1.5 * u, mode),
        )
        assert got == w, mode


def test_subnormals_off_conventions():
    o = FloatOracle(lb.get_format("e4m3-ieee"), subnormals=False)
    mn = 2.0**-6
    assert [v for v in o.values if 0 <= v < 2 * mn] == [
        0,
        *[Fr(mn) * (1 + Fr(k, 8)) for k in range(8)],
    ]
    assert o.round(mn / 2, "rne") == mn and o.round(mn / 2, "rna") == mn
    assert o.round(mn / 2, "rnz") == 0.0
    assert o.round(0.4875 * mn, "rne") == 0.0
    assert o.round(0.3 * mn, "ro") == mn and o.round(0.3 * mn, "rtz") == 0.0
    assert o.round(-0.3 * mn, "ru") == 0.0 and math.copysign(1, o.round(-0.3 * mn, "ru")) < 0
    assert o.round(-0.3 * mn, "rd") == -mn


def test_precision_one_conventions():
    """man_bits = 0: every nonzero value is odd; RNE ties go away from zero, RO truncates."""
    o = FloatOracle(lb.get_format("e2m0"))
    assert [v for v in o.values if v >= 0] == [0, 1, 2]
    assert o.is_odd(Fr(1)) and o.is_odd(Fr(2)) and not o.is_odd(Fr(0))
    assert o.round(1.5, "rne") == 2.0 and o.round(1.5, "rnz") == 1.0
    assert o.round(1.7, "ro") == 1.0 and o.round(0.5, "ro") == 1.0
    assert o.round(3.0, "rne") == math.inf and o.round(2.9, "rne") == 2.0


def test_fixed_oracle_hand_worked():
    q = FixedOracle(lb.get_format("int4"))
    assert (q.kmin, q.kmax) == (-8, 7)
    assert q.round(2.5, "rne") == 2.0 and q.round(3.5, "rne") == 4.0
    assert q.round(-2.5, "rna") == -3.0 and q.round(-2.5, "rnz") == -2.0
    assert q.round(-2.5, "ru") == -2.0 and q.round(-2.5, "rd") == -3.0
    assert q.round(2.5, "ro") == 3.0 and q.round(3.5, "ro") == 3.0
    assert q.round(100.0, "rne") == 7.0 and q.round(-100.0, "rne") == -8.0
    assert q.round(8.0, "rne", "wrap") == -8.0 and q.round(-9.0, "rne", "wrap") == 7.0
    assert q.round(7.6, "rne", "wrap") == -8.0
    assert math.copysign(1, q.round(-0.2, "rne")) > 0
    assert q.round(math.inf, "rtz") == 7.0 and math.isnan(q.round(math.inf, "rtz", "wrap"))
    u8 = FixedOracle(lb.get_format("uint8"))
    assert u8.round(-3.0, "rne") == 0.0 and u8.round(-3.0, "rne", "wrap") == 253.0
    uq = FixedOracle(lb.get_format("uq0.8"))
    assert uq.round(1.0, "rne") == 255 / 256 and uq.round(1.0, "rne", "wrap") == 0.0
    assert uq.round(3 / 512, "rne") == 2 / 256 and uq.round(1 / 512, "rne") == 0.0


def test_floor_log2():
    for v in [Fr(1), Fr(3, 4), Fr(2**-30), Fr(65504), Fr(2**100) - 1, Fr(2**100)]:
        e = floor_log2(v)
        assert 2**e <= v < 2 ** (e + 1) if e >= 0 else Fr(1, 2**-e) <= v < Fr(2, 2**-e)


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_oracle_rne_agrees_with_ml_dtypes_on_every_fp16_value(name):
    """ml_dtypes shares no code with the oracle: RNE of every finite fp16 value must agree
    (ml_dtypes saturates formats without NaN and sends overflow to NaN/inf otherwise, which is
    the oracle's default too)."""
    fmt = lb.get_format(name)
    o = FloatOracle(fmt)
    x = all_float16()
    x = x[np.isfinite(x)]
    want = oracle_table(o, x, modes=("rne",))[("rne", o.overflow_options()[0])]
    with np.errstate(over="ignore"):
        theirs = x.astype(np.float32).astype(ML_DTYPES[name]).astype(np.float64)
    bad = mismatches(theirs, want)
    assert bad.size == 0, [(x[i], theirs[i], want[i]) for i in bad[:5]]


@pytest.mark.parametrize(
    "name", ["fp16", "e4m3fn", "e5m2", "e2m1", "e2m0", "e3m3fnuz", "q3.12", "int8", "uq0.8"]
)
@pytest.mark.parametrize("subnormals", [True, False])
def test_table_shortcut_equals_per_element_oracle(name, subnormals):
    """Random float64 inputs (not just fp16 values): grid points, midpoints, their float64
    neighbours, tiny and huge values; the table must equal the element-wise oracle."""
    fmt = lb.get_format(name)
    o = FloatOracle(fmt, subnormals) if isinstance(fmt, lb.FloatFormat) else FixedOracle(fmt)
    rng = np.random.default_rng(7)
    if isinstance(o, FloatOracle):
        g = np.array([float(v) for v in o.grid])
    else:
        g = np.arange(o.kmin - 3, o.kmax + 4, dtype=np.float64) * float(o.step)
    pts = rng.choice(g, 300)
    mids = (pts + rng.choice(g, 300)) / 2
    near = np.concatenate([pts, mids])
    x = np.concatenate(
        [
            near,
            np.nextafter(near, np.inf),
            np.nextafter(near, -np.inf),
            rng.standard_normal(200) * float(o.max),
            np.ldexp(rng.uniform(-1, 1, 100), rng.integers(-40, 40, 100)),
            [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324],
        ]
    )
    tables = oracle_table(o, x)
    for i in range(x.size):
        for key, want in o.round_all(float(x[i])).items():
            got = tables[key][i]
            assert mismatches([got], [want]).size == 0, (x[i], key, got, want)


def test_modes_tuple():
    assert DETERMINISTIC_MODES == ("rne", "rna", "rnz", "rtz", "ru", "rd", "ro")
