"""I-ViT integer operators against exact oracles: Fractions, Python ints, math.isqrt."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from lowbit.methods.ivit import ops

I32 = 2**31 - 1


# ---- independent Python-int references (written from the paper/repo formulas) ------------------


def floor_frac(a: Fraction) -> int:
    return math.floor(a)


def py_shift_exp(d: int, x0: int, n: int) -> int:
    """The repo's int_exp_shift on one integer, with Fractions for every division."""
    d = d + floor_frac(Fraction(d, 2)) - floor_frac(Fraction(d, 16))
    d = max(d, n * x0)
    q = floor_frac(Fraction(d, x0))
    r = d - q * x0
    e = floor_frac((Fraction(r, 2) - x0) * Fraction(2) ** (n - q))
    return min(e, I32)


def py_shiftmax(row: list[int], x0: int, n: int, bits: int) -> list[int]:
    m = max(row)
    es = [py_shift_exp(x - m, x0, n) for x in row]
    s = min(sum(es), I32)
    f = floor_frac(Fraction(I32, s))
    return [floor_frac(Fraction(e * f, 2 ** (32 - bits))) for e in es]


def py_shiftgelu(row: list[int], x0: int, n: int, bits: int, symmetric: bool) -> list[int]:
    out = []
    if symmetric:
        one = py_shift_exp(0, x0, n)
        for x in row:
            e = py_shift_exp(-abs(x), x0, n)
            f = floor_frac(Fraction(I32, min(e + one, I32)))
            num = one if x > 0 else e
            out.append(x * floor_frac(Fraction(num * f, 2 ** (32 - bits))))
        return out
    m = max(row)
    emax = py_shift_exp(-m, x0, n)
    for x in row:
        e = py_shift_exp(x - m, x0, n)
        f = floor_frac(Fraction(I32, min(e + emax, I32)))
        out.append(x * floor_frac(Fraction(e * f, 2 ** (32 - bits))))
    return out


def py_layernorm(row: list[int], bias: list[int], iters: int | None, shift: int) -> list[int]:
    c = len(row)
    mean = floor_frac(Fraction(sum(row), c) + Fraction(1, 2))
    y = [x - mean for x in row]
    var = sum(v * v for v in y)
    if iters is None:
        std = math.isqrt(var)
    else:
        std = 2**16
        for _ in range(iters):
            std = floor_frac(Fraction(std + floor_frac(Fraction(var, std)), 2))
    std = max(std, 1)
    f = floor_frac(Fraction(I32, std))
    return [floor_frac(Fraction(v * f, 2 ** (1 + shift))) + b for v, b in zip(y, bias, strict=True)]


# ---- dyadic requantization ----------------------------------------------------------------------


def test_dyadic_requant_matches_fraction_oracle() -> None:
    rng = random.Random(0)
    ms = [rng.random() for _ in range(300)] + [2.0 ** -rng.uniform(0, 30) for _ in range(300)]
    ms += [1 - 2.0**-40, 0.5, 2.0**-20, 1e-12]
    bs, cs = ops.dyadic(np.array(ms))
    for m, b, c in zip(ms, bs.tolist(), cs.tolist(), strict=True):
        assert 0 < m < 1
        mf = Fraction(m)
        if b == 0:  # |M| < 2^-32: every int32 product rounds to 0
            assert m < 2.0**-32
            continue
        assert 2**30 <= b < 2**31 and 30 <= c <= 62  # c = 30: renormalised b = 2^31
        assert abs(b - mf * 2**c) <= Fraction(1, 2)  # b is mant·2^31 rounded
        accs = [rng.randrange(-(2**31), 2**31) for _ in range(20)] + [-(2**31), I32, 0, 1, -1]
        got = ops.requant(np.array(accs, dtype=np.int64), b, c).tolist()
        for acc, g in zip(accs, got, strict=True):
            assert g == floor_frac(Fraction(acc * b, 2**c) + Fraction(1, 2))
            assert abs(g - floor_frac(acc * mf + Fraction(1, 2))) <= 1


