"""lowbit.arith.dfp: DFP-P conversion, requantization and the chunked INT16 x INT16 -> INT32 GEMM.

Oracles: Python ints and Fractions (exact shared exponent, rounding, shifts), the plain
reference ``matmul_reference`` (Python ints, one step at a time), ``lowbit.matmul`` with
exact blocks rounded once to fp32 (an implementation of the same combination written
independently of this package), and ``lowbit.arith.intgemm.int_matmul`` (integer GEMM with a
wrapping 32-bit accumulator) for the adversarial overflow cases.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.arith import dfp
from lowbit.kernels.randbits import bits_numpy

RNG = np.random.default_rng(2018)


# ---- oracles ----------------------------------------------------------------------------------
def rne(q: Fraction) -> int:
    """Round half to even (Python's round of a Fraction)."""
    return round(q)


def oracle_exponent(values: list[float], bits: int) -> int:
    """E_s from the definition: floor(log2 max|x|) - (P-2), plus one if RNE carries max|I|
    to 2**(P-1); computed with Fractions and integer comparisons only."""
    m = max(abs(Fraction(v)) for v in values)
    e = 0
    while Fraction(2) ** e > m:
        e -= 1
    while Fraction(2) ** (e + 1) <= m:
        e += 1
    exp = e - (bits - 2)
    if rne(m / Fraction(2) ** exp) >= 2 ** (bits - 1):
        exp += 1
    return exp


def oracle_quantize(x: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    vals = [float(v) for v in x.ravel()]
    if not any(vals):
        return np.zeros(x.shape, dtype=np.int64), 0
    exp = oracle_exponent(vals, bits)
    ints = [rne(Fraction(v) / Fraction(2) ** exp) for v in vals]
    return np.array(ints, dtype=np.int64).reshape(x.shape), exp


def random_tensor(shape: tuple[int, ...], scale: float) -> np.ndarray:
    x = RNG.standard_normal(shape) * scale
    return x.astype(np.float32)


# ---- quantize / dequantize ----------------------------------------------------------------------
@pytest.mark.parametrize("bits", [16, 8, 12, 24])
@pytest.mark.parametrize("scale", [1.0, 3e-5, 7e4, 2.0**-120])
def test_quantize_matches_fraction_oracle(bits: int, scale: float) -> None:
    x = random_tensor((7, 13), scale)
    t = dfp.quantize(x, bits)
    ref_ints, ref_exp = oracle_quantize(x, bits)
    assert t.exp == ref_exp
    assert np.array_equal(np.asarray(t.ints, dtype=np.int64), ref_ints)
    assert t.ints.dtype == (np.int16 if bits <= 16 else np.int32)


@pytest.mark.parametrize("scale", [1.0, 1e-3, 3e3])
def test_round_trip_error_and_integer_range(scale: float) -> None:
    """Paper's test (1): error <= 2**(E_s-1) per element, max|I| in [2**14, 2**15)."""
    for _ in range(5):
        x = random_tensor((64, 33), scale)
        t = dfp.quantize(x)
        back = dfp.dequantize(t, np.float64)
        err = np.abs(back - x.astype(np.float64))
        assert err.max() <= 2.0 ** (t.exp - 1)
        assert 2**14 <= t.max_abs < 2**15
        # dequantize is exact: ints * 2**exp, checked with Fractions on a sample
        for idx in [(0, 0), (5, 7), (63, 32)]:
            assert Fraction(float(back[idx])) == Fraction(int(t.ints[idx])) * Fraction(2) ** t.exp


def test_rounding_carry_raises_exponent() -> None:
    x = np.array([32767.6, -1.0, 0.25], dtype=np.float64)
    t = dfp.quantize(x)
    assert t.exp == 1  # 32767.6 would round to 2**15 at exponent 0
    assert int(t.ints[0]) == 16384 and t.max_abs == 16384
    ints, exp = oracle_quantize(x, 16)
    assert (t.ints.tolist(), t.exp) == (ints.tolist(), exp)
    # just below the carry: stays at exponent 0
    t2 = dfp.quantize(np.array([32767.4]))
    assert (int(t2.ints[0]), t2.exp) == (32767, 0)


def test_numpy_and_torch_agree_every_dtype() -> None:
    x = random_tensor((9, 11), 0.37)
    ref = dfp.quantize(x)
    for arr in (torch.from_numpy(x), torch.from_numpy(x.astype(np.float64))):
        t = dfp.quantize(arr)
        assert t.exp == ref.exp and t.ints.dtype == torch.int16
        assert np.array_equal(t.ints.numpy(), ref.ints)
    h = x.astype(np.float16)
    assert np.array_equal(dfp.quantize(h).ints, dfp.quantize(torch.from_numpy(h)).ints)
    b = torch.from_numpy(x).to(torch.bfloat16)
    tb = dfp.quantize(b)
    ints, exp = oracle_quantize(b.to(torch.float64).numpy(), 16)
    assert tb.exp == exp and np.array_equal(tb.ints.numpy(), ints)
    assert torch.equal(
        dfp.dequantize(tb),
        dfp.dequantize(dfp.DFPTensor(torch.from_numpy(ints.astype(np.int16)), exp)),
    )


def test_zero_empty_and_bad_inputs() -> None:
    z = dfp.quantize(np.zeros((3, 4), np.float32))
    assert z.exp == 0 and not z.ints.any() and z.ints.dtype == np.int16
    assert dfp.quantize(torch.zeros(2, 2)).ints.dtype == torch.int16
    e = dfp.quantize(np.zeros((0, 5), np.float32))
    assert e.ints.shape == (0, 5) and e.exp == 0
    for bad in (np.array([1.0, np.nan]), np.array([np.inf, 1.0]), torch.tensor([1.0, -np.inf])):
        with pytest.raises(ValueError, match="NaN/inf"):
            dfp.quantize(bad)
    with pytest.raises(TypeError, match="floating"):
        dfp.quantize(np.arange(4))
    with pytest.raises(TypeError, match="floating"):
        dfp.quantize(torch.arange(4))
    with pytest.raises(ValueError, match="bits=1"):
        dfp.quantize(np.ones(2), bits=1)
    with pytest.raises(ValueError, match="bits=33"):
        dfp.quantize(np.ones(2), bits=33)
    with pytest.raises(ValueError, match="mode='rtz'"):
        dfp.quantize(np.ones(2), mode="rtz")
    with pytest.raises(TypeError, match="DFPTensor"):
        dfp.dequantize((np.ones(2, np.int16), 0))  # type: ignore[arg-type]


def test_stochastic_rounding_rule_and_unbiasedness() -> None:
    n = 40000
    x = np.full(n, 1.0 + 0.3 * 2.0**-14, dtype=np.float64)
    x[0] = 2.0  # sets E_s = 1 - 14: x/2**E = 8192 + 0.15 ...
    t = dfp.quantize(x, mode="sr", seed=7)
    assert t.exp == -13
    y = [Fraction(float(v)) / Fraction(2) ** t.exp for v in x[:50]]
    r = bits_numpy(7, 0, n)
    for i, yi in enumerate(y):  # the rule: up iff r < frac * 2**32
        fl = math.floor(yi)
        up = Fraction(int(r[i])) < (yi - fl) * 2**32
        assert int(t.ints[i]) == fl + up
    ups = int((t.ints[1:] == 8193).sum())
    p = 0.15
    sd = math.sqrt(n * p * (1 - p))
    assert abs(ups - (n - 1) * p) < 6 * sd
    # reproducible and backend-independent
    assert np.array_equal(dfp.quantize(x, mode="sr", seed=7).ints, t.ints)
    assert np.array_equal(dfp.quantize(torch.from_numpy(x), mode="sr", seed=7).ints.numpy(), t.ints)
    assert not np.array_equal(dfp.quantize(x, mode="sr", seed=8).ints, t.ints)
    err = np.abs(dfp.dequantize(t, np.float64) - x)
    assert err.max() < 2.0**t.exp


# ---- shifts and requantize ---------------------------------------------------------------------
def test_shift_right_matches_fraction_rounding() -> None:
    v = np.concatenate(
        [
            RNG.integers(-(2**31), 2**31, 500),
            np.array([6, 10, -6, -10, 2, -2, 3, -3, 0, 2**31 - 1, -(2**31)]),
        ]
    )
    for r in (0, 1, 2, 3, 7, 17):
        ref = [rne(Fraction(int(x), 2**r)) for x in v]
        got = dfp.shift_right(v, r)
        assert got.tolist() == ref
        assert dfp.shift_right(torch.from_numpy(v), r).tolist() == ref
        assert dfp.shift_values(v, r).tolist() == [float(q) for q in ref]
        assert dfp.shifted_max(int(np.abs(v).max()), r) == max(abs(q) for q in ref)
    with pytest.raises(ValueError, match=r"0\.\.62"):
        dfp.shift_right(v, 63)


def test_requantize_int32_to_dfp16() -> None:
    i32 = RNG.integers(-(2**30), 2**30, (6, 9)).astype(np.int32)
    t = dfp.requantize(dfp.DFPTensor(i32, -40))
    m = int(np.abs(i32.astype(np.int64)).max())
    rs = max(0, m.bit_length() - 15)
    assert t.exp == -40 + rs and t.ints.dtype == np.int16
    assert t.ints.astype(np.int64).tolist() == [
        [rne(Fraction(int(v), 2**rs)) for v in row] for row in i32.tolist()
    ]
    # the carry case: max 2**16 - 1 -> rs = 1 would give 32768; rs becomes 2
    c = dfp.requantize(dfp.DFPTensor(np.array([65535, 3], np.int32), 0))
    assert (c.ints.tolist(), c.exp) == ([16384, 1], 2)
    # already fits: unchanged
    f = dfp.requantize(dfp.DFPTensor(np.array([-32767, 5], np.int32), 3))
    assert (f.ints.tolist(), f.exp, f.ints.dtype) == ([-32767, 5], 3, np.int16)
    s = dfp.requantize(dfp.DFPTensor(torch.from_numpy(i32), -40), mode="sr", seed=1)
    lo = [[math.floor(Fraction(int(v), 2**rs)) for v in row] for row in i32.tolist()]
    d = s.ints.to(torch.int64).numpy() - np.array(lo)
    assert s.exp == t.exp and set(np.unique(d)) <= {0, 1}


# ---- planning: the chunk bound -------------------------------------------------------------------
def test_k_max_is_largest_safe_chunk_and_tight() -> None:
    for acc_bits in (8, 12, 32):
        lim = 2 ** (acc_bits - 1) - 1
        for _ in range(200):
            ma = int(RNG.integers(1, 2**15))
            mb = int(RNG.integers(1, 2**15 if acc_bits == 32 else 12))
            km = dfp.k_max(ma, mb, acc_bits)
            p = ma * mb
            assert km * p <= lim < (km + 1) * p  # largest c with c·P <= L (brute definition)
    assert dfp.k_max(2**15 - 1, 2**15 - 1) == 2 and dfp.k_max(2**15, 2**15) == 1
    assert dfp.k_max(2**14, 2**14) == 7 and dfp.k_max(2**13, 2**13) == 31


def test_headroom_auto_is_the_fewest_bits() -> None:
    for _ in range(100):
        ma, mb = (int(v) for v in RNG.integers(1, 2**15, 2))
        k = int(RNG.integers(1, 300))
        plan = dfp.plan_chunks(ma, mb, k, min_chunk=16)
        target = min(k, 16)
        assert plan.k_max >= target and plan.safe
        assert plan.chunk == min(k, plan.k_max)
        h = plan.shift_a + plan.shift_b
        for ra in range(h):  # every split of fewer bits misses the target
            for rb in range(h - ra):
                assert dfp.k_max(dfp.shifted_max(ma, ra), dfp.shifted_max(mb, rb)) < target
    fixed = dfp.plan_chunks(30000, 30000, 100, headroom=("auto", 2))
    assert fixed.shift_b == 2 and fixed.k_max >= 16
    assert dfp.k_max(dfp.shifted_max(30000, fixed.shift_a - 1), dfp.shifted_max(30000, 2)) < 16


def test_plan_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="acc_bits=1"):
        dfp.plan_chunks(1, 1, 1, acc_bits=1)
    with pytest.raises(ValueError, match="chunk=0"):
        dfp.plan_chunks(1, 1, 4, chunk=0)
    with pytest.raises(ValueError, match="chunk='big'"):
        dfp.plan_chunks(1, 1, 4, chunk="big")
    with pytest.raises(ValueError, match="headroom=-1"):
        dfp.plan_chunks(1, 1, 4, headroom=-1)
    with pytest.raises(ValueError, match="2 items"):
        dfp.plan_chunks(1, 1, 4, headroom=(1, 2, 3))
    with pytest.raises(ValueError, match="headroom='some'"):
        dfp.plan_chunks(1, 1, 4, headroom="some")
    with pytest.raises(ValueError, match="no chunk fits"):
        dfp.plan_chunks(2**15, 2**15, 4, acc_bits=30, headroom=0)


# ---- the GEMM ---------------------------------------------------------------------------------
CASES = [
    dict(),
    dict(acc_bits=20),
    dict(chunk=5),
    dict(headroom=0),
    dict(headroom=(3, 0)),
    dict(headroom=2, min_chunk=4),
    dict(acc_bits=40, headroom=0),
]


@pytest.mark.parametrize("kw", CASES)
def test_fast_path_equals_reference(kw: dict) -> None:
    for m, k, n, sa, sb in [
        (3, 37, 4, 1.0, 1.0),
        (5, 64, 2, 1e-3, 30.0),
        (1, 5, 1, 1.0, 1.0),
        (4, 200, 3, 2.0**-100, 2.0**-40),
        (2, 19, 3, 2.0**60, 1.0),
    ]:
        a = dfp.quantize(random_tensor((m, k), sa))
        b = dfp.quantize(random_tensor((k, n), sb))
        ref, rst = dfp.matmul_reference(a, b, **kw)
        out, st = dfp.matmul(a, b, **kw)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, ref)
        assert (st.chunk, st.shift_a, st.shift_b, st.exp, st.overflow_count) == (
            rst.chunk,
            rst.shift_a,
            rst.shift_b,
            rst.exp,
            rst.overflow_count,
        )
        assert st.max_abs_chunk_sum == rst.max_abs_chunk_sum
        tout, tst = dfp.matmul(
            dfp.DFPTensor(torch.from_numpy(a.ints), a.exp),
            dfp.DFPTensor(torch.from_numpy(b.ints), b.exp),
            **kw,
        )
        assert torch.equal(tout, torch.from_numpy(ref)) and tst == st


