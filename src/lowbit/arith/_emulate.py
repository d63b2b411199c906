"""Plumbing shared by the low-precision arrays, ``lowbit.sum`` and ``lowbit.linalg``.

* A *stream* is a :class:`~lowbit.arith.context.PrecisionContext` used as a draw counter:
  while it is active (:func:`use_stream`), every ``lb.arith`` call without an explicit seed
  takes its stochastic-rounding draws from it and advances it, so no two operations share a
  draw and a rerun with the same seed reproduces every bit.
* :func:`matmul` runs the emulated GEMM of ``lowbit.arith.matmul`` when that module exists and
  otherwise :func:`sequential_matmul`, a plain loop over ``k`` built on ``lb.arith`` ops
  (products rounded to the format, sums rounded in order ``k = 0, 1, ...``).
* :func:`serial_kernels` runs small sequential loops with numba's thread pool at one thread:
  launching a ``parallel=True`` kernel on a loaded 2-core machine costs milliseconds per call
  (OpenMP workers spin for a core), which dominates loops of thousands of tiny operations.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from lowbit.arith import context as _ctx
from lowbit.arith import ops
from lowbit.formats import Format, get_element_format
from lowbit.rounding.modes import RoundMode, as_mode


def new_stream(
    fmt: Format | str,
    mode: RoundMode | str = "rne",
    seed: int | None = None,
    *,
    subnormals: bool = True,
    overflow: str | None = None,
    rand_bits: int | None = None,
) -> _ctx.PrecisionContext:
    """A fresh draw counter (offset 0) for ``fmt``/``mode``; ``seed=None`` picks a random seed
    for stochastic modes (not reproducible) and 0 otherwise."""
    m = as_mode(mode)
    if seed is None:
        seed = secrets.randbits(63) if m.stochastic else 0
    return _ctx.PrecisionContext(
        get_element_format(fmt), m, int(seed), subnormals, overflow, rand_bits
    )


class _ChildStream(_ctx.PrecisionContext):
    """A stream with its own format and mode that draws from its parent's counter."""

    parent: _ctx.PrecisionContext | None = None

    def take(self, n: int) -> int:
        """Reserve ``n`` draws from the parent's counter."""
        assert self.parent is not None
        return self.parent.take(n)


def resolve_stream(
    fmt: Format | str | None, mode: RoundMode | str | None, seed: int | None
) -> _ctx.PrecisionContext:
    """The stream an operation with these arguments draws from.

    Inside ``lb.precision(...)``, arguments left ``None`` come from the context, and with no
    explicit seed the draws come from the context's counter (the context itself when format
    and mode agree with it, else a child stream that advances the context's counter). An
    explicit seed, or no context, makes a new stream starting at offset 0.
    """
    ctx = _ctx.current()
    if fmt is None:
        if ctx is None:
            raise ValueError("no format given: pass fmt=... or run inside lb.precision(...)")
        fmt = ctx.fmt
    f = get_element_format(fmt)
    m = as_mode(mode) if mode is not None else (ctx.mode if ctx is not None else RoundMode.RNE)
    if ctx is None or seed is not None:
        return new_stream(
            f,
            m,
            seed,
            subnormals=ctx.subnormals if ctx else True,
            overflow=ctx.overflow if ctx else None,
            rand_bits=ctx.rand_bits if ctx else None,
        )
    if ctx.fmt == f and ctx.mode is m:
        return ctx
    child = _ChildStream(f, m, ctx.seed, ctx.subnormals, None, ctx.rand_bits)
    child.parent = ctx
    return child


@contextmanager
def use_stream(stream: _ctx.PrecisionContext) -> Iterator[_ctx.PrecisionContext]:
    """Make ``stream`` the active context while the block runs (lb.arith reads its counter)."""
    token = _ctx._ACTIVE.set(stream)
    try:
        yield stream
    finally:
        _ctx._ACTIVE.reset(token)