def test_dyadic_edge_cases_and_errors() -> None:
    b, c = ops.dyadic(np.array([0.0, -0.375, 3.0, 1 - 2.0**-33]))
    assert (b[0], c[0]) == (0, 1)
    assert (b[1], c[1]) == (-(3 * 2**29), 32)  # frexp(-0.375) = (-0.75, -1)
    assert Fraction(int(b[1]), 2 ** int(c[1])) == Fraction(-3, 8)
    assert Fraction(int(b[2]), 2 ** int(c[2])) == 3
    assert (b[3], c[3]) == (2**30, 30)  # mantissa rounds up to 2^31: renormalised
    for bad in (float("nan"), float("inf"), 2.0**30):
        with pytest.raises(ValueError):
            ops.dyadic(bad)
    with pytest.raises(TypeError):
        ops.requant(np.array([1.5]), 1, 1)
    with pytest.raises(OverflowError):
        ops.requant(np.array([2**31]), 1, 1)


def test_requant_clamps_and_torch_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**31), 2**31, size=(7, 5), dtype=np.int64)
    b, c = ops.dyadic(rng.uniform(1e-9, 1e-5, size=5))  # per channel
    ref = ops.requant(acc, b, c, 8)
    assert ref.min() >= -128 and ref.max() <= 127
    assert np.array_equal(ops.requant(torch.from_numpy(acc), b, c, 8).numpy(), ref)
    unclamped = ops.requant(acc, b, c)
    assert np.array_equal(np.clip(unclamped, -128, 127), ref)


def test_add_requant_is_two_requants_then_clamp() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(-(2**20), 2**20, size=(4, 6))
    r = rng.integers(-(2**15), 2**15, size=(4, 6))
    ba, ca = ops.dyadic(0.003)
    br, cr = ops.dyadic(0.7)
    got = ops.add_requant(a, ba, ca, r, br, cr, 16)
    for i in range(4):
        for j in range(6):
            va = floor_frac(Fraction(int(a[i, j]) * int(ba), 2 ** int(ca)) + Fraction(1, 2))
            vr = floor_frac(Fraction(int(r[i, j]) * int(br), 2 ** int(cr)) + Fraction(1, 2))
            assert got[i, j] == min(max(va + vr, -(2**15)), 2**15 - 1)


# ---- Shiftmax / ShiftGELU -----------------------------------------------------------------------


def _logits(
    rng: np.random.Generator, rows: int, cols: int, sigma: float
) -> tuple[np.ndarray, float]:
    x = rng.normal(0, sigma, size=(rows, cols))
    s = float(np.abs(x).max()) / 127
    return np.rint(x / s).astype(np.int64), s


@pytest.mark.parametrize("bits", [8, 16])
def test_shiftmax_matches_python_int_reference(bits: int) -> None:
    rng = np.random.default_rng(3)
    x, s = _logits(rng, 6, 23, 3.0)
    x0 = ops.exp_x0(s)
    got = ops.shiftmax(x, x0, n=15, bits=bits)
    for i in range(x.shape[0]):
        assert got[i].tolist() == py_shiftmax(x[i].tolist(), x0, 15, bits)
    assert np.array_equal(ops.shiftmax(torch.from_numpy(x), x0, n=15, bits=bits).numpy(), got)


def test_shiftmax_row_sums_and_monotone() -> None:
    rng = np.random.default_rng(4)
    for cols, sigma in ((49, 1.0), (128, 3.0), (197, 3.0)):
        x, s = _logits(rng, 40, cols, sigma)
        x0 = ops.exp_x0(s)
        for bits in (8, 16):
            out = ops.shiftmax(x, x0, n=15, bits=bits)
            sums = out.sum(axis=1)
            half = 2 ** (bits - 1)
            # the exact bound: Σ ≤ (2^31−1)/2^(32−k) < 2^(k−1) and Σ > (2^31−1−s)/2^(32−k) − L
            es = ops.shift_exp(x - x.max(axis=1, keepdims=True), x0, 15).sum(axis=1)
            assert np.all(sums < half)
            assert np.all(sums > (I32 - es) / 2.0 ** (32 - bits) - cols)
            if bits == 8:  # the paper's claim: 2^(k−1) ± row length
                assert np.all(np.abs(sums - half) <= cols)
            order = np.argsort(x, axis=1, kind="stable")
            assert np.all(np.diff(np.take_along_axis(out, order, axis=1), axis=1) >= 0)


