"""Block floating point (BFP): a block of signed integer mantissas shares one exponent.

Definition used here (the "shared exponent" scheme of block floating point, e.g. the INT16
dynamic fixed point / DFP line of work):

* A block of ``block`` consecutive elements along ``axis`` shares the exponent
  ``E = floor(log2(amax)) + exp_offset``, with ``amax`` the block's largest magnitude.
* Each element is a sign-magnitude integer ``k`` with ``|k| <= 2**man_bits - 1``
  (``1 + man_bits`` bits of storage), and its value is ``k * 2**(E - man_bits + 1)``.
  With ``exp_offset = 0`` the largest element maps into ``[2**(man_bits-1), 2**man_bits)``:
  the top mantissa bit of the largest magnitude is set, as in a normalized float.
* ``k`` is ``x / 2**(E - man_bits + 1)`` rounded with any lowbit mode (exact float64 power of
  two scaling, a single rounding); results beyond ``2**man_bits - 1`` (the largest element
  rounding up, or a negative ``exp_offset``) saturate to ``±(2**man_bits - 1)``.
* ``E`` is stored in ``exp_bits`` bits as ``E + bias`` with ``bias = 2**(exp_bits-1) - 1``;
  the all-ones code means NaN, so ``E`` lies in ``[-bias, bias]`` and is clamped there (the
  E8M0 convention of OCP MX v1.0 §5.4.1). An all-zero block gets ``E = -bias``; a block with
  a NaN or ±inf is all NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.blocks._common import (
    block_amax,
    check_block,
    expand_blocks,
    floor_log2,
    ldexp,
    normalize_axis,
    scale_down_exact,
    to_float64,
)
from lowbit.formats import IntFormat
from lowbit.rounding.api import resolve_policy
from lowbit.rounding.api import round as lb_round
from lowbit.rounding.modes import RoundMode


@dataclass(frozen=True, eq=False)
class BFPTensor:
    """A BFP-encoded array.

    Attributes:
        mantissas: int64 sign-magnitude mantissas ``k`` (``|k| <= 2**man_bits - 1``) in the
            original layout; 0 in NaN blocks.
        exponents: biased shared exponents (``E + bias``; all ones = NaN) as uint16, shaped
            like ``shape`` with ``shape[axis]`` replaced by the number of blocks.
        man_bits: magnitude bits per element.
        exp_bits: bits of the shared exponent.
        axis: the (non-negative) blocked axis.
        block: elements per block.
        shape: the original shape (``(1,)`` for a 0-d input).
    """

    mantissas: np.ndarray
    exponents: np.ndarray
    man_bits: int
    exp_bits: int
    axis: int
    block: int
    shape: tuple[int, ...]

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def nbytes(self) -> float:
        """Storage in bytes at the stated bit widths (may be fractional)."""
        return (self.mantissas.size * (self.man_bits + 1) + self.exponents.size * self.exp_bits) / 8


def _check(
    man_bits: Any, exp_bits: Any, exp_offset: Any, block: Any, mode: Any, rand_bits: Any
) -> tuple[int, int, int, int, RoundMode]:
    for name, v in (("man_bits", man_bits), ("exp_bits", exp_bits), ("exp_offset", exp_offset)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if not 1 <= man_bits <= 52:
        raise ValueError(f"man_bits={man_bits} is out of range; accepted: 1..52")
    if not 2 <= exp_bits <= 12:
        raise ValueError(f"exp_bits={exp_bits} is out of range; accepted: 2..12")
    blk = check_block(block)
    pol = resolve_policy(IntFormat(int(man_bits) + 1), mode, "saturate", True, rand_bits)
    return int(man_bits), int(exp_bits), int(exp_offset), blk, pol.mode


def _bfp_core(
    x64: np.ndarray,
    man_bits: int,
    exp_bits: int,
    exp_offset: int,
    block: int,
    axis: int,
    mode: RoundMode,
    seed: int | None,
    rand_bits: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(integer mantissas as float64, per-element step exponent, E per block, NaN blocks)."""
    bias = (1 << (exp_bits - 1)) - 1
    xm = np.moveaxis(x64, axis, -1)
    n = xm.shape[-1]
    amax, bad = block_amax(xm, block)
    pos = amax > 0
    e = floor_log2(np.where(pos, amax, 1.0)) + exp_offset
    e = np.where(pos, np.clip(e, -bias, bias), -bias).astype(np.int64)
    step = np.moveaxis(expand_blocks(e - man_bits + 1, block, n), -1, axis)
    bad_full = np.moveaxis(expand_blocks(bad, block, n), -1, axis)
    q = scale_down_exact(np.where(bad_full, 0.0, x64), step)
    kmax = float((1 << man_bits) - 1)
    q = np.clip(q, -kmax, kmax)  # saturate first: equal to rounding then saturating
    k = lb_round(
        np.ascontiguousarray(q), IntFormat(man_bits + 1), mode, seed=seed, rand_bits=rand_bits
    )
    return np.asarray(k, dtype=np.float64), step, e, bad


