"""LU factorization with partial pivoting, and triangular solves, in a low-precision format.

Every arithmetic operation (the multipliers' divisions, the Schur-complement products and
subtractions, or one fused multiply-add per update) is correctly rounded to the format by
``lb.arith``. The loops are right-looking and vectorized per elimination step, so each step
costs a handful of array operations; the order of the operations on each entry is the one of
the textbook scalar algorithm (``a_ij <- a_ij - l_ik u_kj`` for ``k = 0, 1, ...``), and the
results equal a plain scalar loop bit for bit (tests/linalg/test_lu.py).

Pivoting is exact (a comparison of magnitudes): the first row holding the largest ``|a_ik|``
in column ``k`` is chosen, as LAPACK's ``idamax`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.arith import ops
from lowbit.arith._emulate import resolve_stream, serial_kernels, use_stream
from lowbit.formats import Format
from lowbit.rounding.api import round as _round
from lowbit.rounding.modes import RoundMode


@dataclass(frozen=True)
class LUFactors:
    """``A[perm] = L @ U`` (approximately), with ``L`` unit lower and ``U`` upper triangular.

    Attributes:
        L: unit lower triangular factor (float64 array of values of ``fmt``).
        U: upper triangular factor.
        perm: row permutation: row ``i`` of ``L @ U`` corresponds to row ``perm[i]`` of A.
        fmt: name of the format the factorization ran in.
        mode: rounding mode.
        fma: whether the Schur updates used a fused multiply-add.
        zero_pivot: index of the first exactly zero pivot, or -1 (LAPACK's ``info``).
        finite: whether every entry of the factors is finite (fp16 can overflow).
    """

    L: np.ndarray
    U: np.ndarray
    perm: np.ndarray
    fmt: str
    mode: str
    fma: bool
    zero_pivot: int
    finite: bool

    def __iter__(self) -> Any:
        """Unpack as ``L, U, perm``."""
        return iter((self.L, self.U, self.perm))


def lu(
    A: Any,
    fmt: Format | str | None = None,
    mode: RoundMode | str | None = None,
    *,
    fma: bool = False,
    seed: int | None = None,
) -> LUFactors:
    """LU factorization with partial pivoting, every operation rounded to ``fmt``.

    Args:
        A: square matrix (array-like); its entries are first rounded to ``fmt`` (RNE).
        fmt: float format with at most 25 mantissa bits (default: the ``lb.precision``
            context's).
        mode: rounding mode of every operation (default: the context's, else ``"rne"``).
        fma: ``True`` updates ``a_ij <- fma(-l_ik, u_kj, a_ij)`` with one rounding; ``False``
            rounds the product and the difference separately.
        seed: seed of stochastic rounding (``None`` inside ``lb.precision``: the context's
            counter; outside: a random seed).

    Returns:
        :class:`LUFactors` (unpacks as ``L, U, perm``).

    Example:
        >>> import numpy as np, lowbit.linalg as la
        >>> L, U, p = la.lu(np.array([[1.0, 2.0], [3.0, 4.0]]), "fp16")
        >>> U.tolist(), p.tolist()
        ([[3.0, 4.0], [0.0, 0.6669921875]], [1, 0])
    """
    stream = resolve_stream(fmt, mode, seed)
    a = np.array(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"lu needs a square matrix, got shape {a.shape}")
    n = a.shape[0]
    a = np.asarray(
        _round(a, stream.fmt, "rne", subnormals=stream.subnormals, overflow=stream.overflow),
        dtype=np.float64,
    ).copy()
    perm = np.arange(n)
    zero_pivot = -1
    with use_stream(stream), serial_kernels(), np.errstate(all="ignore"):
        for k in range(n - 1):
            col = np.abs(a[k:, k])
            p = k + int(np.argmax(col)) if not np.isnan(col).all() else k
            if p != k:
                a[[k, p]] = a[[p, k]]
                perm[[k, p]] = perm[[p, k]]
            if a[k, k] == 0:
                if zero_pivot < 0:
                    zero_pivot = k
                continue  # column already zero below the diagonal: nothing to eliminate
            lcol = np.asarray(ops.div(a[k + 1 :, k], a[k, k]), dtype=np.float64)
            a[k + 1 :, k] = lcol
            urow = a[k, k + 1 :][None, :]
            block = a[k + 1 :, k + 1 :]
            if fma:
                a[k + 1 :, k + 1 :] = ops.fma(-lcol[:, None], urow, block)
            else:
                a[k + 1 :, k + 1 :] = ops.sub(block, ops.mul(lcol[:, None], urow))
        if n and a[n - 1, n - 1] == 0 and zero_pivot < 0:
            zero_pivot = n - 1
    L = np.tril(a, -1) + np.eye(n)
    U = np.triu(a)
    return LUFactors(
        L, U, perm, stream.fmt.name, stream.mode.value, fma, zero_pivot, bool(np.isfinite(a).all())
    )


def lu_solve(
    factors: LUFactors,
    b: Any,
    fmt: Format | str | None = None,
    mode: RoundMode | str | None = None,
    *,
    fma: bool | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Solve ``A x = b`` with the factors, every operation rounded to ``fmt``.

    Forward substitution with the unit lower factor, then back substitution, both
    column-oriented (``y_i <- y_i - l_ij y_j`` for ``j = 0, 1, ...``: the order of the scalar
    algorithm on each entry). ``b`` may hold several right-hand sides as columns.

    Args:
        factors: from :func:`lu`.
        b: right-hand side(s); rounded to ``fmt`` (RNE) first.
        fmt: format (default: the factors' format).
        mode: rounding mode (default: the factors' mode).
        fma: fused updates (default: as in the factorization).
        seed: seed of stochastic rounding.

    Returns:
        The solution as float64 values of ``fmt``.
    """
    stream = resolve_stream(fmt or factors.fmt, mode or factors.mode, seed)
    use_fma = factors.fma if fma is None else fma
    L, U = factors.L, factors.U
    n = L.shape[0]
    y = np.asarray(b, dtype=np.float64)[factors.perm]
    y = np.asarray(
        _round(y, stream.fmt, "rne", subnormals=stream.subnormals, overflow=stream.overflow),
        dtype=np.float64,
    ).copy()
    with use_stream(stream), serial_kernels(), np.errstate(all="ignore"):
        for j in range(n - 1):
            _update(y, j + 1, None, L[j + 1 :, j], y[j], use_fma)
        for j in range(n - 1, -1, -1):
            y[j] = ops.div(y[j], U[j, j])
            if j:
                _update(y, 0, j, U[:j, j], y[j], use_fma)
    return y


def _update(
    y: np.ndarray, lo: int, hi: int | None, coef: np.ndarray, yj: Any, use_fma: bool
) -> None:
    """``y[lo:hi] <- y[lo:hi] - coef * yj`` (rows; ``yj`` may be a row of several RHS)."""
    c = coef.reshape(coef.shape + (1,) * (y.ndim - 1))
    seg = y[lo:hi]
    if use_fma:
        y[lo:hi] = ops.fma(-c, yj, seg)
    else:
        y[lo:hi] = ops.sub(seg, ops.mul(c, yj))


__all__ = ["LUFactors", "lu", "lu_solve"]
