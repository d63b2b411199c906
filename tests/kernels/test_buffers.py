"""The output-buffer pool: a buffer is handed out again only when no array refers to it."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.kernels import buffers

N = buffers.MIN_BYTES // 4  # float32 elements that reach the pool


@pytest.fixture(autouse=True)
def _fresh_pool():
    old = buffers.buffer_cache_limit()
    buffers.set_buffer_cache_limit(0)
    buffers.set_buffer_cache_limit(1 << 30)
    yield
    buffers.set_buffer_cache_limit(0)
    buffers.set_buffer_cache_limit(old)


def test_small_results_are_not_pooled():
    a = buffers.empty((10,), np.float32)
    assert buffers.cached_bytes() == 0 and a.shape == (10,)


def test_reused_only_after_every_reference_is_gone():
    a = buffers.empty((N,), np.float32)
    addr = a.ctypes.data
    b = buffers.empty((N,), np.float32)
    assert b.ctypes.data != addr  # a is alive
    view = a[5:9]
    keep_t = torch.from_numpy(a[::2])
    del a
    gc.collect()
    c = buffers.empty((N,), np.float32)
    assert c.ctypes.data not in (addr, b.ctypes.data)  # a view and a tensor still use it
    del view
    d = buffers.empty((N,), np.float32)
    assert d.ctypes.data != addr  # the tensor still does
    del keep_t
    e = buffers.empty((N,), np.float32)
    assert e.ctypes.data == addr  # nobody does: reused
    assert buffers.cached_bytes() == 4 * N * 4


def test_other_shapes_and_dtypes_of_the_same_size_reuse_it():
    a = buffers.empty((N,), np.float32)
    addr = a.ctypes.data
    del a
    b = buffers.empty((N // 2, 2), np.float32)
    assert b.ctypes.data == addr and b.shape == (N // 2, 2) and b.flags.c_contiguous
    del b
    c = buffers.empty((N // 2,), np.float64)
    assert c.ctypes.data == addr and c.dtype == np.float64


def test_limit_bounds_the_pool_and_zero_turns_it_off():
    buffers.set_buffer_cache_limit(2 * N * 4)
    keep = [buffers.empty((N,), np.float32) for _ in range(3)]
    assert buffers.cached_bytes() == 2 * N * 4  # the third did not fit
    del keep
    assert buffers.clear_buffer_cache() == 2 * N * 4
    assert buffers.cached_bytes() == 0
    buffers.set_buffer_cache_limit(0)
    buffers.empty((N,), np.float32)
    assert buffers.cached_bytes() == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "1GB", True])
def test_bad_limit_is_rejected(bad):
    with pytest.raises(ValueError, match="buffer cache limit"):
        buffers.set_buffer_cache_limit(bad)


@pytest.mark.parametrize("fmt,mode", [("bf16", "rne"), ("e4m3", "sr"), ("posit16", "rne")])
def test_round_results_stay_correct_when_buffers_are_reused(fmt, mode):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(N).astype(np.float32) for _ in range(3)]
    want = [lb.round(x, fmt, mode, seed=3, impl="reference") for x in xs]
    kept = lb.round(xs[0], fmt, mode, seed=3)
    for x, w in zip(xs, want, strict=True):
        got = lb.round(x, fmt, mode, seed=3)  # the previous got is dropped: its buffer returns
        np.testing.assert_array_equal(got.view(np.uint32), w.view(np.uint32))
    np.testing.assert_array_equal(kept.view(np.uint32), want[0].view(np.uint32))


def test_torch_results_keep_their_buffer_alive():
    x = torch.randn(N)
    t = lb.round(x, "bf16")
    ref = t.clone()
    for _ in range(3):
        lb.round(torch.randn(N), "bf16")
    assert torch.equal(t, ref)
