"""The Double Rounding weight quantizer: int8 storage, integer-only switch to lower widths.

Definitions (``h`` = the stored width, 8; ``l`` = the width used; ``k = h - l``):

* ``W_h = clip(round(W / s), -2^(h-1), 2^(h-1)-1)``, one learnable scale ``s`` per output
  channel, shared by every width;
* ``W_l = clip(round(W_h / 2^k), -2^(l-1), 2^(l-1)-1)``, computed from the stored integers
  alone (:func:`switch`);
* ``Ŵ_l = W_l · s · 2^k`` (:func:`dequantize`).

**Rounding is round-half-to-even** in both roundings. ``torch.round`` rounds ties to even, so
the float path used in training (``round(W_h / 2^k)``: the quotient of a small integer by a
power of two is exact in float32) and the integer path of :func:`switch` (arithmetic shift,
remainder compared with half, ties to the even quotient) give the same integers for all 256
int8 codes and every ``l`` (tested against Python ``Fraction`` rounding). Ties are frequent
here (one code in ``2^k`` is an exact tie), and ties-to-even does not push magnitudes
outwards as ties-away would.

**Floor shift** (the baseline of the paper) replaces the second rounding by truncation
towards −∞, ``W_l = W_h >> k``: an arithmetic right shift. Its range is exactly the
``l``-bit range, so it never clips.

Gradients: straight-through for both roundings (zero outside the clip range) and an LSQ-style
gradient for the scale, ``∂Ŵ/∂s = 2^k · (W_l − W/(s·2^k))`` inside the range and
``2^k · W_l`` outside, multiplied by ``g = 1/sqrt(N · Q_p)`` (``N`` elements per channel,
``Q_p = 2^(l-1) − 1``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

SWITCH_METHODS = ("round", "floor")


def check_method(method: Any) -> str:
    """Validate a switch method name ("round" or "floor")."""
    if method not in SWITCH_METHODS:
        raise ValueError(f"method={method!r}; accepted: {', '.join(map(repr, SWITCH_METHODS))}")
    return method


def check_bits(bits: Any, h: int = 8, *, name: str = "bits") -> int:
    """Validate one width: an int in ``2..h``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an int in 2..{h}, got {bits!r}")
    if not 2 <= bits <= h:
        raise ValueError(f"{name}={bits} is out of range; accepted: 2..{h}")
    return bits


