"""The ``lowbit`` command, run in-process, checked against independent oracles (ml_dtypes).

Every number the CLI prints for a format that ml_dtypes has is compared with ml_dtypes'
finfo, its conversion of the value, or its decoding of the code.
"""

from __future__ import annotations

import csv
import io
import json
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from lowbit.cli.main import main
from lowbit.formats import block_presets, get_format, presets

# lowbit name -> ml_dtypes type, for every format both have
ML = {
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn,
    "e2m1fn": ml_dtypes.float4_e2m1fn,
}
if hasattr(ml_dtypes, "float8_e8m0fnu"):
    ML["e8m0"] = ml_dtypes.float8_e8m0fnu
CODE_DT = {4: np.uint8, 6: np.uint8, 8: np.uint8, 16: np.uint16}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``lowbit argv`` in-process; (exit status, stdout, stderr)."""
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def ml_decode(code: int, name: str) -> float:
    """ml_dtypes' value of a code (the oracle for decoding)."""
    dt = ML[name]
    bits = get_format(name).bits
    return float(np.array([code], dtype=CODE_DT[bits]).view(dt)[0])


def ml_code(value: float, name: str) -> int:
    """ml_dtypes' code of a value (converted by ml_dtypes, RNE)."""
    dt = ML[name]
    bits = get_format(name).bits
    return int(np.array([value], dtype=np.float32).astype(dt).view(CODE_DT[bits])[0])


def fields(out: str, key: str) -> list[str]:
    """Values of the ``key  value`` lines of the output (one per occurrence)."""
    vals = []
    for line in out.splitlines():
        s = line.strip()
        if s.startswith(key + " ") and s[len(key) :].startswith("  "):
            vals.append(s[len(key) :].strip())
    return vals


def num(s: str) -> float:
    """A number as printed in the formats table: ``448``, ``2^-6``, ``1.79769e+308``."""
    if s.startswith("2^"):
        return 2.0 ** int(s[2:])
    return float(s)


# ------------------------------------------------------------------------------------------
# help, version, usage errors
# ------------------------------------------------------------------------------------------
def test_help_lists_every_subcommand_with_a_description(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for cmd in ("formats", "info", "round", "enumerate", "demo"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(cmd))
        idx = out.splitlines().index(line)
        desc = line.strip()[len(cmd) :].strip() or out.splitlines()[idx + 1].strip()
        assert len(desc) > 10, (cmd, desc)


def test_version(capsys: pytest.CaptureFixture[str]):
    import lowbit

    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"lowbit {lowbit.__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys)
    assert rc == 2 and "formats" in out


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["info", "e9m9x"], "e9m9x"),
        (["round", "0.1", "--format", "fp7"], "fp7"),
        (["round", "0.1", "--format", "bf16", "--mode", "nearest_odd"], "nearest_odd"),
        (["round", "abc", "--format", "bf16"], "abc"),
        (["round", "0.1", "--format", "e4m3", "--overflow", "wrap"], "wrap"),
        (["round", "0.1", "--format", "posit16", "--mode", "rtz"], "rtz"),
        (["round", "0.1", "--format", "mxfp8_e4m3"], "mxfp8_e4m3"),
        (["enumerate", "fp32"], "fp32"),
        (["enumerate", "posit<32,2>"], "posit<32,2>"),
        (["enumerate", "mxfp4"], "mxfp4"),
        (["enumerate", "nope"], "nope"),
    ],
)
def test_user_errors_exit_2_with_one_line_naming_the_bad_value(
    capsys: pytest.CaptureFixture[str], argv: list[str], bad: str
):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert bad in lines[0] and "Traceback" not in err
    assert lines[0].startswith(f"lowbit {argv[0]}: error:")


def test_argparse_usage_error_exits_2(capsys: pytest.CaptureFixture[str]):
    rc, _, err = run(capsys, "round", "0.1")  # --format missing
    assert rc == 2 and "--format" in err


def test_enumerate_refuses_more_than_16_bits_clearly(capsys: pytest.CaptureFixture[str]):
    _, _, err = run(capsys, "enumerate", "fp32")
    assert "32 bits" in err and "at most 16 bits" in err


