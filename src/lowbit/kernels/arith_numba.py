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
    _rne,
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
def _operand(
    a: float, rin: bool, m: int, emin: int, fmax: float, infv_in: float, fnuz: bool
) -> float:
    """An operand rounded to the format with RNE first (``inputs="round"``), or as it is."""
    if rin:
        return _rnd(a, m, emin, fmax, infv_in, RNE, fnuz, 32, 0, False)
    return a


# The two commonest modes get loops of their own, with the mode and the operation constant in
# them: the per-element code then has no dispatch left and LLVM vectorizes it (2-4x faster
# than the generic loop, measured on 1e7 float32). Every other mode shares one loop that takes
# them at run time, which keeps the number of parallel loops (and numba's compile time) small.
_K_RNE, _K_SR, _K_ANY = 0, 1, 2


@njit(inline="always")
def _elem(
    x: Any,
    y: Any,
    i: int,
    op: int,
    kind: int,
    rin: bool,
    sgn: float,
    m: int,
    emin: int,
    fmax: float,
    infv: float,
    mode: int,
    fnuz: bool,
    rb: int,
    k0: int,
    k1: int,
    offset: int,
    infv_in: float,
    qmax: int,
) -> float:
    """round(x[i] op y[i]); ``op`` and ``kind`` are constants in the specialised loops.

    ``sgn`` is -1.0 for a subtraction folded into ``op = ADD`` (negating the operand after
    rounding it is exactly what ``_exact_odd``'s SUB does).
    """
    a = _operand(np.float64(x[i]), rin, m, emin, fmax, infv_in, fnuz)
    b = sgn * _operand(np.float64(y[i]), rin, m, emin, fmax, infv_in, fnuz)
    v = _exact_odd(a, b, op, mode == RD)
    if kind == _K_RNE:
        return _rne(v, m, emin, qmax, fmax, infv, fnuz)
    r = _bits(offset + i, k0, k1) if kind == _K_SR or mode >= SR else 0
    return _rnd(v, m, emin, fmax, infv, SR if kind == _K_SR else mode, fnuz, rb, r, True)


@njit(parallel=True, cache=True)
def binary(
    x: Any,
    y: Any,
    out: Any,
    op: int,
    m: int,
    emin: int,
    fmax: float,
    infv: float,
    mode: int,
    fnuz: bool,
    rb: int,
    k0: int,
    k1: int,
    offset: int,
    rin: bool,
    infv_in: float,
    qmax: int,
) -> None:
    """out[i] = round(x[i] op y[i]) for 1-D contiguous arrays; draws ``offset + i``.

    ``rin`` rounds each operand to the format (RNE, overflow value ``infv_in``) first.
    ``qmax = emax - m + 1``; mode RNE takes :func:`_rne` when ``m <= 50`` and
    ``qmax + 1075 <= 2046`` (its rounding constant is then a finite float64).
    """
    sgn = -1.0 if op == SUB else 1.0
    p = (m, emin, fmax, infv, mode, fnuz, rb, k0, k1, offset, infv_in, qmax)
    if mode == RNE and m <= 50 and qmax + 1075 <= 2046:
        if op == MUL:
            _loop(x, y, out, MUL, _K_RNE, rin, 1.0, p)
        else:
            _loop(x, y, out, ADD, _K_RNE, rin, sgn, p)
    elif mode == SR:
        if op == MUL:
            _loop(x, y, out, MUL, _K_SR, rin, 1.0, p)
        else:
            _loop(x, y, out, ADD, _K_SR, rin, sgn, p)
    else:
        _loop(x, y, out, op, _K_ANY, rin, 1.0, p)


@njit(inline="always")
def _loop(x: Any, y: Any, out: Any, op: int, kind: int, rin: bool, sgn: float, p: Any) -> None:
    m, emin, fmax, infv, mode, fnuz, rb, k0, k1, offset, infv_in, qmax = p
    for i in prange(x.size):
        out[i] = _elem(
            x,
            y,
            i,
            op,
            kind,
            rin,
            sgn,
            m,
            emin,
            fmax,
            infv,
            mode,
            fnuz,
            rb,
            k0,
            k1,
            offset,
            infv_in,
            qmax,
        )
