"""Fused elementwise add/sub/mul: error-free transformation, round-to-odd and the final
rounding in one pass (the same steps as :mod:`lowbit.arith.ops`, which the tests hold it to).

The scalar pieces (TwoSum, Dekker's product, round-to-odd, the rounding onto a float format and
the counter-based draws) are the matmul kernel's, so both kernels round identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from lowbit.kernels.matmul_numba import (
    RD,
    RNE,
    SR,
    _bits,
    _odd53,
    _odd53_ts,
    _rnd,
    _two_prod,
    _two_sum,
    _zero_sum,
)

ADD, SUB, MUL = 0, 1, 2


@njit(inline="always")
def _exact_odd(a: float, b: float, op: int, rd: bool) -> float:
    if op == MUL:
        p, e = _two_prod(a, b)
        return _odd53(p, e)
    if op == SUB:
        b = -b
    s, t = _two_sum(a, b)
    if s == 0.0 and t == 0.0:  # exact zero: its sign follows IEEE 754 §6.3
        return _zero_sum(a, b, rd)
    return _odd53_ts(s, t)


@njit(inline="always")
def _operand(a: float, rin: bool, m: int, emin: int, fmax: float, infv_in: float,
             fnuz: bool) -> float:
    """An operand rounded to the format with RNE first (``inputs="round"``), or as it is."""
    if rin:
        return _rnd(a, m, emin, fmax, infv_in, RNE, fnuz, 32, 0, False)
    return a


@njit(parallel=True, cache=True)
def binary(x: Any, y: Any, out: Any, op: int, m: int, emin: int, fmax: float, infv: float,
           mode: int, fnuz: bool, rb: int, k0: int, k1: int, offset: int, rin: bool,
           infv_in: float) -> None:
    """out[i] = round(x[i] op y[i]) for 1-D contiguous arrays; draws ``offset + i``.

    ``rin`` rounds each operand to the format (RNE, overflow value ``infv_in``) first.
    """
    n = x.size
    rd = mode == RD
    if mode >= SR:
        for i in prange(n):
            a = _operand(np.float64(x[i]), rin, m, emin, fmax, infv_in, fnuz)
            b = _operand(np.float64(y[i]), rin, m, emin, fmax, infv_in, fnuz)
            v = _exact_odd(a, b, op, rd)
            out[i] = _rnd(v, m, emin, fmax, infv, mode, fnuz, rb, _bits(offset + i, k0, k1),
                          True)
    else:
        for i in prange(n):
            a = _operand(np.float64(x[i]), rin, m, emin, fmax, infv_in, fnuz)
            b = _operand(np.float64(y[i]), rin, m, emin, fmax, infv_in, fnuz)
            v = _exact_odd(a, b, op, rd)
            out[i] = _rnd(v, m, emin, fmax, infv, mode, fnuz, rb, 0, False)
