"""Block floating point against a Fraction oracle written from the definition."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from _mx_oracle import floor_log2, round_int

from lowbit.blocks import BFPTensor, bfp_decode, bfp_encode, quantize_bfp

F = Fraction


def bfp_oracle(
    block: list[Fraction], man_bits: int, exp_bits: int = 8, exp_offset: int = 0, mode: str = "rne"
) -> tuple[int, list[int]]:
    """(shared exponent E, integer mantissas k) of one finite block."""
    bias = 2 ** (exp_bits - 1) - 1
    amax = max(abs(v) for v in block)
    if amax == 0:
        return -bias, [0] * len(block)
    e = max(-bias, min(bias, floor_log2(amax) + exp_offset))
    step = F(2) ** (e - man_bits + 1)
    kmax = 2**man_bits - 1
    return e, [max(-kmax, min(kmax, round_int(v / step, mode))) for v in block]


@pytest.mark.parametrize("man_bits", [1, 3, 7, 15])
@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "ru", "rd", "ro"])
def test_vs_fraction_oracle(man_bits: int, mode: str) -> None:
    rng = np.random.default_rng(man_bits * 31 + len(mode))
    # exact dyadic inputs spanning a wide range inside each block
    x = rng.integers(-(2**20), 2**20, (9, 24)) * 2.0 ** rng.integers(-40, 10, (9, 24))
    x[0] = 0.0
    x[1, :3] = [2.0**-1074, -(2.0**-1060), 1.0]
    got = quantize_bfp(x, man_bits, block=8, mode=mode)
    t = bfp_encode(x, man_bits, block=8, mode=mode)
    for r in range(x.shape[0]):
        for b in range(3):
            blk = [F(float(v)) for v in x[r, 8 * b : 8 * b + 8]]
            e, ks = bfp_oracle(blk, man_bits, mode=mode)
            step = F(2) ** (e - man_bits + 1)
            assert [F(float(v)) for v in got[r, 8 * b : 8 * b + 8]] == [k * step for k in ks]
            assert int(t.exponents[r, b]) == e + 127
            assert t.mantissas[r, 8 * b : 8 * b + 8].tolist() == ks


def test_largest_element_is_normalized() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 16)) * 10.0 ** rng.uniform(-5, 5, (20, 1))
    for mb in (4, 8):
        t = bfp_encode(x, mb, block=16, mode="rtz")
        top = np.abs(t.mantissas).max(axis=1)
        assert ((top >= 2 ** (mb - 1)) & (top < 2**mb)).all()


def test_exp_offset_headroom_and_saturation() -> None:
    # 7.9 with 3 magnitude bits: E = 2, step 2^(2-3+1) = 1: 7.9 -> 8 saturates to 7
    x = np.array([7.9, 1.0, -0.5, 0.0])
    assert quantize_bfp(x, 3, block=4).tolist() == [7.0, 1.0, -0.0, 0.0]
    # one more exponent: step 2, 7.9 -> 4*2 = 8 without saturation
    assert quantize_bfp(x, 3, block=4, exp_offset=1).tolist() == [8.0, 0.0, 0.0, 0.0]
    # negative offset: E = 1, step 1/2: 7.9 clips at 7 * 1/2
    assert quantize_bfp(x, 3, block=4, exp_offset=-1).tolist() == [3.5, 1.0, -0.5, 0.0]


def test_exponent_range_clamps() -> None:
    # exp_bits = 4: bias 7, E in [-7, 7]
    x = np.array([2.0**-20, 2.0**-21, 1000.0, 3.0])
    got = quantize_bfp(x, 4, block=2, exp_bits=4)
    # block 0: E clamps to -7, step 2^(-7-4+1) = 2^-10: both values round to 0
    # block 1: E = floor(log2 1000) = 9 clamps to 7, step 2^4 = 16: 1000 -> 15 * 16 saturated
    assert got.tolist() == [0.0, 0.0, 240.0, 0.0]
    t = bfp_encode(x, 4, block=2, exp_bits=4)
    assert t.exponents.tolist() == [0, 14]


def test_nan_block_partial_block_axis_and_decode() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 19))
    x[2, 3] = np.nan
    x[3, 17] = np.inf
    got = quantize_bfp(x, 6, block=8)
    assert np.isnan(got[2, :8]).all() and not np.isnan(got[2, 8:]).any()
    assert np.isnan(got[3, 16:]).all() and not np.isnan(got[3, :16]).any()
    t = bfp_encode(x, 6, block=8)
    assert isinstance(t, BFPTensor) and t.exponents.shape == (5, 3)
    assert int(t.exponents[2, 0]) == 255
    np.testing.assert_array_equal(bfp_decode(t), got)
    np.testing.assert_array_equal(quantize_bfp(x.T, 6, block=8, axis=0), got.T)
    assert t.nbytes == (5 * 19 * 7 + 15 * 8) / 8


def test_backends_and_dtypes() -> None:
    x = np.linspace(-3, 5, 64, dtype=np.float32).reshape(2, 32)
    ref = quantize_bfp(x, 5)
    assert ref.dtype == np.float32
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(quantize_bfp(torch.from_numpy(x), 5).numpy(), ref)
    jnp = pytest.importorskip("jax.numpy")
    np.testing.assert_array_equal(np.asarray(quantize_bfp(jnp.asarray(x), 5)), ref)


def test_sr_unbiased() -> None:
    x = np.full((2000, 8), 0.3)
    x[:, 0] = 1.0  # E = 0; man_bits 2: step 1/2, 0.3 between 0 and 0.5
    a = quantize_bfp(x, 2, block=8, mode="sr", seed=1)
    np.testing.assert_array_equal(a, quantize_bfp(x, 2, block=8, mode="sr", seed=1))
    assert abs(a[:, 1:].mean() - 0.3) < 0.01


def test_errors() -> None:
    with pytest.raises(ValueError, match="man_bits"):
        quantize_bfp(np.ones(4), 0)
    with pytest.raises(ValueError, match="exp_bits"):
        quantize_bfp(np.ones(4), 4, exp_bits=20)
    with pytest.raises(TypeError, match="man_bits"):
        quantize_bfp(np.ones(4), 4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block"):
        quantize_bfp(np.ones(4), 4, block=0)
    with pytest.raises(TypeError):
        bfp_decode(np.ones(3))  # type: ignore[arg-type]
