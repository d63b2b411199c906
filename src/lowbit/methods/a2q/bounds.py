"""Accumulator bounds of A2Q (Colbert et al., ICCV 2023): the ℓ1 bound and the data-type bound.

A dot product ``Σ q_i x_i`` of integer weights ``q`` with ``N``-bit integer inputs ``x`` into a
signed ``P``-bit accumulator cannot overflow — at any step, in any order — if

    ‖q‖₁ · max|x| <= 2**(P-1) - 1,   max|x| = 2**(N - 1_signed(x))

(``2**N`` bounds the unsigned range ``[0, 2**N - 1]``, ``2**(N-1)`` the signed
``[-2**(N-1), 2**(N-1) - 1]``), i.e. if ``‖q‖₁ <= T = (2**(P-1) - 1) · 2**(1_signed - N)``
(:func:`l1_bound`). Every partial sum is bounded the same way, so the order does not matter.

Without a constraint on ``q`` only the data types bound the sum: ``K`` products of ``M``-bit
weights and ``N``-bit inputs need ``P >= α + φ(α) + 1`` with
``α = log2(K) + N + M - 1 - 1_signed(x)`` and ``φ(α) = log2(1 + 2**-α)``
(:func:`datatype_bound`); :func:`datatype_acc_bits` is its exact integer ceiling. A2Q's point:
with the ℓ1 constraint ``P`` can be far below the data-type bound.

Pure Python ints and floats: the bounds are exact and testable by enumeration.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _pos_int(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if int(v) < lo:
        raise ValueError(f"{name}={v} must be >= {lo}")
    return int(v)


def _check_signed(act_signed: Any) -> bool:
    if not isinstance(act_signed, (bool, np.bool_)):
        raise TypeError(
            f"act_signed must be a bool (signed or unsigned inputs), got {act_signed!r}"
        )
    return bool(act_signed)


def input_max_abs(act_bits: int, act_signed: bool) -> int:
    """``2**(N - 1_signed)``: the bound on ``|x|`` the ℓ1 bound uses."""
    return 1 << (_pos_int("act_bits", act_bits) - int(_check_signed(act_signed)))


def l1_bound(acc_bits: int, act_bits: int, act_signed: bool) -> float:
    """``T = (2**(P-1) - 1) · 2**(1_signed - N)``: the largest ``‖q‖₁`` a ``P``-bit signed
    accumulator allows with ``N``-bit inputs (exact for ``P <= 54``, a float)."""
    p = _pos_int("acc_bits", acc_bits, 2)
    return ((1 << (p - 1)) - 1) / input_max_abs(act_bits, act_signed)


def l1_budget(acc_bits: int, act_bits: int, act_signed: bool) -> int:
    """``floor(T)``: the largest integer ``‖q‖₁`` allowed (exact, integer arithmetic)."""
    p = _pos_int("acc_bits", acc_bits, 2)
    return ((1 << (p - 1)) - 1) // input_max_abs(act_bits, act_signed)


def acc_bits_for_l1(l1: int, act_bits: int, act_signed: bool) -> int:
    """Smallest signed ``P`` with ``l1 · 2**(N - 1_signed) <= 2**(P-1) - 1`` (>= 2)."""
    need = _pos_int("l1", l1, 0) * input_max_abs(act_bits, act_signed)
    return max(2, need.bit_length() + 1)


def datatype_bound(k: int, act_bits: int, weight_bits: int, act_signed: bool) -> float:
    """``α + φ(α) + 1`` with ``α = log2(K) + N + M - 1 - 1_signed`` (the paper's formula)."""
    alpha = (
        math.log2(_pos_int("k", k))
        + _pos_int("act_bits", act_bits)
        + _pos_int("weight_bits", weight_bits)
        - 1
        - int(_check_signed(act_signed))
    )
    return alpha + math.log2(1 + 2.0**-alpha) + 1


def datatype_acc_bits(k: int, act_bits: int, weight_bits: int, act_signed: bool) -> int:
    """``ceil(datatype_bound(...))`` in exact integers: the smallest ``P`` with
    ``2**(P-1) >= 2**α + 1``, ``2**α = K · 2**(N + M - 1 - 1_signed)``."""
    k = _pos_int("k", k)
    e = (
        _pos_int("act_bits", act_bits)
        + _pos_int("weight_bits", weight_bits)
        - 1
        - int(_check_signed(act_signed))
    )
    two_alpha = k << e
    return (two_alpha).bit_length() + 1  # smallest P-1 with 2**(P-1) > 2**α


def worst_case_inputs(q: Any, act_bits: int, act_signed: bool) -> np.ndarray:
    """Per output channel of the integer weights ``q`` (C, K), the two inputs that make
    ``Σ q_i x_i`` largest and smallest over every ``N``-bit ``x``: shape (2C, K), int64.

    Row ``2c`` maximises channel ``c``'s dot product (``x_i`` at the top of the range where
    ``q_i > 0``, at the bottom where ``q_i < 0``), row ``2c + 1`` minimises it.
    """
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype.kind not in "iu":
        raise ValueError(f"q must be a 2-D integer array (channels, K), got {q.dtype} {q.shape}")
    n = _pos_int("act_bits", act_bits)
    if _check_signed(act_signed):
        lo, hi = -(1 << (n - 1)), (1 << (n - 1)) - 1
    else:
        lo, hi = 0, (1 << n) - 1
    sgn = np.sign(q.astype(np.int64))
    top = np.where(sgn > 0, hi, np.where(sgn < 0, lo, 0))
    bot = np.where(sgn > 0, lo, np.where(sgn < 0, hi, 0))
    out = np.empty((2 * q.shape[0], q.shape[1]), dtype=np.int64)
    out[0::2] = top
    out[1::2] = bot
    return out


__all__ = [
    "acc_bits_for_l1",
    "datatype_acc_bits",
    "datatype_bound",
    "input_max_abs",
    "l1_bound",
    "l1_budget",
    "worst_case_inputs",
]