# ------------------------------------------------------------------------------------------
# lowbit formats
# ------------------------------------------------------------------------------------------
def _markdown_rows(out: str, first_header: str) -> dict[str, dict[str, str]]:
    lines = out.splitlines()
    start = next(
        i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |") and "aliases" in ln
    )
    header = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = {}
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_formats_lists_every_preset_and_block_preset(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "formats")
    assert rc == 0
    for name in [*presets(), *block_presets()]:
        assert name in out
    assert "mxfp8_e4m3" in out and "8.25" in out  # bits per element of MX blocks


def test_formats_numbers_match_ml_dtypes_finfo(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "formats", "--markdown")
    assert rc == 0
    rows = _markdown_rows(out, "name")
    for name, dt in ML.items():
        fi = ml_dtypes.finfo(dt)
        r = rows[name]
        assert math.isclose(num(r["max"]), float(fi.max), rel_tol=1e-5), name
        assert num(r["min normal"]) == float(fi.smallest_normal), name
        assert num(r["eps"]) == float(fi.eps), name
        if name != "e8m0":
            assert num(r["min subnormal"]) == float(fi.smallest_subnormal), name
        assert int(r["bits"]) == get_format(name).bits
    assert rows["e4m3fn"]["max"] == "448" and rows["e4m3-ieee"]["max"] == "240"
    assert rows["e4m3fn"]["inf"] == "no" and rows["e5m2"]["inf"] == "yes"
    assert "e4m3" in rows["e4m3fn"]["aliases"]
    blocks = _markdown_rows(out, "name")  # first table; the block table follows
    assert "bf16" in blocks
    assert "| mxfp8_e4m3 | mxfp8 | e4m3fn | 32 | e8m0 | floor | 8.25 |" in out


# ------------------------------------------------------------------------------------------
# lowbit info
# ------------------------------------------------------------------------------------------
def test_info_e4m3(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "info", "e4m3")
    assert rc == 0
    assert out.splitlines()[0].startswith("e4m3fn")
    assert fields(out, "max")[0].startswith("448.0")
    assert "code 0x7e" in fields(out, "max")[0]
    assert fields(out, "bias") == ["7"]
    assert fields(out, "emin / emax") == ["-6 / 8"]
    assert fields(out, "min normal")[0].startswith("0.015625")
    assert fields(out, "min subnormal")[0].startswith("0.001953125")
    assert fields(out, "eps")[0].startswith("0.125")
    assert fields(out, "unit roundoff")[0].startswith("0.0625")
    assert fields(out, "+inf") == ["none"] and fields(out, "-inf") == ["none"]
    assert fields(out, "NaN") == ["0x7f, 0xff (2 codes)"]
    assert fields(out, "-0") == ["0x80"]


def _parse_codes(s: str) -> set[int]:
    """Codes from ``0x7f, 0xff (2 codes)`` or ``0x7c01..0x7fff, ...``."""
    s = s.split(" (")[0]
    if s == "none":
        return set()
    codes: set[int] = set()
    for part in s.split(", "):
        if ".." in part:
            lo, hi = part.split("..")
            codes.update(range(int(lo, 16), int(hi, 16) + 1))
        else:
            codes.add(int(part, 16))
    return codes


@pytest.mark.parametrize("name", sorted(ML))
def test_info_matches_ml_dtypes(capsys: pytest.CaptureFixture[str], name: str):
    rc, out, _ = run(capsys, "info", name)
    assert rc == 0
    fi = ml_dtypes.finfo(ML[name])
    mx = fields(out, "max")[0]
    assert float(mx.split()[0]) == float(fi.max)
    assert int(mx.split("code ")[1], 16) == ml_code(float(fi.max), name)
    assert float(fields(out, "min normal")[0].split()[0]) == float(fi.smallest_normal)
    bits = get_format(name).bits
    all_codes = range(1 << bits)
    nan_codes = {c for c in all_codes if math.isnan(ml_decode(c, name))}
    assert _parse_codes(fields(out, "NaN")[0]) == nan_codes
    inf_codes = {c for c in all_codes if ml_decode(c, name) == math.inf}
    assert _parse_codes(fields(out, "+inf")[0]) == inf_codes
    neg0 = {
        c for c in all_codes if ml_decode(c, name) == 0 and math.copysign(1, ml_decode(c, name)) < 0
    }
    assert _parse_codes(fields(out, "-0")[0]) == neg0


