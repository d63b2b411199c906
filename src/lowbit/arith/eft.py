"""Error-free transformations in float64, and round-to-odd as the bridge to any format.

``two_sum``/``two_prod`` return a pair (hi, lo) whose exact sum is the exact result (Knuth;
Dekker with Veltkamp splitting, since numpy has no fused multiply-add). ``odd53`` collapses
such a pair into the single float64 obtained by rounding the exact value to odd. Rounding that
float64 to a format of precision p <= 51 in any deterministic mode gives the same result as
rounding the exact value (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums:
proved algorithms using rounding to odd", IEEE TC 2008), so one call to ``lowbit.round``
finishes every operation correctly rounded. For stochastic rounding the same holds as long as
p + rand_bits <= 52 (the odd bit must lie below every random bit).

The functions use only +, -, *, comparisons and ``nextafter``, so they work on numpy arrays
and torch float64 tensors alike.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's constant for 53-bit doubles


def two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """s + e == a + b exactly, s = fl(a + b) (Knuth's branch-free TwoSum)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def split(a: Any) -> tuple[Any, Any]:
    """Veltkamp split: a == hi + lo with hi, lo of at most 26 significant bits each."""
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    """p + e == a * b exactly, p = fl(a * b) (Dekker; valid away from overflow/underflow)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def _nextafter(x: Any, toward_pos: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        inf = torch.full_like(x, float("inf"))
        return torch.nextafter(x, torch.where(toward_pos, inf, -inf))
    return np.nextafter(x, np.where(toward_pos, np.inf, -np.inf))


def _is_odd(x: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return (x.contiguous().view(torch.int64) & 1) == 1
    return (np.asarray(x, dtype=np.float64).view(np.int64) & 1) == 1


def odd53(hi: Any, lo: Any) -> Any:
    """Round the exact value hi + lo to float64 with round-to-odd.

    Requires ``hi == fl(hi + lo)`` (what ``two_sum``/``two_prod`` give) or at least that the
    exact value lies strictly between hi's neighbours; only the sign of ``lo`` is used.
    """
    inexact = lo != 0
    finite = (hi - hi) == 0  # False for inf and NaN, on numpy and torch alike
    move = inexact & finite & ~_is_odd(hi)
    stepped = _nextafter(hi, lo > 0)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(hi, torch.Tensor):
        return torch.where(move, stepped, hi)
    return np.where(move, stepped, hi)
