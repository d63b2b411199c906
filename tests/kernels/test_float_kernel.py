"""The fused numba kernels equal the plain reference bit for bit (any NaN equals any NaN).

Covered: every RoundMode × every FloatFormat/IntFormat preset and seeded random eXmY / fn /
fnuz / "none" / unsigned / no-zero / odd-bias float formats and fixed-point formats × fp32,
fp64, fp16 and bf16 inputs (all 2^16 fp16 and bf16 values, random bit patterns, subnormals,
NaN, ±inf, ±0, powers of two and their neighbours, exact ties, values around max and
min_normal) × subnormals on/off × every overflow option. Also: chunked stochastic rounding
with ``offset=`` equals rounding the whole array (including across the 2^32 index carry and
the kernels' block and chunk boundaries), the torch CPU path equals the numpy path (``out=``,
fp16/bf16 tensors), dtype/shape/memory contracts, and two documented reference bugs where the
kernel agrees with the exact oracle instead.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lowbit as lb
from lowbit.formats import FixedFormat, FloatFormat, IntFormat, presets
from lowbit.kernels import float_numba
from lowbit.kernels import float_numba_fp64 as k64
from lowbit.rounding.api import resolve_policy

MODES = ["rne", "rna", "rnz", "rtz", "ru", "rd", "ro", "sr", "sr_equal", "sr_bits"]
ELEMENTWISE = [f for f in presets().values() if isinstance(f, FloatFormat | IntFormat)]
BF16 = np.dtype(ml_dtypes.bfloat16)
_UINT = {8: np.uint64, 4: np.uint32, 2: np.uint16}


# ---- helpers ----------------------------------------------------------------------------------
def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).view(_UINT[np.asarray(a).dtype.itemsize])


def assert_same(got: np.ndarray, want: np.ndarray, x: np.ndarray, what: object = "") -> None:
    """Same dtype, shape and bits (NaN == NaN whatever its payload)."""
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape)
    with np.errstate(invalid="ignore"):
        nan = np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
    bad = np.flatnonzero(~((_bits(got) == _bits(want)) | nan).reshape(-1))
    if bad.size:
        g, w, xx = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (got, want, x))
        rows = "\n".join(
            f"  x={xx[i]!r} ({xx[i].hex()}): kernel {g[i]!r}, reference {w[i]!r}" for i in bad[:6]
        )
        raise AssertionError(f"{what}: {bad.size} of {g.size} differ, e.g.\n{rows}")


def overflow_options(fmt: object) -> list[str]:
    if isinstance(fmt, FixedFormat | IntFormat):
        return ["saturate", "wrap"]
    assert isinstance(fmt, FloatFormat)
    if fmt.has_inf:
        return ["inf", "saturate"]
    return ["nan", "saturate"] if fmt.has_nan else ["saturate"]


def check(x: np.ndarray, fmt: object, mode: str, **kw: object) -> None:
    """Kernel (which must exist) == reference for one call."""
    if mode == "sr_bits" and kw.get("rand_bits") is None:
        kw["rand_bits"] = 7
    kw.setdefault("seed", 2024)
    got = lb.round(x, fmt, mode, impl="kernel", **kw)
    want = lb.round(x, fmt, mode, impl="reference", **kw)
    assert_same(got, want, x, (str(fmt), mode, x.dtype, kw))


def reference_exact_fp64(x: np.ndarray, fmt: object, overflow: str | None) -> np.ndarray:
    """Drop the fp64 inputs on which the reference loses exactness (see the two bug tests at
    the end): tiny inputs scaled by a quantum above 1 underflow in ``ldexp``, and wrapped
    fixed-point codes of 2^1024 or more overflow to inf."""
    if isinstance(fmt, FloatFormat):
        q = fmt.emin  # the largest quantum exponent below min_normal (subnormals off)
    else:
        q = -(fmt.fixed if isinstance(fmt, IntFormat) else fmt).frac_bits
    ax = np.abs(x)
    keep = np.ones(x.shape, dtype=bool)
    if q > 0:
        keep &= ~((ax > 0) & (ax < 2.0 ** (q + 53 - 1021)))
    if overflow == "wrap" and q < 0:
        keep &= ~(ax >= 2.0 ** (1023 + q))
    keep |= np.isnan(x) | np.isinf(x)
    return x[keep]


def kernel_covers(fmt: object) -> bool:
    """Formats whose grid lies inside fp64 (others are left to the reference)."""
    if not isinstance(fmt, FloatFormat):
        return True
    return k64.params64(fmt, resolve_policy(fmt, "rne", None, True, None)) is not None


# ---- inputs -------------------------------------------------------------------------------------
@functools.cache
def fp32_inputs() -> np.ndarray:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 30000, dtype=np.uint64).astype(np.uint32)
    bits[:3000] &= 0x807FFFFF  # fp32 subnormals
    bits[3000:6000] = (bits[3000:6000] & 0x80FFFFFF) | 0x3F000000  # around 1
    p2 = np.ldexp(np.float32(1), np.arange(-149, 128)).astype(np.float32)
    near = np.concatenate(
        [p2, np.nextafter(p2, np.float32(0)), np.nextafter(p2, np.float32(np.inf))]
    )
    specials = np.array(
        [0.0, np.inf, np.finfo(np.float32).max, np.finfo(np.float32).tiny], dtype=np.float32
    )
    nans = np.array(
        [0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0xFFC00000, 0xFF800001], dtype=np.uint32
    ).view(np.float32)
    every_fp16 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    x = np.concatenate([bits.view(np.float32), near, -near, specials, -specials, nans, every_fp16])
    x.setflags(write=False)
    return x


@functools.cache
def fp64_inputs() -> np.ndarray:
    rng = np.random.default_rng(8)
    bits = rng.integers(0, 2**64, 20000, dtype=np.uint64)
    bits[:2000] &= np.uint64(0x800FFFFFFFFFFFFF)  # fp64 subnormals
    bits[2000:6000] = (bits[2000:6000] & np.uint64(0x800FFFFFFFFFFFFF)) | np.uint64(
        0x3FE0000000000000
    )  # around 1
    scaled = rng.standard_normal(6000) * np.exp2(rng.integers(-160, 160, 6000))
    p2 = np.ldexp(1.0, np.arange(-1074, 1024))
    near = np.concatenate([p2, np.nextafter(p2, 0), np.nextafter(p2, np.inf)])
    with np.errstate(invalid="ignore"):  # signalling NaNs
        widened = fp32_inputs()[::4].astype(np.float64)
    x = np.concatenate(
        [bits.view(np.float64), scaled, near, -near, widened, [np.inf, -np.inf, np.nan]]
    )
    x.setflags(write=False)
    return x


def grid_ties(fmt: object, dtype: np.dtype, n: int = 3000) -> np.ndarray:
    """Exact midpoints between neighbours of ``fmt`` (and their float neighbours) where the
    input dtype can hold them, plus values around max, min_normal and the smallest step."""
    rng = np.random.default_rng(abs(hash(str(fmt))) % 2**32)
    vals: list[np.ndarray] = []
    if isinstance(fmt, FloatFormat):
        e = rng.integers(fmt.emin - fmt.man_bits, fmt.emax + 2, n).astype(np.float64)
        k = rng.integers(0, 2 ** min(fmt.man_bits + 1, 50), n).astype(np.float64)
        vals.append(np.ldexp(2 * k + 1, (e - fmt.man_bits - 1).astype(np.int64)))
        mn, ms = fmt.min_normal, fmt.min_subnormal
        ulp_max = 2.0 ** (fmt.emax - fmt.man_bits)
        vals.append(
            np.array(
                [
                    fmt.max,
                    fmt.max + ulp_max / 2,
                    fmt.max + ulp_max / 4,
                    fmt.max + ulp_max,
                    2 * fmt.max,
                    mn,
                    mn / 2,
                    0.75 * mn,
                    ms,
                    ms / 2,
                    1.5 * ms,
                    0.75 * ms,
                    2.5 * ms,
                    mn - ms / 2,
                ]
            )
        )
    else:
        f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
        codes = rng.integers(f.code_min - 4, f.code_max + 4, n).astype(np.float64)
        vals.append(np.ldexp(codes + 0.5, -f.frac_bits))
        vals.append(np.ldexp(codes, -f.frac_bits))
        vals.append(
            np.array(
                [
                    f.max,
                    f.min,
                    f.max + f.step / 2,
                    f.min - f.step / 2,
                    f.step / 2,
                    f.step / 4,
                    2.0 ** (f.bits - f.frac_bits),
                ]
            )
        )
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.concatenate([v, -v, np.nextafter(v, 0), np.nextafter(v, np.inf)])
        out = v.astype(dtype)
    return out[np.isfinite(out.astype(np.float64))]


def inputs_for(fmt: object, dtype: np.dtype, overflow: str | None = None) -> np.ndarray:
    if dtype == np.float64:
        base = fp64_inputs()
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            base = fp32_inputs().astype(dtype)
    x = np.concatenate([base, grid_ties(fmt, dtype)])
    if dtype == np.float64:
        x = reference_exact_fp64(x, fmt, overflow)
    return x


# ---- random formats --------------------------------------------------------------------------
def random_float_formats(n: int, seed: int) -> list[FloatFormat]:
    rng = np.random.default_rng(seed)
    out: list[FloatFormat] = []
    while len(out) < n:
        e = int(rng.integers(1, 12))
        m = int(rng.integers(0, 24)) if rng.random() < 0.75 else int(rng.integers(24, 53))
        special = str(rng.choice(["ieee", "fn", "fnuz", "none"]))
        bias = None if rng.random() < 0.6 else (1 << (e - 1)) - 1 + int(rng.integers(-4, 5))
        try:
            fmt = FloatFormat(
                e,
                m,
                bias,
                special,  # type: ignore[arg-type]
                signed=special == "fnuz" or rng.random() < 0.9,
                has_zero=rng.random() < 0.9,
            )
        except ValueError:
            continue
        if kernel_covers(fmt):
            out.append(fmt)
    return out


def random_fixed_formats(n: int, seed: int) -> list[FixedFormat]:
    rng = np.random.default_rng(seed)
    out: list[FixedFormat] = []
    while len(out) < n:
        signed = bool(rng.random() < 0.7)
        total = int(rng.integers(1 + int(signed), 54))
        frac = int(rng.integers(-20, total + 10))
        try:
            out.append(FixedFormat(max(0, total - int(signed) - frac), frac, signed))
        except ValueError:
            continue
    return out


RANDOM_FLOATS = random_float_formats(36, seed=11)
RANDOM_FIXED = random_fixed_formats(16, seed=12)


# ---- kernel == reference ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ELEMENTWISE, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
def test_presets_every_mode(fmt: object, dtype: type) -> None:
    opts = overflow_options(fmt)
    subs = [True, False] if isinstance(fmt, FloatFormat) else [True]
    for i, mode in enumerate(MODES):
        for sub in subs:
            ov = opts[(i + int(sub)) % len(opts)]
            x = inputs_for(fmt, np.dtype(dtype), ov)
            check(
                x,
                fmt,
                mode,
                subnormals=sub,
                overflow=ov,
                rand_bits=[None, 1, 13, 32][i % 4] if mode.startswith("sr") else None,
            )


@pytest.mark.parametrize("fmt", ELEMENTWISE, ids=str)
@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["fp16", "bf16"])
def test_presets_every_16bit_input(fmt: object, dtype: np.dtype) -> None:
    x = np.arange(65536, dtype=np.uint16).view(dtype)
    opts = overflow_options(fmt)
    for i, mode in enumerate(MODES):
        sub = i % 3 != 0 or not isinstance(fmt, FloatFormat)
        check(x, fmt, mode, subnormals=sub, overflow=opts[i % len(opts)])


@pytest.mark.parametrize("fmt", RANDOM_FLOATS + RANDOM_FIXED, ids=str)
def test_random_formats(fmt: object) -> None:
    """Seeded random formats: wide/narrow exponents and mantissas, odd biases, every special
    convention, unsigned and zero-less ones (these go through the 64-bit core)."""
    rng = np.random.default_rng(abs(hash(str(fmt))) % 2**32)
    opts = overflow_options(fmt)
    for mode in MODES:
        for dtype in (np.float32, np.float64, np.float16, BF16):
            ov = opts[int(rng.integers(len(opts)))]
            sub = bool(rng.random() < 0.6)
            x = inputs_for(fmt, np.dtype(dtype), ov)
            x = x[rng.random(x.size) < 0.35]
            check(
                x,
                fmt,
                mode,
                subnormals=sub,
                overflow=ov,
                offset=int(rng.integers(2**40)),
                rand_bits=int(rng.integers(1, 33)) if mode.startswith("sr") else None,
            )


@st.composite
def any_format(draw: st.DrawFn) -> object:
    if draw(st.booleans()):
        e = draw(st.integers(1, 11))
        special = draw(st.sampled_from(["ieee", "fn", "fnuz", "none"]))
        if special == "ieee":
            e = max(e, 2)
        m = draw(st.integers(0, 30))
        bias = draw(st.one_of(st.none(), st.integers((1 << (e - 1)) - 4, (1 << (e - 1)) + 3)))
        try:
            fmt = FloatFormat(e, m, bias, special)  # type: ignore[arg-type]
        except ValueError:  # e.g. a one-binade "fn" format has no finite normal numbers
            assume(False)
        assume(kernel_covers(fmt))
        return fmt
    frac, ints, signed = draw(st.integers(-8, 30)), draw(st.integers(0, 20)), draw(st.booleans())
    assume(1 <= ints + frac + int(signed) <= 53)
    return FixedFormat(ints, frac, signed)


@settings(max_examples=60, deadline=None)
@given(
    fmt=any_format(),
    mode=st.sampled_from(MODES),
    sub=st.booleans(),
    x=hnp.arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    ),
    seed=st.integers(0, 2**63 - 1),
    data=st.data(),
)
def test_hypothesis_formats_and_values(
    fmt: object, mode: str, sub: bool, x: np.ndarray, seed: int, data: st.DataObject
) -> None:
    ov = data.draw(st.sampled_from(overflow_options(fmt)))
    rb = data.draw(st.integers(1, 32)) if mode.startswith("sr") else None
    check(x, fmt, mode, subnormals=sub, overflow=ov, seed=seed, rand_bits=rb)
    check(x.astype(np.float64), fmt, mode, subnormals=sub, overflow=ov, seed=seed, rand_bits=rb)


# ---- stochastic draws: offsets, chunks, blocks -------------------------------------------------
@pytest.mark.parametrize("mode", ["sr", "sr_equal", "sr_bits"])
@pytest.mark.parametrize("fmt", ["e4m3", "bf16", "fp16", "e2m1", "q3.4", "e8m0", "fp64"])
@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, BF16], ids=["fp32", "fp64", "fp16", "bf16"]
)
def test_chunks_with_offset_equal_whole(
    mode: str, fmt: str, dtype: np.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounding pieces with ``offset=`` equals rounding the whole array, across the 32-bit
    index carry and the widen-round-narrow chunks (made small here)."""
    monkeypatch.setattr(float_numba, "_CHUNK", 777)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(5000) * 4).astype(dtype)
    kw = {"seed": 99, "rand_bits": 6 if mode == "sr_bits" else None}
    for base in (0, 2**32 - 2500, 2**64 - 6000):
        whole = lb.round(x, fmt, mode, offset=base, impl="kernel", **kw)
        assert_same(whole, lb.round(x, fmt, mode, offset=base, impl="reference", **kw), x, base)
        cut = 1234
        parts = np.concatenate(
            [
                lb.round(x[:cut], fmt, mode, offset=base, impl="kernel", **kw),
                lb.round(x[cut:], fmt, mode, offset=base + cut, impl="kernel", **kw),
            ]
        )
        assert_same(parts, whole, x, ("chunks", base))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("fmt", ["e4m3", "fp16", "int8", "e8m0"])
