"""The MX kernel in every mode, stochastic rounding included, equals the float64 reference bit
for bit: same element grid, same counter-based draws (element ``i`` of the flat C-order array
draws counter ``offset + i`` of the seed), same scales, same NaN blocks.

The oracle is :func:`lowbit.quantize_mx` with ``impl="reference"`` (float64 numpy: elements
``x / 2^e`` rounded by ``lowbit.round``'s reference) or, where the kernel is called with a
draw offset, the same steps written out here with ``lowbit.round(..., offset=...)``.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowbit as lb
from lowbit.blocks import _mx_numba, mx_encode, quantize_mx
from lowbit.blocks.mx import _resolve_format, _run_kernel, _scale_nan_code
from lowbit.rounding.modes import RoundMode

PRESETS = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8"]
# (mode, rand_bits): every SR kind at several resolutions, and the deterministic modes
SR_CASES = [
    ("sr", None),
    ("sr", 1),
    ("sr", 5),
    ("sr", 24),
    ("sr_equal", None),
    ("sr_bits", 1),
    ("sr_bits", 3),
    ("sr_bits", 8),
    ("sr_bits", 32),
]
DET_CASES = [(m, None) for m in ("rna", "rnz", "rtz", "ru", "rd", "ro")]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).view(np.uint32)


def _regimes(seed: int, cols: int = 96) -> np.ndarray:
    """fp32 rows that reach every path of the kernel.

    Ordinary blocks; blocks near fp32's max (with ``ceil`` the scale's 2^e makes the
    saturation value reach 2^128); blocks whose grid lies below fp32's normals (float elements:
    amax below about 2^-111) and whose amax is subnormal; blocks of widely spread magnitudes
    (elements far below the quantum, where SR decides between 0 and one step); tie-rich rows;
    NaN, ±inf, all-zero blocks, -0.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in ((-3, 3), (-40, 40), (100, 127), (-149, -120), (-140, -110), (-30, 10)):
        rows.append(rng.standard_normal((4, cols)) * 2.0 ** rng.integers(lo, hi, (4, cols)))
    rows.append(rng.integers(-64, 64, (4, cols)) * 2.0 ** rng.integers(-6, 3, (4, 1)))
    with np.errstate(over="ignore"):
        x = np.concatenate(rows).astype(np.float32)
    x[0, 5] = np.nan
    x[1, 70] = -np.inf
    x[2, :32] = 0.0
    x[3, 33] = -0.0
    x[4, 64:] = np.float32(3.4e38)
    x[5, 64:] = -np.float32(2.0**-149)
    x[6, 32:64] = np.float32(2.0**-126)
    return x


def _assert_kernel_is_reference(x: np.ndarray, name: str, **kw: object) -> None:
    with np.errstate(over="ignore"):
        ref = quantize_mx(x, name, impl="reference", **kw)
    got = quantize_mx(x, name, impl="kernel", **kw)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(_bits(got), _bits(ref), err_msg=f"{name} {kw}")


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("rule", ["floor", "ceil"])
def test_sr_kernel_equals_reference(name: str, rule: str) -> None:
    x = _regimes(PRESETS.index(name) * 2 + (rule == "ceil"))
    for mode, rb in SR_CASES:
        _assert_kernel_is_reference(x, name, mode=mode, rand_bits=rb, scale_rule=rule, seed=7)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("rule", ["floor", "ceil"])
def test_deterministic_modes_equal_reference(name: str, rule: str) -> None:
    """RNA, RNZ, RTZ, RU, RD, RO run the same kernel as SR (RNE has its own)."""
    x = _regimes(100 + PRESETS.index(name) * 2 + (rule == "ceil"))
    for mode, rb in DET_CASES:
        _assert_kernel_is_reference(x, name, mode=mode, rand_bits=rb, scale_rule=rule)


@pytest.mark.parametrize(
    "shape, block",
    [
        ((1,), 32),
        ((5,), 32),
        ((33,), 32),
        ((3, 45), 32),
        ((2, 3, 64), 32),
        ((4, 1, 7), 32),
        ((3, 45), 7),
        ((2, 50), 1),
        ((2, 90), 45),
        ((6, 64), 64),
        ((2, 17), 3),
        ((0,), 32),
        ((2, 0), 32),
    ],
)
def test_shapes_blocks_and_partial_tails(shape: tuple[int, ...], block: int) -> None:
    rng = np.random.default_rng(sum(shape) + block)
    x = (rng.standard_normal(shape) * 2.0 ** rng.integers(-20, 20, shape)).astype(np.float32)
    for name in ("mxfp8_e4m3", "mxfp4", "mxint8"):
        for mode, rb in (("sr", None), ("sr_bits", 4), ("sr_equal", None), ("rd", None)):
            _assert_kernel_is_reference(x, name, mode=mode, rand_bits=rb, block=block, seed=3)


