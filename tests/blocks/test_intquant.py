"""Uniform integer quantization: exact codes against a Python-int oracle, shapes, SR."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from _mx_oracle import round_int

from lowbit.blocks import int_params, int_range, quantize_int, quantize_int_codes

F = Fraction


def oracle_codes(
    x: np.ndarray,
    bits: int,
    symmetric: bool,
    unsigned: bool = False,
    narrow: bool = False,
    mode: str = "rne",
) -> tuple[list[int], float, int]:
    """Per-tensor codes with Python ints and Fractions, from the module's definitions.

    The quotient x * den / num is rounded once to float64 (Fraction -> float is correctly
    rounded), then to an integer in ``mode``.
    """
    if unsigned:
        qmin, qmax = (1 if narrow else 0), 2**bits - 1
    else:
        qmin, qmax = (-(2 ** (bits - 1)) + (1 if narrow else 0)), 2 ** (bits - 1) - 1
    vals = [F(float(v)) for v in x.ravel()]
    if symmetric:
        num = max(abs(v) for v in vals)
        den = 2 ** (bits - 1) - 1
        zp = 2 ** (bits - 1) if unsigned else 0
    else:
        lo, hi = min(min(vals), 0), max(max(vals), 0)
        num = F(float(hi - lo))  # the float64 subtraction, correctly rounded
        den = qmax - qmin
    if num == 0:
        num, den = F(1), 1
    if not symmetric:
        zp = max(qmin, min(qmax, qmin - round(float(lo * den / num))))
    codes = []
    for v in vals:
        t = F(float(v * den / num))
        codes.append(max(qmin, min(qmax, round_int(t, mode) + zp)))
    return codes, float(num / den), zp


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("mode", ["rne", "rtz", "ru", "rd", "rna"])
def test_codes_vs_python_int_oracle(bits: int, symmetric: bool, unsigned: bool, mode: str) -> None:
    rng = np.random.default_rng(bits * 7 + symmetric * 3 + unsigned + len(mode))
    x = (rng.standard_normal(200) * 3 + 0.5).astype(np.float32)
    x[:4] = [0.0, -0.0, 1e-30, -1e-30]
    if bits == 2:  # exact ties: multiples of half a step
        x[4:12] = np.arange(-4, 4) * 0.5
    codes = quantize_int_codes(x, bits, symmetric=symmetric, unsigned=unsigned, mode=mode)
    want, scale, zp = oracle_codes(x, bits, symmetric, unsigned, mode=mode)
    assert codes.dtype == np.int64 and codes.tolist() == want
    s, z = int_params(x, bits, symmetric=symmetric, unsigned=unsigned)
    assert float(s) == scale and int(z) == zp
    qmin, qmax = int_range(bits, unsigned=unsigned)
    assert codes.min() >= qmin and codes.max() <= qmax


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["rne", "rtz", "rd", "ru", "ro", "sr"])
def test_symmetric_amax_maps_exactly_to_qmax(dtype: type, mode: str) -> None:
    """pychop's symmetric scale is off by one code; here ±amax -> ±qmax -> ±amax exactly."""
    rng = np.random.default_rng(9)
    for trial in range(4):
        x = (rng.standard_normal(50) * 10.0 ** rng.uniform(-30, 30)).astype(dtype)
        i = int(np.argmax(np.abs(x)))
        amax = abs(x[i])
        for bits in (3, 16):
            qmax = 2 ** (bits - 1) - 1
            c = quantize_int_codes(x, bits, mode=mode, seed=trial)
            assert c[i] == (qmax if x[i] > 0 else -qmax)
            y = quantize_int(x, bits, mode=mode, seed=trial)
            assert y.dtype == dtype and y[i] == x[i] and abs(y[i]) == amax
            assert np.abs(y).max() == amax


def test_asymmetric_unsigned_range() -> None:
    x = np.array([-1.0, 0.0, 0.5, 3.0])
    s, z = int_params(x, 8, symmetric=False, unsigned=True)
    assert float(s) == 4.0 / 255 and int(z) == round(1.0 / (4.0 / 255))  # round(-min/scale)
    c = quantize_int_codes(x, 8, symmetric=False, unsigned=True)
    assert c[0] == 0 and c[-1] == 255 and c[1] == int(z)  # min -> 0, max -> 255, 0 exact
    assert quantize_int(x, 8, symmetric=False, unsigned=True)[1] == 0.0
    # all positive: the range is widened to include 0, zero point 0
    assert int(int_params(np.array([1.0, 2.0]), 8, symmetric=False, unsigned=True)[1]) == 0


def test_zero_tensor_and_narrow_range() -> None:
    z = np.zeros((3, 4))
    for sym in (True, False):
        s, _ = int_params(z, 8, symmetric=sym)
        assert float(s) == 1.0
        assert (quantize_int(z, 8, symmetric=sym) == 0).all()
    x = np.array([-5.0, -4.99, 2.0, 5.0])
    c = quantize_int_codes(x, 8, symmetric=False, narrow_range=True)
    assert c.min() == -127 and c.max() == 127
    assert int_range(8, narrow_range=True) == (-127, 127)
    assert int_range(4, unsigned=True, narrow_range=True) == (1, 15)


