"""Uniform integer quantization: per-tensor, per-channel or per-group scales and zero points.

Definitions (``b = bits``; ``[qmin, qmax]`` the integer range):

* signed: ``[-2**(b-1), 2**(b-1) - 1]``; ``narrow_range`` drops the most negative code,
  giving ``[-(2**(b-1) - 1), 2**(b-1) - 1]``. unsigned: ``[0, 2**b - 1]``, narrow ``[1, ...]``.
* symmetric: ``scale = amax / (2**(b-1) - 1)`` with ``amax`` the largest finite magnitude, so
  the largest magnitude maps exactly to ``±(2**(b-1) - 1)`` and back to ``±amax`` (pychop
  divides by ``2**(b-1)`` and loses a code). ``zero_point`` is 0 (signed) or ``2**(b-1)``
  (unsigned).
* asymmetric: the range is widened to include 0 (``lo = min(xmin, 0)``,
  ``hi = max(xmax, 0)``) so that 0 is exact; ``scale = (hi - lo) / (qmax - qmin)`` and
  ``zero_point = qmin - round(lo / scale)`` (ties to even), clamped to ``[qmin, qmax]``;
  for unsigned codes this is ``round(-min / scale)``.
* codes: ``q = clamp(round_mode(x / scale) + zero_point, qmin, qmax)``; values
  ``(q - zero_point) * scale``. The quotient is computed in float64 and rounded once to an
  integer with any lowbit mode (stochastic modes included), through :func:`lowbit.round`
  with an :class:`~lowbit.formats.IntFormat`.
* a group whose range is 0 (all zeros) gets ``scale = 1`` (no division by zero).
* NaN and ±inf do not take part in the range; NaN stays NaN, ±inf saturate to ``qmin`` /
  ``qmax``.

When lowbit derives the scale itself it keeps it as the exact ratio ``num / den``
(``amax / qmax`` or ``(hi - lo) / (qmax - qmin)``) and computes ``x * den / num`` and
``(q - zp) * num / den``; this is what makes ``±amax -> ±qmax -> ±amax`` exact in every mode
and dtype. :func:`int_params` reports ``scale = num / den`` rounded to float64; passing that
float back as ``scale=`` divides by the rounded value instead, which can differ in the last
place of the quotient (and so, rarely, in a code at an exact tie).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.blocks._common import (
    check_block,
    expand_blocks,
    normalize_axis,
    to_blocks,
    to_float64,
)
from lowbit.formats import IntFormat
from lowbit.rounding import backend as B
from lowbit.rounding.api import resolve_policy
from lowbit.rounding.api import round as lb_round
from lowbit.rounding.modes import RoundMode

_GRANULARITIES = ("tensor", "channel", "group")


def int_range(bits: int, *, unsigned: bool = False, narrow_range: bool = False) -> tuple[int, int]:
    """``(qmin, qmax)`` of a ``bits``-wide integer code (see the module docstring)."""
    if unsigned:
        return (1 if narrow_range else 0), (1 << bits) - 1
    half = 1 << (bits - 1)
    return (-half + 1 if narrow_range else -half), half - 1


class _Spec:
    """Validated options of one call and the layout of its parameters."""

    def __init__(
        self,
        shape: tuple[int, ...],
        bits: Any,
        symmetric: Any,
        granularity: Any,
        axis: Any,
        group_size: Any,
        mode: Any,
        narrow_range: Any,
        unsigned: Any,
        rand_bits: Any,
    ) -> None:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
            raise TypeError(f"bits must be an int, got {bits!r}")
        for name, v in (
            ("symmetric", symmetric),
            ("narrow_range", narrow_range),
            ("unsigned", unsigned),
        ):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {v!r}")
        lo_bits = 2 if (symmetric or not unsigned) else 1
        if not lo_bits <= bits <= 32:
            raise ValueError(
                f"bits={bits} is out of range; accepted: {lo_bits}..32 for "
                f"{'unsigned' if unsigned else 'signed'}"
                f"{' symmetric' if symmetric else ''} codes"
            )
        if granularity not in _GRANULARITIES:
            raise ValueError(
                f"granularity={granularity!r}; accepted: {', '.join(map(repr, _GRANULARITIES))}"
            )
        self.bits = int(bits)
        self.symmetric = bool(symmetric)
        self.unsigned = bool(unsigned)
        self.granularity = granularity
        self.qmin, self.qmax = int_range(
            self.bits, unsigned=self.unsigned, narrow_range=bool(narrow_range)
        )
        if self.qmin >= self.qmax:
            raise ValueError(f"bits={bits} with narrow_range leaves a single code")
        self.pol = resolve_policy(IntFormat(self.bits + 2), mode, "saturate", True, rand_bits)
        self.shape = shape
        nd = len(shape)
        self.axis = normalize_axis(axis, nd) if granularity != "tensor" else 0
        self.group_size = check_block(group_size, "group_size") if granularity == "group" else 0

    # ---- layout of per-group statistics --------------------------------------------------
    def param_shape(self, x: np.ndarray) -> tuple[int, ...]:
        if self.granularity == "tensor":
            return ()
        if self.granularity == "channel":
            return (x.shape[self.axis],)
        n = x.shape[self.axis]
        ng = -(-n // self.group_size)
        return (*x.shape[: self.axis], ng, *x.shape[self.axis + 1 :])

    def groups(self, x: np.ndarray) -> np.ndarray:
        """``x`` arranged ``(*param_shape, members)`` (groups padded with NaN: ignored)."""
        if self.granularity == "tensor":
            return x.reshape(1, -1)
        if self.granularity == "channel":
            return np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
        xm = np.moveaxis(x, self.axis, -1)
        n = xm.shape[-1]
        pad = -(-n // self.group_size) * self.group_size - n
        if pad:
            xm = np.concatenate([xm, np.full((*xm.shape[:-1], pad), np.nan)], axis=-1)
        g = to_blocks(xm, self.group_size)  # (..., ng, gs) with the axis moved last
        return np.moveaxis(g, -2, self.axis)

    def expand(self, p: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per-group values broadcast to ``x``'s shape."""
        if self.granularity == "tensor":
            return np.broadcast_to(np.reshape(p, ()), x.shape)
        if self.granularity == "channel":
            shp = [1] * x.ndim
            shp[self.axis] = x.shape[self.axis]
            return np.broadcast_to(np.reshape(p, shp), x.shape)
        n = x.shape[self.axis]
        pm = np.moveaxis(np.asarray(p), self.axis, -1)
        return np.moveaxis(expand_blocks(pm, self.group_size, n), -1, self.axis)