def test_grouped_and_single_chunk_paths_equal_reference() -> None:
    # long reduction with tiny outputs (grouped batched GEMMs) and chunk = K (one GEMM)
    a = dfp.quantize(random_tensor((2, 700), 1.0))
    b = dfp.quantize(random_tensor((700, 3), 1.0))
    for kw in (dict(), dict(chunk=700, acc_bits=54, headroom=0)):
        ref, _ = dfp.matmul_reference(a, b, **kw)
        out, st = dfp.matmul(a, b, **kw)
        np.testing.assert_array_equal(out, ref)
    assert st.n_chunks == 1


def test_combination_equals_lowbit_blocked_fp32_matmul() -> None:
    """Independent oracle of step 3: lowbit.matmul sums each block of the exact products
    exactly, rounds it to fp32 and adds it to an fp32 accumulator (order='blocked',
    fma=False); scaling by 2**e is exact here."""
    for _ in range(4):
        a = dfp.quantize(random_tensor((6, 90), 1.0))
        b = dfp.quantize(random_tensor((90, 5), 0.01))
        out, st = dfp.matmul(a, b)
        ia = dfp.shift_values(a.ints, st.shift_a)
        ib = dfp.shift_values(b.ints, st.shift_b)
        blocked = lb.matmul(ia, ib, acc="fp32", order="blocked", block_k=st.chunk, fma=False)
        np.testing.assert_array_equal(
            out, np.asarray(blocked, np.float32) * np.float32(2.0**st.exp)
        )