def test_shiftmax_mask_excludes_keys_exactly() -> None:
    rng = np.random.default_rng(5)
    x, s = _logits(rng, 5, 12, 2.0)
    x0 = ops.exp_x0(s)
    mask = np.ones((5, 12), dtype=bool)
    mask[:, 8:] = False
    x[:, 9] = 127  # a large masked logit must not change anything
    got = ops.shiftmax(x, x0, n=15, bits=16, mask=mask)
    assert np.all(got[:, 8:] == 0)
    assert np.array_equal(got[:, :8], ops.shiftmax(x[:, :8], x0, n=15, bits=16))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("n", [23, 15])
def test_shiftgelu_matches_python_int_reference(symmetric: bool, n: int) -> None:
    rng = np.random.default_rng(6)
    x, s = _logits(rng, 4, 17, 2.0)
    x[0] = -np.abs(x[0]) - 1  # a row whose max is negative (e^(−t_max) saturates)
    x0 = ops.exp_x0(1.702 * s)
    got = ops.shiftgelu(x, x0, n=n, bits=8, symmetric=symmetric)
    for i in range(x.shape[0]):
        assert got[i].tolist() == py_shiftgelu(x[i].tolist(), x0, n, 8, symmetric)
    tgot = ops.shiftgelu(torch.from_numpy(x), x0, n=n, bits=8, symmetric=symmetric)
    assert np.array_equal(tgot.numpy(), got)


def test_shiftgelu_repo_fails_on_large_row_max_symmetric_does_not() -> None:
    # the repo's sigmoid divides by e^(t−t_max) + e^(−t_max); a row max of 10.8 floors
    # e^(−t_max) to 0 and a far-negative entry's clamped e^(t−t_max) gives σ ≈ 1
    s = 10.8 / 127
    x = np.rint(np.array([[-10.3, -3.0, 0.0, 1.0, 10.8]]) / s).astype(np.int64)
    x0 = ops.exp_x0(1.702 * s)
    repo = ops.shiftgelu(x, x0, n=23, bits=8) * s / 128
    sym = ops.shiftgelu(x, x0, n=15, bits=8, symmetric=True) * s / 128
    xs = x * s
    ref = xs / (1 + np.exp(-1.702 * xs))
    assert repo[0, 0] < -5  # GELU(−10.3) ≈ 0, the repo gives ≈ −5
    assert np.max(np.abs(sym - ref)) < 0.1


def test_shift_exp_never_overflows_positive_inputs() -> None:
    x = np.array([0, 1, 100, 10**6], dtype=np.int64)
    got = ops.shift_exp(x, -1, 23)
    assert got.tolist() == [py_shift_exp(int(v), -1, 23) for v in x]
    assert got[-1] == I32


# ---- I-LayerNorm / integer sqrt -----------------------------------------------------------------


def test_isqrt_converging_equals_math_isqrt() -> None:
    small = np.arange(0, 2**16, dtype=np.int64)
    got = ops.isqrt_newton(small, iters=None)
    assert got.tolist() == [math.isqrt(v) for v in range(2**16)]
    rng = random.Random(7)
    big = [rng.randrange(2**16, 2**62) for _ in range(3000)]
    big += [k * k - 1 for k in (2**10, 3**19, 2**31 - 1)] + [k * k for k in (5**13, 2**30)]
    got = ops.isqrt_newton(np.array(big, dtype=np.int64), iters=None)
    assert got.tolist() == [math.isqrt(v) for v in big]


