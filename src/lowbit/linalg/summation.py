"""Summation in a low-precision format: recursive, pairwise and Kahan, with a-priori bounds.

Every addition is correctly rounded to the format by ``lb.arith.add``/``sub`` (so each
algorithm runs exactly as it would on hardware with that format and rounding mode), and
a-priori bounds are available next to the result. With ``S = sum |x_i|`` and ``u`` the unit
roundoff, the computed sum ``s`` satisfies ``|s - sum x_i| <= bound * S`` with

========== ============================================ ===================================
algorithm  ``bound`` (relative to ``S``)                  reference
========== ============================================ ===================================
recursive  ``gamma_{n-1} = (n-1)u / (1 - (n-1)u)``          Higham (4.4)
pairwise   ``gamma_{ceil(log2 n)}``                         Higham (4.6)
kahan      ``3u + C_n u^2`` (about ``3u + 6nu^2``)           proved below
========== ============================================ ===================================

(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 2002, chapter 4.)
``gamma_k`` is infinite once ``k u >= 1`` (the bound says nothing then). The bounds use the
standard model ``fl(a + b) = (a + b)(1 + d)``, ``|d| <= u``, which holds for round to nearest
with ``u = 2^-p``; directed modes, round-to-odd and stochastic rounding give one of the two
neighbours of the exact sum, so they satisfy it with ``2u`` (one ulp), and :func:`bound` uses
``2u`` for them. All bounds assume no overflow and gradual underflow (the default
``subnormals=True``: a sum in the subnormal range is exact, so the model holds there too).

Kahan's method: the published results are asymptotic. Knuth (TAOCP vol. 2, 3rd ed.,
section 4.2.2, exercise 19), Goldberg (1991, Theorem 8) and Higham (4.8) give
``s = sum (1 + mu_i) x_i`` with ``|mu_i| <= 2u + O(n u^2)`` for round to nearest, with no
constant on the second-order term. :func:`bound` reports instead the following explicit bound,
proved from the model alone (so it holds in every mode with the mode's ``u``). Its first-order
constant is 3 rather than 2: under the model alone the compensation step keeps a first-order
rounding error (``gamma_k`` below, of order ``u|x_k|``); the constant 2 needs finer properties
of round to nearest. Measured worst cases with round to nearest come close to ``2u`` (1.96u
for fp16 and 1.95u for bf16 in a random search over short mixed-magnitude vectors); the tests
check that the bound holds and is attained within a factor 2.

*Algorithm* (Higham's Algorithm 4.2, as :func:`sum` runs it): ``s_1 = x_1``, ``e_1 = 0``, and
for ``k = 2..n``: ``y_k = fl(x_k + e_{k-1})``, ``s_k = fl(s_{k-1} + y_k)``,
``d_k = fl(s_{k-1} - s_k)``, ``e_k = fl(d_k + y_k)``.

*Rounding errors* (each bounded by the model): ``y_k = x_k + e_{k-1} + alpha_k`` with
``|alpha_k| <= u|x_k + e_{k-1}|``; ``s_k = s_{k-1} + y_k - beta_k`` with
``|beta_k| <= u|s_{k-1} + y_k|``; ``d_k = s_{k-1} - s_k + gamma_k`` with
``|gamma_k| <= u|s_{k-1} - s_k| = u|beta_k - y_k|``; ``e_k = d_k + y_k + eps_k`` with
``|eps_k| <= u|d_k + y_k| = u|beta_k + gamma_k|``. Hence ``e_k = beta_k + gamma_k + eps_k``.

*Error identity* (exact): with ``P_k = x_1 + ... + x_k`` and ``L_k = P_k - s_k``,
``L_k = L_{k-1} - e_{k-1} - alpha_k + beta_k``, so by induction from ``L_1 = e_1 = 0``::

    L_k = beta_k - sum_{j=2..k} alpha_j - sum_{j=2..k-1} (gamma_j + eps_j).

*Auxiliary bounds*. Write ``A = S = sum |x_i|``, ``q = (1 + u)^2`` and ``t = n u``. Let
``kappa, lambda > 0`` satisfy

    (E)  kappa  >= q (b + 1 + kappa u),
    (L)  lambda >= b + 1 + q + t (kappa (1 + q) + (2 + u) b),
         where b = 1 + (lambda + kappa + 1) u + kappa u^2.

Claim: ``|e_j| <= kappa u A`` and ``|L_j| <= lambda u A`` for ``j = 1..n``. Induction on j
(true at ``j = 1``); assume it for ``j - 1``. Then ``|alpha_j| <= u(|x_j| + kappa u A)``,
``|y_j| <= (1 + u)(|x_j| + kappa u A)``, and ``s_{j-1} + y_j = P_j - L_{j-1} + e_{j-1} +
alpha_j`` gives ``|beta_j| <= u b A``. From the bounds on ``gamma_j`` and ``eps_j``,
``|e_j| <= (1 + u)(|beta_j| + |gamma_j|) <= q |beta_j| + u(1 + u)|y_j|
<= u A q (b + 1 + kappa u) <= kappa u A`` by (E). With
``G_j = |gamma_j| + |eps_j| <= u(2 + u)|beta_j| + u(1 + u)|y_j|``, the error identity gives
``|L_j| <= u b A + u sum_{i<=j} |x_i| + (j-1) kappa u^2 A + u q sum_{i<j} |x_i|
+ (j-2) u^2 A ((2 + u) b + q kappa) <= u A (b + 1 + q + j u (kappa (1 + q) + (2 + u) b))
<= lambda u A`` by (L), as ``j u <= t``.

*The bound*. The identity at ``k = n`` with ``|beta_n| <= u(|P_n| + |L_{n-1}| + |e_{n-1}| +
|alpha_n|)`` and the same sums gives

    |s_n - P_n| <= u |P_n| + 2u A + u^2 C_n A <= (3u + u^2 C_n) A,
    C_n = (lambda + kappa + 1 + kappa u) + (2 + u) + (n - 1) kappa + (n - 2)((2 + u) b + q kappa).

(E) and (L) are linear in ``kappa, lambda``: ``M (kappa, lambda) >= c`` with ``c > 0`` and
``M`` having a positive diagonal and nonpositive off-diagonal entries. When
``1 - q(2u + u^2) > 0``, ``1 - u - t(2 + u)u > 0`` and ``det M > 0``, ``M`` is an M-matrix
(nonnegative inverse), so the equality solution ``M^-1 c`` is positive and the smallest pair
satisfying (E) and (L); lowbit computes it in exact rational arithmetic (and rounds the bound
up to a float). Otherwise the bound is ``inf``. For small ``u`` and ``n u``, ``kappa ~ 2``,
``lambda ~ 3 + 6 n u`` and ``C_n ~ 6n``: the bound is ``3.0049u`` for fp16 with ``n = 2``,
``6.01u`` for fp16 with ``n = 1024`` and ``3.003u`` for fp32 with ``n = 8192``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from lowbit.arith import ops
from lowbit.arith._emulate import resolve_stream, serial_kernels, use_stream
from lowbit.formats import FloatFormat, Format, get_element_format
from lowbit.rounding.api import round as _round
from lowbit.rounding.modes import RoundMode, as_mode

ALGORITHMS = ("recursive", "pairwise", "kahan")
_NEAREST = (RoundMode.RNE, RoundMode.RNA, RoundMode.RNZ)


def unit_roundoff(fmt: Format | str, mode: RoundMode | str = "rne") -> float:
    """Relative error bound of one rounding: ``u = 2^-p`` for round-to-nearest modes and
    ``2u`` (one ulp) for directed, odd and stochastic modes."""
    f = get_element_format(fmt)
    if not isinstance(f, FloatFormat):
        raise ValueError(f"summation bounds are for float formats; got {f}")
    u = 2.0**-f.precision
    return u if as_mode(mode) in _NEAREST else 2 * u


def gamma(k: int, u: float) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``; ``inf`` when ``k u >= 1``."""
    ku = k * u
    return ku / (1.0 - ku) if ku < 1 else math.inf


