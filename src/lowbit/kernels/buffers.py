"""Output buffers for the fused kernels: a small pool of large, already-mapped arrays.

A fresh large numpy array is ``mmap``-ed by malloc and every one of its pages is faulted in
(and zeroed by the kernel) the first time the kernel writes it. On this project's reference
machine that costs more than the rounding itself: ``x.copy()`` of 1e8 float32 runs at 0.29×
the speed of ``np.copyto`` into an existing array. Code that rounds large tensors in a loop
(every training step, every iteration of a solver) would pay it on every call.

So allocating calls take their result from a pool, as the CUDA caching allocators of PyTorch
and CuPy do: a buffer of at least :data:`MIN_BYTES` is kept after its array is dropped and
handed out again for the next result of the same size. A pooled buffer is reused only when no
array refers to it any more. Every array made from it (views, reshapes, ``torch.from_numpy``
tensors, exported buffers) keeps a reference to the buffer itself, because numpy points
``.base`` at the array that owns the memory, so the reference count of the buffer tells
exactly whether a result is still alive. A raw pointer taken with ``.ctypes.data`` and kept
after the array is dropped is not tracked, just as with any numpy array that is freed.

The pool holds at most :func:`buffer_cache_limit` bytes (default 1 GiB; environment variable
``LOWBIT_BUFFER_CACHE_MB``; ``0`` turns pooling off). Buffers in use count towards the limit
only while they are pooled. :func:`clear_buffer_cache` gives the free ones back to the system.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 24
"""Smaller results come from ``np.empty``: malloc reuses freed memory of that size itself."""

_lock = threading.Lock()
_pool: list[np.ndarray] = []
_limit = [int(os.environ.get("LOWBIT_BUFFER_CACHE_MB", "1024")) << 20]
# references to a pooled buffer that nobody outside holds: the pool's list, the loop variable
# and getrefcount's own argument
_FREE_REFS = 3


def buffer_cache_limit() -> int:
    """The most bytes the pool keeps (0: pooling is off)."""
    return _limit[0]


def set_buffer_cache_limit(nbytes: int) -> None:
    """Set the pool's size limit in bytes (0 turns pooling off and empties the pool).

    Raises:
        ValueError: ``nbytes`` is not an int >= 0.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"buffer cache limit must be an int >= 0 (bytes), got {nbytes!r}")
    with _lock:
        _limit[0] = nbytes
        _trim(0)


def clear_buffer_cache() -> int:
    """Drop every pooled buffer that no array uses; returns the bytes released."""
    with _lock:
        before = sum(b.nbytes for b in _pool)
        return before - _trim(0, drop_all_free=True)


def cached_bytes() -> int:
    """Bytes of all pooled buffers, free or in use."""
    with _lock:
        return sum(b.nbytes for b in _pool)


def _trim(need: int, drop_all_free: bool = False) -> int:
    """Drop free buffers until ``need`` more bytes fit under the limit; the bytes left."""
    total = sum(b.nbytes for b in _pool)
    for i in range(len(_pool) - 1, -1, -1):
        if not drop_all_free and total + need <= _limit[0]:
            break
        buf = _pool[i]
        if sys.getrefcount(buf) == _FREE_REFS:
            del _pool[i]
            total -= buf.nbytes
        del buf
    return total


def empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array, from the pool when it is large enough."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes < MIN_BYTES or nbytes > _limit[0]:
        return np.empty(shape, dtype=dt)
    with _lock:
        for i in range(len(_pool)):
            buf = _pool[i]
            if buf.nbytes == nbytes and sys.getrefcount(buf) == _FREE_REFS:
                # most recently used first: its pages are the likeliest to be resident
                _pool.insert(0, _pool.pop(i))
                return buf.view(dt).reshape(shape)
            del buf
        if _trim(nbytes) + nbytes > _limit[0]:  # the rest are in use
            return np.empty(shape, dtype=dt)
        buf = np.empty(nbytes, dtype=np.uint8)
        _pool.insert(0, buf)
        return buf.view(dt).reshape(shape)


__all__ = [
    "MIN_BYTES",
    "buffer_cache_limit",
    "cached_bytes",
    "clear_buffer_cache",
    "empty",
    "set_buffer_cache_limit",
]
