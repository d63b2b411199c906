"""encode / decode / flip_bits: every code of every small format, ml_dtypes bit patterns, and
the fault-injection statistics."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from lowbit.formats import E8M0, FixedFormat, FloatFormat, IntFormat, PositFormat, presets
from lowbit.kernels.randbits import bits_int, bits_numpy
from lowbit.rounding import decode, encode, flip_bits

SMALL_PRESETS = sorted(name for name, f in presets().items() if f.bits <= 16)
AD_HOC = [
    FloatFormat(3, 0),
    FloatFormat(2, 2, special="fn"),
    FloatFormat(4, 2, 8, "fnuz"),
    FloatFormat(5, 0),
    FloatFormat(3, 1, special="fn"),
    FloatFormat(4, 3, 3, "none"),
    FloatFormat(6, 2, signed=False, special="fn"),
    FloatFormat(4, 0, 7, "fn", False, False),
    PositFormat(3, 0),
    PositFormat(6, 3),
    PositFormat(10, 4),
    PositFormat(16, 0),
    FixedFormat(3, 4),
    FixedFormat(0, 7, False),
    FixedFormat(2, -2),
    FixedFormat(5, 10),
    IntFormat(5, False),
    IntFormat(3),
]
ALL_SMALL = [lb.get_format(n) for n in SMALL_PRESETS] + AD_HOC


def _ids(f: object) -> str:
    return str(f)


def _u64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def _nan_codes(fmt) -> set[int]:
    if isinstance(fmt, FloatFormat):
        return set(fmt.nan_codes())
    if isinstance(fmt, PositFormat):
        return {fmt.nar_code}
    return set()


# ---- round trips over every code ----------------------------------------------------------
@pytest.mark.parametrize("fmt", ALL_SMALL, ids=_ids)
def test_every_code_round_trips(fmt) -> None:
    codes = np.arange(1 << fmt.bits, dtype=np.uint64)
    vals = decode(codes, fmt, np.float64)
    expected = np.array([fmt.decode(int(c)) for c in codes])  # the format's own decoder
    assert np.array_equal(_u64(vals)[~np.isnan(vals)], _u64(expected)[~np.isnan(expected)])
    assert np.array_equal(np.isnan(vals), np.isnan(expected))
    nan = np.isnan(vals)
    assert set(codes[nan].tolist()) == _nan_codes(fmt)  # every NaN code decodes to NaN
    if isinstance(fmt, FloatFormat) and fmt.special == "ieee" and fmt.man_bits == 0:
        vals, codes, nan = vals[~nan], codes[~nan], nan[~nan]  # no NaN code to encode into
    again = encode(vals, fmt)
    assert again.dtype == np.dtype(f"uint{max(8, 1 << (fmt.bits - 1).bit_length())}")
    assert np.array_equal(again[~nan], codes[~nan].astype(again.dtype))  # same bits exactly
    if nan.any():
        assert set(again[nan].tolist()) <= _nan_codes(fmt)
        assert len(set(again[nan].tolist())) == 1  # one canonical NaN code
    assert np.array_equal(_u64(decode(again, fmt, np.float64)), _u64(vals))


@pytest.mark.parametrize("fmt", ALL_SMALL, ids=_ids)
def test_decode_dtypes_and_containers(fmt) -> None:
    codes = np.arange(1 << fmt.bits, dtype=np.uint64)
    v64 = decode(codes, fmt, np.float64)
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16):
        with np.errstate(over="ignore"):
            expected = v64.astype(dt)
        got = decode(codes.astype(np.int64), fmt, dt)
        assert got.dtype == np.dtype(dt)
        assert np.array_equal(got.view(f"u{got.itemsize}"), expected.view(f"u{got.itemsize}"))
    if fmt.bits in (8, 16):  # signed containers of the full width hold the same bit pattern
        signed = codes.astype(f"u{fmt.bits // 8}").view(f"i{fmt.bits // 8}")
        assert np.array_equal(_u64(decode(signed, fmt, np.float64)), _u64(v64))


@pytest.mark.parametrize("name", ["fp32", "tf32", "posit32", "q15.16", "int32", "uint32"])
def test_wide_formats(name: str) -> None:
    fmt = lb.get_format(name)
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 1 << fmt.bits, 20_000, dtype=np.uint64)
    vals = decode(codes, fmt, np.float64)
    sample = codes[:500]
    expected = np.array([fmt.decode(int(c)) for c in sample])
    ok = ~np.isnan(expected)
    assert np.array_equal(_u64(vals[:500])[ok], _u64(expected[ok]))
    nan = np.isnan(vals)
    assert np.array_equal(encode(vals[~nan], fmt).astype(np.uint64), codes[~nan])
    if name == "fp32":
        bits = codes.astype(np.uint32)
        with np.errstate(invalid="ignore"):  # signalling NaNs
            as64 = bits.view(np.float32).astype(np.float64)
        assert np.array_equal(_u64(vals)[~nan], _u64(as64)[~nan])
        assert np.array_equal(nan, np.isnan(bits.view(np.float32)))


def test_fp64_format_is_the_bit_view() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 1 << 64, 20_000, dtype=np.uint64)
    x = codes.view(np.float64)
    vals = decode(codes, "fp64", np.float64)
    nan = np.isnan(x)
    assert np.array_equal(vals.view(np.uint64)[~nan], codes[~nan])
    assert np.isnan(vals[nan]).all()
    assert np.array_equal(encode(x[~nan], "fp64"), codes[~nan])


# ---- agreement with ml_dtypes -------------------------------------------------------------
ML_DTYPES = [
    ("e4m3fn", ml_dtypes.float8_e4m3fn),
    ("e5m2", ml_dtypes.float8_e5m2),
    ("e4m3fnuz", ml_dtypes.float8_e4m3fnuz),
    ("e5m2fnuz", ml_dtypes.float8_e5m2fnuz),
    ("e4m3-ieee", ml_dtypes.float8_e4m3),
    ("e3m2fn", ml_dtypes.float6_e3m2fn),
    ("e2m3fn", ml_dtypes.float6_e2m3fn),
    ("e2m1fn", ml_dtypes.float4_e2m1fn),
    ("e8m0", ml_dtypes.float8_e8m0fnu),
    ("fp16", np.float16),
    ("bf16", ml_dtypes.bfloat16),
]


def _ml_inputs() -> np.ndarray:
    rng = np.random.default_rng(11)
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    rand = rng.integers(0, 1 << 32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([f16, rand, rng.standard_normal(20_000).astype(np.float32)])
    return x[~np.isnan(x)]


@pytest.mark.parametrize("impl", ["reference", "auto"])
@pytest.mark.parametrize(("name", "dt"), ML_DTYPES, ids=[n for n, _ in ML_DTYPES])
def test_encode_matches_ml_dtypes(name: str, dt: object, impl: str) -> None:
    fmt = lb.get_format(name)
    x = _ml_inputs()
    if fmt is E8M0:
        # ml_dtypes rounds every |x| in (2^-127, 2^-126) up to 2^-126, although RNE gives 2^-127
        # below 1.5 * 2^-127; compare where its rounding is the nearest-even one.
        x = x[np.abs(x) >= 2.0**-126]
    with np.errstate(all="ignore"):
        ref = x.astype(dt)
    ref_codes = ref.view(np.uint8 if ref.itemsize == 1 else np.uint16)
    got = encode(x, fmt, impl=impl)
    assert got.dtype == ref_codes.dtype
    ref_nan = np.isnan(ref.astype(np.float64))
    got_nan = np.isnan(decode(got, fmt, np.float64))
    assert np.array_equal(got_nan, ref_nan)
    bad = np.flatnonzero((got != ref_codes) & ~ref_nan)
    assert bad.size == 0, (
        f"{bad.size} differ: x={x[bad[:5]]} got={got[bad[:5]]} ref={ref_codes[bad[:5]]}"
    )


# ---- errors and containers ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["e2m1", "e3m2", "q3.4", "int8", "e5m0"])
def test_nan_into_format_without_nan_raises(name: str) -> None:
    fmt = lb.get_format(name)
    with pytest.raises(ValueError, match=fmt.name.replace("(", r"\(").replace(")", r"\)")):
        encode(np.array([1.0, np.nan]), fmt)


def test_encode_special_values() -> None:
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0])
    assert encode(x, "fp16").tolist() == [0x7E00, 0x7C00, 0xFC00, 0x8000, 0]
    assert encode(x, "e4m3fn").tolist() == [0x7F, 0x7F, 0x7F, 0x80, 0]  # overflow="nan"
    assert encode(x, "e4m3fn", overflow="saturate").tolist() == [0x7F, 0x7E, 0xFE, 0x80, 0]
    assert encode(x, "e4m3fnuz").tolist() == [0x80, 0x80, 0x80, 0, 0]
    assert encode(x, "posit16").tolist() == [0x8000, 0x8000, 0x8000, 0, 0]
    assert encode(x[1:], "q3.4").tolist() == [0x7F, 0x80, 0, 0]
    assert encode(np.array([1.0, -1.0, 0.0]), "e8m0").tolist() == [127, 255, 255]


def test_encode_rounds_in_the_mode() -> None:
    x = np.array([1.0 + 2.0**-4, -(1.0 + 2.0**-4)])  # a tie in e4m3
    assert encode(x, "e4m3", "rne").tolist() == [0x38, 0xB8]
    assert encode(x, "e4m3", "rna").tolist() == [0x39, 0xB9]
    assert encode(x, "e4m3", "rtz").tolist() == [0x38, 0xB8]
    # SR uses the round() draws: same seed, same codes as rounding first
    y = np.random.default_rng(0).standard_normal(1000)
    assert np.array_equal(
        encode(y, "posit8", "sr", seed=3), encode(lb.round(y, "posit8", "sr", seed=3), "posit8")
    )


def test_decode_errors() -> None:
    with pytest.raises(ValueError, match="out of range"):
        decode(np.array([256]), "e4m3")
    with pytest.raises(ValueError, match="out of range"):
        decode(np.array([-129]), "e4m3")
    with pytest.raises(TypeError, match="integers"):
        decode(np.array([1.0]), "e4m3")
    with pytest.raises(TypeError):
        encode(np.array([1, 2]), "e4m3")


def test_torch_containers() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.0, -2.0, float("nan"), 3.5], dtype=torch.float32)
    for name, tdt in [
        ("e4m3", torch.uint8),
        ("e2m1", None),
        ("posit16", torch.int16),
        ("bf16", torch.int16),
        ("posit32", torch.int32),
        ("fp32", torch.int32),
        ("fp64", torch.int64),
    ]:
        fmt = lb.get_format(name)
        xin = x[[0, 1, 3]] if name == "e2m1" else x
        c = encode(xin, fmt)
        assert c.dtype == (tdt or torch.uint8)
        ref = encode(xin.numpy(), fmt)
        assert np.array_equal(c.numpy().view(ref.dtype), ref)  # same bit pattern
        back = decode(c, fmt, torch.float32)
        assert back.dtype == torch.float32
        assert np.array_equal(np.isnan(back.numpy()), np.isnan(decode(ref, fmt).astype(np.float32)))
        assert torch.equal(
            decode(c, fmt, np.float64).nan_to_num(7.0),
            torch.from_numpy(decode(ref, fmt, np.float64)).nan_to_num(7.0),
        )


def test_jax_containers() -> None:
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(np.array([1.0, -2.0, 3.5], dtype=np.float32))
    for name, dt in [("e4m3", np.uint8), ("posit16", np.uint16), ("posit32", np.uint32)]:
        c = encode(x, name)
        assert c.dtype == dt
        assert np.array_equal(np.asarray(c), encode(np.asarray(x), name))
        back = decode(c, name, np.float32)
        assert np.array_equal(np.asarray(back), decode(np.asarray(c), name))


# ---- flip_bits ----------------------------------------------------------------------------
def _grid_values(count: int, seed: int) -> np.ndarray:
    """Random values of q7.8 (every 16-bit code is a number), exact in fp32."""
    codes = np.random.default_rng(seed).integers(0, 1 << 16, count).astype(np.uint16)
    return decode(codes, "q7.8", np.float32)


def test_flip_p0_is_rounding_only() -> None:
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    for name in ("e4m3", "posit8", "q3.4", "bf16"):
        got = flip_bits(x, name, 0.0, seed=1)
        assert got.dtype == x.dtype
        assert np.array_equal(got.view(np.uint32), lb.round(x, name).view(np.uint32))


@pytest.mark.parametrize(
    "name", ["e4m3", "e5m2", "posit8", "posit16", "q7.8", "int4", "e2m1", "e8m0", "bf16"]
)
def test_flip_p1_flips_every_bit(name: str) -> None:
    fmt = lb.get_format(name)
    x = np.abs(np.random.default_rng(2).standard_normal(3000)) + 0.1
    codes = encode(x, fmt).astype(np.uint64)
    flipped = codes ^ np.uint64((1 << fmt.bits) - 1)
    got = flip_bits(x, fmt, 1.0, seed=9)
    expected = decode(flipped, fmt, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    assert np.array_equal(_u64(got)[ok], _u64(expected)[ok])
    # and directly on the codes where no NaN code is involved
    again = encode(got[ok], fmt).astype(np.uint64)
    assert np.array_equal(again, flipped[ok])


def test_flip_rate_matches_p() -> None:
    p, count, bits = 1e-2, 40_000, 16
    x = _grid_values(count, 3)
    got = flip_bits(x, "q7.8", p, seed=2024)
    diff = encode(got, "q7.8") ^ encode(x, "q7.8")
    per_bit = np.array([((diff >> b) & 1).sum() for b in range(bits)])
    total = count * bits
    sd = np.sqrt(total * p * (1 - p))
    assert abs(per_bit.sum() - total * p) <= 5 * sd
    sd_bit = np.sqrt(count * p * (1 - p))
    assert (np.abs(per_bit - count * p) <= 5 * sd_bit).all(), per_bit
    # two flips in one code happen about as often as independence says
    two = int((sum((diff >> b) & 1 for b in range(bits)) >= 2).sum())
    p2 = 1 - (1 - p) ** bits - bits * p * (1 - p) ** (bits - 1)
    assert abs(two - count * p2) <= 5 * np.sqrt(count * p2)


def test_flip_follows_the_stated_draws() -> None:
    x = _grid_values(2000, 4)
    p, seed, offset = 0.3, 77, 10
    got = flip_bits(x, "q7.8", p, seed=seed, offset=offset)
    mask = np.zeros(x.size, dtype=np.uint16)
    for b in range(16):
        r = bits_numpy(seed, offset, x.size, stream=b + 1)
        mask |= (r.astype(np.float64) < p * 2**32).astype(np.uint16) << np.uint16(b)
        for i in (0, 1, 999):  # the scalar definition of the draws
            assert r[i] == bits_int(seed, offset + i, stream=b + 1)
    assert np.array_equal(encode(got, "q7.8"), encode(x, "q7.8") ^ mask)
    # chunking: a slice with its offset sees the same draws
    part = flip_bits(x[700:], "q7.8", p, seed=seed, offset=offset + 700)
    assert np.array_equal(part.view(np.uint32), got[700:].view(np.uint32))


def test_flip_reproducible_and_seed_dependent() -> None:
    x = _grid_values(4000, 5)
    a = flip_bits(x, "q7.8", 0.05, seed=1)
    b = flip_bits(x, "q7.8", 0.05, seed=1)
    c = flip_bits(x, "q7.8", 0.05, seed=2)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert not np.array_equal(a, c)
    assert (a != x).sum() > 1000  # P(some bit flips) = 1 - 0.95^16 = 0.56


def test_flip_backends_agree() -> None:
    torch = pytest.importorskip("torch")
    x = _grid_values(1000, 6)
    ref = flip_bits(x, "posit16", 0.1, seed=8)
    t = flip_bits(torch.from_numpy(x), "posit16", 0.1, seed=8)
    assert t.dtype == torch.float32
    assert np.array_equal(np.nan_to_num(t.numpy(), nan=7.0), np.nan_to_num(ref, nan=7.0))
    jnp = pytest.importorskip("jax.numpy")
    j = flip_bits(jnp.asarray(x), "posit16", 0.1, seed=8)
    assert np.array_equal(np.nan_to_num(np.asarray(j), nan=7.0), np.nan_to_num(ref, nan=7.0))
    bf = x.astype(ml_dtypes.bfloat16)
    assert flip_bits(bf, "e4m3", 0.1, seed=8).dtype == bf.dtype
    assert isinstance(flip_bits(1.5, "e4m3", 0.0, seed=8), np.float64)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_flip_rejects_bad_p(p: object) -> None:
    with pytest.raises(ValueError, match="probability"):
        flip_bits(np.ones(3), "e4m3", p, seed=1)  # type: ignore[arg-type]


def test_flip_nan_into_fixed_raises() -> None:
    with pytest.raises(ValueError, match=r"q3\.4"):
        flip_bits(np.array([np.nan]), "q3.4", 0.1, seed=1)