def test_parallel_blocks(dtype: type, fmt: str) -> None:
    """Arrays large enough for the parallel block kernels (block edges, odd tail)."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(3 * float_numba._BLOCK + 12345) * 30).astype(dtype)
    for mode in ("rne", "ru", "sr", "sr_bits"):
        check(x, fmt, mode, offset=2**32 - 100000, seed=5)


@pytest.mark.parametrize("mode", ["rne", "rd", "sr", "sr_bits"])
def test_every_start_within_a_cache_line(mode: str) -> None:
    """The fp32 kernel does the elements before the output's first 64-byte boundary apart from
    the vector loop; every placement of input and output within a line, at sizes around that
    split and across the parallel blocks, gives the reference's bits, draws included."""
    rng = np.random.default_rng(17)
    n_big = 2 * float_numba._BLOCK + 77
    xraw = (rng.standard_normal(n_big + 16) * 3).astype(np.float32)
    oraw = np.empty(n_big + 32, dtype=np.float32)
    # the line offsets of the raw buffers, so that (xs, os) cover every pair of starts
    x_line = (xraw.ctypes.data % 64) // 4
    o_line = (oraw.ctypes.data % 64) // 4
    kw = {"seed": 8, "rand_bits": 5 if mode == "sr_bits" else None}
    for n in (0, 1, 15, 16, 17, 40, n_big):
        for xs_start, os_start in [(i, j) for i in range(16) for j in range(16) if n < 50] + [
            (0, 0),
            (3, 0),
            (0, 5),
            (15, 1),
        ]:
            x = xraw[xs_start : xs_start + n]
            out = oraw[os_start : os_start + n]
            want = lb.round(x, "e3m2", mode, impl="reference", **kw)
            assert lb.round(x, "e3m2", mode, impl="kernel", out=out, **kw) is out
            what = (n, (x_line + xs_start) % 16, (o_line + os_start) % 16)
            assert_same(out, want, x, what)