def signed_range(bits: int) -> tuple[int, int]:
    """``(-2^(bits-1), 2^(bits-1) - 1)``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def switch(codes: Tensor, from_bits: int = 8, to_bits: int = 8, method: str = "round") -> Tensor:
    """Switch integer codes from ``from_bits`` to ``to_bits`` by integer operations only.

    ``method="round"``: ``clip(round_half_even(codes / 2^k), -2^(l-1), 2^(l-1)-1)`` with
    ``k = from_bits - to_bits``, done as an arithmetic shift plus a comparison of the
    remainder with ``2^(k-1)``. ``method="floor"``: ``codes >> k`` (truncation to −∞).

    Args:
        codes: an integer tensor (int8 for the stored model) with values in the signed
            ``from_bits`` range.
        from_bits: width of ``codes`` (the stored width ``h``).
        to_bits: target width, ``2 <= to_bits <= from_bits``.
        method: "round" (Double Rounding) or "floor" (the floor-shift baseline).

    Returns:
        A tensor of the same integer dtype and shape holding the ``to_bits`` codes.
    """
    if (
        not isinstance(codes, Tensor)
        or codes.dtype.is_floating_point
        or codes.is_complex()
        or codes.dtype == torch.bool
    ):
        raise TypeError(
            f"codes must be an integer torch tensor, got "
            f"{getattr(codes, 'dtype', type(codes).__name__)}"
        )
    check_bits(from_bits, 8 if from_bits <= 8 else from_bits, name="from_bits")
    check_bits(to_bits, from_bits, name="to_bits")
    check_method(method)
    k = from_bits - to_bits
    if k == 0:
        return codes.clone()
    x = codes.to(torch.int32)  # room for the carry of a rounded-up maximum code
    q = x >> k  # arithmetic shift: floor(x / 2^k)
    if method == "round":
        r = x - (q << k)  # remainder in [0, 2^k)
        half = 1 << (k - 1)
        up = (r > half) | ((r == half) & ((q & 1) == 1))
        q = q + up.to(torch.int32)
        lo, hi = signed_range(to_bits)
        q = q.clamp(lo, hi)
    return q.to(codes.dtype)


def dequantize(codes: Tensor, scale: Tensor, shift: int = 0) -> Tensor:
    """``codes · (scale · 2^shift)`` in the scale's dtype; the one formula used everywhere.

    ``scale`` has one value per output channel (shape ``(C,)``) and broadcasts over the
    trailing axes of ``codes``.
    """
    step = scale * float(2**shift)  # exact: a power of two
    step = step.reshape((-1,) + (1,) * (codes.dim() - 1)) if step.dim() == 1 else step
    return codes.to(step.dtype) * step


def _round_or_floor(x: Tensor, method: str) -> Tensor:
    return torch.round(x) if method == "round" else torch.floor(x)


class DoubleRoundFn(torch.autograd.Function):
    """Forward ``Ŵ_l`` of the module docstring; STE and LSQ gradient backward.

    Inputs: ``w`` (any shape), ``s`` (a scalar tensor, or shaped ``(C, 1, ..., 1)`` for one
    scale per slice of axis 0), the widths ``h`` and ``bits``, the LSQ factor ``g``, the
    switch method, and ``unsigned`` (codes ``[0, 2^b - 1]``, for activations after a ReLU).

    The backward is written in differentiable torch operations (no ``once_differentiable``),
    so the Hessian-vector products of HASB can differentiate through it. It uses
    ``Σ grad·(W_l − u·mask) = Σ grad·W_l − Σ (grad·mask)·w / (s·2^k)``, a few passes over the
    tensor instead of a dozen.
    """

    @staticmethod
    def forward(
        ctx: Any, w: Tensor, s: Tensor, h: int, bits: int, g: float, method: str, unsigned: bool
    ) -> Tensor:
        k = h - bits
        h_lo, h_hi = (0, (1 << h) - 1) if unsigned else signed_range(h)
        lo, hi = (0, (1 << bits) - 1) if unsigned else signed_range(bits)
        v = w / s
        c = torch.round(v).clamp_(h_lo, h_hi)
        if k:
            c = _round_or_floor(c.div_(float(2**k)), method).clamp_(lo, hi)
        c.add_(0.0)  # -0.0 -> +0.0: integer codes have one zero, so must Ŵ (bitwise)
        # straight-through region, in units of the stored step: where no clip is active
        top = min(h_hi, hi * 2**k) if method == "round" else h_hi
        mask = v.clamp(h_lo, top) == v
        ctx.save_for_backward(w, s, c, mask)
        ctx.params = (k, g)
        return c * (s * float(2**k))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        w, s, c, mask = ctx.saved_tensors
        k, g = ctx.params
        grad_w = grad_out * mask
        if s.numel() == 1:
            dot_c = torch.dot(grad_out.reshape(-1), c.reshape(-1))
            dot_w = torch.dot(grad_w.reshape(-1), w.reshape(-1))
            # dŴ/ds = 2^k (W_l - u) inside the range, 2^k W_l outside (LSQ)
            grad_s = ((dot_c * float(2**k) - dot_w / s.reshape(())) * g).reshape(s.shape)
        else:  # one scale per slice of axis 0
            n = w.shape[0]
            dot_c = torch.bmm(grad_out.reshape(n, 1, -1), c.reshape(n, -1, 1)).reshape(s.shape)
            dot_w = torch.bmm(grad_w.reshape(n, 1, -1), w.reshape(n, -1, 1)).reshape(s.shape)
            grad_s = (dot_c * float(2**k) - dot_w / s) * g
        return grad_w, grad_s, None, None, None, None, None


def lsq_grad_scale(numel: int, qp: int) -> float:
    """The LSQ scale-gradient factor ``g = 1 / sqrt(N · Q_p)``."""
    return 1.0 / math.sqrt(numel * qp)


def init_scale(weight: Tensor, h: int = 8) -> Tensor:
    """Per-channel initial scale ``max(|μ - 3σ|, |μ + 3σ|) / 2^(h-1)`` (axis 0 = channels).

    A channel whose weights are all zero gets the scale of the whole tensor (or 1), so that
    no scale is zero.
    """
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    mu = w.mean(1)
    sigma = w.std(1, unbiased=False) if w.shape[1] > 1 else torch.zeros_like(mu)
    s = torch.maximum((mu - 3 * sigma).abs(), (mu + 3 * sigma).abs()) / 2 ** (h - 1)
    fallback = s[s > 0].mean() if bool((s > 0).any()) else torch.tensor(1.0, dtype=s.dtype)
    s = torch.where(s > 0, s, fallback)
    return s.to(weight.dtype)


class DoubleRoundingQuantizer(nn.Module):
    """Per-output-channel Double Rounding quantizer of one weight tensor.

    Holds the learnable scale ``s_h`` (``scale``, shape ``(C,)``) shared by every width. The
    weight itself lives in the layer; :meth:`forward` maps it to ``Ŵ_l``.

    Args:
        channels: number of output channels (size of axis 0 of the weight).
        h: stored width (8: int8 storage).
        method: "round" (Double Rounding) or "floor" (floor-shift switching); the method used
            when :meth:`forward` is not told otherwise.
    """

    def __init__(self, channels: int, h: int = 8, method: str = "round") -> None:
        super().__init__()
        if isinstance(h, bool) or not isinstance(h, int) or not 2 <= h <= 8:
            raise ValueError(f"h={h!r}; accepted: an int in 2..8 (codes are stored as int8)")
        self.h = h
        self.method = check_method(method)
        self.scale = nn.Parameter(torch.ones(channels))

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}, h={self.h}, method={self.method!r}"

    @torch.no_grad()
    def init_from(self, weight: Tensor) -> None:
        """Set the scale from the weight's per-channel mean and standard deviation."""
        self.scale.copy_(init_scale(weight, self.h))

    def _scale_view(self, weight: Tensor) -> Tensor:
        # |s| keeps the step positive should an optimizer step push a scale through zero.
        s = self.scale.abs().clamp_min(torch.finfo(self.scale.dtype).tiny)
        return s.reshape((-1,) + (1,) * (weight.dim() - 1))

    def forward(self, weight: Tensor, bits: int, method: str | None = None) -> Tensor:
        """``Ŵ_l`` at width ``bits`` (differentiable: STE for ``weight``, LSQ for the scale)."""
        check_bits(bits, self.h)
        method = self.method if method is None else check_method(method)
        qp = (1 << (bits - 1)) - 1
        g = lsq_grad_scale(weight[0].numel(), qp)
        return DoubleRoundFn.apply(weight, self._scale_view(weight), self.h, bits, g, method, False)

    @torch.no_grad()
    def codes(self, weight: Tensor) -> Tensor:
        """The stored integers ``W_h`` as an int8 tensor."""
        lo, hi = signed_range(self.h)
        c = torch.round(weight / self._scale_view(weight)).clamp(lo, hi)
        return c.to(torch.int8)

    @torch.no_grad()
    def int_weight(self, weight: Tensor, bits: int, method: str | None = None) -> Tensor:
        """``W_l`` (int8 tensor) obtained by :func:`switch` from :meth:`codes`."""
        method = self.method if method is None else check_method(method)
        return switch(self.codes(weight), self.h, check_bits(bits, self.h), method)

    def step_scale(self) -> Tensor:
        """The per-channel step ``s_h`` actually used (shape ``(C,)``, positive)."""
        return self.scale.detach().abs().clamp_min(torch.finfo(self.scale.dtype).tiny)
