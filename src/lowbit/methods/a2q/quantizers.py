"""A2Q's weight quantizer (ℓ1-constrained, round toward zero) and the input quantizer.

Weights, per output channel ``c`` (the weight reshaped to ``(C, K)``):

    w = g · v / ‖v‖₁,   x = w / s,   q = clip(round_toward_zero(x), -2**(M-1), 2**(M-1) - 1)

with ``v`` the layer's own ``weight`` parameter, ``g`` and ``s`` per-channel parameters (kept
in log domain, ``g = exp(log_g)``, ``s = exp(log_s)``, so that Adam's step is relative and
they stay positive) and the constraint ``g <= s · T`` applied in every forward pass
(``g_eff = min(g, s·T)``) and, after optimizer steps, to the stored parameter
(:meth:`A2QWeightQuantizer.clamp_`). Then ``‖x‖₁ = g_eff / s <= T``, and rounding toward zero
(and clipping) never increases a magnitude, so ``‖q‖₁ <= T``: the accumulator cannot overflow
for any input. Round-to-nearest would break this (``0.6`` rounds to ``1``) — the classic bug;
``rounding="nearest"`` exists to demonstrate it.

Floating point: ``x`` is computed in float64 as ``v · (ρ / ‖v‖₁)`` with
``ρ = min(g/s, T·(1 - 2**-30))``; the margin exceeds the float64 error of that computation
(at most ``(K + 3)·2**-53`` relative, for ``K < 2**23``), so the exact sum of the computed
``|x_i|`` stays below ``T`` and the guarantee holds for the integers actually produced, not
just in exact arithmetic.

Gradients: straight-through for the rounding (``x + (round(x) - x).detach()``), zero outside
the clip range (``torch.clamp``), and through ``g``, ``s``, ``v`` by autograd. ``weight_scale=
"max"`` fixes ``s = max|w_c| / (2**(M-1) - 1)`` from the initial weight instead of learning
it (``s`` may not follow ``w`` during training: with ``s ∝ max|w|`` the ratio ``g/s`` would not
depend on ``g`` and the constraint could not act through it).

The plain-QAT baseline (``constrained=False``) quantizes the weight directly:
``q = clip(round_half_even(w / s))`` with the same learned (or max) scale and no ℓ1 bound.

Inputs: ``N``-bit integers, unsigned ``[0, 2**N - 1]`` or signed ``[-2**(N-1), 2**(N-1) - 1]``,
with a learned per-tensor scale (log domain, initialised to ``max|x| / Q_P`` on the first batch
seen); ``signed="auto"`` decides on that first batch (any negative value: signed; inputs after
a ReLU are unsigned). The signedness is part of the bound: ``T`` is twice as large for signed
inputs, whose magnitude is at most ``2**(N-1)``. Until it is decided the weight quantizer
uses the unsigned (smaller) ``T``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lowbit.methods.a2q.bounds import l1_bound

ROUNDINGS = ("trunc", "nearest")
INITS = ("norm", "ep")
WEIGHT_SCALES = ("learned", "max")
MARGIN = 2.0**-30  # relative safety margin of the ℓ1 constraint in float64 (module docstring)


def _ste(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    return x + (rounded - x).detach()


def _project_l1(y: torch.Tensor, z: float) -> torch.Tensor:
    """Euclidean projection of each row of ``y`` onto ``{x : ‖x‖₁ <= z}`` (Duchi et al.
    2008): soft thresholding at the ``θ`` that makes the ℓ1 norm ``z`` (rows inside stay)."""
    a = y.abs()
    srt, _ = torch.sort(a, dim=1, descending=True)
    css = srt.cumsum(dim=1) - z
    j = torch.arange(1, a.shape[1] + 1, dtype=a.dtype, device=a.device)
    rho = ((srt - css / j) > 0).sum(dim=1).clamp_min(1)
    theta = (css.gather(1, (rho - 1)[:, None]) / rho[:, None]).clamp_min(0)
    return torch.sign(y) * (a - theta).clamp_min(0)


class A2QWeightQuantizer(nn.Module):
    """Per-output-channel integer weights, ℓ1-constrained (A2Q) or plain (QAT baseline).

    Args:
        weight: the initial float weight, ``(C, ...)``; sets ``g = ‖w_c‖₁`` and
            ``s = max|w_c| / (2**(M-1) - 1)`` so that initially ``w = weight``.
        weight_bits: ``M`` (2..16).
        acc_bits: ``P``, the accumulator the constraint targets (None: unconstrained).
        act_bits: ``N``, the input width of the layer.
        rounding: ``"trunc"`` (A2Q) or ``"nearest"`` (half-even; breaks the bound).
        weight_scale: ``"learned"`` or ``"max"`` (fixed from the initial weight).
        init: ``"norm"`` (A2Q: ``g = ‖w‖₁``, so the constraint scales each channel down
            uniformly) or ``"ep"`` (A2Q+'s Euclidean-projection init: project ``w/s`` onto
            the ℓ1 ball of radius ``T`` once the input signedness is known, see
            :meth:`ep_init_`).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        *,
        weight_bits: int,
        acc_bits: int | None,
        act_bits: int,
        rounding: str = "trunc",
        weight_scale: str = "learned",
        init: str = "norm",
        name: str = "",
    ) -> None:
        super().__init__()
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding={rounding!r}; accepted: {', '.join(ROUNDINGS)}")
        if weight_scale not in WEIGHT_SCALES:
            raise ValueError(f"weight_scale={weight_scale!r}; accepted: {', '.join(WEIGHT_SCALES)}")
        self.weight_bits = int(weight_bits)
        self.acc_bits = None if acc_bits is None else int(acc_bits)
        self.act_bits = int(act_bits)
        self.rounding = rounding
        self.weight_scale = weight_scale
        if init not in INITS:
            raise ValueError(f"init={init!r}; accepted: {', '.join(INITS)}")
        self.init = init
        self.qname = name
        self.qmin = -(1 << (self.weight_bits - 1))
        self.qmax = (1 << (self.weight_bits - 1)) - 1
        w = weight.detach().reshape(weight.shape[0], -1).double()
        amax = w.abs().amax(dim=1)
        s = torch.where(amax > 0, amax / self.qmax, torch.ones_like(amax))
        log_s = s.log().to(weight.dtype)
        if weight_scale == "learned":
            self.log_s = nn.Parameter(log_s)
        else:
            self.register_buffer("log_s", log_s)
        if self.constrained:
            l1 = w.abs().sum(dim=1)
            g = torch.where(l1 > 0, l1, torch.ones_like(l1))
            # not clamped here: the input signedness (hence T) may be decided on the first
            # batch; the forward pass applies the constraint in any case
            self.log_g = nn.Parameter(g.log().to(weight.dtype))
        self.register_buffer("pending_init", torch.tensor(self.constrained and init == "ep"))

    @property
    def constrained(self) -> bool:
        """Whether the ℓ1 constraint (and weight normalisation) is on: A2Q, not plain QAT."""
        return self.acc_bits is not None

    def l1_limit(self, act_signed: bool) -> float:
        """``T`` of this layer's ``P`` and ``N`` for inputs of the given signedness."""
        assert self.acc_bits is not None
        return l1_bound(self.acc_bits, self.act_bits, act_signed)

    def scale(self) -> torch.Tensor:
        """Per-channel scale ``s`` (float64, shape (C,))."""
        return self.log_s.double().exp()

    def _x(self, v: torch.Tensor, act_signed: bool) -> torch.Tensor:
        """``w / s`` per channel in float64, shape (C, K) (differentiable)."""
        v2 = v.reshape(v.shape[0], -1).double()
        s = self.scale()
        if not self.constrained:
            return v2 / s[:, None]
        tm = self.l1_limit(act_signed) * (1 - MARGIN)
        ratio = torch.clamp((self.log_g.double() - self.log_s.double()).exp(), max=tm)
        l1 = v2.abs().sum(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
        return v2 * (ratio / l1)[:, None]

    def _round(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.trunc(x) if (self.constrained and self.rounding == "trunc") else torch.round(x)
        return torch.clamp(_ste(x, r), self.qmin, self.qmax)

    def codes(self, v: torch.Tensor, act_signed: bool) -> torch.Tensor:
        """Integer codes ``q`` as float64 (C, K) with straight-through gradients."""
        return self._round(self._x(v, act_signed))

    def forward(self, v: torch.Tensor, act_signed: bool) -> torch.Tensor:
        """The fake-quantized weight ``q · s`` in ``v``'s shape and dtype."""
        q = self.codes(v, act_signed)
        return (q * self.scale()[:, None]).to(v.dtype).reshape(v.shape)

    @torch.no_grad()
    def int_weight(self, v: torch.Tensor, act_signed: bool) -> torch.Tensor:
        """Integer weights ``q`` as int64, shape (C, K)."""
        return self.codes(v.detach(), act_signed).to(torch.int64)

    @torch.no_grad()
    def effective_weight(self, v: torch.Tensor, act_signed: bool) -> torch.Tensor:
        """The float weight ``w = g_eff · v / ‖v‖₁`` (plain QAT: ``v``), in ``v``'s shape."""
        x = self._x(v, act_signed) * self.scale()[:, None]
        return x.to(v.dtype).reshape(v.shape)

    @torch.no_grad()
    def ep_init_(self, v: torch.Tensor, act_signed: bool) -> None:
        """Euclidean-projection initialisation after A2Q+ (Colbert et al., ICML 2024, arXiv
        2401.10432), in place.

        Each channel of ``y = w / s'`` is replaced by its Euclidean projection onto the ℓ1
        ball of radius ``T·(1 - margin)`` (soft thresholding, Duchi et al. 2008): the largest
        weights keep most of their value and the small ones become exactly 0, whereas scaling
        the whole channel down (``init="norm"``) lets round-toward-zero erase every weight of
        a long channel at a tight budget (and a layer of zeros has no gradient to recover).
        The scale ``s'`` is chosen per channel among ``s · 2**(-j/2)``, ``j = -16..24`` (``s``
        the max-based scale), as the one whose quantized projection is closest to ``w`` in
        the 2-norm (our choice; the projection alone fixes only the direction of the error).
        Sets ``v`` to the projection times ``s'``, ``g = ‖v‖₁`` and ``s = s'``.
        """
        if not self.constrained:
            return
        w = v.detach().reshape(v.shape[0], -1).double()
        z = self.l1_limit(act_signed) * (1 - MARGIN)
        s0 = self.scale()
        best_err = torch.full_like(s0, math.inf)
        best_s = s0.clone()
        best_x = torch.zeros_like(w)
        for j in range(-16, 25):
            sj = s0 * 2.0 ** (-j / 2)
            x = _project_l1(w / sj[:, None], z)
            q = torch.clamp(torch.trunc(x), self.qmin, self.qmax)
            err = ((w - q * sj[:, None]) ** 2).sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s = torch.where(better, sj, best_s)
            best_x = torch.where(better[:, None], x, best_x)
        v.copy_((best_x * best_s[:, None]).to(v.dtype).reshape(v.shape))
        self.log_s.copy_(best_s.log().to(self.log_s.dtype))
        l1 = v.detach().reshape(v.shape[0], -1).double().abs().sum(dim=1)
        self.log_g.copy_(torch.where(l1 > 0, l1, torch.ones_like(l1)).log().to(self.log_g.dtype))
        self.clamp_(act_signed)
        self.pending_init.fill_(False)

    @torch.no_grad()
    def clamp_(self, act_signed: bool) -> None:
        """Project the stored ``g`` onto ``g <= s · T`` (call after every optimizer step)."""
        if not self.constrained:
            return
        cap = self.log_s.double() + math.log(self.l1_limit(act_signed) * (1 - MARGIN))
        new = torch.minimum(self.log_g.double(), cap).to(self.log_g.dtype)
        # the cast may round up past the cap: step down one ulp where it did
        over = new.double() > cap
        new = torch.where(over, torch.nextafter(new, torch.full_like(new, -math.inf)), new)
        self.log_g.copy_(new)

    def describe(self) -> str:
        kind = (
            f"a2q int{self.weight_bits} P={self.acc_bits} {self.rounding}"
            if self.constrained
            else f"int{self.weight_bits} rne"
        )
        return f"{kind} per_channel {self.weight_scale}-scale"

    def extra_repr(self) -> str:
        return self.describe()


class A2QActQuantizer(nn.Module):
    """``N``-bit input quantizer, per-tensor learned scale, signed/unsigned (module docstring).

    Args:
        bits: ``N`` (2..16).
        signed: True, False or ``"auto"`` (decided on the first batch).
    """

    def __init__(self, bits: int, signed: bool | str = "auto", name: str = "") -> None:
        super().__init__()
        if not (isinstance(signed, bool) or signed == "auto"):
            raise ValueError(f"act_signed={signed!r}; accepted: True, False, 'auto'")
        self.bits = int(bits)
        self.qname = name
        self.log_s = nn.Parameter(torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        code = -1 if signed == "auto" else int(bool(signed))
        self.register_buffer("signed", torch.tensor(code, dtype=torch.int8))

    @property
    def decided(self) -> bool:
        return int(self.signed) >= 0

    @property
    def is_signed(self) -> bool:
        """Input signedness; the conservative (smaller ``T``) unsigned while undecided."""
        return int(self.signed) == 1

    def qrange(self) -> tuple[int, int]:
        """Integer range of the codes."""
        if self.is_signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    @torch.no_grad()
    def _setup(self, x: torch.Tensor) -> None:
        if not self.decided:
            self.signed.fill_(1 if bool((x < 0).any()) else 0)
        if not bool(self.initialized):
            amax = float(x.abs().max()) if x.numel() else 0.0
            qmax = self.qrange()[1]
            self.log_s.fill_(math.log(amax / qmax) if amax > 0 else 0.0)
            self.initialized.fill_(True)

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer codes as ``x``'s float dtype with STE gradients, scale ``s``)."""
        self._setup(x)
        s = self.log_s.exp().to(x.dtype)
        lo, hi = self.qrange()
        return torch.clamp(_ste(x / s, torch.round(x / s)), lo, hi), s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.codes(x)
        return c * s

    @torch.no_grad()
    def int_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(int64 codes, the scale as a Python float)."""
        c, s = self.codes(x)
        return c.to(torch.int64), float(s)

    def describe(self) -> str:
        sign = {-1: "auto", 0: "unsigned", 1: "signed"}[int(self.signed)]
        return f"{'int' if self.is_signed else 'uint'}{self.bits} {sign} lsq-scale"

    def extra_repr(self) -> str:
        return self.describe()


__all__ = ["INITS", "MARGIN", "ROUNDINGS", "WEIGHT_SCALES", "A2QActQuantizer", "A2QWeightQuantizer"]
