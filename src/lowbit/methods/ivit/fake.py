"""I-ViT's fake-quant (QAT) graph: float64 torch modules whose values are integer codes × scale.

Each module mirrors one integer operator of :mod:`lowbit.methods.ivit.ops` the way the
authors' repo (zkkli/I-ViT, ``quant_modules.py``) does it: tensors travel as ``(value,
scale)`` with ``value = code · scale``; a module recovers the codes with ``round(value /
scale)``, computes with float ops on integer-valued float64 tensors (``floor`` with a
straight-through gradient, :func:`floor_ste`) and returns ``(code' · scale', scale')``.

Why float64, and why it is exact: every intermediate here is an integer below ``2^53`` in
magnitude (int8×int8 sums, 16-bit squares summed over ≤ 1024 channels, shift-exp values
below ``2^31`` ...), so float64 holds it exactly, a float64 quotient of two such integers
floors to the integer quotient, and multiplying by a power of two is exact. The one product
that does not fit — the dyadic ``acc · b`` (up to ``2^62``) — is done by
:func:`requant_f64`, which splits ``b`` into 16-bit halves. So the forward values equal the
integer path's codes × scale bit for bit (tested), while gradients flow as in the repo —
identity through rounding and requantization, ``1/scale`` through the quantizers, the
floor-STE chain through I-LayerNorm — except that Shiftmax and ShiftGELU pass the
derivative of the float softmax / ``x·σ(1.702x)`` (their forward runs without autograd:
fewer passes over the attention maps, the same derivative the repo's floor-STE chain
approximates).

Modules (each has ``forward`` on floats and ``int_forward`` on integer tensors, the latter
using the constants the last eval forward recorded — weights, biases, ``(b, c)`` pairs,
``x0`` — and the integer operators of :mod:`~lowbit.methods.ivit.ops` only, through their
fused numba versions in ``_kernels`` for CPU tensors):

* :class:`QuantAct`: per-tensor activation quantizer with EMA range (momentum 0.95); with an
  input scale it requantizes dyadically, with an ``identity`` it does the residual add.
* :class:`QLinear`: per-output-channel ``w_bits`` weights, 32-bit bias of scale
  ``S_w · S_in``, integer accumulator.
* :class:`QShiftmax`, :class:`QShiftGELU`, :class:`QLayerNorm`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd import Function

from lowbit.methods.ivit import _kernels, ops

F64 = torch.float64
TWO31M1 = float(ops.INT32_MAX)


class _FloorSTE(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return g


class _RoundSTE(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return g


def floor_ste(x: Tensor) -> Tensor:
    """``floor`` forward, identity backward (the repo's ``floor_ste``)."""
    return _FloorSTE.apply(x)


def round_ste(x: Tensor) -> Tensor:
    """``round`` (half to even) forward, identity backward."""
    return _RoundSTE.apply(x)


class _SymQuant(Function):
    """``clamp(round(x/S))`` codes; backward ``g / S`` (the repo's ``SymmetricQuantFunction``):
    the value ``code · S`` gets the straight-through gradient 1."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor, bits: int) -> Tensor:
        lo, hi = ops.signed_range(bits)
        ctx.save_for_backward(scale)
        return torch.round(x / scale).clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        (scale,) = ctx.saved_tensors
        return g / scale, None, None


def sym_quant(x: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Float64 integer codes of ``x`` at ``scale`` with a straight-through gradient."""
    return _SymQuant.apply(x.to(F64), scale.to(F64), bits)


def pow2(k: Any) -> np.ndarray:
    """``2^k`` exactly, elementwise, as float64 (``np.ldexp``)."""
    return np.ldexp(1.0, np.asarray(k, dtype=np.int64))


def requant_f64(acc: Tensor, b: np.ndarray, c: np.ndarray) -> Tensor:
    """``⌊acc·b/2^c + 1/2⌋`` exactly, in float64, for integer-valued ``|acc| < 2^31``,
    ``|b| < 2^31`` and ``17 ≤ c ≤ 62`` (``|M| < 2^14``).

    ``b = b_h·2^16 + b_l`` (``0 ≤ b_l < 2^16``); ``acc·b_l = q_1·2^16 + r_1`` with
    ``q_1 = ⌊acc·b_l/2^16⌋``; ``T = acc·b_h + q_1`` (all below ``2^48``, exact). Then
    ``acc·b = T·2^16 + r_1`` with ``0 ≤ r_1 < 2^16``, and for ``c ≥ 17``
    ``⌊(T·2^16 + r_1 + 2^(c−1)) / 2^c⌋ = ⌊(T + 2^(c−17)) / 2^(c−16)⌋`` (``r_1/2^16 < 1``
    cannot carry past an integer).
    """
    b = np.asarray(b, dtype=np.int64)
    # b = 0 gives 0 for every c >= 1; dyadic() writes it as (0, 1)
    c = np.where(b == 0, 31, np.asarray(c, dtype=np.int64))
    if np.any(c < 17) or np.any(c > 62):
        raise ValueError(f"requant_f64 needs 17 <= c <= 62, got c in [{c.min()}, {c.max()}]")
    amax = float(acc.abs().max()) if acc.numel() else 0.0
    if amax * float(np.abs(b).max()) + float(pow2(c.max() - 1)) < 2.0**53:
        # acc·b and acc·b + 2^(c-1) are exact: one multiply, add, power-of-two scale, floor
        t_b = torch.as_tensor(b.astype(np.float64), device=acc.device)
        half = torch.as_tensor(pow2(c - 1), device=acc.device)
        inv = torch.as_tensor(pow2(-c), device=acc.device)
        return torch.floor((acc * t_b + half) * inv)
    bh = np.floor_divide(b, 1 << 16)
    bl = b - bh * (1 << 16)
    dev = acc.device
    t_bh = torch.as_tensor(bh.astype(np.float64), device=dev)
    t_bl = torch.as_tensor(bl.astype(np.float64), device=dev)
    half = torch.as_tensor(pow2(c - 17), device=dev)
    div = torch.as_tensor(pow2(c - 16), device=dev)
    q1 = torch.floor(acc * t_bl / 65536.0)
    t = acc * t_bh + q1
    return torch.floor((t + half) / div)


def _check_acc(acc: Tensor, name: str) -> None:
    if acc.numel():
        lo, hi = float(acc.min()), float(acc.max())
        if lo < ops.INT32_MIN or hi > ops.INT32_MAX:
            raise OverflowError(f"{name}: accumulator leaves int32: range [{lo}, {hi}]")


class _Requant(Function):
    """Dyadic requantization of ``x`` (scale ``s_in``), plus optionally of ``identity``
    (scale ``s_id``), to ``bits``-bit codes; backward ``g / s_out`` to both (the repo's
    ``fixedpoint_mul``)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        identity: Tensor | None,
        s_in: Tensor,
        s_id: Tensor | None,
        s_out: Tensor,
        consts: tuple[Any, ...],
        bits: int,
    ) -> Tensor:
        b, c, b2, c2 = consts
        ctx.save_for_backward(s_out)
        ctx.id_shape = None if identity is None else identity.shape
        with torch.no_grad():
            acc = torch.round(x / s_in)
            _check_acc(acc, "requant")
            out = requant_f64(acc, b, c)
            if identity is not None:
                acc2 = torch.round(identity / s_id)
                _check_acc(acc2, "requant (identity)")
                out = out + requant_f64(acc2, b2, c2)
            return out.clamp(*ops.signed_range(bits))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (s_out,) = ctx.saved_tensors
        gi = g / s_out
        gid = None if ctx.id_shape is None else gi.sum_to_size(ctx.id_shape)
        return gi, gid, None, None, None, None, None


def _as_f64(s: Any, device: torch.device | None = None) -> Tensor:
    return torch.as_tensor(s, dtype=F64, device=device).detach()


class QuantAct(nn.Module):
    """Per-tensor ``bits``-bit activation quantizer with an EMA range (the repo's ``QuantAct``).

    ``forward(x, s_in=None, identity=None, s_id=None) -> (value, s_out)``:

    * ``s_in is None``: ``x`` is a float tensor; codes ``clamp(round(x / S))``.
    * else ``x`` holds codes of scale ``s_in`` (per tensor, or per channel along the last
      axis); the codes are requantized with ``(b, c) = dyadic(s_in / S)``; with an
      ``identity`` (codes of scale ``s_id``) both branches are requantized and added.

    In training mode (and during calibration) the range is updated from the incoming real
    values (``x + identity``): the first batch sets min/max, later ones move them by
    ``momentum`` (0.95: ``new = 0.95·old + 0.05·batch``); ``S = max(|min|, |max|) /
    (2^(bits−1) − 1)``.
    """

    def __init__(self, bits: int = 8, momentum: float = 0.95) -> None:
        super().__init__()
        ops.signed_range(bits)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum}; accepted: 0 <= momentum < 1")
        self.bits = bits
        self.momentum = momentum
        self.register_buffer("min_val", torch.zeros((), dtype=F64))
        self.register_buffer("max_val", torch.zeros((), dtype=F64))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.consts: tuple[Any, ...] | None = None

    @property
    def scale(self) -> Tensor:
        """The output scale ``S`` (float64, 0-d)."""
        if not bool(self.initialized):
            raise RuntimeError("QuantAct has no range yet: calibrate (run forward in train mode)")
        return ops.symmetric_scale(self.min_val, self.max_val, self.bits)

    @torch.no_grad()
    def _observe(self, v: Tensor) -> None:
        lo, hi = v.min().to(F64), v.max().to(F64)
        if not bool(self.initialized):
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.initialized.fill_(True)
        else:
            m = self.momentum
            self.min_val.copy_(self.min_val * m + lo * (1 - m))
            self.max_val.copy_(self.max_val * m + hi * (1 - m))

    def forward(
        self,
        x: Tensor,
        s_in: Tensor | None = None,
        identity: Tensor | None = None,
        s_id: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if self.training:
            self._observe(x.detach() if identity is None else (x + identity).detach())
        s_out = self.scale.to(x.device)
        if s_in is None:
            if identity is not None:
                raise ValueError("QuantAct: an identity needs an input scale s_in")
            self.consts = None
            codes = sym_quant(x, s_out, self.bits)
            return codes * s_out, s_out
        b, c = ops.dyadic((_as_f64(s_in) / s_out).cpu())
        b2 = c2 = None
        if identity is not None:
            if s_id is None:
                raise ValueError("QuantAct: identity given without its scale s_id")
            b2, c2 = ops.dyadic((_as_f64(s_id) / s_out).cpu())
        self.consts = (b, c, b2, c2)
        codes = _Requant.apply(
            x.to(F64),
            None if identity is None else identity.to(F64),
            _as_f64(s_in, x.device),
            None if s_id is None else _as_f64(s_id, x.device),
            s_out,
            self.consts,
            self.bits,
        )
        return codes * s_out, s_out

    def int_forward(self, q: Any, identity: Any = None) -> Any:
        """Integer requantization (or residual add) with the recorded ``(b, c)``."""
        if self.consts is None:
            raise RuntimeError("QuantAct.int_forward: no recorded constants; call refresh()")
        b, c, b2, c2 = self.consts
        if identity is None:
            return _kernels.requant(q, b, c, self.bits)
        return _kernels.add_requant(q, b, c, identity, b2, c2, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, momentum={self.momentum}"


class QLinear(nn.Module):
    """Linear layer on integer codes: per-output-channel symmetric ``w_bits`` weights (scale
    from the current weights' min/max, as the repo), ``b_bits`` bias of scale ``S_w·S_in``;
    returns the accumulator ``x_int @ w_intᵀ + b_int`` times ``S_w·S_in`` (per channel)."""

    def __init__(
        self, weight: Tensor, bias: Tensor | None, w_bits: int = 8, b_bits: int = 32
    ) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"QLinear weight must be 2-D (out, in), got {tuple(weight.shape)}")
        ops.signed_range(w_bits)
        ops.signed_range(b_bits)
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().float())
        self.w_bits = w_bits
        self.b_bits = b_bits
        self.w_int: Tensor | None = None
        self.b_int: Tensor | None = None

    @classmethod
    def from_linear(cls, lin: nn.Linear, w_bits: int = 8, b_bits: int = 32) -> QLinear:
        return cls(lin.weight, lin.bias, w_bits, b_bits)

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """The float64 weight and bias that get quantized (with their autograd graph);
        subclasses fold constants into them (:class:`lowbit.methods.ivit.model.QPatchEmbed`)."""
        return self.weight.to(F64), None if self.bias is None else self.bias.to(F64)

    def weight_scale(self) -> Tensor:
        w = self.effective()[0].detach()
        return ops.symmetric_scale(w.min(dim=1).values, w.max(dim=1).values, self.w_bits)

    def forward(self, x: Tensor, s_in: Tensor) -> tuple[Tensor, Tensor]:
        s_in = _as_f64(s_in, x.device)
        if s_in.dim() != 0:
            raise ValueError("QLinear needs a per-tensor input scale")
        weight, bias = self.effective()
        wd = weight.detach()
        s_w = ops.symmetric_scale(wd.min(dim=1).values, wd.max(dim=1).values, self.w_bits)
        w_codes = sym_quant(weight, s_w[:, None], self.w_bits)
        s_acc = s_w * s_in
        x_codes = round_ste(x.to(F64) / s_in)
        acc = x_codes @ w_codes.t()
        if bias is not None:
            b_codes = sym_quant(bias, s_acc, self.b_bits)
            acc = acc + b_codes
            self.b_int = b_codes.detach().to(torch.int64)
        else:
            self.b_int = None
        dt = torch.int8 if self.w_bits <= 8 else torch.int16 if self.w_bits <= 16 else torch.int32
        self.w_int = w_codes.detach().to(dt)
        return acc * s_acc, s_acc

    def int_forward(self, q: Any) -> Any:
        """``q @ w_intᵀ + b_int`` (int8 inputs take the int8 GEMM), int64 out."""
        if self.w_int is None:
            raise RuntimeError("QLinear.int_forward: no recorded weights; call refresh()")
        return _kernels.linear(q, self.w_int, self.b_int)

    def extra_repr(self) -> str:
        return (
            f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, w_bits={self.w_bits}, "
            f"b_bits={self.b_bits}"
        )


_POW2 = torch.tensor([2.0**k for k in range(32)], dtype=F64)


@torch.no_grad()
def shift_exp_f(x: Tensor, x0: int, n: int) -> Tensor:
    """Float64 shift-exp of integer-valued ``x`` (the repo's ``int_exp_shift`` with the int32
    saturation of :func:`ops.shift_exp`): the same integers as the integer operator. No
    gradient (the autograd functions below differentiate the float function instead)."""
    x = x + torch.floor(x / 2) - torch.floor(x / 16)
    x.clamp_(min=float(n * x0))
    q = torch.floor(x / x0)
    r = x - x0 * q
    # 2^(n-q) from a table; n - q >= 31 saturates anyway, as in the integer operator
    sh = torch.clamp(n - q, max=31.0).long()
    e = torch.floor((r / 2 - x0) * _POW2.to(x.device)[sh])
    return e.clamp_(max=TWO31M1)


@torch.no_grad()
def shiftmax_f(xi: Tensor, x0: int, n: int, bits: int, mask: Tensor | None = None) -> Tensor:
    """Shiftmax codes of integer-valued float64 logits ``xi`` (float64, no gradient)."""
    if mask is None:
        e = shift_exp_f(xi - xi.amax(dim=-1, keepdim=True), x0, n)
    else:
        low = torch.full_like(xi, -(2.0**62))
        xmax = torch.where(mask, xi, low).amax(dim=-1, keepdim=True)
        d = torch.where(mask, xi - xmax, torch.zeros_like(xi))
        e = torch.where(mask, shift_exp_f(d, x0, n), torch.zeros_like(xi))
    tot = e.sum(dim=-1, keepdim=True).clamp_(1.0, TWO31M1)
    f = torch.floor(TWO31M1 / tot)
    return torch.floor(e.mul_(f).mul_(2.0 ** (bits - 32)))


@torch.no_grad()
def shiftgelu_f(xi: Tensor, x0: int, n: int, bits: int, symmetric: bool = False) -> Tensor:
    """ShiftGELU codes ``x · σ_int`` of integer-valued float64 ``xi`` (no gradient)."""
    if symmetric:
        e = shift_exp_f(-xi.abs(), x0, n)
        one = float(min((-x0) << n, ops.INT32_MAX))
        f = torch.floor(TWO31M1 / (e + one).clamp_(max=TWO31M1))
        num = torch.where(xi > 0, torch.full_like(e, one), e)
        return torch.floor(num.mul_(f).mul_(2.0 ** (bits - 32))).mul_(xi)
    xmax = xi.amax(dim=-1, keepdim=True)
    e = shift_exp_f(xi - xmax, x0, n)
    emax = shift_exp_f(-xmax, x0, n)
    tot = (e + emax).clamp_(max=TWO31M1)
    f = torch.floor(TWO31M1 / tot)
    return torch.floor(e.mul_(f).mul_(2.0 ** (bits - 32))).mul_(xi)


class _ShiftmaxFn(Function):
    """Forward: Shiftmax probabilities (codes · 2^(1−bits)); backward: the softmax Jacobian at
    those probabilities, ``p ⊙ (g − Σ g⊙p)`` (straight through the float softmax)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, s: Tensor, x0: int, n: int, bits: int, mask: Tensor | None
    ) -> Tensor:
        p = shiftmax_f(torch.round(x / s), x0, n, bits, mask).mul_(2.0 ** (1 - bits))
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (p,) = ctx.saved_tensors
        return p * (g - (g * p).sum(dim=-1, keepdim=True)), None, None, None, None, None


class _ShiftGELUFn(Function):
    """Forward: ShiftGELU values; backward: the derivative of the float ``x·σ(1.702x)``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, s: Tensor, x0: int, n: int, bits: int, symmetric: bool
    ) -> Tensor:
        ctx.save_for_backward(x)
        y = shiftgelu_f(torch.round(x / s), x0, n, bits, symmetric)
        return y.mul_(s / 2.0 ** (bits - 1))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(1.702 * x)
        return g * (sg + 1.702 * x * sg * (1 - sg)), None, None, None, None, None


class QShiftmax(nn.Module):
    """Shiftmax over the last axis: ``bits``-bit output codes of scale ``1/2^(bits−1)``.

    Gradient: straight through the float softmax (the repo differentiates its chain of
    floor-STEs, whose derivative approximates the same ``S·p(δ − p)``)."""

    def __init__(self, bits: int = 8, n: int = 15) -> None:
        super().__init__()
        ops.signed_range(bits)
        self.bits = bits
        self.n = n
        self.x0: int | None = None

    def forward(self, x: Tensor, s: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x0 = ops.exp_x0(float(s))
        self.x0 = x0
        p = _ShiftmaxFn.apply(x.to(F64), _as_f64(s, x.device), x0, self.n, self.bits, mask)
        return p, _as_f64(2.0 ** (1 - self.bits), x.device)

    def int_forward(self, q: Any, mask: Any = None) -> Any:
        if self.x0 is None:
            raise RuntimeError("QShiftmax.int_forward: no recorded x0; call refresh()")
        return _kernels.shiftmax(q, self.x0, n=self.n, bits=self.bits, mask=mask)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, n={self.n}"


class QShiftGELU(nn.Module):
    """ShiftGELU ``x·σ(1.702x)``; output scale ``S/2^(bits−1)`` (``bits`` of the sigmoid);
    ``symmetric`` selects the row-max-free sigmoid of :func:`ops.shiftgelu`.

    Gradient: that of the float ``x·σ(1.702x)``."""

    def __init__(self, bits: int = 8, n: int = 23, symmetric: bool = False) -> None:
        super().__init__()
        ops.signed_range(bits)
        self.bits = bits
        self.n = n
        self.symmetric = bool(symmetric)
        self.x0: int | None = None

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        s = _as_f64(s, x.device)
        x0 = ops.exp_x0(1.702 * float(s))
        self.x0 = x0
        y = _ShiftGELUFn.apply(x.to(F64), s, x0, self.n, self.bits, self.symmetric)
        return y, s / 2.0 ** (self.bits - 1)

    def int_forward(self, q: Any) -> Any:
        if self.x0 is None:
            raise RuntimeError("QShiftGELU.int_forward: no recorded x0; call refresh()")
        return _kernels.shiftgelu(q, self.x0, n=self.n, bits=self.bits, symmetric=self.symmetric)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, n={self.n}, symmetric={self.symmetric}"


class QLayerNorm(nn.Module):
    """I-LayerNorm with γ, β of a float ``nn.LayerNorm``; ``iters=None`` uses the converging
    integer square root instead of the repo's fixed 10 Newton steps.

    Output ``(codes + ⌊β/γ / s⌋) · s·γ`` with ``s = √C/2^(30−k)``; its scale ``s·γ`` is per
    channel (γ is applied by the next requantization, as in the repo); ``k`` is the int32
    headroom shift of :func:`ops.layernorm_shift` (0 unless some ``|β/γ| > √C``). β learns
    through a straight-through ``floor`` (the repo freezes it).
    """

    def __init__(self, ln: nn.LayerNorm, iters: int | None = ops.SQRT_ITERS) -> None:
        super().__init__()
        if ln.weight is None or ln.bias is None or len(ln.normalized_shape) != 1:
            raise ValueError("QLayerNorm needs a 1-D LayerNorm with elementwise affine")
        self.weight = nn.Parameter(ln.weight.detach().clone().float())
        self.bias = nn.Parameter(ln.bias.detach().clone().float())
        self.iters = iters
        self.channels = int(ln.normalized_shape[0])
        self.bias_int: Tensor | None = None
        self.shift = 0

    def _isqrt(self, var: Tensor) -> Tensor:
        k = torch.full_like(var, float(ops.SQRT_START))
        if self.iters is not None:
            for _ in range(self.iters):
                k = floor_ste((k + floor_ste(var / torch.clamp(k, min=1.0))) / 2)
            return k
        k = floor_ste((k + floor_ste(var / k)) / 2)
        while True:
            nxt = floor_ste((k + floor_ste(var / torch.clamp(k, min=1.0))) / 2)
            dec = nxt < k
            if not bool(dec.any()):
                return k
            k = torch.where(dec, nxt, k)

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        s = _as_f64(s, x.device)
        if s.dim() != 0:
            raise ValueError("QLayerNorm needs a per-tensor input scale")
        gamma = self.weight.to(F64)
        if bool((gamma == 0).any()):
            raise ValueError(
                "QLayerNorm: a LayerNorm weight (gamma) is 0; I-LayerNorm divides beta by gamma"
            )
        c = self.channels
        xi = round_ste(x.to(F64) / s)
        mean = floor_ste((2 * xi.sum(dim=-1, keepdim=True) + c) / (2 * c))
        y = xi - mean
        var = (y * y).sum(dim=-1, keepdim=True)
        std = torch.clamp(self._isqrt(var), min=1.0)
        f = floor_ste(TWO31M1 / std)
        ratio = self.bias.to(F64) / gamma.detach()
        k = ops.layernorm_shift(ratio.detach().cpu().numpy(), c)
        y = floor_ste(y * f / 2.0 ** (1 + k))
        s_ln = ops.layernorm_scale(c, k)
        bias_int = floor_ste(ratio / s_ln)
        self.bias_int = bias_int.detach().to(torch.int64)
        self.shift = k
        scale = s_ln * gamma
        return (y + bias_int) * scale, scale.detach()

    def int_forward(self, q: Any) -> Any:
        if self.bias_int is None:
            raise RuntimeError("QLayerNorm.int_forward: no recorded bias; call refresh()")
        return _kernels.i_layernorm(q, self.bias_int, iters=self.iters, shift=self.shift)

    def extra_repr(self) -> str:
        it = "converge" if self.iters is None else self.iters
        return f"channels={self.channels}, sqrt_iters={it}"


def qmatmul(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor) -> tuple[Tensor, Tensor]:
    """Weightless matmul of two code tensors: ``(a_int @ b_int) · sa·sb`` (exact in float64)."""
    sa, sb = _as_f64(sa, a.device), _as_f64(sb, a.device)
    acc = round_ste(a.to(F64) / sa) @ round_ste(b.to(F64) / sb)
    return acc * (sa * sb), sa * sb


__all__ = [
    "QLayerNorm",
    "QLinear",
    "QShiftGELU",
    "QShiftmax",
    "QuantAct",
    "floor_ste",
    "qmatmul",
    "requant_f64",
    "round_ste",
    "shift_exp_f",
    "sym_quant",
]