@pytest.mark.parametrize("name", PRESETS)
def test_random_bit_patterns(name: str) -> None:
    """Arbitrary fp32 patterns (NaN payloads, infs, subnormals) and exponent-limited ones, in
    blocks of 4 so that many blocks stay finite."""
    rng = np.random.default_rng(50 + PRESETS.index(name))
    bits = rng.integers(0, 2**32, (32, 64), dtype=np.uint64).astype(np.uint32)
    narrow = (bits & np.uint32(0x80FFFFFF)) | (
        rng.integers(95, 150, bits.shape).astype(np.uint32) << np.uint32(23)
    )
    for data in (bits.view(np.float32), narrow.view(np.float32)):
        for mode, rb in (("sr", None), ("sr", 9), ("sr_bits", 6), ("sr_equal", None), ("ro", None)):
            for rule in ("floor", "ceil"):
                with np.errstate(over="ignore"):
                    ref = quantize_mx(
                        data,
                        name,
                        block=4,
                        mode=mode,
                        rand_bits=rb,
                        scale_rule=rule,
                        seed=11,
                        impl="reference",
                    )
                got = quantize_mx(
                    data,
                    name,
                    block=4,
                    mode=mode,
                    rand_bits=rb,
                    scale_rule=rule,
                    seed=11,
                    impl="kernel",
                )
                np.testing.assert_array_equal(_bits(got), _bits(ref))


def test_scales_equal_the_reference_encoding() -> None:
    x = _regimes(21)
    for name in PRESETS:
        for rule in ("floor", "ceil"):
            f = _resolve_format(name)
            _, scales = _run_kernel(x, f, 32, rule, RoundMode.SR, seed=5)
            np.testing.assert_array_equal(scales, mx_encode(x, name, scale_rule=rule).scales)


def test_float64_inputs_agree_with_the_float32_kernel() -> None:
    """float64 inputs take the reference (the kernel covers float32); on float32 values both
    give the same numbers: the reference's float64 result cast to float32 is the kernel's."""
    x = _regimes(31)
    for name in ("mxfp8_e4m3", "mxfp6_e2m3", "mxint8"):
        for mode, rb in (("sr", None), ("sr_bits", 5), ("sr_equal", None), ("ru", None)):
            with np.errstate(over="ignore", invalid="ignore"):
                r64 = quantize_mx(x.astype(np.float64), name, mode=mode, rand_bits=rb, seed=9)
                want = r64.astype(np.float32)
            got = quantize_mx(x, name, mode=mode, rand_bits=rb, seed=9, impl="kernel")
            assert r64.dtype == np.float64
            np.testing.assert_array_equal(_bits(got), _bits(want))
    with pytest.raises(ValueError, match="not covered"):
        quantize_mx(x.astype(np.float64), "mxfp4", mode="sr", seed=1, impl="kernel")


def _reference_with_offset(
    x: np.ndarray, name: str, mode: str, seed: int, rand_bits: int | None, block: int, offset: int
) -> np.ndarray:
    """OCP MX §6.3 written out: reference scales, elements ``clip(x / 2^e)`` rounded by
    ``lowbit.round``'s reference with the draw offset, times 2^e, NaN blocks NaN."""
    f = _resolve_format(name)
    t = mx_encode(x, name, block=block)
    sc = np.repeat(t.scales.astype(np.int64), block, axis=-1)[..., : x.shape[-1]]
    nan = sc == _scale_nan_code(f.scale_fmt)
    e = np.where(nan, 0, sc - int(f.scale_fmt.bias))
    q = np.where(nan, 0.0, np.ldexp(x.astype(np.float64), -e))
    q = np.clip(q, -f.elem.max, f.elem.max)
    r = lb.round(
        q,
        f.elem,
        mode,
        overflow="saturate",
        seed=seed,
        rand_bits=rand_bits,
        offset=offset,
        impl="reference",
    )
    with np.errstate(over="ignore"):
        return np.where(nan, np.nan, np.ldexp(r, e)).astype(np.float32)