def test_isqrt_repo_variant_within_one_for_realistic_variances() -> None:
    rng = random.Random(8)
    vs = [rng.randrange(2**16, 2**44) for _ in range(3000)]
    vs += [int(2 ** rng.uniform(16, 44)) for _ in range(3000)]
    got = ops.isqrt_newton(np.array(vs, dtype=np.int64), iters=10).tolist()
    diffs = [g - math.isqrt(v) for g, v in zip(got, vs, strict=True)]
    assert set(diffs) <= {0, 1}
    assert diffs.count(0) > 0.99 * len(diffs)
    # the documented failures: small variances never come down from 2^16 (≥ 64) ...
    small = ops.isqrt_newton(np.arange(0, 4096, dtype=np.int64), iters=10)
    assert small.min() == 64 and all(math.isqrt(v) < 64 for v in range(4096))

    # ... the fixed count stops some oscillations on ⌊√v⌋ + 1 (Python-int loop as oracle) ...
    def repo(v: int) -> int:
        k = 2**16
        for _ in range(10):
            k = (k + v // k) // 2
        return k

    vs = list(range(2**16, 2**16 + 4000))
    got = ops.isqrt_newton(np.array(vs), iters=10).tolist()
    assert got == [repo(v) for v in vs]
    assert any(g == math.isqrt(v) + 1 for g, v in zip(got, vs, strict=True))
    # ... and huge variances have not come down from the first overshoot
    v = 23767799299687  # ≈ 2^44.43: not converged from the first overshoot
    assert int(ops.isqrt_newton(np.array([v]), iters=10)[0]) > math.isqrt(v)
    assert int(ops.isqrt_newton(np.array([v]), iters=None)[0]) == math.isqrt(v)


@pytest.mark.parametrize("iters", [10, None])
def test_i_layernorm_matches_python_int_reference(iters: int | None) -> None:
    rng = np.random.default_rng(9)
    x = rng.integers(-(2**15), 2**15, size=(5, 24))
    x[1] = 7  # a constant row: var = 0
    x[2] = rng.integers(-3, 4, size=24)  # a tiny variance (the repo variant's 64)
    bias = rng.integers(-(2**20), 2**20, size=24)
    for shift in (0, 2):
        got = ops.i_layernorm(x, bias, iters=iters, shift=shift)
        for i in range(x.shape[0]):
            want = py_layernorm(x[i].tolist(), bias.tolist(), iters, shift)
            assert got[i].tolist() == want
        assert np.array_equal(
            ops.i_layernorm(
                torch.from_numpy(x), torch.from_numpy(bias), iters=iters, shift=shift
            ).numpy(),
            got,
        )


def test_layernorm_shift_keeps_int32_headroom() -> None:
    c = 384
    assert ops.layernorm_shift(np.array([1.9, -0.5]), c) == 0
    k = ops.layernorm_shift(np.array([57.62]), c)
    assert k >= 1
    s = ops.layernorm_scale(c, k)
    assert 2 ** (30 - k) + math.floor(57.62 / s) + 1 <= I32
    assert 2 ** (31 - k) + math.floor(57.62 / ops.layernorm_scale(c, k - 1)) + 1 > I32


def test_quantizer_and_input_validation() -> None:
    s = ops.symmetric_scale(np.array([-2.0, -0.1]), np.array([1.0, 0.3]), 8)
    assert np.allclose(s, [2 / 127, 0.3 / 127])
    q = ops.quantize_symmetric(np.array([0.5, -3.0, 100.0]), 2 / 127, 8)
    assert q.tolist() == [32, -128, 127]  # 31.75 → 32, clamped both ways
    for fn in (
        lambda: ops.shiftmax(np.zeros(3), -5),
        lambda: ops.i_layernorm(np.zeros((2, 3))),
        lambda: ops.shift_exp(np.zeros(2, dtype=np.float32), -3, 15),
    ):
        with pytest.raises(TypeError):
            fn()
    with pytest.raises(ValueError):
        ops.exp_x0(0.0)
    with pytest.raises(ValueError):
        ops.shift_exp(np.zeros(2, dtype=np.int64), 0, 15)
