"""Summation in a low-precision format: recursive, pairwise and Kahan, with a-priori bounds.

Every addition is correctly rounded to the format by ``lb.arith.add``/``sub`` (so each
algorithm runs exactly as it would on hardware with that format and rounding mode), and the
classic a-priori bounds of Higham, *Accuracy and Stability of Numerical Algorithms* (2nd ed.,
2002), chapter 4, are available next to the result. With ``S = sum |x_i|`` and ``u`` the unit
roundoff, the computed sum ``s`` satisfies ``|s - sum x_i| <= bound * S`` with

========== ============================================ =========================
algorithm  ``bound`` (relative to ``S``)                  reference
========== ============================================ =========================
recursive  ``gamma_{n-1} = (n-1)u / (1 - (n-1)u)``          Higham (4.4)
pairwise   ``gamma_{ceil(log2 n)}``                         Higham (4.6)
kahan      ``2u + O(n u^2)``, reported as ``2u + 2n u^2``   Higham (4.8); Goldberg Thm 8
========== ============================================ =========================

``gamma_k`` is infinite once ``k u >= 1`` (the bound says nothing then). The bounds use the
standard model ``fl(a + b) = (a + b)(1 + d)``, ``|d| <= u``, which holds for round to nearest;
directed modes, round-to-odd and stochastic rounding satisfy it with ``2u`` (one ulp), so
:func:`bound` uses ``2u`` for them. For Kahan's method the second-order term is given only as
``O(n u^2)`` in the literature: lowbit reports ``2u + 2 n u^2``, which is what the first-order
analysis gives with the constant 2 on the second-order term. It is an estimate of the same
kind as the published one, not a theorem with that constant; the tests check it empirically.
All bounds assume no overflow (underflow is harmless in addition: a subnormal sum is exact).
"""

from __future__ import annotations

import math
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
    u = 2.0 ** -f.precision
    return u if as_mode(mode) in _NEAREST else 2 * u


def gamma(k: int, u: float) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``; ``inf`` when ``k u >= 1``."""
    ku = k * u
    return ku / (1.0 - ku) if ku < 1 else math.inf


def bound(n: int, fmt: Format | str, algorithm: str = "recursive",
          mode: RoundMode | str = "rne") -> float:
    """A-priori bound on ``|computed - exact| / sum |x_i|`` for summing ``n`` numbers.

    Args:
        n: number of terms.
        fmt: the format every partial sum is rounded to.
        algorithm: ``"recursive"``, ``"pairwise"`` or ``"kahan"``.
        mode: rounding mode (nearest modes use ``u``, the others ``2u``).

    Returns:
        The relative bound (see the module docstring for the formulas); ``inf`` where the
        classic bound is vacuous (``(n-1) u >= 1``).

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
    return 2 * u + 2 * n * u * u


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
        s = np.asarray(ops.add(y[0:2 * half:2], y[1:2 * half:2]), dtype=np.float64)
        y = np.concatenate([s, y[2 * half:]]) if y.shape[0] % 2 else s
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


def sum(v: Any, fmt: Format | str | None = None, mode: RoundMode | str | None = None, *,
        algorithm: str = "recursive", axis: int | None = None, seed: int | None = None,
        return_bound: bool = False) -> Any:
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
    xr = np.asarray(_round(x, f, "rne", subnormals=stream.subnormals,
                           overflow=stream.overflow), dtype=np.float64)
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


__all__ = ["ALGORITHMS", "bound", "cumsum_along", "gamma", "sum", "sum_along", "unit_roundoff"]