def test_float_operands_are_quantized_first() -> None:
    x, w = random_tensor((4, 30), 1.0), random_tensor((30, 6), 0.1)
    out, _ = dfp.matmul(x, w)
    ref, _ = dfp.matmul_reference(dfp.quantize(x), dfp.quantize(w))
    np.testing.assert_array_equal(out, ref)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    assert np.abs(out - exact).max() < 1e-3 * np.abs(x).max() * np.abs(w).max() * 30
    tout, _ = dfp.matmul(torch.from_numpy(x), torch.from_numpy(w))
    assert torch.equal(tout, torch.from_numpy(ref))


def test_empty_reduction_gives_zeros() -> None:
    out, st = dfp.matmul(
        dfp.DFPTensor(np.zeros((2, 0), np.int16), 0), dfp.DFPTensor(np.zeros((0, 3), np.int16), 0)
    )
    assert out.shape == (2, 3) and not out.any() and st.n_chunks == 0


def test_gemm_rejects_bad_inputs() -> None:
    a = dfp.quantize(np.ones((2, 3)))
    with pytest.raises(ValueError, match="do not align"):
        dfp.matmul(a, dfp.quantize(np.ones((4, 2))))
    with pytest.raises(ValueError, match="2-D"):
        dfp.matmul(dfp.quantize(np.ones((2, 3, 4))), a)
    with pytest.raises(TypeError, match="numpy or both torch"):
        dfp.matmul(a, dfp.quantize(torch.ones(3, 2)))
    with pytest.raises(ValueError, match="NaN/inf"):
        dfp.matmul(np.array([[np.nan, 1.0]]), np.ones((2, 1)))
    wide = dfp.DFPTensor(np.full((1, 2), 2**30, np.int32), 0)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        dfp.matmul(
            wide, dfp.DFPTensor(np.full((2, 1), 2**30, np.int32), 0), headroom=0, acc_bits=63
        )
    with pytest.raises(ValueError, match="no chunk fits"):
        dfp.matmul(wide, dfp.DFPTensor(np.full((2, 1), 2**30, np.int32), 0), headroom=0)
    with pytest.raises(TypeError, match="integer"):
        dfp.matmul(dfp.DFPTensor(np.ones((1, 1)), 0), dfp.DFPTensor(np.ones((1, 1), np.int16), 0))


