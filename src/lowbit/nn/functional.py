"""Autograd functions that round a tensor's value forward and, as configured, its gradient.

Two autograd functions carry every cast of :mod:`lowbit.nn`:

* :func:`fake_quantize` (``FakeQuantize``): forward returns ``fwd(x)`` (the rounded value;
  the identity when ``fwd`` is None); backward passes the incoming gradient straight through
  the rounding (the STE) and then rounds it with ``bwd`` (when given). So
  ``fake_quantize(x, None, bwd)`` leaves the value alone and rounds only ``dL/dx``.
* :func:`lsq_quantize` (``LSQFunction``): learned step size quantization (Esser et al.,
  "Learned Step Size Quantization", ICLR 2020). Forward ``v̂ = clamp(⌊v/s⌉, -Q_N, Q_P)·s``;
  backward

  - ``∂v̂/∂v = 1`` if ``-Q_N < v/s < Q_P`` else 0 (then rounded with ``bwd``),
  - ``∂v̂/∂s = -v/s + ⌊v/s⌉`` inside, ``-Q_N`` if ``v/s <= -Q_N``, ``Q_P`` if ``v/s >= Q_P``,
    summed over the elements sharing a scale and multiplied by the gradient scale
    ``g = 1/sqrt(N·Q_P)`` (``v/s`` here is the float32 quotient; the scale gradient itself
    is not rounded).

The value kernels are plain functions (no autograd):

* :func:`round_float`: ``lb.round`` on a contiguous tensor (the fused numba path for CPU
  float32/float64), optionally with a power-of-two scale (exact, so the value is
  ``lb.round(x / 2**e) * 2**e`` bit for bit).
* :func:`int_fake_quant`: ``clamp(round(x / s), qmin, qmax) * s``. The quotient is rounded
  once from its exact value, as :func:`lowbit.quantize_int` does in float64: the torch ops
  use the float32 quotient where it cannot sit on a false tie and recompute the few elements
  whose float32 quotient is a half-integer from the float64 quotient (the float64 quotient
  of two float32 numbers is never within rounding distance of a tie it does not sit on); a
  fused numba kernel (per-tensor RNE casts of float32 CPU tensors) takes the float64
  quotient of every element in one pass. Both give ``q * s`` as one float32 rounding of the
  exact product and agree bit for bit. Stochastic and directed modes round the float64
  quotient with ``lb.round`` and an ``IntFormat``, exactly as ``quantize_int``.
* :func:`pow2_scale`: the power-of-two ``absmax`` scale of float formats.

Random bits: every stochastic cast takes ``seed`` and ``offset`` and hands them to
``lb.round``, whose draw for element ``i`` depends only on ``(seed, offset + i)``.
:func:`stream_offset` places training step ``t`` and stream ``k`` (different tensors rounded
by one quantizer) at ``offset = (16·t + k)·2**36``, so no two casts of a run share draws
while tensors have fewer than ``2**36`` elements and runs fewer than ``2**24`` steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

from lowbit.blocks.mx import quantize_mx
from lowbit.formats import IntFormat
from lowbit.rounding.api import round as lb_round
from lowbit.rounding.modes import RoundMode, as_mode

Rounder = Callable[[torch.Tensor], torch.Tensor]

_STREAM_BITS = 36
_MAX_STREAMS = 16
_MAX_STEP = 1 << (64 - _STREAM_BITS - 4)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (``derive_seed(cfg.seed, "fc1", "act")``), via BLAKE2b.

    Stable across processes and Python versions (unlike ``hash``), so two runs with the same
    config draw the same random bits.
    """
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def stream_offset(step: int, stream: int = 0) -> int:
    """Counter offset of training step ``step``, stream ``stream`` (see module docstring)."""
    if not 0 <= stream < _MAX_STREAMS:
        raise ValueError(f"stream={stream} out of range; accepted: 0..{_MAX_STREAMS - 1}")
    if not 0 <= step < _MAX_STEP:
        raise ValueError(f"step={step} out of range; accepted: 0..{_MAX_STEP - 1}")
    return (step * _MAX_STREAMS + stream) << _STREAM_BITS


# ---- value kernels ---------------------------------------------------------------------------
def pow2_scale(amax: torch.Tensor, fmt_max: float) -> torch.Tensor:
    """Smallest power of two ``2**e >= amax / fmt_max`` (``e`` clamped to [-126, 127]).

    Zero or non-finite ``amax`` gives ``1``. Returned in ``amax``'s dtype and shape.
    """
    ratio = amax.detach().to(torch.float64) / float(fmt_max)
    m, e = torch.frexp(ratio)  # ratio = m * 2**e, 0.5 <= m < 1
    e = torch.where(m == 0.5, e - 1, e)  # an exact power of two needs no extra factor
    ok = torch.isfinite(ratio) & (ratio > 0)
    e = torch.where(ok, e, torch.zeros_like(e)).clamp_(-126, 127)
    return torch.ldexp(torch.ones_like(ratio), e).to(amax.dtype)


