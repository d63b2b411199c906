"""MX quantization (OCP MX v1.0) against hand-checked blocks and a Fraction oracle."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from _mx_oracle import ELEMS, floor_log2, mx_block

from lowbit.blocks import MXTensor, mx_decode, mx_encode, quantize_mx
from lowbit.formats import get_format

MX_NAMES = list(ELEMS)
F = Fraction


def _f(v: Fraction) -> float:
    out = float(v)
    assert F(out) == v
    return out


# ---- a 32-element block written out by hand -------------------------------------------------

# mxfp8_e4m3, amax = 100: floor(log2 100) = 6, emax_elem(e4m3) = 8, so X = 2^(6-8) = 1/4 and
# each element is 4x rounded to E4M3 (3 mantissa bits, emin -6, max 448).
HAND_BLOCK = [
    # (x, element = round_e4m3(4x)); E4M3 steps: 1/8 in [1, 2), 8 in [64, 128), 32 in
    # [256, 512), subnormals k * 2^-9 below 2^-6
    (F(100), F(384)),  # 400 lies halfway between 384 (1.100b*2^8) and 416 (1.101b*2^8): even
    (F(-100), F(-384)),
    (F(3), F(12)),  # 12 = 1.1b*2^3, exact
    (F(-19, 64), F(-5, 4)),  # 1.1875: halfway between 1.125 (1.001b) and 1.25 (1.010b): even
    (F(1, 4096), F(0)),  # 2^-10 is half the smallest subnormal 2^-9: tie, even -> 0
    (F(1, 512), F(1, 128)),  # 2^-7 = 4 * 2^-9, a subnormal, exact
    (F(7, 4), F(7)),  # 1.11b*2^2, exact
    (F(101, 4), F(104)),  # 101: candidates 96, 104; 104 is nearer
    (F(99, 4), F(96)),  # 99 -> 96
    (F(25), F(96)),  # 100: halfway between 96 (1.100b*2^6) and 104 (1.101b*2^6): even -> 96
    (F(26), F(104)),  # 104 exact
    (F(-43, 128), F(-11, 8)),  # 1.34375: candidates 1.25, 1.375; 1.375 is nearer
    (F(0), F(0)),
]


def test_hand_checked_block() -> None:
    pairs = HAND_BLOCK
    xs = [p[0] for p in pairs] + [F(1, 8)] * (32 - len(pairs))  # 4/8 = 0.5 exact
    els = [p[1] for p in pairs] + [F(1, 2)] * (32 - len(pairs))
    x = np.array([_f(v) for v in xs])
    scale = F(1, 4)
    # the oracle agrees with the hand derivation
    e, oracle_els = mx_block(xs, "mxfp8_e4m3")
    assert F(2) ** e == scale and oracle_els == els
    got = quantize_mx(x, "mxfp8_e4m3")
    assert got.dtype == np.float64
    assert [F(v) for v in got] == [el * scale for el in els]
    t = mx_encode(x, "mxfp8_e4m3")
    assert t.scales.tolist() == [127 - 2]  # E8M0 code of 2^-2
    elem = get_format("e4m3")
    assert [F(elem.decode_exact(int(c))) for c in t.elements] == els  # type: ignore[union-attr]
    np.testing.assert_array_equal(mx_decode(t), got)


@pytest.mark.parametrize("name", MX_NAMES)
def test_emax_elem_table(name: str) -> None:
    """OCP MX v1.0 §6.3: shared_exp = floor(log2 amax) - emax_elem, with emax per element."""
    emax = {
        "mxfp8_e4m3": 8,
        "mxfp8_e5m2": 15,
        "mxfp6_e3m2": 4,
        "mxfp6_e2m3": 2,
        "mxfp4": 2,
        "mxint8": 0,
    }[name]
    assert get_format(name).elem_emax == emax
    for amax in (1.0, 1.5, 3.0, 1000.0, 2.0**-20, 2.0**100 * 1.9):
        x = np.array([amax, -amax / 3, 0.0])
        t = mx_encode(x, name)
        want = floor_log2(F(amax)) - emax
        assert int(t.scales[0]) - 127 == want, (name, amax)


@pytest.mark.parametrize("name", MX_NAMES)
@pytest.mark.parametrize("rule", ["floor", "ceil"])
@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "ru", "rd", "ro"])
def test_random_blocks_vs_fraction_oracle(name: str, rule: str, mode: str) -> None:
    rng = np.random.default_rng(hash((name, rule, mode)) % 2**32)
    rows = 6
    x = rng.standard_normal((rows, 32)) * 2.0 ** rng.integers(-30, 30, (rows, 1))
    x[0, :4] = [0.0, -0.0, 5e-324, -1e-310]  # float64 subnormals in a normal block
    x[1] = 0.0
    got = quantize_mx(x, name, scale_rule=rule, mode=mode, impl="reference")
    t = mx_encode(x, name, scale_rule=rule, mode=mode)
    for r in range(rows):
        e, els = mx_block([F(v) for v in x[r]], name, rule, mode)
        assert int(t.scales[r, 0]) == e + 127
        assert [F(v) for v in got[r]] == [el * F(2) ** e for el in els], (r, name)


def test_floor_clips_ceil_does_not() -> None:
    # MXFP4 (max 6, emax 2): amax = 7 gives X = 2^(2-2) = 1 under "floor" and 7 saturates to 6.
    x = np.array([7.0, 1.0, -7.0, 0.25])
    assert quantize_mx(x, "mxfp4").tolist() == [6.0, 1.0, -6.0, 0.0]
    # "ceil": smallest X with 7/X <= 6 is 2: elements 3.5 -> tie between 3 and 4: even
    # significand (4 = 1.0b*2^2) wins; 1/2 = 0.5; 0.125 rounds to 0.
    assert quantize_mx(x, "mxfp4", scale_rule="ceil").tolist() == [8.0, 1.0, -8.0, 0.0]
    t = mx_encode(x, "mxfp4", scale_rule="ceil")
    assert int(t.scales[0]) == 127 + 1
    rng = np.random.default_rng(1)
    for name in MX_NAMES:
        vmax = get_format(name).elem.max
        y = rng.standard_normal((50, 32)) * 10.0 ** rng.uniform(-3, 3, (50, 1))
        tc = mx_encode(y, name, scale_rule="ceil")
        tf = mx_encode(y, name, scale_rule="floor")
        e_c = tc.scale_exponents
        assert ((e_c - tf.scale_exponents) >= 0).all() and ((e_c - tf.scale_exponents) <= 1).all()
        amax = np.abs(y).max(axis=1, keepdims=True)
        assert (amax / 2.0**e_c <= vmax).all()  # no clipping
        assert ((amax / 2.0 ** (e_c - 1) > vmax) | (e_c == tf.scale_exponents)).all()  # smallest


@pytest.mark.parametrize("name", MX_NAMES)
def test_nan_and_inf_blocks(name: str) -> None:
    x = np.ones((4, 32), dtype=np.float32)
    x[1, 5] = np.nan
    x[2, 31] = np.inf
    x[3, 0] = -np.inf
    got = quantize_mx(x, name)
    assert not np.isnan(got[0]).any()
    assert np.isnan(got[1:]).all()
    t = mx_encode(x, name)
    assert t.scales[:, 0].tolist() == [127 - get_format(name).elem_emax, 255, 255, 255]
    assert (t.elements[1:] == 0).all()
    assert np.isnan(mx_decode(t)[1:]).all()


@pytest.mark.parametrize("name", MX_NAMES)
def test_zero_blocks(name: str) -> None:
    x = np.zeros((2, 32), dtype=np.float32)
    x[1, 3] = -0.0
    got = quantize_mx(x, name)
    assert (got == 0).all()
    t = mx_encode(x, name)
    assert t.scales[:, 0].tolist() == [0, 0]  # 2^-127
    fixed = name == "mxint8"
    assert bool(np.signbit(got[1, 3])) is (not fixed)  # fixed point has a single zero


def test_partial_blocks_and_axes() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 70)) * 2.0 ** rng.integers(-8, 8, (3, 70))).astype(np.float32)
    got = quantize_mx(x, "mxfp6_e2m3")
    padded = np.concatenate([x, np.zeros((3, 26), np.float32)], axis=1)
    np.testing.assert_array_equal(got, quantize_mx(padded, "mxfp6_e2m3")[:, :70])
    for j in range(0, 70, 32):  # each block on its own
        np.testing.assert_array_equal(
            got[:, j : j + 32], quantize_mx(x[:, j : j + 32], "mxfp6_e2m3")
        )
    t = mx_encode(x, "mxfp6_e2m3")
    assert t.scales.shape == (3, 3) and t.elements.shape == (3, 70)
    # axis handling: blocks along axis 0 equal blocks along the last axis of the transpose
    np.testing.assert_array_equal(quantize_mx(x.T, "mxfp6_e2m3", axis=0), got.T)
    y = rng.standard_normal((4, 40, 3))
    a1 = quantize_mx(y, "mxfp8_e5m2", axis=1, block=16)
    ref = np.moveaxis(quantize_mx(np.moveaxis(y, 1, -1), "mxfp8_e5m2", block=16), -1, 1)
    np.testing.assert_array_equal(a1, ref)
    t = mx_encode(y, "mxfp8_e5m2", axis=-2, block=16)
    assert t.axis == 1 and t.scales.shape == (4, 3, 3)
    np.testing.assert_array_equal(mx_decode(t), a1)


def test_scalar_and_small_inputs() -> None:
    assert quantize_mx(100.0, "mxfp8_e4m3") == 96.0  # 400 -> tie -> 384, times 1/4
    assert quantize_mx([3.0, 7.0], "mxfp4").tolist() == [3.0, 6.0]
    assert quantize_mx(np.zeros((0, 32), np.float32)).shape == (0, 32)


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp4", "mxint8"])
def test_codes_roundtrip_and_decode_independent(name: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 64)) * 2.0 ** rng.integers(-20, 20, (5, 1))
    x[0, 0] = np.nan
    t = mx_encode(x, name)
    assert isinstance(t, MXTensor) and t.elements.dtype == np.uint8
    assert t.scales.dtype == np.uint8
    np.testing.assert_array_equal(mx_decode(t), quantize_mx(x, name))
    # element codes decode (by the format's own decoder) to the element values
    elem = get_format(name).elem
    vals = np.array([[elem.decode(int(c)) for c in row] for row in t.elements])
    e = np.repeat(t.scale_exponents, 32, axis=1)
    np.testing.assert_array_equal(
        np.where(np.isnan(e), np.nan, vals * 2.0**e), quantize_mx(x, name)
    )
    assert t.nbytes == 5 * 64 * elem.bits // 8 + 10


def test_mxint8_elements() -> None:
    # amax in [1, 2): X = 2^(0 - 0) = 1; elements are k/64, saturating at ±127/64 (symmetric)
    x = np.array([1.5, 1.0 / 128, 3.0 / 128, -1.99, 1.999, 0.0, -1.0 / 256] + [0.5] * 25)
    got = quantize_mx(x, "mxint8")
    assert got[:7].tolist() == [1.5, 0.0, 2.0 / 64, -127 / 64, 127 / 64, 0.0, 0.0]
    assert not np.signbit(got[6])  # one zero
    t = mx_encode(x, "mxint8")
    assert t.elements[:5].tolist() == [96, 0, 2, (256 - 127), 127]  # two's complement
    assert int(t.scales[0]) == 127


def test_overflow_options() -> None:
    x = np.array([500.0, 1.0])  # e4m3 floor: X = 2^(8-8) = 1; 500 > 448
    assert quantize_mx(x, "mxfp8_e4m3").tolist() == [448.0, 1.0]
    assert np.isnan(quantize_mx(x, "mxfp8_e4m3", overflow="nan")[0])
    t = mx_encode(x, "mxfp8_e4m3", overflow="nan")
    assert int(t.elements[0]) == 0x7F and np.isnan(mx_decode(t)[0])
    y = np.array([65000.0, 1.0])  # e5m2: X = 2^(15-15) = 1; 65000 > 57344 rounds to inf
    assert np.isinf(quantize_mx(y, "mxfp8_e5m2", overflow="inf")[0])
    assert quantize_mx(y, "mxfp8_e5m2")[0] == 57344.0


def test_stochastic_rounding_reproducible_and_unbiased() -> None:
    x = np.full((400, 32), 1.1, dtype=np.float64)
    x[:, 0] = 1.75  # e2m1 with amax 1.75: X = 2^(0-2) = 1/4; 1.1*4 = 4.4 between 4 and 6
    a = quantize_mx(x, "mxfp4", mode="sr", seed=7)
    b = quantize_mx(x, "mxfp4", mode="sr", seed=7)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a[:, 1:])) == {1.0, 1.5}
    assert abs(a[:, 1:].mean() - 1.1) < 0.01  # P(up) = 0.4/2 = 0.2: mean 1.1


def test_dtypes_narrow() -> None:
    x = np.array([3.0, -0.7, 1e-3, 2.0**-20], dtype=np.float16)
    got = quantize_mx(x, "mxfp8_e4m3")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(
        got, quantize_mx(x.astype(np.float64), "mxfp8_e4m3").astype(np.float16)
    )
    xb = x.astype(ml_dtypes.bfloat16)
    assert quantize_mx(xb, "mxfp4").dtype == xb.dtype


def test_errors() -> None:
    x = np.ones(32, np.float32)
    with pytest.raises(ValueError, match="element format"):
        quantize_mx(x, "e4m3")
    with pytest.raises(ValueError, match="scale_rule"):
        quantize_mx(x, scale_rule="round")
    with pytest.raises(ValueError, match="axis"):
        quantize_mx(x, axis=1)
    with pytest.raises(ValueError, match="block"):
        quantize_mx(x, block=0)
    with pytest.raises(ValueError, match="overflow"):
        quantize_mx(x, "mxfp4", overflow="nan")
    with pytest.raises(ValueError, match="impl"):
        quantize_mx(x, impl="fast")
    with pytest.raises(ValueError, match="kernel"):
        quantize_mx(x.astype(np.float64), impl="kernel")
    with pytest.raises(ValueError, match="rounding mode"):
        quantize_mx(x, mode="nearest-up")
    with pytest.raises(TypeError, match="dtype"):
        quantize_mx(np.ones(4, np.int32))
    with pytest.raises(TypeError):
        mx_decode(x)  # type: ignore[arg-type]