@pytest.mark.parametrize("offset", [2**32 - 40, 2**32 - 32, 2**32 + 3, 2**33 - 7, 2**40 + 1])
def test_draw_offsets_across_the_index_words(offset: int) -> None:
    """The kernel carries the draw index as two 32-bit words; blocks straddling the low
    word's wrap (whole and partial blocks, and grids below fp32's normals) draw like
    ``lowbit.round(..., offset=...)`` does."""
    rng = np.random.default_rng(offset % 1000)
    x = (rng.standard_normal((3, 75)) * 2.0 ** rng.integers(-8, 8, (3, 75))).astype(np.float32)
    x[2, :] *= np.float32(2.0**-120)  # tiny blocks: the exact float64 path (float elements)
    for name in ("mxfp8_e4m3", "mxint8"):
        f = _resolve_format(name)
        sf = f.scale_fmt
        for mode, rb in (("sr", None), ("sr_bits", 7), ("sr_equal", None)):
            for block in (32, 25):
                out = np.empty_like(x)
                scales = np.empty((3, -(-75 // block)), np.uint8)
                _mx_numba.run(
                    x,
                    out,
                    scales,
                    block,
                    f.elem_emax,
                    f.elem,
                    False,
                    sf.emin,
                    sf.emax,
                    int(sf.bias),
                    _scale_nan_code(sf),
                    RoundMode(mode),
                    seed=123,
                    rand_bits=32 if rb is None else rb,
                    offset=offset,
                )
                want = _reference_with_offset(x, name, mode, 123, rb, block, offset)
                np.testing.assert_array_equal(
                    _bits(out), _bits(want), err_msg=f"{name} {mode} {block}"
                )


def test_zero_offset_oracle_matches_quantize_mx() -> None:
    """The written-out oracle above is the reference itself at offset 0."""
    x = _regimes(41)[:, :64]
    for name in ("mxfp8_e5m2", "mxint8"):
        want = _reference_with_offset(x, name, "sr", 4, None, 32, 0)
        with np.errstate(over="ignore"):
            ref = quantize_mx(x, name, mode="sr", seed=4, impl="reference")
        np.testing.assert_array_equal(_bits(want), _bits(ref))


def test_flat_index_draws_and_seeds() -> None:
    """Draws follow the flat C-order index (a 2-D array whose rows hold whole blocks equals
    its flattening) and the seed (another seed moves some elements)."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((16, 64)) * 3).astype(np.float32)
    a = quantize_mx(x, "mxfp4", mode="sr", seed=1)
    b = quantize_mx(x.reshape(-1), "mxfp4", mode="sr", seed=1).reshape(x.shape)
    np.testing.assert_array_equal(_bits(a), _bits(b))
    c = quantize_mx(x, "mxfp4", mode="sr", seed=2)
    assert (a != c).any()


def test_out_torch_and_jax_use_the_same_draws() -> None:
    x = _regimes(61)
    ref = quantize_mx(x, "mxfp8_e4m3", mode="sr", seed=12)
    out = np.empty_like(x)
    assert quantize_mx(x, "mxfp8_e4m3", mode="sr", seed=12, out=out) is out
    np.testing.assert_array_equal(_bits(out), _bits(ref))
    torch = pytest.importorskip("torch")
    t = quantize_mx(torch.from_numpy(x.copy()), "mxfp8_e4m3", mode="sr", seed=12)
    np.testing.assert_array_equal(_bits(t.numpy()), _bits(ref))
    jnp = pytest.importorskip("jax.numpy")
    j = quantize_mx(jnp.asarray(x), "mxfp8_e4m3", mode="sr", seed=12)
    np.testing.assert_array_equal(_bits(np.asarray(j)), _bits(ref))


def test_in_place() -> None:
    """``out=x``: every element and amax is read before its block is written."""
    x = _regimes(71)
    for mode, rb in (("sr", None), ("sr_bits", 4), ("rd", None)):
        ref = quantize_mx(x, "mxfp6_e3m2", mode=mode, rand_bits=rb, seed=2)
        y = x.copy()
        assert quantize_mx(y, "mxfp6_e3m2", mode=mode, rand_bits=rb, seed=2, out=y) is y
        np.testing.assert_array_equal(_bits(y), _bits(ref))


def test_bad_seeds_are_rejected_on_the_kernel_path() -> None:
    x = np.ones((2, 32), np.float32)
    with pytest.raises(ValueError, match="-1"):
        quantize_mx(x, "mxfp4", mode="sr", seed=-1)
    with pytest.raises(TypeError, match="seed"):
        quantize_mx(x, "mxfp4", mode="sr", seed="7")  # type: ignore[arg-type]