# ---- adversarial inputs: the chunk bound is proven and exercised --------------------------------
def _all(value: int, shape: tuple[int, int]) -> dfp.DFPTensor:
    return dfp.DFPTensor(np.full(shape, value, dtype=np.int16), 0)


@pytest.mark.parametrize("value,first_bad_k", [(-(2**15), 2), (2**15 - 1, 3)])
def test_unchunked_int32_overflows_chunked_never(value: int, first_bad_k: int) -> None:
    from lowbit.arith.intgemm import int_matmul

    for k in range(1, 9):
        a, b = _all(value, (3, k)), _all(value, (k, 2))
        exact = k * value * value
        raw = int_matmul(a.ints, b.ints, acc_bits=32, overflow="wrap")
        un_out, un = dfp.matmul(a, b, chunk=None, headroom=0)
        assert un.overflow_count == raw.overflow_count  # same definition, independent code
        assert (raw.overflow_count > 0) == (k >= first_bad_k)
        # what the wrapped INT32 accumulator holds, converted to fp32
        assert np.array_equal(un_out, np.full((3, 2), np.float32(float(raw.values[0, 0]))))
        if k >= first_bad_k:
            assert float(un_out[0, 0]) != exact
        out, st = dfp.matmul(a, b, headroom=0)  # chunk = K_max, no head-room shifts
        assert st.overflow_count == 0 and st.safe and st.checked == "bound"
        assert st.chunk == min(k, first_bad_k - 1) == min(k, st.k_max)
        assert st.bound <= 2**31 - 1
        assert np.all(out == np.float32(exact))  # k·2**30 is exact in fp32
        ref, rst = dfp.matmul_reference(a, b, headroom=0)  # simulated step by step: 0 too
        assert rst.overflow_count == 0 and np.array_equal(out, ref)
        # the bound is exercised: the largest chunk sum reaches it exactly
        assert st.max_abs_chunk_sum == st.bound
        # and it is tight: one product more per chunk overflows
        if k > st.k_max:
            _, over = dfp.matmul(a, b, headroom=0, chunk=st.k_max + 1)
            assert over.overflow_count > 0 and over.checked == "simulated"