def round_float(
    x: torch.Tensor,
    fmt: Any,
    mode: RoundMode | str = "rne",
    *,
    overflow: str | None = None,
    seed: int = 0,
    offset: int = 0,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``lb.round(x / scale, fmt, mode) * scale`` with ``scale`` a power of two (or None).

    Args:
        x: tensor (any float dtype, any device).
        fmt: element format (float, fixed, int grid, posit) or its name.
        mode: rounding mode.
        overflow: ``lb.round``'s overflow policy.
        seed, offset: random stream of stochastic modes.
        scale: power-of-two scale broadcastable to ``x`` (exact multiply/divide), or None.
    """
    xc = x.detach()
    if scale is not None:
        xc = xc * torch.reciprocal(scale)  # exact: scale is a power of two
    out = lb_round(xc.contiguous(), fmt, mode, overflow=overflow, seed=seed, offset=offset)
    if scale is not None:
        out = out.mul_(scale)
    return out


def round_scaled(
    x: torch.Tensor,
    fmt: Any,
    mode: RoundMode | str,
    scale: float,
    *,
    overflow: str | None = None,
    seed: int = 0,
    offset: int = 0,
) -> torch.Tensor:
    """``lb.round(x / scale) * scale`` for an arbitrary fixed scale, computed in float64."""
    t = x.detach().to(torch.float64) / scale
    r = lb_round(t.contiguous(), fmt, mode, overflow=overflow, seed=seed, offset=offset)
    return (r * scale).to(x.dtype)


def int_fake_quant(
    x: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    mode: RoundMode | str = "rne",
    *,
    seed: int = 0,
    offset: int = 0,
    impl: str = "auto",
) -> torch.Tensor:
    """``clamp(round_mode(x / scale), qmin, qmax) * scale`` (see the module docstring).

    Equals ``lb.quantize_int(x, bits, scale=scale)`` bit for bit (signed codes, ``qmin =
    -2**(bits-1)``, ``qmax = 2**(bits-1) - 1``) for float32 ``x`` and ``scale``.

    Args:
        x: float tensor.
        scale: positive scale(s) broadcastable to ``x`` (float32 for float32 ``x``).
        qmin, qmax: integer code range.
        mode: rounding mode of the quotient.
        seed, offset: random stream (stochastic modes; draws follow ``x``'s flat C order).
        impl: ``"auto"`` (the fused numba kernel for a per-tensor RNE cast of a contiguous
            float32 CPU tensor, torch otherwise) or ``"torch"`` (always the torch ops).
    """
    if impl not in ("auto", "torch"):
        raise ValueError(f"impl={impl!r}; accepted: 'auto', 'torch'")
    m = as_mode(mode)
    x = x.detach()
    scale = scale.detach()
    if (
        impl == "auto"
        and m is RoundMode.RNE
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and scale.numel() == 1
        and scale.dim() <= x.dim()
        and scale.dtype == torch.float32
        and qmax - qmin < (1 << 24)
    ):
        from lowbit.kernels.int_fake_quant_numba import int_fake_quant_f32

        out = int_fake_quant_f32(x.contiguous().numpy(), float(scale), qmin, qmax)
        return torch.from_numpy(out).reshape(x.shape)
    if m is RoundMode.RNE and x.dtype in (torch.float32, torch.float64):
        s = scale.to(x.dtype)
        t = x / s
        q = torch.round(t)
        # A float32 quotient can be rounded onto a half-integer the exact quotient is not;
        # recompute those few elements from the float64 quotient.
        if x.dtype == torch.float32:
            tie = (t - q).abs_() == 0.5
            if bool(tie.any()):
                idx = tie.reshape(-1).nonzero().squeeze(1)
                xs = x.reshape(-1).index_select(0, idx).to(torch.float64)
                ss = s.expand_as(x).reshape(-1).index_select(0, idx).to(torch.float64)
                q.view(-1).index_copy_(0, idx, torch.round(xs / ss).to(q.dtype))
        # integer codes have no -0: adding +0 turns round(-0.4) = -0 into the code 0
        return q.clamp_(qmin, qmax).add_(0.0).mul_(s)
    bits = max(qmax - qmin, 1).bit_length() + 2  # any grid covering [qmin - 1, qmax + 1]
    t = x.to(torch.float64) / scale.to(torch.float64)
    t = t.clamp_(qmin - 1.0, qmax + 1.0).contiguous()
    r = lb_round(t, IntFormat(bits), m, seed=seed, offset=offset)
    r = r.clamp_(qmin, qmax).add_(0.0)
    if x.dtype in (torch.float32, torch.float64):
        return r.to(x.dtype).mul_(scale.to(x.dtype))
    return (r * scale.to(torch.float64)).to(x.dtype)  # one rounding to fp16/bf16


def mx_fake_quant(
    x: torch.Tensor,
    fmt: Any,
    mode: RoundMode | str = "rne",
    *,
    axis: int = -1,
    seed: int = 0,
    offset: int = 0,
) -> torch.Tensor:
    """``lb.quantize_mx`` with blocks along ``axis`` (moved last, so the fused kernel runs).

    Stochastic draws follow the layout with ``axis`` moved last; ``offset`` shifts the stream
    by a multiple of ``2**36``, folded into the seed because ``quantize_mx`` takes none.
    """
    x = x.detach()
    ax = axis % x.ndim if x.ndim else 0
    moved = x.ndim > 1 and ax != x.ndim - 1
    xm = x.movedim(ax, -1).contiguous() if moved else x.contiguous()
    s = derive_seed(seed, offset) if offset else seed
    out = quantize_mx(xm, fmt, axis=-1, mode=mode, seed=s)
    return out.movedim(-1, ax) if moved else out


# ---- autograd functions ----------------------------------------------------------------------
class FakeQuantize(torch.autograd.Function):
    """Forward ``fwd(x)``; backward: straight through, then ``bwd(grad)``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        fwd: Rounder | None,  # type: ignore[override]
        bwd: Rounder | None,
    ) -> torch.Tensor:
        ctx.bwd = bwd
        return fwd(x) if fwd is not None else x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        if ctx.bwd is not None and grad is not None:
            grad = ctx.bwd(grad)
        return grad, None, None


def fake_quantize(
    x: torch.Tensor, fwd: Rounder | None = None, bwd: Rounder | None = None
) -> torch.Tensor:
    """Round ``x`` with ``fwd`` in the forward pass and its gradient with ``bwd`` in backward.

    Either may be None (no rounding on that side). The gradient passes the forward rounding
    unchanged (straight-through estimator) before ``bwd`` rounds it. With ``fwd=None`` the
    result is a view of ``x`` that must not be modified in place (autograd refuses); round
    the gradient of a tensor that will be with ``x.register_hook(bwd)`` instead.
    """
    if fwd is None and bwd is None:
        return x
    return FakeQuantize.apply(x, fwd, bwd)


def round_grad(x: torch.Tensor, bwd: Rounder | None) -> torch.Tensor:
    """Identity forward; ``dL/dx`` is rounded with ``bwd`` in backward."""
    return fake_quantize(x, None, bwd)


class LSQFunction(torch.autograd.Function):
    """Learned step size quantization (see the module docstring for the gradients)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        scale: torch.Tensor,  # type: ignore[override]
        qn: int,
        qp: int,
        grad_scale: float,
        bwd: Rounder | None,
        mode: str,
        seed: int,
        offset: int,
    ) -> torch.Tensor:
        s = scale.detach().clamp_min(torch.finfo(scale.dtype).tiny)
        ctx.save_for_backward(x, s)
        ctx.scale_shape = scale.shape
        ctx.qn, ctx.qp, ctx.grad_scale, ctx.bwd = qn, qp, grad_scale, bwd
        return int_fake_quant(x, s, -qn, qp, mode, seed=seed, offset=offset)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        x, s = ctx.saved_tensors
        qn, qp = ctx.qn, ctx.qp
        t = x / s
        low = t <= -qn
        high = t >= qp
        inside = ~(low | high)
        gx = None
        if ctx.needs_input_grad[0]:
            gx = grad * inside
            if ctx.bwd is not None:
                gx = ctx.bwd(gx)
        gs = None
        if ctx.needs_input_grad[1]:
            d = torch.where(
                inside,
                torch.round(t) - t,
                torch.where(low, torch.full_like(t, -qn), torch.full_like(t, qp)),
            )
            # sum over the elements that share each scale (the broadcast dims of ``s``)
            gs = (grad * d).sum_to_size(s.shape)
            gs = gs.reshape(ctx.scale_shape) * ctx.grad_scale
        return gx, gs, None, None, None, None, None, None, None


def lsq_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    qn: int,
    qp: int,
    *,
    grad_scale: float | None = None,
    bwd: Rounder | None = None,
    mode: RoundMode | str = "rne",
    seed: int = 0,
    offset: int = 0,
) -> torch.Tensor:
    """LSQ fake quantization of ``x`` with the learnable ``scale`` (broadcastable to ``x``).

    Args:
        x: input tensor.
        scale: step size(s) ``s > 0`` (a Parameter; values below the dtype's tiny are
            clamped in the forward pass).
        qn, qp: ``Q_N`` and ``Q_P`` (codes ``-Q_N..Q_P``; signed b-bit: ``2**(b-1)`` and
            ``2**(b-1) - 1``; unsigned: 0 and ``2**b - 1``).
        grad_scale: ``g`` (None: ``1/sqrt(N·Q_P)`` with ``N = x.numel() / scale.numel()``).
        bwd: rounding of ``dL/dx`` in backward.
        mode, seed, offset: rounding of ``v/s`` (RNE by default).
    """
    if grad_scale is None:
        n = x.numel() / max(scale.numel(), 1)
        grad_scale = 1.0 / float(n * qp) ** 0.5
    return LSQFunction.apply(
        x,
        scale,
        int(qn),
        int(qp),
        float(grad_scale),
        bwd,
        as_mode(mode).value,
        int(seed),
        int(offset),
    )


__all__ = [
    "FakeQuantize",
    "LSQFunction",
    "Rounder",
    "derive_seed",
    "fake_quantize",
    "int_fake_quant",
    "lsq_quantize",
    "mx_fake_quant",
    "pow2_scale",
    "round_float",
    "round_grad",
    "round_scaled",
    "stream_offset",
]