def quantize_bfp(
    x: Any,
    man_bits: int,
    *,
    block: int = 32,
    axis: int = -1,
    mode: RoundMode | str = "rne",
    exp_bits: int = 8,
    exp_offset: int = 0,
    seed: int | None = None,
    rand_bits: int | None = None,
) -> Any:
    """Quantize ``x`` to block floating point and return the dequantized values.

    See the module docstring for the exact definition: blocks of ``block`` elements along
    ``axis`` share ``E = floor(log2 amax) + exp_offset``; elements are sign-magnitude
    integers of ``man_bits`` magnitude bits times ``2**(E - man_bits + 1)``.

    Args:
        x: numpy array (float64/32/16, bfloat16), Python float or list, torch tensor or jax
            array.
        man_bits: magnitude bits per element (1..52); storage is ``1 + man_bits`` bits.
        block: elements per block (the last block may be partial).
        axis: the axis along which blocks run.
        mode: rounding mode of the mantissas (any :class:`RoundMode`).
        exp_bits: bits of the shared exponent (2..12): ``E`` is clamped to ``±(2**(exp_bits-1)-1)``.
        exp_offset: added to ``floor(log2 amax)``; ``+1`` leaves headroom so the largest
            element never saturates, negative values trade range for precision (clipping).
        seed: seed for stochastic modes (draws follow ``x``'s flat C order).
        rand_bits: resolution of SR draws / width of ``sr_bits`` noise.

    Returns:
        The dequantized array, with ``x``'s backend, dtype, shape and device (values are
        exact in float64 and rounded once to a narrower dtype when not representable).

    Raises:
        ValueError: parameter out of range (the message names the accepted range).
        TypeError: non-integer parameter or unsupported input type.
    """
    mb, eb, off, blk, m = _check(man_bits, exp_bits, exp_offset, block, mode, rand_bits)
    x64, restore, _ = to_float64(x)
    shape = x64.shape
    x64 = x64.reshape(shape or (1,))
    ax = normalize_axis(axis, len(shape))
    k, step, _, bad = _bfp_core(x64, mb, eb, off, blk, ax, m, seed, rand_bits)
    n = x64.shape[ax]
    bad_full = np.moveaxis(expand_blocks(bad, blk, n), -1, ax)
    with np.errstate(over="ignore", under="ignore"):
        out = np.where(bad_full, np.nan, ldexp(k, step))
    return restore(out.reshape(shape))


def bfp_encode(
    x: Any,
    man_bits: int,
    *,
    block: int = 32,
    axis: int = -1,
    mode: RoundMode | str = "rne",
    exp_bits: int = 8,
    exp_offset: int = 0,
    seed: int | None = None,
    rand_bits: int | None = None,
) -> BFPTensor:
    """Encode ``x`` as a :class:`BFPTensor` (same arguments as :func:`quantize_bfp`)."""
    mb, eb, off, blk, m = _check(man_bits, exp_bits, exp_offset, block, mode, rand_bits)
    x64, _, _ = to_float64(x)
    x64 = x64.reshape(x64.shape or (1,))
    ax = normalize_axis(axis, x64.ndim)
    k, _, e, bad = _bfp_core(x64, mb, eb, off, blk, ax, m, seed, rand_bits)
    bias = (1 << (eb - 1)) - 1
    codes = np.where(bad, (1 << eb) - 1, e + bias).astype(np.uint16)
    n = x64.shape[ax]
    bad_full = np.moveaxis(expand_blocks(bad, blk, n), -1, ax)
    mant = np.where(bad_full, 0.0, k).astype(np.int64)
    return BFPTensor(
        mant, np.ascontiguousarray(np.moveaxis(codes, -1, ax)), mb, eb, ax, blk, tuple(x64.shape)
    )


def bfp_decode(t: BFPTensor) -> np.ndarray:
    """float64 values of a :class:`BFPTensor` (NaN blocks decode to NaN)."""
    if not isinstance(t, BFPTensor):
        raise TypeError(f"bfp_decode takes a BFPTensor, got {type(t).__name__}")
    n = t.shape[t.axis]
    codes = np.moveaxis(t.exponents, t.axis, -1).astype(np.int64)
    nan = codes == (1 << t.exp_bits) - 1
    e = np.where(nan, 0, codes - t.bias)
    step = np.moveaxis(expand_blocks(e - t.man_bits + 1, t.block, n), -1, t.axis)
    nan_full = np.moveaxis(expand_blocks(nan, t.block, n), -1, t.axis)
    with np.errstate(over="ignore", under="ignore"):
        return np.where(nan_full, np.nan, ldexp(t.mantissas.astype(np.float64), step))


__all__ = ["BFPTensor", "bfp_decode", "bfp_encode", "quantize_bfp"]
