"""Fused numba kernel: round fp32/fp64 numpy arrays to posit<n, es> in one pass.

Same semantics as :func:`lowbit.rounding.posit.round_posit_reference` (Standard for Posit
Arithmetic 2022, §4 rounding; §6.5 NaN/±inf → NaR), bit for bit, but without building codes.
The shortcut works on the float64 bits ``ub`` of ``|x|`` (exponent ``s``, fraction ``m``):

* ``s = k * 2**es + e`` gives the regime ``k``; ``rem = n - 1 - regime_length`` bits are left
  for the exponent-and-fraction *body* ``(e << 52) | m``, whose low ``nd = es + 52 - rem``
  bits fall off.
* Cutting those ``nd`` bits off the body is the same as subtracting them from ``ub``: when
  only fraction bits fall (``nd <= 52``) this truncates the float's fraction; when exponent
  bits fall too, it lowers the float's exponent field by the cut exponent bits and clears the
  fraction. So ``lo = bits(ub - disc)`` is the posit below and ``hi = bits(lo + 2**nd)`` the
  one above (``lo * 2**(2**d)`` when ``d`` exponent bits are cut: the geometric step).
* RNE compares ``disc`` with ``2**(nd - 1)``; the tie goes to the even code, whose last bit is
  the last kept body bit, or the regime terminator when nothing of the body is kept.

fp16 and bfloat16 inputs go through fp32 (exact both ways for every posit result of such an
input; the tests check all 2**16 inputs). Nothing is compiled at import; the first call
compiles (``cache=True`` keeps it on disk). Views are taken in Python: the kernels read and
write ``uint32``/``uint64`` arrays and bit-cast scalars with two tiny LLVM intrinsics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from lowbit.formats import PositFormat
from lowbit.kernels import buffers
from lowbit.kernels._nbutil import rand_bits_lohi
from lowbit.kernels.randbits import seed_keys
from lowbit.rounding.modes import RoundMode


def _bitcast_intrinsic(src: Any, dst: Any) -> Any:
    @intrinsic
    def _cast(typingctx: Any, x: Any) -> Any:
        if x != src:
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return _cast


_f64_bits = _bitcast_intrinsic(types.float64, types.uint64)
_bits_f64 = _bitcast_intrinsic(types.uint64, types.float64)
_f32_bits = _bitcast_intrinsic(types.float32, types.uint32)
_bits_f32 = _bitcast_intrinsic(types.uint32, types.float32)

_M32 = np.uint64(0xFFFFFFFF)


@njit(inline="always")
def _round1(
    x: float,
    nb: int,
    es: int,
    maxpos: float,
    minpos: float,
    sr: bool,
    rb: int,
    two_rb: float,
    k0: Any,
    k1: Any,
    idx: Any,
) -> float:
    """Round one float64 to posit<nb + 1, es>; returns the float64 value (NaN for NaR)."""
    ax = abs(x)
    # Clamp first (never round to 0 or overflow: minpos <= |x| <= maxpos, both exact
    # posits that the steps below leave unchanged), branch-free; zero and NaR at the end.
    axc = ax if ax > minpos else minpos  # NaN too: keeps every shift below in range
    axc = axc if axc < maxpos else maxpos
    one = np.uint64(1)
    ub = _f64_bits(axc)
    s = np.int64(ub >> np.uint64(52)) - 1023
    k = s >> es
    e = s - (k << es)
    rem = nb - 1 + k if k < 0 else nb - 2 - k  # -1 only at maxpos, where nothing falls
    body = (np.uint64(e) << np.uint64(52)) | (ub & np.uint64(0xFFFFFFFFFFFFF))
    nd = np.uint64(es + 52 - rem)
    step = one << nd
    disc = body & (step - one)
    lo_b = ub - disc
    hi_b = lo_b + step
    if sr:
        lo32, hi32 = np.uint32(idx & _M32), np.uint32(idx >> np.uint64(32))
        r = np.uint64(rand_bits_lohi(lo32, hi32, np.uint32(k0), np.uint32(k1)))
        u = np.float64(r >> np.uint64(32 - rb))
        lo = _bits_f64(lo_b)
        up = u * (_bits_f64(hi_b) - lo) < (axc - lo) * two_rb
    else:
        kept_odd = (body >> nd) & one if rem > 0 else np.uint64(k < 0)
        half = step >> one
        up = (disc > half) | ((disc == half) & (kept_odd == one))
    res = _bits_f64(hi_b if up else lo_b)
    res = 0.0 if ax == 0.0 else res
    res = -res if x < 0.0 else res
    return res if ax < np.inf else np.nan  # NaN and ±inf give NaR


@njit(parallel=True, cache=True)
def _posit_f32(
    xb: Any,
    ob: Any,
    nb: int,
    es: int,
    maxpos: float,
    minpos: float,
    sr: bool,
    rb: int,
    two_rb: float,
    k0: Any,
    k1: Any,
    offset: Any,
) -> None:
    for i in prange(xb.size):
        x = np.float64(_bits_f32(xb[i]))
        res = _round1(x, nb, es, maxpos, minpos, sr, rb, two_rb, k0, k1, offset + np.uint64(i))
        ob[i] = _f32_bits(np.float32(res))


@njit(parallel=True, cache=True)
def _posit_f64(
    xb: Any,
    ob: Any,
    nb: int,
    es: int,
    maxpos: float,
    minpos: float,
    sr: bool,
    rb: int,
    two_rb: float,
    k0: Any,
    k1: Any,
    offset: Any,
) -> None:
    for i in prange(xb.size):
        x = _bits_f64(xb[i])
        res = _round1(x, nb, es, maxpos, minpos, sr, rb, two_rb, k0, k1, offset + np.uint64(i))
        ob[i] = _f64_bits(res)


def round_numpy(
    x: np.ndarray, fmt: Any, pol: Any, seed: int, offset: int, out: np.ndarray | None
) -> np.ndarray | None:
    """Round ``x`` to the posit format ``fmt``; ``None`` when this kernel does not cover it.

    Args:
        x: numpy array of float64, float32, float16 or bfloat16 (any shape).
        fmt: a :class:`~lowbit.formats.PositFormat` (anything else returns ``None``).
        pol: resolved :class:`~lowbit.rounding.reference.EdgePolicy` (modes RNE and SR).
        seed: seed of the counter-based draws (SR).
        offset: index of ``x``'s first element in the logical array (SR draws).
        out: optional preallocated output of ``x``'s shape and dtype.

    Returns:
        The rounded array (``out`` when given), or ``None``.
    """
    if not isinstance(fmt, PositFormat) or pol.mode not in (RoundMode.RNE, RoundMode.SR):
        return None
    if not isinstance(x, np.ndarray):
        return None
    if offset + x.size > 1 << 64:
        return None
    dt = x.dtype
    if dt == np.float64:
        kern, cdt, udt = _posit_f64, np.dtype(np.float64), np.uint64
    elif dt in (np.float32, np.float16) or dt.name == "bfloat16":
        kern, cdt, udt = _posit_f32, np.dtype(np.float32), np.uint32
    else:
        return None
    src = np.ascontiguousarray(x, dtype=cdt).reshape(-1)
    direct = out is not None and dt == cdt and out.flags.c_contiguous
    res = out if direct else buffers.empty(x.shape, cdt)
    sr = pol.mode is RoundMode.SR
    k0, k1 = seed_keys(seed) if sr else (0, 0)
    kern(
        src.view(udt),
        res.reshape(-1).view(udt),
        fmt.n - 1,
        fmt.es,
        fmt.max,
        fmt.min_normal,
        sr,
        pol.rand_bits,
        2.0**pol.rand_bits,
        np.uint64(k0),
        np.uint64(k1),
        np.uint64(offset),
    )
    if dt != cdt:
        with np.errstate(over="ignore"):
            res = res.astype(dt)
    if out is not None and res is not out:
        np.copyto(out, res)
        res = out
    return res