def test_line_head() -> None:
    """The head is the element count to the next 64-byte boundary, capped at the size."""
    from lowbit.kernels._nbutil import line_head

    raw = np.zeros(64, dtype=np.uint8)
    for dt in (np.uint32, np.uint64):
        size = np.dtype(dt).itemsize
        for start in range(0, 64 - 16, size):
            a = raw[start : start + 8 * size].view(dt)
            gap = (-a.ctypes.data) % 64
            assert line_head(a) == min(a.size, gap // size)
            assert (a.ctypes.data + line_head(a) * size) % 64 == 0 or line_head(a) == a.size
    odd = raw[1:33].view(np.uint32)  # numpy's buffers are 16-byte aligned: this one is odd
    assert odd.ctypes.data % 4 != 0 and line_head(odd) == 0


# ---- API contracts -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, BF16], ids=["fp32", "fp64", "fp16", "bf16"]
)
def test_dtype_shape_out_and_layouts(dtype: np.dtype) -> None:
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((6, 7, 8)) * 50).astype(dtype)
    want = lb.round(x, "e4m3", "sr", seed=1, impl="reference")
    got = lb.round(x, "e4m3", "sr", seed=1, impl="kernel")
    assert got.dtype == x.dtype and got.shape == x.shape
    assert_same(got, want, x)
    out = np.empty_like(x)
    assert lb.round(x, "e4m3", "sr", seed=1, out=out) is out
    assert_same(out, want, x)
    # strided input, strided out: draws follow the C order of the logical array
    xs = x[:, ::2, 1::3]
    want_s = lb.round(np.ascontiguousarray(xs), "e4m3", "sr", seed=1, impl="reference")
    assert_same(lb.round(xs, "e4m3", "sr", seed=1, impl="kernel"), want_s, xs)
    big = np.zeros((6, 8, 6), dtype=dtype)
    view = big[:, ::2, ::2]
    assert lb.round(xs, "e4m3", "sr", seed=1, out=view) is view
    assert_same(view, want_s, xs)
    # in place
    y = x.copy()
    lb.round(y, "e4m3", "sr", seed=1, out=y)
    assert_same(y, want, x)
    # 0-d, Python scalar, empty
    assert_same(
        lb.round(np.asarray(x[0, 0, 0]), "e4m3", impl="kernel"),
        lb.round(np.asarray(x[0, 0, 0]), "e4m3", impl="reference"),
        x[0, 0, 0],
    )
    assert lb.round(np.empty((0, 3), dtype=dtype), "e4m3", impl="kernel").shape == (0, 3)
    assert lb.round(1.3, "e2m1", impl="kernel") == 1.5


