"""Mixed-precision iterative refinement: LU-IR and GMRES-IR in three precisions.

Carson & Higham, "Accelerating the solution of linear systems by iterative refinement in three
precisions", SIAM J. Sci. Comput. 40(2), 2018. The factorization runs in precision ``u_f``
(every operation of :func:`lowbit.linalg.lu` rounded to ``factor``), the solution is held and
updated in the working precision ``u`` (``working``), and residuals are computed in precision
``u_r`` (``residual``)::

    A ~ L U in u_f;  x_0 = U \\ (L \\ P b)                      (solves in u_f)
    repeat:  r_i = b - A x_i                                   (in u_r)
             solve A d_i = r_i:  LU-IR:    d = U \\ (L \\ P r)  (in u_f)
                                 GMRES-IR: GMRES on U^-1 L^-1 P A d = U^-1 L^-1 P r
                                           (in u; preconditioned products in u_r)
             x_{i+1} = x_i + d_i                               (in u)

Theory: LU-IR converges when ``kappa_inf(A) u_f`` is sufficiently below 1 (about ``kappa <
2^11 = 2048`` for fp16 factors; in practice up to about 1e4), GMRES-IR as long as the
preconditioned matrix is well enough conditioned for GMRES, far beyond (about 1e7-1e8 with
fp16 factors and u = fp64). Both reach a normwise backward error of order ``u``.

Precisions: ``"fp64"`` and ``"fp32"`` run as native IEEE numpy arithmetic (round to nearest
even, matrix-vector products in BLAS order); any other float format of lowbit is emulated
(elementwise operations with ``lb.arith``, products with the emulated matmul, sequential
order). ``residual="dd"`` computes residuals in double-double (error-free products and sums,
about 106 bits: the "quad" of Carson & Higham) and rounds them to float64. The residual
vector is scaled by a power of two before the solve in ``u_f`` so that it neither overflows
nor underflows in a narrow format (exact; undone afterwards).

The reported backward and forward errors are always measured accurately (double-double
residual), whatever precisions the algorithm uses: ``eta(x) = ||b - A x||_inf /
(||A||_inf ||x||_inf + ||b||_inf)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.arith import ops
from lowbit.arith._emulate import matmul as _emul_matmul
from lowbit.arith._emulate import new_stream, serial_kernels, use_stream
from lowbit.arith.eft import two_prod, two_sum
from lowbit.formats import FloatFormat, get_element_format
from lowbit.linalg.factorization import LUFactors, lu, lu_solve
from lowbit.rounding.api import round as _round

SOLVERS = ("lu", "gmres")


# ---- precisions --------------------------------------------------------------------------------
class _Prec:
    """Arithmetic in one precision: native (fp64, fp32), emulated, or double-double."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name in ("dd", "fp128", "quad"):
            self.kind, self.u, self.dtype = "dd", 2.0**-106, None
            return
        f = get_element_format(name)
        if not isinstance(f, FloatFormat):
            raise ValueError(f"precision {name!r} is not a float format")
        self.fmt = f
        self.u = 2.0**-f.precision
        native = {(11, 52): np.float64, (8, 23): np.float32}.get((f.exp_bits, f.man_bits))
        if native is not None and f.has_inf and f.has_subnormals:
            self.kind, self.dtype = "native", native
        else:
            self.kind, self.dtype = "emulated", None

    def round(self, x: Any) -> np.ndarray:
        """Values of this precision (float64 array)."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "dd" or self.dtype is np.float64:
            return x.copy()
        if self.kind == "native":
            return x.astype(self.dtype).astype(np.float64)
        return np.asarray(_round(x, self.fmt, "rne"), dtype=np.float64)

    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x + y rounded to this precision."""
        if self.kind == "native":
            return (x.astype(self.dtype) + y.astype(self.dtype)).astype(np.float64)
        if self.kind == "dd":
            return x + y
        with serial_kernels():
            return np.asarray(ops.add(x, y, self.fmt, "rne"), dtype=np.float64)

    def matvec(self, A: np.ndarray, x: np.ndarray) -> np.ndarray:
        """A @ x in this precision."""
        if self.kind == "native":
            return (A.astype(self.dtype) @ x.astype(self.dtype)).astype(np.float64)
        if self.kind == "dd":
            return _dot2(A, x, np.zeros(A.shape[0]))
        stream = new_stream(self.fmt, "rne", 0)
        with use_stream(stream), serial_kernels():
            return _emul_matmul(A, x, self.fmt, "rne")

    def residual(self, A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        """b - A x computed in this precision, returned as float64."""
        if self.kind == "dd":
            return _dot2(A, x, b)
        if self.kind == "native":
            dt = self.dtype
            return (b.astype(dt) - A.astype(dt) @ x.astype(dt)).astype(np.float64)
        ax = self.matvec(A, x)
        with serial_kernels():
            return np.asarray(ops.sub(b, ax, self.fmt, "rne"), dtype=np.float64)


def _dot2(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b - A x in double-double (Ogita, Rump & Oishi's Dot2, vectorized over rows),
    rounded to float64. Away from overflow/underflow its relative error is about
    2^-106 * cond + 2^-53."""
    hi = b.astype(np.float64).copy()
    lo = np.zeros_like(hi)
    for j in range(A.shape[1]):
        p, pe = two_prod(-A[:, j], x[j])
        hi, e = two_sum(hi, p)
        lo = lo + (e + pe)
    return hi + lo


def backward_error(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """Normwise backward error ``||b - A x||_inf / (||A||_inf ||x||_inf + ||b||_inf)`` with
    the residual computed in double-double."""
    r = _dot2(A, x, b)
    den = np.abs(A).sum(axis=1).max() * np.abs(x).max() + np.abs(b).max()
    return float(np.abs(r).max() / den) if den > 0 else 0.0


# ---- GMRES -------------------------------------------------------------------------------------
def _gmres(
    apply: Any, rhs: np.ndarray, work: _Prec, tol: float, max_iter: int
) -> tuple[np.ndarray, int]:
    """Unrestarted GMRES from x0 = 0 with modified Gram-Schmidt and Givens rotations.

    The Arnoldi vectors, inner products and norms are computed in float64 and rounded to the
    working precision after each step (exact fp64 arithmetic when working is fp64; for
    narrower working precisions a model of GMRES in that precision, not an operation-by-
    operation emulation); ``apply(v)`` is the preconditioned operator.
    """
    n = rhs.size
    beta = float(np.linalg.norm(rhs))
    if beta == 0 or not np.isfinite(beta):
        return np.zeros(n), 0
    m = min(max_iter, n)
    V = np.zeros((m + 1, n))
    H = np.zeros((m + 1, m))
    cs, sn = np.zeros(m), np.zeros(m)
    g = np.zeros(m + 1)
    g[0] = beta
    V[0] = work.round(rhs / beta)
    k_done = 0
    for k in range(m):
        w = work.round(apply(V[k]))
        for j in range(k + 1):
            H[j, k] = work.round(np.dot(V[j], w))
            w = work.round(w - H[j, k] * V[j])
        H[k + 1, k] = work.round(np.linalg.norm(w))
        if H[k + 1, k] != 0 and np.isfinite(H[k + 1, k]):
            V[k + 1] = work.round(w / H[k + 1, k])
        for j in range(k):  # apply the previous rotations to column k
            t = cs[j] * H[j, k] + sn[j] * H[j + 1, k]
            H[j + 1, k] = -sn[j] * H[j, k] + cs[j] * H[j + 1, k]
            H[j, k] = t
        den = math.hypot(H[k, k], H[k + 1, k])
        cs[k], sn[k] = (1.0, 0.0) if den == 0 else (H[k, k] / den, H[k + 1, k] / den)
        H[k, k] = cs[k] * H[k, k] + sn[k] * H[k + 1, k]
        H[k + 1, k] = 0.0
        g[k + 1] = -sn[k] * g[k]
        g[k] = cs[k] * g[k]
        k_done = k + 1
        if abs(g[k + 1]) <= tol * beta or H[k, k] == 0:
            break
    y = np.zeros(k_done)
    for i in range(k_done - 1, -1, -1):  # back substitution for the small triangular system
        y[i] = (g[i] - H[i, i + 1 : k_done] @ y[i + 1 :]) / H[i, i] if H[i, i] else 0.0
    return work.round(V[:k_done].T @ y), k_done


# ---- iterative refinement ----------------------------------------------------------------------
@dataclass
class IRInfo:
    """What :func:`solve_ir` did.

    Attributes:
        converged: the backward error reached ``tol``.
        iterations: refinement steps taken (corrections applied).
        backward_errors: ``eta(x_i)`` for ``i = 0..iterations`` (accurately measured).
        forward_errors: ``||x_i - x_true||_inf / ||x_true||_inf`` when ``x_true`` was given.
        gmres_iterations: inner GMRES iterations per step (GMRES-IR).
        reason: why it stopped (``"converged"``, ``"max_iter"``, ``"stagnated"``,
            ``"diverged"``, ``"factorization failed"``).
        factor, working, residual, solver: the configuration.
        tol: the backward-error target.
    """

    converged: bool
    iterations: int
    backward_errors: list[float]
    forward_errors: list[float] = field(default_factory=list)
    gmres_iterations: list[int] = field(default_factory=list)
    reason: str = ""
    factor: str = ""
    working: str = ""
    residual: str = ""
    solver: str = ""
    tol: float = 0.0


def _pow2_scale(r: np.ndarray) -> float:
    m = float(np.abs(r).max()) if r.size else 0.0
    if m == 0 or not np.isfinite(m):
        return 1.0
    return 2.0 ** math.floor(math.log2(m))


def solve_ir(
    A: Any,
    b: Any,
    factor: str = "fp16",
    working: str = "fp32",
    residual: str = "fp64",
    solver: str = "lu",
    *,
    tol: float | None = None,
    max_iter: int = 50,
    mode: str = "rne",
    fma: bool = False,
    gmres_tol: float | None = None,
    gmres_max_iter: int | None = None,
    x_true: Any = None,
    seed: int | None = None,
    factors: LUFactors | None = None,
) -> tuple[np.ndarray, IRInfo]:
    """Solve ``A x = b`` by iterative refinement in three precisions (Carson & Higham 2018).

    Args:
        A: square matrix; rounded to ``working`` (the data are working-precision numbers).
        b: right-hand side vector; rounded to ``working``.
        factor: format of the LU factorization (``u_f``), every operation rounded.
        working: precision of the solution and its updates (``u``).
        residual: precision of the residuals (``u_r``); ``"dd"`` for double-double.
        solver: ``"lu"`` (LU-IR: corrections by triangular solves in ``factor``) or
            ``"gmres"`` (GMRES-IR: GMRES in ``working`` on the system left-preconditioned by
            the LU factors, products with ``U^-1 L^-1 P A`` in ``residual``; residual
            precisions narrower than float64 run these products in float64).
        tol: stop when the backward error is at most ``tol`` (default ``2 u``; see the module
            docstring for how it is measured).
        max_iter: most refinement steps.
        mode: rounding mode of the factorization and the triangular solves in ``factor``.
        fma: fused multiply-adds in the factorization and solves.
        gmres_tol: relative residual at which GMRES stops (default ``1e-6`` when the working
            precision is fp64 or wider, ``1e-4`` otherwise).
        gmres_max_iter: most GMRES iterations per refinement step (default ``n``).
        x_true: the exact solution, to record forward errors.
        seed: seed for stochastic ``mode``.
        factors: reuse an existing factorization (in ``factor``) of ``A``.

    Returns:
        ``(x, info)``: the last iterate (float64 array of ``working`` values) and
        :class:`IRInfo`.

    Raises:
        ValueError: unknown solver or mismatched shapes.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}; accepted: {', '.join(SOLVERS)}")
    work, res_p = _Prec(working), _Prec(residual)
    if work.kind == "dd":
        raise ValueError("working precision 'dd' is not supported; use fp64")
    A64 = work.round(A)
    b64 = work.round(b)
    if A64.ndim != 2 or A64.shape[0] != A64.shape[1] or b64.shape != (A64.shape[0],):
        raise ValueError(f"need a square A and a vector b; got {A64.shape} and {b64.shape}")
    n = A64.shape[0]
    tol = 2 * work.u if tol is None else float(tol)
    if gmres_tol is None:
        gmres_tol = 1e-6 if work.u < 1e-12 else 1e-4
    gmres_max_iter = n if gmres_max_iter is None else int(gmres_max_iter)
    info = IRInfo(
        False,
        0,
        [],
        factor=str(factor),
        working=str(working),
        residual=str(residual),
        solver=solver,
        tol=tol,
    )
    xt = None if x_true is None else np.asarray(x_true, dtype=np.float64)
    xt_norm = None if xt is None else float(np.abs(xt).max())

    def record(x: np.ndarray) -> float:
        eta = backward_error(A64, x, b64) if np.isfinite(x).all() else math.inf
        info.backward_errors.append(eta)
        if xt is not None and xt_norm:
            fe = float(np.abs(x - xt).max() / xt_norm) if np.isfinite(x).all() else math.inf
            info.forward_errors.append(fe)
        return eta

    stream = new_stream(factor, mode, seed if seed is not None else 0)
    with use_stream(stream):
        F = factors if factors is not None else lu(A64, factor, mode, fma=fma)
    if not F.finite or F.zero_pivot >= 0:
        info.reason = "factorization failed"
        info.backward_errors.append(math.inf)
        return np.full(n, np.nan), info

    def solve_f(r: np.ndarray) -> np.ndarray:
        s = _pow2_scale(r)
        with use_stream(stream):
            return lu_solve(F, r / s, factor, mode, fma=fma) * s

    def precond_apply(v: np.ndarray) -> np.ndarray:
        # U^-1 L^-1 P A v in the residual precision (at least float64)
        w = res_p.matvec(A64, v) if res_p.kind != "emulated" else A64 @ v
        return _tri_solve_f64(F, w)

    x = work.round(solve_f(b64))
    eta = record(x)
    best = eta
    stall = 0
    while True:
        if eta <= tol:
            info.converged, info.reason = True, "converged"
            break
        if not math.isfinite(eta):
            info.reason = "diverged"
            break
        if info.iterations >= max_iter:
            info.reason = "max_iter"
            break
        r = res_p.residual(A64, x, b64)
        if solver == "lu":
            d = solve_f(r)
        else:
            s = _pow2_scale(r)
            rhs = _tri_solve_f64(F, r / s)
            d, its = _gmres(precond_apply, rhs, work, gmres_tol, gmres_max_iter)
            d = d * s
            info.gmres_iterations.append(its)
        x = work.add(x, work.round(d))
        info.iterations += 1
        eta = record(x)
        if eta < 0.5 * best:
            best, stall = eta, 0
        else:
            stall += 1
            if eta > 1e3 * best or stall >= 3:
                info.reason = "diverged" if eta > best else "stagnated"
                if eta <= tol:
                    info.converged, info.reason = True, "converged"
                break
    return x, info


def _tri_solve_f64(F: LUFactors, r: np.ndarray) -> np.ndarray:
    """U^-1 L^-1 P r in float64 with the (low-precision) factors' values."""
    from scipy.linalg import solve_triangular

    y = solve_triangular(F.L, r[F.perm], lower=True, unit_diagonal=True, check_finite=False)
    return solve_triangular(F.U, y, lower=False, check_finite=False)


# ---- test matrices -----------------------------------------------------------------------------
def randsvd(n: int, kappa: float, *, mode: int = 3, seed: int = 0) -> np.ndarray:
    """Random ``n x n`` matrix with 2-norm condition number ``kappa`` (MATLAB
    ``gallery('randsvd', n, kappa, mode)``): ``U diag(s) V^T`` with Haar-random orthogonal
    ``U, V`` and singular values ``s``: mode 3 geometric from 1 to ``1/kappa``, mode 2 one
    small (``1, ..., 1, 1/kappa``), mode 1 one large (``1, 1/kappa, ..., 1/kappa``)."""
    rng = np.random.default_rng(seed)

    def haar(m: int) -> np.ndarray:
        q, r = np.linalg.qr(rng.standard_normal((m, m)))
        return q * np.sign(np.diag(r))

    if mode == 3:
        s = kappa ** (-np.arange(n) / max(n - 1, 1))
    elif mode == 2:
        s = np.ones(n)
        s[-1] = 1 / kappa
    elif mode == 1:
        s = np.full(n, 1 / kappa)
        s[0] = 1.0
    else:
        raise ValueError(f"mode={mode}; accepted: 1, 2, 3")
    return (haar(n) * s) @ haar(n).T


__all__ = ["SOLVERS", "IRInfo", "backward_error", "randsvd", "solve_ir"]
