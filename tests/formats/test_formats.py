"""Format properties against ml_dtypes.finfo, numpy.finfo and the oracle's own decoder; the name
parser and registry; validation of format arguments; presets are frozen and hashable."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction as Fr

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from lowbit.formats import E8M0, block_presets, get_element_format, known_names, presets
from oracle import FloatOracle, decode_float_code

ML = {
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e4m3-ieee": ml_dtypes.float8_e4m3,  # ml_dtypes' IEEE-like E4M3: max 240, has inf
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn,
    "e2m1fn": ml_dtypes.float4_e2m1fn,
    "e3m4": ml_dtypes.float8_e3m4,
    "e8m0": ml_dtypes.float8_e8m0fnu,
}
NUMPY = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}
FLOAT_PRESETS = [n for n, f in presets().items() if isinstance(f, lb.FloatFormat)]


@pytest.mark.parametrize("name", list(ML))
def test_finfo_matches_ml_dtypes(name):
    fmt = lb.get_format(name)
    fi = ml_dtypes.finfo(ML[name])
    assert fmt.max == float(fi.max)
    assert fmt.min_normal == float(fi.tiny)
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.bits == fi.bits
    assert fmt.man_bits == fi.nmant
    assert fmt.emin == fi.minexp
    assert fmt.emax == fi.maxexp - 1


@pytest.mark.parametrize("name", list(NUMPY))
def test_finfo_matches_numpy(name):
    fmt = lb.get_format(name)
    fi = np.finfo(NUMPY[name])
    assert fmt.max == float(fi.max)
    assert fmt.min_normal == float(fi.tiny)
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.bits == fi.bits
    assert fmt.man_bits == fi.nmant
    assert (fmt.emin, fmt.emax) == (fi.minexp, fi.maxexp - 1)


def test_tf32_properties():
    tf32 = lb.get_format("tf32")
    assert (tf32.exp_bits, tf32.man_bits, tf32.bias) == (8, 10, 127)
    assert tf32.max == float((2 - Fr(1, 2**10)) * Fr(2) ** 127)
    assert tf32.min_normal == 2.0**-126 and tf32.min_subnormal == 2.0**-136
    assert tf32.eps == 2.0**-10 and tf32.bits == 19


@pytest.mark.parametrize("name", FLOAT_PRESETS)
def test_unit_roundoff_is_half_eps(name):
    fmt = lb.get_format(name)
    assert fmt.unit_roundoff == fmt.eps / 2
    assert fmt.precision == fmt.man_bits + 1


@pytest.mark.parametrize("name", ["int4", "int8", "uint8", "q3.12", "uq0.8"])
def test_fixed_unit_roundoff_and_range(name):
    fmt = lb.get_format(name)
    assert fmt.unit_roundoff == fmt.eps / 2
    f = fmt.fixed if isinstance(fmt, lb.IntFormat) else fmt
    signed = f.signed
    assert fmt.max == (2 ** (f.bits - signed) - 1) * 2.0**-f.frac_bits
    assert fmt.min == (-(2 ** (f.bits - 1)) * 2.0**-f.frac_bits if signed else 0.0)


SMALL = [
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


@pytest.mark.parametrize("name", SMALL)
def test_properties_match_independent_decoding(name):
    """max, min_normal, min_subnormal, n_finite and the special codes, from the oracle's own
    decoder of every code."""
    fmt = lb.get_format(name)
    o = FloatOracle(fmt)
    pos = [v for v in o.values if v > 0]
    assert fmt.max_exact == o.max and fmt.max == float(o.max)
    assert fmt.min_subnormal == float(pos[0])
    normals = [v for v in pos if v >= o.min_normal]
    assert fmt.min_normal == float(normals[0]) == float(o.min_normal)
    assert fmt.n_finite == sum(isinstance(v, Fr) for v in o.codes.values()) + o.has_neg_zero
    special = fmt.special_encodings()
    assert special["nan"] == [c for c, v in o.codes.items() if v == "nan"]
    assert special["+inf"] == [c for c, v in o.codes.items() if v == "+inf"]
    assert special["-inf"] == [c for c, v in o.codes.items() if v == "-inf"]
    assert special["-0"] == [c for c, v in o.codes.items() if v == "-0"]
    assert fmt.has_inf == bool(special["+inf"])
    assert fmt.has_nan == bool(special["nan"])
    assert fmt.has_neg_zero == bool(special["-0"])


def test_e8m0_properties():
    """OCP MX v1.0 §5.4.1: unsigned, no zero, 2^-127..2^127, one NaN code (0xFF)."""
    assert lb.get_format("e8m0") is E8M0 and lb.get_format("e8m0fnu") is E8M0
    assert (E8M0.bits, E8M0.signed, E8M0.has_zero) == (8, False, False)
    assert E8M0.max == 2.0**127 and E8M0.min_normal == E8M0.min_subnormal == 2.0**-127
    assert E8M0.nan_codes() == [0xFF]
    for code in range(255):
        assert E8M0.decode_exact(code) == Fr(2) ** (code - 127)
    vals = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    assert [E8M0.decode(c) for c in range(255)] == vals[:255].tolist()
    assert math.isnan(E8M0.decode(255)) and np.isnan(vals[255])


def test_decode_exact_rejects_out_of_range_codes():
    fmt = lb.get_format("e4m3")
    with pytest.raises(ValueError):
        fmt.decode_exact(256)
    with pytest.raises(ValueError):
        fmt.decode_exact(-1)
    with pytest.raises(ValueError):
        lb.get_format("int8").decode_exact(256)


# ---- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("e5m10", "fp16"),
        ("float16", "fp16"),
        ("half", "fp16"),
        ("binary16", "fp16"),
        ("e8m7", "bf16"),
        ("bfloat16", "bf16"),
        ("e8m23", "fp32"),
        ("e11m52", "fp64"),
        ("e4m3", "e4m3fn"),
        ("fp8", "e4m3fn"),
        ("float8_e4m3fn", "e4m3fn"),
        ("q43", "e4m3-ieee"),
        ("float8_e4m3", "e4m3-ieee"),
        ("q52", "e5m2"),
        ("float8_e5m2", "e5m2"),
        ("e2m1", "e2m1fn"),
        ("fp4", "e2m1fn"),
        ("e3m2", "e3m2fn"),
        ("e2m3", "e2m3fn"),
        ("E4M3", "e4m3fn"),
        (" bf16 ", "bf16"),
        ("e8m0fnu", "e8m0"),
    ],
)
def test_names_and_aliases(name, canonical):
    assert lb.get_format(name) == lb.get_format(canonical)
    assert lb.get_format(name).name == canonical


def test_parsed_names():
    assert lb.get_format("e5m10") == lb.FloatFormat(5, 10)  # equality is the layout, not name
    assert lb.get_format("e3m4") == lb.FloatFormat(3, 4, 3, "ieee")
    assert lb.get_format("e5m2fn") == lb.FloatFormat(5, 2, 15, "fn")
    assert lb.get_format("e3m3fnuz") == lb.FloatFormat(3, 3, 4, "fnuz")
    assert lb.get_format("e4m3fnuz") == lb.FloatFormat(4, 3, 8, "fnuz")
    assert lb.get_format("posit<8,0>") == lb.PositFormat(8, 0)
    assert lb.get_format("posit< 16 , 1 >") == lb.PositFormat(16, 1)
    assert lb.get_format("q3.12") == lb.FixedFormat(3, 12, signed=True)
    assert lb.get_format("q3.12").bits == 16
    assert lb.get_format("uq0.8") == lb.FixedFormat(0, 8, signed=False)
    assert lb.get_format("int5") == lb.IntFormat(5, signed=True)
    assert lb.get_format("uint7") == lb.IntFormat(7, signed=False)
    fmt = lb.get_format("fp16")
    assert lb.get_format(fmt) is fmt  # format objects pass through


def test_equal_layouts_are_equal_and_hash_alike():
    a, b = lb.FloatFormat(5, 10), lb.get_format("fp16")
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert lb.FloatFormat(5, 10, special="fn") != b
    assert lb.FloatFormat(5, 10, bias=14) != b
    assert lb.IntFormat(8).fixed == lb.FixedFormat(7, 0)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        lb.get_format("e4m3x")
    msg = str(err.value)
    for n in ("bf16", "fp16", "e4m3fn", "e5m2", "e2m1fn", "int8", "posit16"):
        assert n in msg
    assert "e4m3x" in msg
    assert set(known_names()) >= {"bf16", "fp16", "e4m3", "e4m3fn", "mxfp8_e4m3"}


@pytest.mark.parametrize(
    "bad", ["e0m3", "e12m3", "e4m99", "q3.60", "int99", "posit<2,0>", "e1m3", "fp17", ""]
)
def test_invalid_names_raise_value_error(bad):
    with pytest.raises(ValueError):
        lb.get_format(bad)


@pytest.mark.parametrize("bad", [3, 2.5, None, b"fp16"])
def test_non_string_format_raises_type_error(bad):
    with pytest.raises(TypeError):
        lb.get_format(bad)


def test_block_formats_are_not_element_formats():
    assert "mxfp8_e4m3" in block_presets()
    assert isinstance(lb.get_format("mxfp8"), lb.BlockFormat)
    with pytest.raises(ValueError, match="block"):
        get_element_format("mxfp8_e4m3")


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        (dict(exp_bits=0, man_bits=2), ValueError),
        (dict(exp_bits=12, man_bits=2), ValueError),
        (dict(exp_bits=4, man_bits=-1), ValueError),
        (dict(exp_bits=4, man_bits=53), ValueError),
        (dict(exp_bits=4, man_bits=3, special="foo"), ValueError),
        (dict(exp_bits=1, man_bits=3), ValueError),  # IEEE needs a binade for inf/NaN
        (dict(exp_bits=4, man_bits=3, special="fnuz", signed=False), ValueError),
        (dict(exp_bits=4.0, man_bits=3), TypeError),
        (dict(exp_bits=4, man_bits="3"), TypeError),
        (dict(exp_bits=True, man_bits=3), TypeError),
        (dict(exp_bits=4, man_bits=3, bias=2.5), TypeError),
    ],
)
def test_invalid_float_format_args(kwargs, exc):
    with pytest.raises(exc):
        lb.FloatFormat(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc"),
    [
        (lb.FixedFormat, dict(int_bits=-1, frac_bits=4), ValueError),
        (lb.FixedFormat, dict(int_bits=40, frac_bits=20), ValueError),
        (lb.FixedFormat, dict(int_bits=3.0, frac_bits=4), TypeError),
        (lb.IntFormat, dict(bits=0), ValueError),
        (lb.IntFormat, dict(bits=1, signed=True), ValueError),
        (lb.IntFormat, dict(bits=64), ValueError),
        (lb.IntFormat, dict(bits=8.0), TypeError),
    ],
)
def test_invalid_fixed_format_args(cls, kwargs, exc):
    with pytest.raises(exc):
        cls(**kwargs)


@pytest.mark.parametrize("name", list(presets()))
def test_presets_frozen_and_hashable(name):
    fmt = presets()[name]
    assert hash(fmt) == hash(dataclasses.replace(fmt))
    assert dataclasses.replace(fmt) == fmt
    assert {fmt: name}[fmt] == name
    field = dataclasses.fields(fmt)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fmt, field, 3)
    assert str(fmt) == fmt.name == name


def test_own_decoder_sanity_on_fp16():
    """A few codes decoded by hand (IEEE 754 §3.4)."""

    def dec(c):
        return decode_float_code(c, 5, 10, 15, "ieee")

    assert dec(0x3C00) == 1 and dec(0x7BFF) == 65504 and dec(0x0001) == Fr(1, 2**24)
    assert dec(0x8000) == "-0" and dec(0x7C00) == "+inf" and dec(0xFC00) == "-inf"
    assert dec(0x7E00) == "nan" and dec(0xC000) == -2


def test_register_format_is_found_by_name_but_not_listed_as_a_preset() -> None:
    from lowbit.formats import register_format

    fmt = lb.FloatFormat(3, 4, bias=5, special="none", name="test_e3m4_b5")
    register_format(fmt, "Test-Alias-E3M4")
    register_format(fmt)  # idempotent
    assert lb.get_format("TEST_E3M4_B5") == fmt
    assert lb.get_format("test-alias-e3m4") == fmt
    assert "test_e3m4_b5" not in lb.formats.presets()
    with pytest.raises(ValueError, match="already registered"):
        register_format(lb.FloatFormat(3, 4, name="test_e3m4_b5"))
    with pytest.raises(ValueError, match="already registered"):
        register_format(lb.FloatFormat(3, 4, name="bf16"))
    with pytest.raises(TypeError, match="FloatFormat"):
        register_format("e3m4")  # type: ignore[arg-type]