def test_info_other_families(capsys: pytest.CaptureFixture[str]):
    _, out, _ = run(capsys, "info", "posit16")
    assert float(fields(out, "max (maxpos)")[0].split()[0]) == 2.0**56  # useed^(n-2) = 16^14
    assert "code 0x7fff" in fields(out, "max (maxpos)")[0]
    assert "code 0x0001" in fields(out, "min (minpos)")[0]
    assert fields(out, "NaR") == ["0x8000"]
    _, out, _ = run(capsys, "info", "q3.12")
    assert float(fields(out, "max")[0].split()[0]) == 8 - 2.0**-12
    assert float(fields(out, "min")[0].split()[0]) == -8.0
    assert "code 0x8000" in fields(out, "min")[0]
    _, out, _ = run(capsys, "info", "int8")
    assert float(fields(out, "max")[0].split()[0]) == 127.0
    assert "code 0x80" in fields(out, "min")[0]
    rc, out, _ = run(capsys, "info", "mxfp8")
    assert rc == 0
    assert fields(out, "bits/element")[0].startswith("8.25")
    assert fields(out, "element format") == ["e4m3fn"]
    assert float(fields(out, "largest value")[0].split()[0]) == 448.0 * 2.0**127
    rc, out, _ = run(capsys, "info", "fp32")
    assert rc == 0 and fields(out, "+inf") == ["0x7f800000"]
    assert fields(out, "NaN")[0].startswith("0x7f800001..0x7fffffff, 0xff800001..0xffffffff")


# ------------------------------------------------------------------------------------------
# lowbit round
# ------------------------------------------------------------------------------------------
def test_round_0_1_bf16(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "round", "0.1", "--format", "bf16", "--mode", "rne")
    assert rc == 0
    expect = float(ml_dtypes.bfloat16(0.1))
    assert float(fields(out, "rounded")[0].split()[0]) == expect
    code = int(np.array(expect, dtype=ml_dtypes.bfloat16).view(np.uint16))
    assert fields(out, "hex") == [f"0x{code:04x}"]
    assert fields(out, "bits")[0].split()[0] == "0|01111011|1001101"
    assert int(fields(out, "bits")[0].split()[0].replace("|", ""), 2) == code
    err = abs(Fraction(expect) - Fraction(0.1))
    assert float(fields(out, "abs error")[0].split()[0]) == float(err)
    assert float(fields(out, "rel error")[0]) == float(err / Fraction(0.1))
    assert "205/2048" in fields(out, "rounded")[0]


VALUES = [0.1, -0.3, 1.0, -2.5, 3.14159, 1e-3, -7e-5, 250.0, 1e-7, 0.0]


@pytest.mark.parametrize("name", sorted(set(ML) - {"e8m0"}))
def test_round_agrees_with_ml_dtypes(capsys: pytest.CaptureFixture[str], name: str):
    fmt = get_format(name)
    # fp32-exact inputs (ml_dtypes may convert a float64 through float32); within range
    xs = [float(np.float32(v)) for v in VALUES if abs(v) <= fmt.max]
    rc, out, _ = run(capsys, "round", *map(repr, xs), "--format", name, "--json")
    assert rc == 0
    res = json.loads(out)["results"]
    assert len(res) == len(xs)
    for x, r in zip(xs, res, strict=True):
        expect_code = ml_code(x, name)
        assert r["code"] == expect_code, (name, x)
        assert r["rounded"] == ml_decode(expect_code, name), (name, x)
        assert r["hex"] == f"0x{expect_code:0{(fmt.bits + 3) // 4}x}"
    # the human-readable output says the same
    rc, out, _ = run(capsys, "round", *map(repr, xs), "--format", name)
    assert [float(s.split()[0]) for s in fields(out, "rounded")] == [r["rounded"] for r in res]
    assert [int(s, 16) for s in fields(out, "hex")] == [r["code"] for r in res]


