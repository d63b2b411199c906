"""Symmetric integer fake quantization with explicit scales (lowbit's integer semantics).

``fake_quant_int(x, scale, bits)`` is ``clamp(round(x / scale), qmin, qmax) * scale`` with
``[qmin, qmax] = [-2**(bits-1), 2**(bits-1) - 1]``, the quotient and product computed in
float64 and rounded once to ``x``'s dtype, ties to even: exactly what
``lowbit.quantize_int(x, bits, scale=scale)`` computes, in torch on ``x``'s device (tested bit
for bit against it). NaN stays NaN, ±inf saturate.

Weights are quantized once, at conversion, by :func:`quantize_weight` through
``lowbit.quantize_int`` itself; scales are float32 values and each weight is
``code * scale`` rounded once to the weight's dtype, so ``round(weight / weight_scale)``
recovers the integer codes a deployment would store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lowbit.blocks.intquant import int_range, quantize_int

# The MSE search tries clipping ratios k / MSE_GRID, k = 1 .. MSE_GRID, of the largest magnitude.
MSE_GRID = 100


def scale_from_amax(amax: Any, bits: int) -> np.ndarray:
    """float32 scales ``amax / qmax`` (``1`` where ``amax`` is 0, as ``quantize_int``)."""
    a = np.asarray(amax, dtype=np.float64)
    qmax = int_range(bits)[1]
    return np.where(a > 0, a / qmax, 1.0).astype(np.float32)


def fake_quant_int(x: torch.Tensor, scale: Any, bits: int) -> torch.Tensor:
    """``clamp(round(x / scale), qmin, qmax) * scale`` (see the module docstring).

    Args:
        x: tensor of any float dtype and device.
        scale: a scalar or a tensor broadcastable to ``x`` (each > 0).
        bits: code width.
    """
    qmin, qmax = int_range(bits)
    s = torch.as_tensor(scale, dtype=torch.float64, device=x.device)
    # + 0.0 turns a code of -0 into +0: codes are integers, so zero has no sign
    q = torch.round(x.to(torch.float64) / s).clamp_(qmin, qmax).add_(0.0)
    return (q * s).to(x.dtype)


def _as_2d(w: torch.Tensor) -> torch.Tensor:
    """Weights as ``(out_channels, fan_in)``: channels on axis 0, groups run along axis 1."""
    return w.detach().reshape(w.shape[0], -1)


def _grouped(w2: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(out, n_groups, group_size)`` view of ``w2`` padded with zeros (zeros cost nothing)."""
    out, n = w2.shape
    ng = -(-n // group_size)
    pad = ng * group_size - n
    if pad:
        w2 = torch.cat([w2, w2.new_zeros(out, pad)], dim=1)
    return w2.reshape(out, ng, group_size)


def weight_amax(w: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """Largest magnitude per tensor ``()``, channel ``(out,)`` or group ``(out, n_groups)``."""
    a = _as_2d(w).abs().to(torch.float64)
    if granularity == "per_tensor":
        return a.max()
    if granularity == "per_channel":
        return a.amax(dim=1)
    return _grouped(a, group_size).amax(dim=2)


def weight_scales(
    w: torch.Tensor, bits: int, granularity: str, group_size: int, method: str
) -> np.ndarray:
    """float32 scales of ``w`` for ``method`` ``"minmax"`` or ``"mse"`` (parameter shape).

    ``mse`` tries, per tensor/channel/group, the scales of the clipping ratios
    ``k / MSE_GRID`` (``k = 1 .. MSE_GRID``) of its largest magnitude and keeps the one with
    the smallest ``sum((w - q(w))**2)`` (the first on ties).
    """
    amax = weight_amax(w, granularity, group_size)
    if method == "minmax":
        return scale_from_amax(amax.cpu().numpy(), bits)
    ratios = np.arange(1, MSE_GRID + 1, dtype=np.float64) / MSE_GRID
    cand = scale_from_amax(np.multiply.outer(ratios, amax.cpu().numpy()), bits)  # (G, *p)
    cand = cand.reshape(MSE_GRID, *amax.shape)
    w2 = _as_2d(w).to(torch.float64)
    if granularity == "per_tensor":
        members = w2.reshape(-1)  # (*param_shape, members) with param_shape = ()
    elif granularity == "per_channel":
        members = w2
    else:
        members = _grouped(w2, group_size)
    errs = []
    for c in cand:
        s = torch.from_numpy(np.asarray(c, dtype=np.float64)).to(w.device).unsqueeze(-1)
        errs.append(((members - fake_quant_int(members, s, bits)) ** 2).sum(dim=-1))
    best = torch.stack(errs).argmin(dim=0).cpu().numpy()  # first minimum on ties
    return np.take_along_axis(cand, best[None], axis=0)[0]


def quantize_weight(
    w: torch.Tensor, bits: int, granularity: str, group_size: int, scales: np.ndarray
) -> torch.Tensor:
    """``lowbit.quantize_int`` of ``w`` with the given float32 scales (shape kept)."""
    w2 = _as_2d(w)
    if granularity == "per_tensor":
        q = quantize_int(w2, bits, granularity="tensor", scale=float(scales))
    elif granularity == "per_channel":
        q = quantize_int(w2, bits, granularity="channel", axis=0, scale=scales.astype(np.float64))
    else:
        q = quantize_int(
            w2,
            bits,
            granularity="group",
            axis=1,
            group_size=group_size,
            scale=scales.astype(np.float64),
        )
    return q.reshape(w.shape)


__all__ = [
    "MSE_GRID",
    "fake_quant_int",
    "quantize_weight",
    "scale_from_amax",
    "weight_amax",
    "weight_scales",
]