def test_channel_and_group_granularity() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 10)) * rng.uniform(0.1, 10, (6, 1))
    s, z = int_params(w, 8, granularity="channel", axis=0)
    assert s.shape == (6,) and z.shape == (6,)
    got = quantize_int(w, 8, granularity="channel", axis=0)
    for r in range(6):
        np.testing.assert_array_equal(got[r], quantize_int(w[r], 8))
    got1 = quantize_int(w, 4, symmetric=False, granularity="channel", axis=1)
    for c in range(10):
        np.testing.assert_array_equal(got1[:, c], quantize_int(w[:, c], 4, symmetric=False))
    s, z = int_params(w, 8, granularity="group", axis=1, group_size=4)
    assert s.shape == (6, 3)
    g = quantize_int(w, 8, granularity="group", axis=1, group_size=4)
    for r in range(6):
        for j in range(0, 10, 4):
            np.testing.assert_array_equal(g[r, j : j + 4], quantize_int(w[r, j : j + 4], 8))
    g0 = quantize_int(w, 8, granularity="group", axis=0, group_size=4)
    np.testing.assert_array_equal(
        g0, quantize_int(w.T, 8, granularity="group", axis=1, group_size=4).T
    )
    x3 = rng.standard_normal((2, 3, 5))
    assert int_params(x3, 8, granularity="channel", axis=-1)[0].shape == (5,)
    assert int_params(x3, 8, granularity="group", axis=1, group_size=2)[0].shape == (2, 2, 5)


def test_given_scale_and_zero_point() -> None:
    x = np.array([0.0, 0.1, 0.25, -1.0, 100.0])
    c = quantize_int_codes(x, 8, scale=0.1, zero_point=3)
    assert c.tolist() == [3, 4, 5, -7, 127]  # 0.25/0.1 = 2.5 -> 2 (ties to even), then + 3
    np.testing.assert_allclose(
        quantize_int(x, 8, scale=0.1, zero_point=3), [0.0, 0.1, 0.2, -1.0, 12.4]
    )
    w = np.ones((2, 3))
    got = quantize_int(w, 8, granularity="channel", axis=0, scale=[0.5, 0.3])
    np.testing.assert_allclose(got, [[1.0] * 3, [0.9] * 3])
    with pytest.raises(ValueError, match="scale"):
        quantize_int(w, 8, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        quantize_int(w, 8, granularity="channel", scale=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="zero_point"):
        quantize_int(w, 8, scale=1.0, zero_point=300)


def test_nan_inf() -> None:
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0])
    y = quantize_int(x, 8)
    assert y[0] == 128 / 127  # amax 2: 1 * 127/2 = 63.5 -> 64 (ties to even)
    assert np.isnan(y[1]) and y[2] == 2.0 and y[4] == -2.0
    assert y[3] == -256 / 127  # -inf saturates to qmin = -128
    with pytest.raises(ValueError, match="NaN"):
        quantize_int_codes(x, 8)


def test_sr_unbiased_with_fixed_seeds() -> None:
    vals = np.array([0.3, -1.7, 2.25, 0.05]) * (3.0 / 127)  # fractions of one step
    x = np.concatenate([np.tile(vals, 20000), [3.0]])  # amax 3 -> scale 3/127
    y = quantize_int(x, 8, mode="sr", seed=2024)[:-1].reshape(-1, 4)
    np.testing.assert_array_equal(y, quantize_int(x, 8, mode="sr", seed=2024)[:-1].reshape(-1, 4))
    step = 3.0 / 127
    se = 0.5 * step / np.sqrt(20000)
    assert (np.abs(y.mean(axis=0) - vals) < 5 * se).all()
    rne = quantize_int(x, 8)[:-1].reshape(-1, 4).mean(axis=0)
    assert abs(rne[0] - vals[0]) > 10 * se  # round-to-nearest is biased here


def test_backends() -> None:
    x = np.linspace(-2, 3, 40, dtype=np.float32).reshape(4, 10)
    ref = quantize_int(x, 6, symmetric=False, granularity="channel", axis=0)
    torch = pytest.importorskip("torch")
    t = quantize_int(torch.from_numpy(x), 6, symmetric=False, granularity="channel", axis=0)
    assert t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), ref)
    c = quantize_int_codes(torch.from_numpy(x), 6)
    assert c.dtype == torch.int64
    jnp = pytest.importorskip("jax.numpy")
    j = quantize_int(jnp.asarray(x), 6, symmetric=False, granularity="channel", axis=0)
    np.testing.assert_array_equal(np.asarray(j), ref)


def test_errors() -> None:
    x = np.ones(4)
    with pytest.raises(ValueError, match="bits"):
        quantize_int(x, 1)
    with pytest.raises(ValueError, match="bits"):
        quantize_int(x, 40)
    with pytest.raises(TypeError, match="bits"):
        quantize_int(x, 8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="granularity"):
        quantize_int(x, 8, granularity="row")
    with pytest.raises(ValueError, match="group_size"):
        quantize_int(x, 8, granularity="group", group_size=0)
    with pytest.raises(ValueError, match="axis"):
        quantize_int(x, 8, granularity="channel", axis=2)
    assert quantize_int(x, 1, symmetric=False, unsigned=True).tolist() == [1.0] * 4