def test_adversarial_with_auto_headroom() -> None:
    a, b = _all(-(2**15), (2, 256)), _all(-(2**15), (256, 2))
    out, st = dfp.matmul(a, b)
    assert st.overflow_count == 0 and st.chunk >= 16 and st.bound <= 2**31 - 1
    assert st.max_abs_chunk_sum == st.bound  # every full chunk reaches the proven bound
    assert np.all(out == np.float32(256 * 2**30))  # the shifts are exact on powers of two
    ref, rst = dfp.matmul_reference(a, b)
    assert rst.overflow_count == 0 and np.array_equal(out, ref)
    un_out, un = dfp.matmul(a, b, chunk=None, headroom=0)
    assert un.overflow_count > 0 and not np.all(un_out == out)


def test_device_combiner_equals_numba_combiner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors on accelerators are combined with torch operations; force that path on CPU
    and hold it equal to the reference (both scaling paths, grouped and per-chunk)."""
    from lowbit.arith.dfp import gemm

    def torch_add(self: gemm._Combiner, s64: object, stacked: bool = False) -> None:
        self._add_torch(s64, stacked)

    monkeypatch.setattr(gemm._Combiner, "add", torch_add)
    for m, k, n, sa in [(3, 100, 2, 1.0), (40, 50, 30, 2.0**-130)]:
        a = dfp.quantize(random_tensor((m, k), sa))
        b = dfp.quantize(random_tensor((k, n), 1.0))
        ref, rst = dfp.matmul_reference(a, b)
        out, st = dfp.matmul(
            dfp.DFPTensor(torch.from_numpy(a.ints), a.exp),
            dfp.DFPTensor(torch.from_numpy(b.ints), b.exp),
        )
        assert torch.equal(out, torch.from_numpy(ref))
        assert st.max_abs_chunk_sum == rst.max_abs_chunk_sum
