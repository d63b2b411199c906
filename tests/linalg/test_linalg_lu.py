"""lowbit.linalg.lu / lu_solve: the vectorized factorization equals a plain scalar loop."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit as lb
from lowbit import arith
from lowbit.linalg import lu, lu_solve


def _scalar_lu(
    A: np.ndarray, fmt: str, mode: str, fma: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Textbook kij LU with partial pivoting, one lb.arith call per scalar operation."""
    a = np.asarray(lb.round(A, fmt), dtype=np.float64).copy()
    n = a.shape[0]
    perm = list(range(n))
    for k in range(n - 1):
        p = max(range(k, n), key=lambda i: (abs(a[i, k]), -i))  # first largest
        if p != k:
            a[[k, p]] = a[[p, k]]
            perm[k], perm[p] = perm[p], perm[k]
        if a[k, k] == 0:
            continue
        for i in range(k + 1, n):
            a[i, k] = arith.div(a[i, k], a[k, k], fmt, mode)
            for j in range(k + 1, n):
                if fma:
                    a[i, j] = arith.fma(-a[i, k], a[k, j], a[i, j], fmt, mode)
                else:
                    a[i, j] = arith.sub(a[i, j], arith.mul(a[i, k], a[k, j], fmt, mode), fmt, mode)
    return np.tril(a, -1) + np.eye(n), np.triu(a), np.array(perm)


def _scalar_solve(
    L: np.ndarray, U: np.ndarray, perm: np.ndarray, b: np.ndarray, fmt: str, mode: str
) -> np.ndarray:
    n = L.shape[0]
    y = np.asarray(lb.round(b[perm], fmt), dtype=np.float64).copy()
    for i in range(n):  # y_i = b_i - sum_j<i l_ij y_j, accumulated in order j = 0, 1, ...
        for j in range(i):
            y[i] = arith.sub(y[i], arith.mul(L[i, j], y[j], fmt, mode), fmt, mode)
    for i in range(n - 1, -1, -1):  # x_i = (y_i - sum_j>i u_ij x_j) / u_ii, j = n-1 down
        for j in range(n - 1, i, -1):
            y[i] = arith.sub(y[i], arith.mul(U[i, j], y[j], fmt, mode), fmt, mode)
        y[i] = arith.div(y[i], U[i, i], fmt, mode)
    return y


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize(
    ("fmt", "mode", "fma"),
    [
        ("fp16", "rne", False),
        ("fp16", "rne", True),
        ("bf16", "rtz", False),
        ("bf16", "ru", True),
        ("e4m3", "rne", False),
        ("fp16", "rd", False),
    ],
)
def test_lu_equals_scalar_loop(fmt: str, mode: str, fma: bool) -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 7):
        A = rng.standard_normal((n, n))
        F = lu(A, fmt, mode, fma=fma)
        L, U, perm = _scalar_lu(A, fmt, mode, fma)
        assert _same(F.L, L) and _same(F.U, U) and np.array_equal(F.perm, perm), (n, fmt)
        assert F.finite and F.zero_pivot == -1
        # A[perm] = L U up to the rounding errors of the format
        Ar = np.asarray(lb.round(A, fmt))
        err = np.abs(Ar[F.perm] - F.L @ F.U).max() / np.abs(Ar).max()
        assert err < 20 * n * lb.get_format(fmt).unit_roundoff * 8


@pytest.mark.parametrize(("fmt", "mode"), [("fp16", "rne"), ("bf16", "rd")])
def test_lu_solve_equals_scalar_loop(fmt: str, mode: str) -> None:
    rng = np.random.default_rng(2)
    A = rng.standard_normal((6, 6)) + 4 * np.eye(6)
    b = rng.standard_normal(6)
    F = lu(A, fmt, mode)
    x = lu_solve(F, b)
    assert _same(x, _scalar_solve(F.L, F.U, F.perm, b, fmt, mode))
    X = lu_solve(F, np.stack([b, 2 * b], axis=1))  # several right-hand sides as columns
    assert _same(X[:, 0], x)


def test_lu_pivoting_singular_and_overflow() -> None:
    F = lu(np.array([[1.0, 2.0], [3.0, 4.0]]), "fp16")
    assert F.perm.tolist() == [1, 0]
    assert F.U.tolist() == [[3.0, 4.0], [0.0, 0.6669921875]]
    assert lu(np.array([[1.0, 2.0], [2.0, 4.0]]), "fp16").zero_pivot == 1
    assert lu(np.zeros((3, 3)), "bf16").zero_pivot == 0
    big = np.array([[1e-3, 6e4], [1.0, 1.0]])
    assert lu(big, "fp16").finite  # pivoting keeps the multipliers small
    assert not lu(np.array([[1e-3, 6e4], [1e-4, -6e4]]), "fp16").finite  # growth overflows
    with pytest.raises(ValueError, match="square"):
        lu(np.ones((2, 3)), "fp16")


def test_lu_sr_reproducible() -> None:
    A = np.random.default_rng(3).standard_normal((8, 8))
    F1, F2 = lu(A, "bf16", "sr", seed=1), lu(A, "bf16", "sr", seed=1)
    F3 = lu(A, "bf16", "sr", seed=2)
    assert _same(F1.U, F2.U) and not _same(F1.U, F3.U)
    with lb.precision("bf16", "sr", seed=1) as ctx:
        lu(A)
        assert ctx.offset > 0  # drew from the context's counter
