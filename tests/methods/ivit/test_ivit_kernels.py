"""The fused numba kernels of the integer path equal the reference operators bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.methods.ivit import _kernels, ops

pytest.importorskip("numba")


def _t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(a).to(dtype)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_requant_kernel_equals_reference(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31), 2**31, size=(3, 5, 8), dtype=np.int64)
    for m in (rng.uniform(1e-6, 1e-3, size=8), 0.37, 2.0**-40, rng.uniform(-1, 1, size=8)):
        b, c = ops.dyadic(m)
        for bits in (8, 16, None):
            want = ops.requant(acc, b, c, bits)
            got = _kernels.requant(
                _t(acc, dtype)
                if dtype == torch.int64
                else _t(np.clip(acc, -(2**31), 2**31 - 1), dtype),
                b,
                c,
                bits,
            )
            assert np.array_equal(got.numpy().astype(np.int64), want)
    with pytest.raises(OverflowError):
        _kernels.requant(torch.tensor([[2**31]]), 1, 1, 8)


def test_add_requant_kernel_broadcasts_identity() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-(2**24), 2**24, size=(4, 6, 8))
    r = rng.integers(-(2**15), 2**15, size=(1, 6, 8))
    ba, ca = ops.dyadic(rng.uniform(1e-5, 1e-4, size=8))
    br, cr = ops.dyadic(0.8)
    want = ops.add_requant(a, ba, ca, r, br, cr, 16)
    got = _kernels.add_requant(torch.from_numpy(a), ba, ca, torch.from_numpy(r), br, cr, 16)
    assert got.dtype == torch.int16 and np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("bits", [8, 16])
def test_shiftmax_kernel_equals_reference(bits: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, size=(3, 2, 9, 9))
    mask = np.ones((3, 1, 1, 9), dtype=bool)
    mask[1, ..., 5:] = False
    for x0 in (-1, -9, -300):
        for m in (None, mask):
            want = ops.shiftmax(x, x0, n=15, bits=bits, mask=m)
            got = _kernels.shiftmax(
                _t(x, torch.int8),
                x0,
                n=15,
                bits=bits,
                mask=None if m is None else torch.from_numpy(m),
            )
            assert np.array_equal(got.numpy().astype(np.int64), want)


@pytest.mark.parametrize("symmetric", [False, True])
def test_shiftgelu_kernel_equals_reference(symmetric: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(5, 7, 16))
    x[0, 0] = -np.abs(x[0, 0]) - 1
    for x0, n in ((-1, 23), (-11, 23), (-11, 15), (-60, 8)):
        want = ops.shiftgelu(x, x0, n=n, bits=8, symmetric=symmetric)
        got = _kernels.shiftgelu(_t(x, torch.int8), x0, n=n, bits=8, symmetric=symmetric)
        assert np.array_equal(got.numpy().astype(np.int64), want)


@pytest.mark.parametrize("iters", [10, None])
def test_layernorm_kernel_equals_reference(iters: int | None) -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(-(2**15), 2**15, size=(2, 6, 20))
    x[0, 0] = 3
    x[1, 1] = rng.integers(-2, 3, size=20)
    bias = rng.integers(-(2**24), 2**24, size=20)
    for shift in (0, 3):
        want = ops.i_layernorm(x, bias, iters=iters, shift=shift)
        got = _kernels.i_layernorm(
            _t(x, torch.int16), torch.from_numpy(bias), iters=iters, shift=shift
        )
        assert np.array_equal(got.numpy(), want)


def test_matmul_and_linear_are_exact() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(2, 3, 7, 32))
    b = rng.integers(-128, 128, size=(2, 3, 32, 7))
    p = rng.integers(0, 2**15, size=(2, 3, 7, 7))
    v = rng.integers(-128, 128, size=(2, 3, 7, 32))
    assert np.array_equal(_kernels.matmul(_t(a, torch.int8), _t(b, torch.int8)).numpy(), a @ b)
    assert np.array_equal(_kernels.matmul(_t(p, torch.int16), _t(v, torch.int8)).numpy(), p @ v)
    w = rng.integers(-128, 128, size=(5, 32))
    bias = rng.integers(-(2**30), 2**30, size=5)
    got = _kernels.linear(_t(a, torch.int8), _t(w, torch.int8), torch.from_numpy(bias))
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), a @ w.T + bias)
