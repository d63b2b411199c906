"""L-Mul (lowbit.arith.approx) against closed forms computed in Fractions.

The oracle never looks at bit patterns: it decomposes each operand value as
±(1 + xm)·2^xe and evaluates the paper's formula, with the adder's carry
(``S = xm + ym + 2^-l``: ``(1 + S - q)·2^(xe + ye + q)`` with ``q = floor(S)``) or without
(``literal``), then applies the documented underflow/overflow rules.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.arith.approx import lmul, lmul_constant, lmul_matmul, lmul_matmul_reference
from lowbit.arith.approx.lmul import lmul_prepared_numpy, prepare_numpy
from lowbit.kernels import lmul_numba as lk
from oracle import FloatOracle

L_TABLE = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4, 7: 4, 8: 4, 23: 4}  # the paper's l(m)


# ---- the oracle ------------------------------------------------------------------------------
def floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def round_sig(v: Fraction, p: int) -> Fraction:
    """v > 0 rounded to p significant bits, ties to even (unbounded exponent)."""
    e = floor_log2(v)
    q = v / Fraction(2) ** (e - p + 1)
    n = math.floor(q)
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2 == 1):
        n += 1
    return n * Fraction(2) ** (e - p + 1)


@functools.cache
def decompose(ax: float, m: int) -> tuple[int, int]:
    """(xe, fx) with ax = (1 + fx/2^m)·2^xe, fx an integer (ax > 0 an e8mM number)."""
    a = Fraction(ax)
    xe = floor_log2(a)
    f = (a / Fraction(2) ** xe - 1) * (1 << m)
    assert f.denominator == 1, (ax, m)
    return xe, int(f)


def oracle(x: float, y: float, m: int, literal: bool = False) -> float:
    """L-Mul of two operands that are already e8mM numbers (or 0, inf, NaN)."""
    if math.isnan(x) or math.isnan(y):
        return math.nan
    neg = (math.copysign(1.0, x) < 0) != (math.copysign(1.0, y) < 0)
    if math.isinf(x) or math.isinf(y):
        if x == 0 or y == 0:
            return math.nan
        return -math.inf if neg else math.inf
    if x == 0 or y == 0:
        return -0.0 if neg else 0.0
    xe, fx = decompose(abs(x), m)
    ye, fy = decompose(abs(y), m)
    s = fx + fy + (1 << (m - L_TABLE.get(m, 4)))  # (xm + ym + 2^-l)·2^m
    if literal:  # (1 + s/2^m)·2^(xe + ye)
        v = Fraction((1 << m) + s)
        v = round_sig(v, 24) if m == 23 else v  # at most m + 2 significant bits
        r = float(v * Fraction(2) ** (xe + ye - m))
    else:  # with the carry: (1 + s/2^m - q)·2^(xe + ye + q), q = floor(s/2^m)
        q = s >> m
        r = math.ldexp((1 << m) + s - (q << m), xe + ye + q - m)
    if r < 2.0**-126:
        r = 0.0
    elif r >= 2.0**128:
        r = math.inf
    return -r if neg else r


def e8m_values(m: int, exps: list[int]) -> np.ndarray:
    """Every e8mM number in the given binades, both signs, and ±0 (as float32)."""
    vals = [0.0, -0.0]
    for e in exps:
        for f in range(1 << m):
            v = float((1 + Fraction(f, 1 << m)) * Fraction(2) ** e)
            vals += [v, -v]
    return np.array(vals, dtype=np.float32)


def bits(x: Any) -> np.ndarray:
    a = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    a[np.isnan(a)] = np.nan
    return a.view(np.int64)


def assert_bits(got: Any, want: Any, what: str = "") -> None:
    g, w = bits(got), bits(want)
    assert np.shape(got) == np.shape(want), (what, np.shape(got), np.shape(want))
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, f"{what}: {bad.size} differ, first {bad[:4]}"


# ---- elementwise -----------------------------------------------------------------------------
EXPS = {
    1: [-126, -64, -63, -1, 0, 1, 63, 64, 127],
    2: [-126, -125, -63, 0, 1, 2, 63, 127],
    3: [-126, -125, -64, -63, -1, 0, 1, 2, 63, 64, 126, 127],
    4: [-126, -63, 0, 1, 64, 127],
    5: [-63, 0, 1, 64],
}


@pytest.mark.parametrize("literal", [False, True])
@pytest.mark.parametrize("m", sorted(EXPS))
def test_lmul_exhaustive_pairs_match_the_closed_form(m: int, literal: bool) -> None:
    """Every pair of e8mM values in a dozen binades (underflow, overflow and the carry
    boundaries included) equals the Fraction closed form, bit for bit."""
    v = e8m_values(m, EXPS[m])
    got = lmul(v[:, None], v[None, :], m, literal=literal)
    assert got.dtype == np.float32
    want = np.array([[oracle(float(a), float(b), m, literal) for b in v] for a in v])
    assert_bits(got.astype(np.float64), want, f"m={m} literal={literal}")


def test_lmul_carry_and_literal_differ_where_the_note_says() -> None:
    # 1.75 * 1.75, m = 3: xm + ym + 1/8 = 1.625 carries: 1.625 * 2 = 3.25; literal 2.625 * 1
    assert float(lmul(np.float32(1.75), np.float32(1.75), 3)) == 3.25
    assert float(lmul(np.float32(1.75), np.float32(1.75), 3, literal=True)) == 2.625
    # m = 4: 1.9375^2 carries twice (15 + 15 + 2 = 32 sixteenths): 2^2
    assert float(lmul(np.float32(1.9375), np.float32(1.9375), 4)) == 4.0


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 8])
def test_lmul_one_times_one_is_one_plus_two_to_minus_l(m: int) -> None:
    l = L_TABLE[m]
    assert float(lmul(1.0, 1.0, m)) == 1 + 2.0**-l
    assert float(lmul(1.0, 1.0, m, literal=True)) == 1 + 2.0**-l
    # y * (1 + 2^-l) whenever ym + 2^-l < 1: catches a wrong bias constant
    y = 1.0 + 2.0**-m if m > l else 1.0
    assert float(lmul(1.0, y, m)) == y + 2.0**-l


def test_lmul_does_not_use_the_frexp_mantissa() -> None:
    """A public bug: frexp's mantissa in [0.5, 1) taken as xm. For 1 * 1 (m = 3) it gives
    (1 + .5 + .5 + 1/8) * 2^(1 + 1) = 8.5 (or 4.5 with one exponent fixed); L-Mul gives
    1.125."""
    fm, fe = math.frexp(1.0)
    buggy = (1 + fm + fm + 2.0**-3) * 2.0 ** (fe + fe)
    got = float(lmul(1.0, 1.0, 3))
    assert got == 1.125
    assert got not in (buggy, buggy / 2, 4.5)


def test_lmul_sign_symmetry_zero_and_specials() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(2000).astype(np.float32)
    b = (rng.standard_normal(2000) * 10).astype(np.float32)
    for m in (2, 3, 4, 7, 23):
        assert_bits(lmul(-a, b, m), -lmul(a, b, m))
        assert_bits(lmul(a, b, m), lmul(b, a, m))
    z = lmul(np.float32(0.0), b, 3)
    assert np.all(z == 0) and np.array_equal(np.signbit(z), np.signbit(b))
    nz = lmul(np.float32(-0.0), b, 3)
    assert np.array_equal(np.signbit(nz), ~np.signbit(b))
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    assert np.isnan(lmul(inf, np.float32(0.0), 3)) and np.isnan(lmul(nan, np.float32(2.0), 3))
    assert lmul(-inf, np.float32(2.0), 3) == -np.inf
    assert lmul(np.float32(2.0**100), np.float32(2.0**30), 3) == np.inf  # overflow
    r = lmul(np.float32(-(2.0**-100)), np.float32(2.0**-30), 3)  # underflow: signed zero
    assert r == 0 and np.signbit(r)


def test_lmul_rounds_operands_rne_and_flushes_subnormals() -> None:
    # 1 + 2^-4 is a tie in e8m3: RNE gives 1.0, so the product is 1 * 1
    assert float(lmul(1.0 + 2.0**-4, 1.0, 3)) == 1.125
    # 1 + 3*2^-4 rounds up to 1.25
    assert float(lmul(1.0 + 3 * 2.0**-4, 1.0, 3)) == float(lmul(1.25, 1.0, 3))
    # a subnormal operand (after rounding) is a zero: 2^-130 * 2^100 gives 0, not 2^-30
    assert float(lmul(np.float32(2.0**-130), np.float32(2.0**100), 3)) == 0.0
    # values beyond e8m3's max round to inf
    assert float(lmul(np.float32(3.3e38), np.float32(1.0), 3)) == math.inf
    rng = np.random.default_rng(2)
    x = rng.standard_normal(500)
    y = rng.standard_normal(500)
    for m in (3, 4):
        xr = lb.round(x, lb.formats.FloatFormat(8, m))
        yr = lb.round(y, lb.formats.FloatFormat(8, m))
        want = np.array([oracle(float(a), float(b), m) for a, b in zip(xr, yr, strict=True)])
        assert_bits(lmul(x, y, m), want, f"m={m}")


def test_lmul_m23_matches_the_papers_ptx_formula_and_the_oracle() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(3000) * np.exp(rng.uniform(-20, 20, 3000))).astype(np.float32)
    y = (rng.standard_normal(3000) * np.exp(rng.uniform(-20, 20, 3000))).astype(np.float32)
    bx, by = x.view(np.uint32).astype(np.int64), y.view(np.uint32).astype(np.int64)
    ptx = (((bx & 0x7FFFFFFF) + (by & 0x7FFFFFFF) - 0x3F780000) & 0x7FFFFFFF) | (
        (bx ^ by) & 0x80000000
    )
    assert lmul_constant(23, fp32_units=True) == 0x3F780000
    assert_bits(lmul(x, y, 23), ptx.astype(np.uint32).view(np.float32))
    for literal in (False, True):
        want = [
            oracle(float(a), float(b), 23, literal) for a, b in zip(x[:400], y[:400], strict=True)
        ]
        assert_bits(lmul(x[:400], y[:400], 23, literal=literal), np.array(want))


def test_lmul_backends_and_dtypes() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    y = rng.standard_normal((1, 5)).astype(np.float32)
    want = lmul(x, y, 4)
    got = lmul(torch.from_numpy(x), torch.from_numpy(y), 4)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert_bits(got.numpy(), want)
    assert_bits(lmul(torch.from_numpy(x), 2.0, 4).numpy(), lmul(x, np.float32(2.0), 4))
    assert lmul(x.astype(np.float64), y, 4).dtype == np.float64
    h = lmul(x.astype(np.float16), y.astype(np.float16), 4)
    assert h.dtype == np.float16
    assert_bits(
        h.astype(np.float64),
        lmul(x.astype(np.float16).astype(np.float32), y.astype(np.float16).astype(np.float32), 4)
        .astype(np.float16)
        .astype(np.float64),
    )
    bf = x.astype(ml_dtypes.bfloat16)
    assert lmul(bf, bf, 3).dtype == np.dtype(ml_dtypes.bfloat16)
    tb = lmul(torch.from_numpy(x).bfloat16(), torch.from_numpy(y).bfloat16(), 3)
    assert tb.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"1\.\.23"):
        lmul(x, y, 24)
    with pytest.raises(TypeError):
        lmul(np.arange(3), x[0, :3], 3)


def test_numba_scalar_matches_numpy_on_random_bit_patterns() -> None:
    """The kernel's scalar L-Mul (both forms) equals the numpy one on prepared operands,
    including zeros, infinities and NaN."""
    rng = np.random.default_rng(5)
    for m in (1, 3, 4, 9, 23):
        raw = rng.integers(0, 2**32, 6000, dtype=np.uint64).astype(np.uint32).view(np.float32)
        raw = np.concatenate([raw, np.float32([0, -0.0, np.inf, -np.inf, np.nan, 1, -1])])
        x = prepare_numpy(raw, m)
        y = prepare_numpy(np.roll(raw, 7), m)
        for literal in (False, True):
            got = lk.lmul_vector(
                x.view(np.int32),
                y.view(np.int32),
                lmul_constant(m, fp32_units=True),
                1 << (23 - L_TABLE.get(m, 4)),
                literal,
            ).view(np.float32)
            assert_bits(got, lmul_prepared_numpy(x, y, m, literal), f"m={m} {literal}")


def test_prepare_kernel_equals_the_lowbit_round_path() -> None:
    """Operand rounding (RNE to e8mM by integer addition, subnormals flushed) equals
    lowbit.round followed by the flush, on random bit patterns and every edge."""
    rng = np.random.default_rng(6)
    raw = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.float32(
        [
            0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            3.4e38,
            -3.4e38,
            2.0**-126,
            2.0**-127,
            -(2.0**-126) * (1 - 2.0**-10),
            1 + 2.0**-4,
            1 + 3 * 2.0**-4,
            1.9999999,
        ]
    )
    with np.errstate(all="ignore"):
        x = np.concatenate([raw, edges, raw * np.float32(2.0**-100)])
        h = x.astype(np.float16)
    for m in (1, 2, 3, 4, 8, 22, 23):
        assert_bits(prepare_numpy(x, m), prepare_numpy(x, m, impl="reference"), f"m={m}")
        assert_bits(prepare_numpy(h, m), prepare_numpy(h, m, impl="reference"), f"f16 m={m}")


# ---- lmul_matmul -----------------------------------------------------------------------------
def matmul_oracle(a: np.ndarray, b: np.ndarray, m: int, literal: bool) -> np.ndarray:
    """Fraction closed-form products of the e8mM-rounded operands, added in float32 from -0."""
    fmt = lb.formats.FloatFormat(8, m)
    ar = lb.round(a.astype(np.float64), fmt)
    br = lb.round(b.astype(np.float64), fmt)
    ar = np.where(np.abs(ar) < 2.0**-126, 0.0 * ar, ar)
    br = np.where(np.abs(br) < 2.0**-126, 0.0 * br, br)
    M, K = ar.shape
    N = br.shape[1]
    out = np.empty((M, N), dtype=np.float32)
    for i in range(M):
        for j in range(N):
            c = np.float32(-0.0)
            for k in range(K):
                with np.errstate(invalid="ignore", over="ignore"):
                    c = np.float32(c + np.float32(oracle(ar[i, k], br[k, j], m, literal)))
            out[i, j] = c
    return out


@pytest.mark.parametrize("literal", [False, True])
@pytest.mark.parametrize("m", [2, 3, 4, 23])
def test_lmul_matmul_equals_the_oracle(m: int, literal: bool) -> None:
    rng = np.random.default_rng(10 + m)
    a = rng.standard_normal((4, 9)).astype(np.float32)
    b = rng.standard_normal((9, 5)).astype(np.float32)
    a[0, 2] = 0.0
    b[3, 1] = -0.0
    a[1, :] = -0.0  # a row of -0 products
    b[:, 4] *= 2.0**100  # products near overflow
    a[3, 5] = 2.0**-120  # products that underflow
    want = matmul_oracle(a, b, m, literal)
    for impl in ("kernel", "reference"):
        assert_bits(lmul_matmul(a, b, m, literal=literal, impl=impl), want, impl)


def test_lmul_matmul_kernel_equals_reference_with_batches_and_specials() -> None:
    rng = np.random.default_rng(11)
    a = rng.standard_normal((2, 1, 13, 37)).astype(np.float32)
    b = rng.standard_normal((3, 37, 29)).astype(np.float32)
    a[0, 0, 0, :5] = 0.0
    b[1, 4, :] = -0.0
    b[0, 2, 3] = 2.0**127
    a[1, 0, 2, 2] = 2.0**30
    for m in (1, 3, 4, 7, 23):
        ar, br = prepare_numpy(a, m), prepare_numpy(b, m)
        for literal in (False, True):
            got = lmul_matmul(a, b, m, literal=literal)
            assert got.shape == (2, 3, 13, 29)
            assert_bits(got, lmul_matmul_reference(ar, br, m, literal), f"m={m} {literal}")
    # inf and NaN operands take the general kernel
    a[0, 0, 1, 1] = np.inf
    b[2, 5, 6] = np.nan
    ar, br = prepare_numpy(a, 4), prepare_numpy(b, 4)
    assert_bits(lmul_matmul(a, b, 4), lmul_matmul_reference(ar, br, 4))
    # vectors, and the fp32 GEMM of lowbit.matmul with the same products in the same order
    v = rng.standard_normal(37).astype(np.float32)
    assert_bits(lmul_matmul(v, b[0], 4), lmul_matmul(v[None], b[0], 4)[0])
    x = rng.standard_normal((6, 37)).astype(np.float32)
    assert_bits(lmul_matmul(x, b[0], 4), lb.matmul(x, b[0], mult="lmul4", acc="fp32"))


def test_lmul_matmul_torch_forward_and_straight_through_backward() -> None:
    rng = np.random.default_rng(12)
    a = torch.tensor(rng.standard_normal((2, 3, 8, 16)), dtype=torch.float32, requires_grad=True)
    b = torch.tensor(rng.standard_normal((3, 16, 8)), dtype=torch.float32, requires_grad=True)
    c = lmul_matmul(a, b, man_bits=4)
    assert c.dtype == torch.float32 and c.shape == (2, 3, 8, 8)
    assert_bits(c.detach().numpy(), lmul_matmul(a.detach().numpy(), b.detach().numpy(), 4))
    g = torch.tensor(rng.standard_normal(c.shape), dtype=torch.float32)
    c.backward(g)
    ar = torch.from_numpy(prepare_numpy(a.detach().numpy(), 4))
    br = torch.from_numpy(prepare_numpy(b.detach().numpy(), 4))
    assert torch.equal(a.grad, g @ br.transpose(-1, -2))
    assert torch.equal(b.grad, (ar.transpose(-1, -2) @ g).sum(0))


# ---- lowbit.matmul(mult="lmulN") -------------------------------------------------------------
@functools.cache
def float_oracle(name: str) -> FloatOracle:
    return FloatOracle(lb.get_format(name))


def gemm_oracle(
    A: np.ndarray,
    B: np.ndarray,
    m: int,
    acc: str,
    mode: str,
    order: str,
    prod: str | None = None,
    bk: int = 4,
) -> np.ndarray:
    """Exact (Fraction) L-Mul products of the e8mM operands, each step rounded by FloatOracle:
    sequential, pairwise (neighbours paired level by level) or blocked (exact block sums
    rounded, then added with a second rounding)."""
    fmt = lb.formats.FloatFormat(8, m)
    Ar = lb.round(A, fmt)
    Br = lb.round(B, fmt)
    rnd = float_oracle(acc).round
    M, K = Ar.shape
    N = Br.shape[1]
    C = np.empty((M, N))
    for i in range(M):
        for j in range(N):
            ts = [oracle(float(Ar[i, k]), float(Br[k, j]), m) for k in range(K)]
            if prod is not None:
                ts = [float_oracle(prod).round(t, "rne") for t in ts]
            ts_f = [Fraction(t) for t in ts]
            if order == "sequential":
                c = rnd(ts_f[0], mode)
                for t in ts_f[1:]:
                    c = rnd(Fraction(c) + t, mode)
            elif order == "pairwise":
                level = [rnd(t, mode) if K == 1 else t for t in ts_f]
                while len(level) > 1:
                    nxt = [
                        rnd(Fraction(level[q]) + Fraction(level[q + 1]), mode)
                        for q in range(0, len(level) - 1, 2)
                    ]
                    level = nxt + ([level[-1]] if len(level) % 2 else [])
                c = level[0]
            else:
                c = None
                for g in range(0, K, bk):
                    gv = rnd(sum(ts_f[g : g + bk], Fraction(0)), mode)
                    c = gv if c is None else rnd(Fraction(c) + Fraction(gv), mode)
            C[i, j] = c
    return C


@pytest.mark.parametrize(
    ("m", "acc", "mode", "order", "prod"),
    [
        (3, "fp16", "rne", "sequential", None),
        (4, "bf16", "rd", "sequential", None),
        (2, "fp16", "rtz", "pairwise", None),
        (4, "bf16", "ru", "blocked", None),
        (3, "fp16", "rne", "sequential", "e4m3"),
    ],
)
def test_matmul_lmul_equals_the_fraction_oracle(
    m: int, acc: str, mode: str, order: str, prod: str | None
) -> None:
    rng = np.random.default_rng(20 + m)
    A = rng.standard_normal((3, 11))
    B = rng.standard_normal((11, 4)) * 4
    A[0, 3] = 0.0
    want = gemm_oracle(A, B, m, acc, mode, order, prod)
    kw: dict[str, Any] = dict(mult=f"lmul{m}", acc=acc, acc_mode=mode, order=order, prod=prod)
    if order == "blocked":
        kw["block_k"] = 4
    for impl in ("kernel", "reference"):
        assert_bits(lb.matmul(A, B, impl=impl, **kw), want, f"{impl} {kw}")


@pytest.mark.parametrize(
    "cfg",
    [
        dict(mult="lmul3", acc="fp32"),
        dict(mult="lmul4"),
        dict(mult="lmul5", acc="bf16", acc_mode="sr", order="pairwise"),
        dict(mult="lmul3", mult_mode="sr", acc="fp16", block_k=8, fma=True),
        dict(mult="lmul2", prod="e5m2", prod_mode="rd", acc="fp32", block_k=8),
        dict(mult="lmul7", acc="e5m2", overflow="saturate"),
    ],
    ids=str,
)
def test_matmul_lmul_kernel_equals_reference(cfg: dict[str, Any]) -> None:
    rng = np.random.default_rng(21)
    A = rng.standard_normal((2, 1, 6, 19)) * 3
    B = rng.standard_normal((3, 19, 10))
    A[0, 0, 1, :] = -0.0
    B[1, 2, :] = 2.0**100
    A[1, 0, 4, 2] = 2.0**-140  # flushed to zero after rounding
    A[1, 0, 5, 5] = np.inf
    for shape_b in (B, B[0][:, :2]):  # the second: few columns, the transposed kernel
        got = lb.matmul(A, shape_b, seed=5, **cfg)
        assert_bits(got, lb.matmul(A, shape_b, seed=5, impl="reference", **cfg), str(cfg))


def test_matmul_lmul_torch_backward_uses_the_same_config() -> None:
    rng = np.random.default_rng(22)
    a = torch.tensor(rng.standard_normal((5, 12)), requires_grad=True)
    b = torch.tensor(rng.standard_normal((12, 7)), requires_grad=True)
    cfg = dict(mult="lmul4", acc="fp32")
    c = lb.matmul(a, b, **cfg)
    g = torch.tensor(rng.standard_normal(c.shape))
    c.backward(g)
    fmt = lb.formats.FloatFormat(8, 4)
    ar, br = lb.round(a.detach().numpy(), fmt), lb.round(b.detach().numpy(), fmt)
    assert_bits(a.grad.numpy(), lb.matmul(g.numpy(), br.T, **cfg))
    assert_bits(b.grad.numpy(), lb.matmul(ar.T, g.numpy(), **cfg))
    assert not np.array_equal(a.grad.numpy(), g.numpy() @ br.T)  # L-Mul products, not exact


def test_lmul_gemm_config_names() -> None:
    cfg = lb.arith.GemmConfig(mult="LMUL4", acc="fp32")
    assert cfg.mult == "lmul4"
    assert lb.arith.GemmConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ("lmul0", "lmul24", "lmulx"):
        with pytest.raises(ValueError, match="lmul1"):
            lb.arith.GemmConfig(mult=bad)