def _stats(spec: _Spec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(amax, lo, hi) per group over finite values (lo <= 0 <= hi)."""
    g = spec.groups(x)
    fin = np.isfinite(g)
    gz = np.where(fin, g, 0.0)
    pshape = spec.param_shape(x)
    amax = np.max(np.abs(gz), axis=-1, initial=0.0).reshape(pshape)
    lo = np.min(gz, axis=-1, initial=0.0).reshape(pshape)
    hi = np.max(gz, axis=-1, initial=0.0).reshape(pshape)
    return amax, lo, hi


def _ratio(x: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``x * den / num`` in float64 (``/num*den`` where the product would overflow)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        prod = x * den
        t = prod / num
        alt = (x / num) * den
    return np.where(np.isinf(prod) & np.isfinite(x), alt, t)


def _fit(v: np.ndarray, pshape: tuple[int, ...], name: str, granularity: str) -> np.ndarray:
    """``v`` broadcast to the parameter shape, or a ValueError naming ``name``."""
    try:
        return np.broadcast_to(v, pshape).copy()
    except ValueError:
        raise ValueError(
            f"{name} of shape {v.shape} does not fit the parameter shape "
            f"{pshape} of granularity={granularity!r}"
        ) from None


def _params(
    spec: _Spec, x: np.ndarray, scale: Any, zero_point: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(num, den, zero_point) per group: ``scale = num / den``."""
    pshape = spec.param_shape(x)
    half = 1 << (spec.bits - 1)
    if scale is not None:
        num = _fit(np.asarray(scale, dtype=np.float64), pshape, "scale", spec.granularity)
        if not (np.isfinite(num).all() and (num > 0).all()):
            raise ValueError("scale must be finite and > 0")
        den = np.ones(pshape)
        lo = _stats(spec, x)[1] if (zero_point is None and not spec.symmetric) else None
    else:
        amax, lo, hi = _stats(spec, x)
        if spec.symmetric:
            num, den = amax, np.full(pshape, float(half - 1))
        else:
            num, den = hi - lo, np.full(pshape, float(spec.qmax - spec.qmin))
        zero = num == 0
        num = np.where(zero, 1.0, num)
        den = np.where(zero, 1.0, den)
    if zero_point is not None:
        zp = np.asarray(zero_point)
        if zp.dtype.kind not in "iu" and not (np.floor(zp) == zp).all():
            raise ValueError(f"zero_point must be integer-valued, got {zero_point!r}")
        zp = _fit(zp.astype(np.int64), pshape, "zero_point", spec.granularity)
        if (zp < spec.qmin).any() or (zp > spec.qmax).any():
            raise ValueError(f"zero_point out of the code range [{spec.qmin}, {spec.qmax}]")
    elif spec.symmetric:
        zp = np.full(pshape, half if spec.unsigned else 0, dtype=np.int64)
    else:
        assert lo is not None
        r = np.rint(_ratio(lo, num, den))  # round(lo / scale), ties to even
        zp = np.clip(spec.qmin - r, spec.qmin, spec.qmax).astype(np.int64)
    return num, den, zp


def _codes(
    spec: _Spec, x: np.ndarray, num: np.ndarray, den: np.ndarray, zp: np.ndarray, seed: int | None
) -> np.ndarray:
    """float64 codes (NaN where x is NaN)."""
    numf, denf = spec.expand(num, x), spec.expand(den, x)
    zpf = spec.expand(zp, x).astype(np.float64)
    t = _ratio(x, numf, denf)
    t = np.where(np.abs(x) == numf, np.copysign(denf, x), t)  # exact: ±amax -> ±qmax
    t = np.clip(t, spec.qmin - zpf - 1.0, spec.qmax - zpf + 1.0)  # keeps the clamp below
    r = lb_round(
        np.ascontiguousarray(t),
        IntFormat(spec.bits + 2),
        spec.pol.mode,
        seed=seed,
        rand_bits=spec.pol.rand_bits,
    )
    return np.clip(np.asarray(r) + zpf, spec.qmin, spec.qmax)


def _prepare(
    x: Any,
    bits: Any,
    symmetric: Any,
    granularity: Any,
    axis: Any,
    group_size: Any,
    mode: Any,
    narrow_range: Any,
    unsigned: Any,
    rand_bits: Any,
) -> tuple[np.ndarray, tuple[int, ...], Any, _Spec]:
    """(float64 data, at least 1-d; the original shape; restore; validated options)."""
    x64, restore, _ = to_float64(x)
    shape = x64.shape
    xx = x64.reshape(shape or (1,))
    spec = _Spec(
        xx.shape,
        bits,
        symmetric,
        granularity,
        axis,
        group_size,
        mode,
        narrow_range,
        unsigned,
        rand_bits,
    )
    return xx, shape, restore, spec


def int_params(
    x: Any,
    bits: int = 8,
    *,
    symmetric: bool = True,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: int = 128,
    narrow_range: bool = False,
    unsigned: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale(s) and zero point(s) :func:`quantize_int` derives from ``x``.

    Returns:
        ``(scale, zero_point)`` as numpy float64 / int64 arrays shaped ``()`` (tensor),
        ``(x.shape[axis],)`` (channel) or ``x.shape`` with ``shape[axis]`` replaced by the
        number of groups (group).
    """
    xx, _, _, spec = _prepare(
        x, bits, symmetric, granularity, axis, group_size, "rne", narrow_range, unsigned, None
    )
    num, den, zp = _params(spec, xx, None, None)
    return np.asarray(num / den), np.asarray(zp)


def quantize_int_codes(
    x: Any,
    bits: int = 8,
    *,
    symmetric: bool = True,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: int = 128,
    mode: RoundMode | str = "rne",
    scale: Any = None,
    zero_point: Any = None,
    narrow_range: bool = False,
    unsigned: bool = False,
    seed: int | None = None,
    rand_bits: int | None = None,
) -> Any:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)`` of ``x``.

    Same arguments as :func:`quantize_int`. Returns int64 codes of ``x``'s shape: a numpy
    array for numpy input, an int64 tensor on ``x``'s device for torch, a jax integer array
    for jax.

    Raises:
        ValueError: as :func:`quantize_int`; also when ``x`` holds NaN (no integer code).
    """
    xx, shape, _, spec = _prepare(
        x, bits, symmetric, granularity, axis, group_size, mode, narrow_range, unsigned, rand_bits
    )
    if np.isnan(xx).any():
        raise ValueError("x holds NaN, which has no integer code")
    num, den, zp = _params(spec, xx, scale, zero_point)
    codes = _codes(spec, xx, num, den, zp, seed).astype(np.int64).reshape(shape)
    kind = B.backend_of(x)
    if kind == "torch":
        import torch

        return torch.from_numpy(codes).to(x.device)
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(codes)
    return codes


def quantize_int(
    x: Any,
    bits: int = 8,
    *,
    symmetric: bool = True,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: int = 128,
    mode: RoundMode | str = "rne",
    scale: Any = None,
    zero_point: Any = None,
    narrow_range: bool = False,
    unsigned: bool = False,
    seed: int | None = None,
    rand_bits: int | None = None,
) -> Any:
    """Quantize ``x`` to ``bits``-bit integers and return the dequantized values.

    See the module docstring for the definitions of scale, zero point and code range.

    Args:
        x: numpy array (float64/32/16, bfloat16), Python float or list, torch tensor or jax
            array.
        bits: code width (2..32 signed or symmetric, 1..32 unsigned asymmetric).
        symmetric: symmetric (zero point fixed) or asymmetric (min/max) scaling.
        granularity: ``"tensor"`` (one scale), ``"channel"`` (one per index of ``axis``) or
            ``"group"`` (one per ``group_size`` consecutive elements along ``axis``; the last
            group may be partial).
        axis: channel axis, or the axis the groups run along.
        group_size: elements per group for ``granularity="group"``.
        mode: rounding mode of ``x / scale`` (any :class:`RoundMode`, stochastic included).
        scale: fixed scale(s) instead of the data-derived ones; a scalar or an array of the
            parameter shape (see :func:`int_params`), each finite and > 0.
        zero_point: fixed integer zero point(s) in ``[qmin, qmax]``; by default 0 /
            ``2**(bits-1)`` (symmetric signed / unsigned) or derived from the minimum.
        narrow_range: drop the lowest code (``-2**(bits-1)``, or 0 for unsigned).
        unsigned: unsigned codes ``[0, 2**bits - 1]``.
        seed: seed for stochastic modes (draws follow ``x``'s flat C order).
        rand_bits: resolution of SR draws / width of ``sr_bits`` noise.

    Returns:
        ``(q - zero_point) * scale`` with ``x``'s backend, dtype, shape and device (computed
        in float64, rounded once to ``x``'s dtype); NaN stays NaN.

    Raises:
        ValueError: bad bits, granularity, scale or zero point (message names accepted values).
        TypeError: wrong argument types or unsupported input.
    """
    xx, shape, restore, spec = _prepare(
        x, bits, symmetric, granularity, axis, group_size, mode, narrow_range, unsigned, rand_bits
    )
    num, den, zp = _params(spec, xx, scale, zero_point)
    codes = _codes(spec, xx, num, den, zp, seed)
    numf, denf = spec.expand(num, xx), spec.expand(den, xx)
    k = codes - spec.expand(zp, xx)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.where(k == denf, numf, (k * numf) / denf)  # exact: ±qmax -> ±amax
        out = np.where(k == -denf, -numf, out)
    out = np.where(np.isnan(xx), np.nan, out)
    return restore(out.reshape(shape))


__all__ = ["int_params", "int_range", "quantize_int", "quantize_int_codes"]