def bound(
    n: int, fmt: Format | str, algorithm: str = "recursive", mode: RoundMode | str = "rne"
) -> float:
    """A-priori bound on ``|computed - exact| / sum |x_i|`` for summing ``n`` numbers.

    Args:
        n: number of terms.
        fmt: the format every partial sum is rounded to.
        algorithm: ``"recursive"``, ``"pairwise"`` or ``"kahan"``.
        mode: rounding mode (nearest modes use ``u``, the others ``2u``).

    Returns:
        The relative bound (see the module docstring for the formulas and, for Kahan's
        method, the proof); ``inf`` where it is vacuous: ``k u >= 1`` for ``gamma_k``, and for
        Kahan's method when the proof's constants do not exist (``u`` or ``n u`` too large;
        e.g. bf16 from ``n = 16113`` on, e2m1 always).

    Example:
        >>> round(bound(1000, "fp16", "recursive"), 4)
        0.9523
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; accepted: {', '.join(ALGORITHMS)}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    u = unit_roundoff(fmt, mode)
    if n <= 1:
        return 0.0
    if algorithm == "recursive":
        return gamma(n - 1, u)
    if algorithm == "pairwise":
        return gamma(math.ceil(math.log2(n)), u)
    return _kahan_bound(n, u)


def kahan_constants(n: int, u: float) -> tuple[Fraction, Fraction] | None:
    """The pair ``(kappa, lambda)`` of the Kahan bound's proof (module docstring): the
    solution of (E) and (L) taken as equalities, exact, or ``None`` when it is not positive
    (the bound is then vacuous)."""
    uf = Fraction(u)
    t = n * uf
    q = (1 + uf) ** 2
    # (E):  a11 kappa + a12 lambda = c1;   (L):  a21 kappa + a22 lambda = c2
    a11, a12, c1 = 1 - q * (2 * uf + uf * uf), -q * uf, q * (2 + uf)
    a21 = -(uf + uf * uf + t * (1 + q) + t * (2 + uf) * (uf + uf * uf))
    a22 = 1 - uf - t * (2 + uf) * uf
    c2 = 2 + uf + q + t * (2 + uf) * (1 + uf)
    det = a11 * a22 - a12 * a21
    if a11 <= 0 or a22 <= 0 or det <= 0:
        return None
    return (c1 * a22 - a12 * c2) / det, (a11 * c2 - a21 * c1) / det


def _kahan_bound(n: int, u: float) -> float:
    """``3u + C_n u^2`` of the module docstring, rounded up to a float (``inf`` if vacuous)."""
    consts = kahan_constants(n, u)
    if consts is None:
        return math.inf
    kappa, lam = consts
    uf = Fraction(u)
    q = (1 + uf) ** 2
    b = 1 + (lam + kappa + 1) * uf + kappa * uf * uf
    c_n = (
        (lam + kappa + 1 + kappa * uf)
        + (2 + uf)
        + (n - 1) * kappa
        + (n - 2) * ((2 + uf) * b + q * kappa)
    )
    exact = 3 * uf + c_n * uf * uf
    # float() rounds to nearest; one step up keeps the reported bound >= the proved one
    return math.nextafter(float(exact), math.inf)


# ---- the algorithms (on float64 arrays of representable values, summed along axis 0) ---------
def _recursive(x: np.ndarray) -> np.ndarray:
    s = x[0]
    for i in range(1, x.shape[0]):
        s = ops.add(s, x[i])
    return np.asarray(s, dtype=np.float64)


def _pairwise(x: np.ndarray) -> np.ndarray:
    y = x
    while y.shape[0] > 1:
        half = y.shape[0] // 2
        s = np.asarray(ops.add(y[0 : 2 * half : 2], y[1 : 2 * half : 2]), dtype=np.float64)
        y = np.concatenate([s, y[2 * half :]]) if y.shape[0] % 2 else s
    return np.asarray(y[0], dtype=np.float64)


def _kahan(x: np.ndarray) -> np.ndarray:
    """Compensated summation as in Higham's Algorithm 4.2."""
    s = x[0]
    e = np.zeros_like(s)
    for i in range(1, x.shape[0]):
        temp = s
        y = ops.add(x[i], e)
        s = ops.add(temp, y)
        e = ops.add(ops.sub(temp, s), y)
    return np.asarray(s, dtype=np.float64)


