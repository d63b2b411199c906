"""The CLI's exact scalar helpers: code of a value, bit fields, classes, number display."""

from __future__ import annotations

import math

import pytest

from lowbit.cli.describe import bit_fields, classify, code_of, fmt_num, hexf, nan_code_ranges
from lowbit.formats import FloatFormat, get_format, presets

SMALL = [n for n, f in presets().items() if f.bits <= 8]


@pytest.mark.parametrize("name", SMALL)
def test_code_of_inverts_decode_on_every_finite_code(name: str):
    fmt = get_format(name)
    for c in range(1 << fmt.bits):
        v = fmt.decode(c)
        if math.isnan(v):
            continue
        assert code_of(v, fmt) == c, (name, c, v)


@pytest.mark.parametrize("name", SMALL)
def test_code_of_nan_is_a_nan_code(name: str):
    fmt = get_format(name)
    ranges = nan_code_ranges(fmt)
    if not ranges:
        with pytest.raises(ValueError):
            code_of(math.nan, fmt)
        return
    c = code_of(math.nan, fmt)
    assert any(lo <= c <= hi for lo, hi in ranges)


def test_code_of_posit16_and_fp16_samples():
    for name in ("posit16", "fp16", "bf16", "q3.12"):
        fmt = get_format(name)
        for c in range(0, 1 << 16, 97):
            v = fmt.decode(c)
            if not math.isnan(v):
                assert code_of(v, fmt) == c, (name, c)


def test_code_of_rejects_values_not_in_the_format():
    with pytest.raises(ValueError, match="not a value"):
        code_of(0.1, get_format("e4m3"))
    with pytest.raises(ValueError):
        code_of(math.inf, get_format("e4m3"))
    with pytest.raises(ValueError):
        code_of(1000.0, get_format("e4m3"))
    with pytest.raises(ValueError):
        code_of(0.3, get_format("posit8"))
    with pytest.raises(ValueError):
        code_of(200.0, get_format("int8"))


def test_bit_fields():
    assert bit_fields(0x3DCD, get_format("bf16")) == (
        "0|01111011|1001101",
        "sign|exponent|mantissa",
    )
    assert bit_fields(0x40, get_format("posit8"))[0] == "0|10|00|000"
    assert bit_fields(0x7F, get_format("posit8"))[0] == "0|1111111"
    assert bit_fields(0xC0, get_format("posit8"))[0] == "1|1000000"
    assert bit_fields(0x32, get_format("q3.4")) == ("0|011|0010", "sign|integer|fraction")
    assert (
        bit_fields(0x7E, FloatFormat(8, 0, 127, "fn", signed=False, has_zero=False))[0]
        == "01111110"
    )


def test_classify_e4m3():
    fmt = get_format("e4m3")
    assert [classify(fmt, c) for c in (0x00, 0x01, 0x08, 0x7E, 0x7F, 0x80)] == [
        "zero",
        "subnormal",
        "normal",
        "normal",
        "nan",
        "zero",
    ]
    assert classify(get_format("fp16"), 0x7C00) == "inf"
    assert classify(get_format("posit8"), 0x80) == "nar"
    assert classify(get_format("int8"), 5) == "finite"


def test_number_display():
    assert fmt_num(448.0) == "448"
    assert fmt_num(2.0**-9) == "2^-9"
    assert fmt_num(0.125) == "0.125"
    assert fmt_num(2.0**127) == "2^127"
    assert fmt_num(65504.0) == "65504"
    assert hexf(448.0) == "0x1.cp+8" and hexf(2.0**-6) == "0x1p-6" and hexf(-0.0) == "-0x0p+0"