def test_round_negative_values_are_values_not_options(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "round", "-1e-3", "-inf", "-0", "--format", "fp16")
    assert rc == 0
    rounded = [s.split()[0] for s in fields(out, "rounded")]
    assert float(rounded[0]) == float(np.float16(-1e-3))
    assert rounded[1:] == ["-inf", "-0.0"]
    assert fields(out, "hex") == [
        f"0x{int(np.float16(-1e-3).view(np.uint16)):04x}",
        "0xfc00",
        "0x8000",
    ]


def test_round_hex_float_and_fraction_inputs(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "round", "0x1.8p-3", "1/3", "--format", "e5m2", "--json")
    assert rc == 0
    res = json.loads(out)["results"]
    assert res[0]["input"] == 0.1875 and res[0]["rounded"] == 0.1875
    assert res[0]["abs_error"] == 0.0
    assert res[1]["input"] == 1 / 3
    assert res[1]["rounded"] == float(ml_dtypes.float8_e5m2(np.float32(1 / 3)))


def test_round_edge_options(capsys: pytest.CaptureFixture[str]):
    # overflow: e4m3fn gives NaN by default (as ml_dtypes), saturate clamps to 448
    _, out, _ = run(capsys, "round", "1000", "--format", "e4m3", "--json")
    assert math.isnan(json.loads(out)["results"][0]["rounded"])
    _, out, _ = run(capsys, "round", "1000", "--format", "e4m3", "--overflow", "saturate", "--json")
    assert json.loads(out)["results"][0]["rounded"] == 448.0
    # no subnormals: below min_normal only 0 and min_normal exist
    mn = float(np.finfo(np.float16).tiny)
    _, out, _ = run(
        capsys, "round", "1e-6", "4e-5", "--format", "fp16", "--no-subnormals", "--json"
    )
    assert [r["rounded"] for r in json.loads(out)["results"]] == [0.0, mn]
    # fnuz formats have no -0
    _, out, _ = run(capsys, "round", "-1e-30", "--format", "e4m3fnuz", "--json")
    r = json.loads(out)["results"][0]
    assert r["code"] == 0 and math.copysign(1, r["rounded"]) > 0
    # rtz never increases the magnitude
    _, out, _ = run(capsys, "round", "0.1", "-0.1", "--format", "bf16", "-m", "rtz", "--json")
    res = json.loads(out)["results"]
    assert abs(res[0]["rounded"]) <= 0.1 and abs(res[1]["rounded"]) <= 0.1
    assert res[0]["rounded"] == -res[1]["rounded"]


def test_round_input_dtype(capsys: pytest.CaptureFixture[str]):
    _, out, _ = run(
        capsys, "round", "0.1", "--format", "bf16", "--input-dtype", "float32", "--json"
    )
    r = json.loads(out)["results"][0]
    assert r["input"] == float(np.float32(0.1))
    assert r["rounded"] == float(ml_dtypes.bfloat16(np.float32(0.1)))


def test_round_stochastic_is_reproducible_and_prints_its_seed(
    capsys: pytest.CaptureFixture[str],
):
    args = ["round", *["0.1"] * 16, "--format", "e4m3", "--mode", "sr", "--seed", "7", "--json"]
    _, out1, _ = run(capsys, *args)
    _, out2, _ = run(capsys, *args)
    r1 = [r["rounded"] for r in json.loads(out1)["results"]]
    assert r1 == [r["rounded"] for r in json.loads(out2)["results"]]
    assert set(r1) <= {0.09375, 0.1015625}  # the two e4m3 neighbours of 0.1 (12/128, 13/128)
    assert len(set(r1)) == 2  # 16 draws, up with p = 0.8: both neighbours (fixed seed)
    _, out, _ = run(capsys, "round", "0.1", "--format", "e4m3", "--mode", "sr")
    assert "seed " in out.splitlines()[0]