_IMPL = {"recursive": _recursive, "pairwise": _pairwise, "kahan": _kahan}


def sum_along(x: np.ndarray, axis: int | None, algorithm: str) -> np.ndarray:
    """Sum representable float64 values along ``axis`` (``None``: all, C order) with the
    active stream's format and mode (see :func:`lowbit.arith._emulate.use_stream`)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; accepted: {', '.join(ALGORITHMS)}")
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(-1) if axis is None else np.moveaxis(x, axis, 0)
    if x.shape[0] == 0:
        return np.zeros(x.shape[1:])
    if x.shape[0] == 1:
        return x[0].copy()
    with serial_kernels():
        return _IMPL[algorithm](x)


def cumsum_along(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Recursive partial sums along ``axis`` (each one rounded; the active stream's format)."""
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        x, axis = x.reshape(-1), 0
    y = np.moveaxis(x, axis, 0).copy()
    with serial_kernels():
        for i in range(1, y.shape[0]):
            y[i] = ops.add(y[i - 1], y[i])
    return np.moveaxis(y, 0, axis)


def sum(
    v: Any,
    fmt: Format | str | None = None,
    mode: RoundMode | str | None = None,
    *,
    algorithm: str = "recursive",
    axis: int | None = None,
    seed: int | None = None,
    return_bound: bool = False,
) -> Any:
    """Sum ``v`` with every addition rounded to ``fmt`` in ``mode``.

    Inputs are first rounded to ``fmt`` with round-to-nearest-even (as ``lb.arith`` does with
    its operands), so the result is the sum of the rounded values as the chosen algorithm
    computes it in the format.

    Args:
        v: array-like (numpy, list, torch CPU tensor).
        fmt: float format with at most 25 mantissa bits; defaults to the ``lb.precision``
            context's.
        mode: rounding mode (default: the context's, else ``"rne"``).
        algorithm: ``"recursive"`` (left to right), ``"pairwise"`` (adjacent pairs, level by
            level) or ``"kahan"`` (compensated, Higham's Algorithm 4.2).
        axis: axis to sum over (``None``: all elements in C order).
        seed: seed of stochastic rounding; ``None`` inside ``lb.precision`` draws from the
            context's counter, outside it picks a random seed.
        return_bound: also return the a-priori bound ``bound(n) * sum |x_i|`` (absolute, one
            per output element, ``sum |x_i|`` by ``math.fsum``).

    Returns:
        The sum (a float64 scalar or array of values of ``fmt``), or ``(sum, abs_bound)``.

    Example:
        >>> import numpy as np, lowbit.linalg as la
        >>> float(la.sum(np.ones(4096), "fp16"))   # 2048 + 1 is a tie: stays at 2048
        2048.0
    """
    stream = resolve_stream(fmt, mode, seed)
    x = np.asarray(v, dtype=np.float64)
    f = stream.fmt
    xr = np.asarray(
        _round(x, f, "rne", subnormals=stream.subnormals, overflow=stream.overflow),
        dtype=np.float64,
    )
    with use_stream(stream):
        s = sum_along(xr, axis, algorithm)
    res = s[()] if s.ndim == 0 else s
    if not return_bound:
        return res
    n = xr.size if axis is None else xr.shape[axis]
    g = bound(n, f, algorithm, stream.mode)
    a = np.abs(xr).reshape(-1) if axis is None else np.moveaxis(np.abs(xr), axis, -1)
    if axis is None:
        abs_sum = np.float64(math.fsum(a.tolist()))
    else:
        flat = a.reshape(-1, a.shape[-1]) if a.shape[-1] else a.reshape(-1, 0)
        abs_sum = np.array([math.fsum(r.tolist()) for r in flat]).reshape(a.shape[:-1])
    return res, g * abs_sum


__all__ = [
    "ALGORITHMS",
    "bound",
    "cumsum_along",
    "gamma",
    "kahan_constants",
    "sum",
    "sum_along",
    "unit_roundoff",
]