@contextmanager
def serial_kernels() -> Iterator[None]:
    """Run numba kernels on one thread inside the block (restored afterwards)."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


_SMALL = 1 << 15


@contextmanager
def serial_kernels_if_small(n: int) -> Iterator[None]:
    """:func:`serial_kernels` when the operation has fewer than 2^15 elements (``n``)."""
    if n < _SMALL:
        with serial_kernels():
            yield
    else:
        yield


# ---- matmul ------------------------------------------------------------------------------------
def sequential_matmul(
    a: Any, b: Any, fmt: Format | str, mode: RoundMode | str, *, fma: bool = False
) -> np.ndarray:
    """numpy-``matmul`` shapes, every product and partial sum rounded, in order k = 0..K-1.

    ``c = fl(...fl(fl(a_0 b_0) + fl(a_1 b_1)) + ...)`` (or with ``fma=True``,
    ``c = fma(a_k, b_k, c)``: one rounding per step). The loop is vectorized over the output
    entries and sequential over ``k``; it draws from the active stream for stochastic modes.
    This is the reference semantics of :meth:`LowPrecisionArray.__matmul__` and the fallback
    used until ``lowbit.arith.matmul`` is available.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: input operand does not have enough dimensions")
    va, vb = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if va else a
    b2 = b[:, None] if vb else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned")
    k_dim = a2.shape[-1]
    out_shape = (*np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]), a2.shape[-2], b2.shape[-1])
    if k_dim == 0:
        c = np.zeros(out_shape)
    else:
        c = None
        for k in range(k_dim):
            ak = a2[..., :, k : k + 1]
            bk = b2[..., k : k + 1, :]
            if c is None:
                c = np.asarray(ops.mul(ak, bk, fmt, mode), dtype=np.float64)
            elif fma:
                c = np.asarray(ops.fma(ak, bk, c, fmt, mode), dtype=np.float64)
            else:
                p = ops.mul(ak, bk, fmt, mode)
                c = np.asarray(ops.add(c, p, fmt, mode), dtype=np.float64)
        c = np.broadcast_to(c, out_shape).copy()
    if va:
        c = c[..., 0, :]
    if vb:
        c = c[..., 0]
    return c


def _matmul_shape(sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``np.matmul`` of operands with these shapes (checked)."""
    a2 = (1, *sa) if len(sa) == 1 else sa
    b2 = (*sb, 1) if len(sb) == 1 else sb
    if len(sa) == 0 or len(sb) == 0 or a2[-1] != b2[-2]:
        raise ValueError(f"matmul: shapes {sa} and {sb} are not aligned")
    out = (*np.broadcast_shapes(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(sa) == 1:
        out = out[:-2] + out[-1:]
    if len(sb) == 1:
        out = out[:-1]
    return out


_SMALL_GEMM = 4096


def _real_matmul() -> Any:
    try:
        from lowbit.arith.matmul import matmul as real
    except ImportError:  # not installed yet: the sequential loop below stands in
        return None
    return real


def matmul(
    a: Any, b: Any, fmt: Format | str, mode: RoundMode | str, *, fma: bool = False
) -> np.ndarray:
    """Emulated ``a @ b`` in ``fmt`` (numpy ``matmul`` shapes), float64 result.

    Each product is rounded to ``fmt`` (``fma=False``) or kept exact and fused into the
    accumulation (``fma=True``); partial sums are rounded to ``fmt`` in order
    ``k = 0, 1, ...``, the first product standing alone. Runs ``lowbit.arith.matmul`` with
    ``prod=fmt, acc=fmt, order="sequential"`` (its numba kernel); without that module,
    :func:`sequential_matmul`, which computes the same values.

    Stochastic modes: the operation reserves ``2 K`` draws per output element from the
    active stream and gives the GEMM a seed derived from the stream's seed and the reserved
    offset, so every product has its own draws and reruns reproduce them.
    """
    m = as_mode(mode)
    real = _real_matmul()
    if real is None:
        return sequential_matmul(a, b, fmt, m, fma=fma)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    kw: dict[str, Any] = {
        "mult": None,
        "acc": fmt,
        "acc_mode": m.value,
        "order": "sequential",
        "out": None,
    }
    if fma:
        kw.update(prod=None, fma=True)
    else:
        kw.update(prod=fmt, prod_mode=m.value, fma=False)
    n_out = int(np.prod(_matmul_shape(a.shape, b.shape)))
    k_dim = int(a.shape[-1]) if a.ndim else 0
    if k_dim * n_out <= _SMALL_GEMM:  # the plain reference beats a kernel launch (and compile)
        kw["impl"] = "reference"
    stream = _ctx.current()
    if stream is not None:
        kw["overflow"] = stream.overflow
        kw["rand_bits"] = stream.rand_bits
    if m.stochastic:
        if stream is None:
            raise ValueError("stochastic emulated matmul needs an active stream")
        offset = stream.take(2 * max(k_dim, 1) * n_out)
        from lowbit.kernels.randbits import seed_keys

        k0, k1 = seed_keys(stream.seed, offset)
        kw["seed"] = (k1 << 32) | k0
    return np.asarray(real(a, b, **kw), dtype=np.float64)