def _nearest_posit(x: float, name: str) -> float:
    """Brute force over every code: the nearest posit value (no tie in the cases used)."""
    fmt = get_format(name)
    vals = [fmt.decode_exact(c) for c in range(1 << fmt.bits)]
    finite = [v for v in vals if v is not None]
    best = min(finite, key=lambda v: abs(v - Fraction(x)))
    return float(best)


@pytest.mark.parametrize("x", [0.1, -3.3, 1e-5, 7777.0])
def test_round_posit8_brute_force(capsys: pytest.CaptureFixture[str], x: float):
    rc, out, _ = run(capsys, "round", repr(x), "--format", "posit8", "--json")
    assert rc == 0
    r = json.loads(out)["results"][0]
    assert r["rounded"] == _nearest_posit(x, "posit8")
    assert get_format("posit8").decode(r["code"]) == r["rounded"]


def test_round_fixed_point_twos_complement(capsys: pytest.CaptureFixture[str]):
    _, out, _ = run(capsys, "round", "3.14159", "-3.14159", "9", "--format", "q3.4", "--json")
    res = json.loads(out)["results"]
    assert [r["rounded"] for r in res] == [3.125, -3.125, 127 / 16]
    assert [r["code"] for r in res] == [0x32, (-50) & 0xFF, 0x7F]


# ------------------------------------------------------------------------------------------
# lowbit enumerate
# ------------------------------------------------------------------------------------------
def _csv(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


def test_enumerate_e4m3_csv(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "enumerate", "e4m3", "--csv")
    assert rc == 0
    rows = _csv(out)
    assert len(rows) == 256
    for code, row in enumerate(rows):
        assert int(row["code"]) == code and int(row["hex"], 16) == code
        assert int(row["binary"].replace("|", ""), 2) == code
        ref = ml_decode(code, "e4m3fn")
        v = float(row["value"])
        assert (math.isnan(v) and math.isnan(ref)) or (
            v == ref and math.copysign(1, v) == math.copysign(1, ref)
        ), code
    classes = [r["class"] for r in rows]
    assert classes.count("nan") == 2 and classes.count("zero") == 2
    assert classes.count("subnormal") == 14 and classes.count("normal") == 238
    assert rows[1]["binary"] == "0|0000|001" and rows[1]["class"] == "subnormal"


@pytest.mark.parametrize("name", sorted(ML))
def test_enumerate_matches_ml_dtypes(capsys: pytest.CaptureFixture[str], name: str):
    rc, out, _ = run(capsys, "enumerate", name, "--csv")
    assert rc == 0
    rows = _csv(out)
    assert len(rows) == 1 << get_format(name).bits
    got = np.array([float(r["value"]) for r in rows])
    codes = np.arange(len(rows), dtype=CODE_DT[get_format(name).bits])
    with np.errstate(invalid="ignore"):
        ref = codes.view(ML[name]).astype(np.float64)
    np.testing.assert_array_equal(got, ref)  # NaN positions equal too
    finite = ~np.isnan(ref)
    assert np.array_equal(np.signbit(got[finite]), np.signbit(ref[finite]))  # -0 included


def test_enumerate_table_and_other_families(capsys: pytest.CaptureFixture[str]):
    rc, out, _ = run(capsys, "enumerate", "e2m1")
    assert rc == 0
    lines = out.splitlines()
    assert "16 codes" in lines[0] and len(lines) == 2 + 16
    assert lines[-1].split()[:4] == ["15", "0xf", "1|11|1", "-6.0"]
    _, out, _ = run(capsys, "enumerate", "posit8", "--csv")
    rows = _csv(out)
    assert rows[0x80]["class"] == "nar" and rows[0x7F]["value"] == repr(2.0**24)
    assert rows[0x40]["value"] == "1.0" and rows[0x40]["binary"] == "0|10|00|000"
    _, out, _ = run(capsys, "enumerate", "int4", "--csv")
    rows = _csv(out)
    assert [float(r["value"]) for r in rows] == [*range(8), *range(-8, 0)]