def test_read_only_input_and_fallbacks() -> None:
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    x.setflags(write=False)
    check(x, "e4m3", "rne")
    pol = resolve_policy(lb.get_format("posit8"), "rne", None, True, None)  # type: ignore[arg-type]
    assert float_numba.round_numpy(x, lb.get_format("posit8"), pol, 0, 0, None) is None
    odd = FloatFormat(11, 4, bias=1100)  # grid below fp64's range: the reference's business
    pol = resolve_policy(odd, "rne", None, True, None)
    assert float_numba.round_numpy(x, odd, pol, 0, 0, None) is None


def test_nothing_compiles_at_import() -> None:
    code = (
        "import lowbit.kernels.float_numba as F, lowbit.kernels.float_numba_fp64 as K\n"
        "import lowbit\n"
        "assert not F._round_f32.signatures and not F._fill32.signatures\n"
        "assert not K.round_f64.signatures and not K.fill_f64.signatures\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- torch CPU ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tdtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_cpu_equals_numpy(tdtype: str) -> None:
    torch = pytest.importorskip("torch")
    dt = getattr(torch, tdtype)
    rng = np.random.default_rng(4)
    base = torch.from_numpy(rng.standard_normal((33, 65)) * 20)
    t = base.to(dt)
    np_in = t.view(torch.int16).numpy().view(BF16) if dt == torch.bfloat16 else t.numpy()

    def as_np(r: object) -> np.ndarray:
        assert isinstance(r, torch.Tensor) and r.dtype == dt
        return r.view(torch.int16).numpy().view(BF16) if dt == torch.bfloat16 else r.numpy()

    for fmt, mode in [
        ("e4m3", "rne"),
        ("bf16", "sr"),
        ("int8", "rd"),
        ("e8m0", "sr_bits"),
        ("fp64", "ru"),
    ]:
        kw = {"seed": 8, "rand_bits": 4 if mode == "sr_bits" else None}
        want = lb.round(np_in, fmt, mode, impl="reference", **kw)
        res = lb.round(t, fmt, mode, **kw)
        assert res.shape == t.shape
        assert_same(as_np(res), want, np_in, (fmt, mode))
        out = torch.empty_like(t)
        assert lb.round(t, fmt, mode, out=out, **kw) is out
        assert_same(as_np(out), want, np_in, (fmt, mode, "out"))
        strided = torch.empty((33, 130), dtype=dt)[:, ::2]
        assert lb.round(t, fmt, mode, out=strided, **kw) is strided
        assert_same(as_np(strided.contiguous()), want, np_in, (fmt, mode, "strided out"))
    # a non-contiguous input and a tensor that requires grad
    tt = base.to(dt).t()
    np_tt = np.ascontiguousarray(as_np(tt.contiguous()))
    assert_same(
        as_np(lb.round(tt, "e5m2", "rna").contiguous()),
        lb.round(np_tt, "e5m2", "rna", impl="reference"),
        np_tt,
    )
    g = base.to(dt).requires_grad_(dt.is_floating_point)
    assert lb.round(g, "e4m3").shape == g.shape


@pytest.mark.parametrize("tdtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_views_are_zero_copy(tdtype: str) -> None:
    torch = pytest.importorskip("torch")
    from lowbit.kernels._torch_views import as_numpy, as_torch

    t = torch.linspace(-5, 5, 1000).to(getattr(torch, tdtype))
    a = as_numpy(t)
    assert a.ctypes.data == t.data_ptr() and a.shape == tuple(t.shape)
    back = as_torch(a)
    assert back.data_ptr() == t.data_ptr() and back.dtype == t.dtype


# ---- reference bugs: the kernel follows the exact oracle ---------------------------------------
def _oracle_values(
    fmt: object, x: np.ndarray, mode: str, overflow: str | None = None, subnormals: bool = True
) -> np.ndarray:
    from oracle import oracle_for

    o = oracle_for(fmt, subnormals)
    return np.array([o.round(float(v), mode, overflow) for v in x])


TINY_QUANTUM_ABOVE_ONE = [
    (FixedFormat(10, -4), np.array([5e-324, 1e-320, -(2.0**-1060), 3e-310])),
    (FloatFormat(3, 1, bias=-2, special="none"), np.array([5e-324, -1e-320, 2.0**-1070])),
]
HUGE_WRAP = (FixedFormat(7, 24), np.array([2.0**1000, -1e300, 2.0**1000 * 1.5, 1e308]))


@pytest.mark.parametrize("mode", ["ru", "rd", "ro", "rtz", "rne"])
def test_kernel_exact_where_reference_underflows(mode: str) -> None:
    """fp64 inputs so tiny that ``ldexp(x, -quantum_exponent)`` underflows: the reference sees
    an exact 0 (RU of 5e-324 on a grid of step 16 gives 0); the kernel rounds the exact x."""
    for fmt, x in TINY_QUANTUM_ABOVE_ONE:
        got = lb.round(x, fmt, mode, impl="kernel")
        np.testing.assert_array_equal(got, _oracle_values(fmt, x, mode))
        assert np.array_equal(np.signbit(got), np.signbit(_oracle_values(fmt, x, mode)))


def test_kernel_exact_where_reference_wrap_overflows() -> None:
    """Wrapped fixed point of |x| * 2^frac_bits >= 2^1024: the exact code is a multiple of
    2^bits, so the wrapped value is 0; the reference's float64 code overflows to inf -> NaN."""
    fmt, x = HUGE_WRAP
    got = lb.round(x, fmt, "rne", overflow="wrap", impl="kernel")
    np.testing.assert_array_equal(got, _oracle_values(fmt, x, "rne", "wrap"))


def test_reference_agrees_with_oracle_on_those_inputs() -> None:
    # Regression: the reference once lost tiny fp64 inputs (ldexp underflow with a grid step
    # above 1) and turned huge wrapped fixed-point inputs into NaN.
    for fmt, x in TINY_QUANTUM_ABOVE_ONE:
        np.testing.assert_array_equal(
            lb.round(x, fmt, "ru", impl="reference"), _oracle_values(fmt, x, "ru")
        )
    fmt, x = HUGE_WRAP
    np.testing.assert_array_equal(
        lb.round(x, fmt, "rne", overflow="wrap", impl="reference"),
        _oracle_values(fmt, x, "rne", "wrap"),
    )
