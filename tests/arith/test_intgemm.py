"""int_matmul: P-bit integer accumulation, held against a scalar Python-int oracle.

The oracle here is written independently of lowbit's reference (a plain triple loop over
outputs and k, with two's-complement wrapping done by bit masking rather than by ``%``); both
implementations (``"reference"``, ``"kernel"``) must equal it exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lowbit.arith import IntMatmulResult, int_matmul
from lowbit.arith.intgemm import acc_range, int_matmul_detail


def _wrap_bits(r: int, p: int, signed: bool) -> int:
    m = r & ((1 << p) - 1)
    if signed and m >> (p - 1):
        m -= 1 << p
    return m


def oracle(a: np.ndarray, b: np.ndarray, p: int, mode: str, signed: bool = True):
    """Scalar loops on Python ints: (values, per-output counts, per-output max |partial|)."""
    lo = -(2 ** (p - 1)) if signed else 0
    hi = 2 ** (p - 1) - 1 if signed else 2**p - 1
    m, k = a.shape
    n = b.shape[1]
    vals = [[0] * n for _ in range(m)]
    cnts = [[0] * n for _ in range(m)]
    mx = [[0] * n for _ in range(m)]
    for i in range(m):
        for j in range(n):
            acc = exact = cnt = big = 0
            for t in range(k):
                prod = int(a[i, t]) * int(b[t, j])
                exact += prod
                big = max(big, abs(exact))
                r = acc + prod
                if not lo <= r <= hi:
                    cnt += 1
                    r = _wrap_bits(r, p, signed) if mode == "wrap" else min(max(r, lo), hi)
                acc = r
            vals[i][j], cnts[i][j], mx[i][j] = acc, cnt, big
    return vals, cnts, mx


IMPLS = ("reference", "kernel")


def _check_2d(a, b, p, mode, signed=True, impls=IMPLS):
    want_v, want_c, want_m = oracle(a, b, p, mode, signed)
    for impl in impls:
        d = int_matmul_detail(a, b, acc_bits=p, overflow=mode, signed_acc=signed, impl=impl)
        assert d.values.dtype == np.int64
        assert d.values.tolist() == want_v, impl
        assert d.overflow_counts.tolist() == want_c, impl
        assert d.max_abs.tolist() == want_m, impl
        r = int_matmul(a, b, acc_bits=p, overflow=mode, signed_acc=signed, impl=impl)
        assert isinstance(r, IntMatmulResult)
        assert r.values.tolist() == want_v
        assert r.overflow_count == sum(map(sum, want_c))
        assert r.max_abs == max(map(max, want_m), default=0)


@pytest.mark.parametrize("mode", ["wrap", "saturate"])
@pytest.mark.parametrize("signed", [True, False])
def test_random_matches_scalar_oracle(mode, signed):
    rng = np.random.default_rng(1 + signed + 2 * (mode == "wrap"))
    for p in (2, 3, 5, 8, 12, 16, 24, 32, 40):
        bound = 1 << min(p // 2 + 2, 20)  # products reach the accumulator range
        a = rng.integers(-bound, bound, size=(5, 9))
        b = rng.integers(-bound, bound, size=(9, 4))
        _check_2d(a, b, p, mode, signed)


@pytest.mark.parametrize("mode", ["wrap", "saturate"])
def test_exhaustive_tiny_formats(mode):
    """Every pair of 3-vectors of 2-bit signed integers (all of [-2, 1]^3 x [-2, 1]^3), into
    signed 3- and 4-bit and unsigned 3-bit accumulators: one 64x3 @ 3x64 product each."""
    vecs = np.array(list(itertools.product(range(-2, 2), repeat=3)), dtype=np.int64)
    for p, signed in ((3, True), (4, True), (3, False)):
        _check_2d(vecs, vecs.T.copy(), p, mode, signed)


def test_wrap_is_exact_product_mod_2p():
    """Wrapping keeps the true result modulo 2**P, however often it wrapped on the way."""
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, size=(2, 30, 200), dtype=np.int8)
    b = rng.integers(-128, 128, size=(200, 20), dtype=np.int16)
    exact = a.astype(np.int64) @ b.astype(np.int64)
    for p in (8, 13, 16, 20, 32):
        r = int_matmul(a, b, acc_bits=p)
        lo, _ = acc_range(p)
        assert np.array_equal(r.values, (exact - lo) % (1 << p) + lo)
        partial = np.cumsum(a.astype(np.int64)[..., :, :, None] * b.astype(np.int64)[None], axis=-2)
        assert r.max_abs == int(np.abs(partial).max())
    # a 32-bit accumulator holds these int8 x int16 products of length 200 exactly
    assert int_matmul(a, b, acc_bits=32).overflow_count == 0


def test_wrap_out_and_back_counts_two_steps():
    """[100, 100, -100]·[1, 1, 1] into 8 bits: 100, 200 -> -56 (overflow), -156 -> 100
    (overflow): wrap ends right with 2 overflows; saturate clamps at 127 and ends at 27."""
    a = np.array([[100, 100, -100]])
    b = np.ones((3, 1), dtype=np.int64)
    w = int_matmul(a, b, acc_bits=8, overflow="wrap")
    assert (w.values.item(), w.overflow_count, w.max_abs) == (100, 2, 200)
    s = int_matmul(a, b, acc_bits=8, overflow="saturate")
    assert (s.values.item(), s.overflow_count, s.max_abs) == (27, 1, 200)
    _check_2d(a, b, 8, "wrap")
    _check_2d(a, b, 8, "saturate")


def test_batched_broadcast_and_1d_like_np_matmul():
    rng = np.random.default_rng(3)
    a = rng.integers(-50, 50, size=(3, 1, 4, 6))
    b = rng.integers(-50, 50, size=(2, 6, 5))
    r = int_matmul(a, b, acc_bits=12, overflow="saturate")
    assert r.values.shape == np.matmul(a, b).shape == (3, 2, 4, 5)
    for i, j in itertools.product(range(3), range(2)):
        want, _, _ = oracle(a[i, 0], b[j], 12, "saturate")
        assert r.values[i, j].tolist() == want
    total = sum(
        sum(map(sum, oracle(a[i, 0], b[j], 12, "saturate")[1])) for i in range(3) for j in range(2)
    )
    assert r.overflow_count == total
    v = rng.integers(-9, 9, size=6)
    assert int_matmul(v, b, acc_bits=32).values.tolist() == np.matmul(v, b).tolist()
    assert int_matmul(a, v, acc_bits=32).values.tolist() == np.matmul(a, v).tolist()
    assert int_matmul(v, v, acc_bits=32).values.shape == ()


def test_64_and_63_bit_accumulators_and_int64_overflowing_steps():
    """Unsigned 63-bit: -1 wraps to 2**63 - 1, then + 2**61 leaves int64 inside the kernel
    (its signed-overflow path); signed 64-bit at int64 extremes (reference path)."""
    a = np.array([[-1, 1 << 61, -5]], dtype=np.int64)
    b = np.ones((3, 1), dtype=np.int64)
    for mode in ("wrap", "saturate"):
        _check_2d(a, b, 63, mode, signed=False)
    rng = np.random.default_rng(11)
    a = rng.integers(-(1 << 58), 1 << 58, size=(4, 8))
    b = rng.integers(-2, 3, size=(8, 3))
    for p, signed in ((63, False), (60, True), (61, True)):
        for mode in ("wrap", "saturate"):
            _check_2d(a, b, p, mode, signed)
    big = np.array([[(1 << 63) - 1, (1 << 63) - 1, -(1 << 63)]], dtype=np.int64)
    ones = np.array([[1], [1], [1]], dtype=np.int64)
    for mode in ("wrap", "saturate"):  # exceeds the kernel's int64 precondition
        want_v, want_c, want_m = oracle(big, ones, 64, mode)
        r = int_matmul(big, ones, acc_bits=64, overflow=mode)
        assert (r.values.tolist(), r.overflow_count, r.max_abs) == (
            want_v,
            want_c[0][0],
            want_m[0][0],
        )
        assert r.max_abs == 2**64 - 2  # beyond int64: a Python int
    with pytest.raises(ValueError, match="exceeds int64"):
        int_matmul_detail(big, ones, acc_bits=64)
    with pytest.raises(ValueError, match="impl='kernel' needs"):
        int_matmul(big, ones, acc_bits=64, impl="kernel")


def test_raise_names_first_overflowing_output():
    a = np.array([[1, 1], [120, 10], [100, 100]])
    b = np.array([[1, 0], [1, 1]])
    # outputs (row-major): (1, 0) = 120 + 10 = 130 overflows at k=1; (2, 0) at k=1 as well
    for impl in IMPLS:
        with pytest.raises(OverflowError, match=r"output \(1, 0\).*8-bit.*k=1.*130"):
            int_matmul(a, b, acc_bits=8, overflow="raise", impl=impl)
        ok = int_matmul(a, b, acc_bits=9, overflow="raise", impl=impl)
        assert ok.overflow_count == 0
        assert ok.values.tolist() == (a @ b).tolist()


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (6, 40), generator=g, dtype=torch.int8)
    b = torch.randint(-8, 8, (40, 3), generator=g, dtype=torch.int32)
    r = int_matmul(a, b, acc_bits=10)
    assert isinstance(r.values, torch.Tensor) and r.values.dtype == torch.int64
    want, cnt, mx = oracle(a.numpy(), b.numpy(), 10, "wrap")
    assert r.values.tolist() == want
    assert r.overflow_count == sum(map(sum, cnt))
    assert r.max_abs == max(map(max, mx))


def test_bad_arguments():
    a = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(TypeError, match="integer"):
        int_matmul(a.astype(np.float32), a.T, acc_bits=16)
    with pytest.raises(TypeError, match="integer"):
        int_matmul(a.astype(bool), a.T, acc_bits=16)
    with pytest.raises(ValueError, match=r"2\.\.64"):
        int_matmul(a, a.T, acc_bits=65)
    with pytest.raises(ValueError, match=r"2\.\.64"):
        int_matmul(a, a.T, acc_bits=1)
    with pytest.raises(ValueError, match=r"2\.\.63"):
        int_matmul(a, a.T, acc_bits=64, signed_acc=False)
    with pytest.raises(TypeError, match="acc_bits"):
        int_matmul(a, a.T, acc_bits=16.0)
    with pytest.raises(ValueError, match="'wrap', 'saturate', 'raise'"):
        int_matmul(a, a.T, acc_bits=16, overflow="clip")
    with pytest.raises(ValueError, match="do not align"):
        int_matmul(a, a, acc_bits=16)
    with pytest.raises(ValueError, match="impl"):
        int_matmul(a, a.T, acc_bits=16, impl="fast")
