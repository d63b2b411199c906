"""Switchable layers: DRConv2d, DRLinear, per-width activation quantizers and BatchNorm.

Every switchable module has an attribute ``bits`` (the width it runs at now, set by
:func:`lowbit.methods.double_rounding.set_bits`). A layer quantizes its input activation
(per-width learnable scale) and its weight (Double Rounding from the shared int8 scale) to
``bits`` bits; a :class:`SwitchableBatchNorm2d` keeps affine parameters and running statistics
per width, plus "transitional" running statistics used when the model runs a mixed
configuration (different widths in different layers).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowbit.methods.double_rounding.quantizer import (
    DoubleRoundFn,
    DoubleRoundingQuantizer,
    check_bits,
    check_method,
    lsq_grad_scale,
)


def _check_widths(bits: Any, h: int) -> tuple[int, ...]:
    if isinstance(bits, int) and not isinstance(bits, bool):
        bits = (bits,)
    try:
        widths = tuple(bits)
    except TypeError:
        raise TypeError(f"bits must be an int or a sequence of ints, got {bits!r}") from None
    if not widths:
        raise ValueError("bits is empty; give at least one width in 2..8")
    for b in widths:
        check_bits(b, h)
    if len(set(widths)) != len(widths):
        raise ValueError(f"bits={widths} repeats a width")
    return tuple(sorted(widths, reverse=True))


class ActivationQuantizer(nn.Module):
    """Per-tensor activation quantizer with one learnable scale per width.

    The sign is decided on the first batch seen: inputs with no negative value (after a
    ReLU) get unsigned codes ``[0, 2^b - 1]``, others signed codes. Each width's scale is
    initialised on the first training batch at that width by the LSQ rule
    ``2·mean(|x|)/sqrt(Q_p)`` and then learned (LSQ gradient, ``g = 1/sqrt(N·Q_p)`` with ``N``
    the elements per sample).

    Args:
        bits: the widths this quantizer serves.
    """

    def __init__(self, bits: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = _check_widths(bits, 8)
        self.scales = nn.ParameterDict({str(b): nn.Parameter(torch.ones(())) for b in self.widths})
        self.register_buffer("initialized", torch.zeros(len(self.widths), dtype=torch.bool))
        # -1: not yet decided, 0: unsigned, 1: signed
        self.register_buffer("signed", torch.tensor(-1, dtype=torch.int8))

    def extra_repr(self) -> str:
        sign = {-1: "undecided", 0: "unsigned", 1: "signed"}[int(self.signed)]
        return f"widths={self.widths}, {sign}"

    def _range(self, bits: int) -> tuple[int, int]:
        if int(self.signed) == 0:
            return 0, (1 << bits) - 1
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def forward(self, x: Tensor, bits: int) -> Tensor:
        if bits not in self.widths:
            raise ValueError(f"bits={bits} has no activation scale; accepted: {self.widths}")
        i = self.widths.index(bits)
        if int(self.signed) < 0:
            with torch.no_grad():
                self.signed.fill_(1 if bool((x < 0).any()) else 0)
        qp = self._range(bits)[1]
        s = self.scales[str(bits)]
        if not bool(self.initialized[i]):
            with torch.no_grad():
                s.copy_((2 * x.detach().abs().mean() / qp**0.5).clamp_min(1e-8))
                self.initialized[i] = True
        g = lsq_grad_scale(max(1, x[0].numel() if x.dim() > 1 else 1), qp)
        step = s.abs().clamp_min(torch.finfo(s.dtype).tiny)
        return DoubleRoundFn.apply(x, step, bits, bits, g, "round", int(self.signed) == 0)


class _DRLayer:
    """Shared logic of DRConv2d and DRLinear (a mixin over the torch layer)."""

    weight: nn.Parameter
    weight_quant: DoubleRoundingQuantizer
    act_quant: ActivationQuantizer
    bits: int
    method: str

    def _adopt(self, src: nn.Conv2d | nn.Linear, widths: tuple[int, ...], h: int) -> None:
        """Take over ``src``'s weight and bias, then set up the quantizers."""
        with torch.no_grad():
            self.weight.copy_(src.weight)
            if src.bias is not None:
                self.bias.copy_(src.bias)  # type: ignore[attr-defined]
        self._setup(widths, h)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, widths={self.widths}, bits={self.bits}"  # type: ignore[misc]

    def _setup(self, widths: tuple[int, ...], h: int) -> None:
        self.widths = _check_widths(widths, h)
        self.h = h
        self.weight_quant = DoubleRoundingQuantizer(self.weight.shape[0], h)
        self.act_quant = ActivationQuantizer(self.widths)
        like = {"device": self.weight.device, "dtype": self.weight.dtype}
        self.weight_quant.to(**like)
        self.act_quant.to(**like)
        self.weight_quant.init_from(self.weight)
        self.bits = self.widths[0]
        self.method = "round"

    def set_bits(self, bits: int, method: str | None = None) -> None:
        """Run at width ``bits`` from now on (and switch with ``method`` if given)."""
        if bits not in self.widths:
            raise ValueError(
                f"bits={bits!r} was not trained for this layer; accepted: {self.widths}"
            )
        self.bits = bits
        if method is not None:
            self.method = check_method(method)

    def quantized_weight(self) -> Tensor:
        """``Ŵ_l`` at the current width and method: what :meth:`forward` multiplies with."""
        return self.weight_quant(self.weight, self.bits, self.method)

    def int_weight(self, bits: int | None = None, method: str | None = None) -> Tensor:
        """``W_l`` as int8 (``W_h`` when ``bits`` is ``h``)."""
        return self.weight_quant.int_weight(
            self.weight,
            self.bits if bits is None else bits,
            self.method if method is None else method,
        )


class DRConv2d(_DRLayer, nn.Conv2d):
    """A Conv2d whose input and weight are quantized to ``bits`` bits (Double Rounding).

    Build it with :meth:`from_conv` (copies the float weight and bias).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, widths: tuple[int, ...], h: int = 8) -> DRConv2d:
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode={conv.padding_mode!r}; accepted: 'zeros'")
        m = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        m._adopt(conv, widths, h)
        return m

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_quant(x, self.bits)
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class DRLinear(_DRLayer, nn.Linear):
    """A Linear layer whose input and weight are quantized to ``bits`` bits (Double Rounding).

    Build it with :meth:`from_linear`.
    """

    @classmethod
    def from_linear(cls, lin: nn.Linear, widths: tuple[int, ...], h: int = 8) -> DRLinear:
        m = cls(
            lin.in_features,
            lin.out_features,
            bias=lin.bias is not None,
            device=lin.weight.device,
            dtype=lin.weight.dtype,
        )
        m._adopt(lin, widths, h)
        return m

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_quant(x, self.bits)
        return F.linear(x, self.quantized_weight(), self.bias)


class SwitchableBatchNorm2d(nn.Module):
    """BatchNorm2d with affine parameters and running statistics per width.

    In a uniform configuration (every layer at width ``b``) the slot of ``b`` is used. When
    the model runs a mixed configuration (``mixed=True``, set by ``set_bits`` with a per-layer
    dict) this module uses the affine parameters of its own width ``bits`` (the width of the
    convolution that feeds it) and the *transitional* running statistics
    ``running_mean_mixed`` / ``running_var_mixed``, which are updated only by mixed-
    configuration batches (HASB training steps, or :func:`recalibrate_bn` for one searched
    configuration). The per-width statistics thus stay those of the uniform models.
    """

    def __init__(
        self, num_features: int, widths: tuple[int, ...], eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.widths = _check_widths(widths, 8)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.ParameterDict(
            {str(b): nn.Parameter(torch.ones(num_features)) for b in self.widths}
        )
        self.bias = nn.ParameterDict(
            {str(b): nn.Parameter(torch.zeros(num_features)) for b in self.widths}
        )
        for key in [*map(str, self.widths), "mixed"]:
            self.register_buffer(f"running_mean_{key}", torch.zeros(num_features))
            self.register_buffer(f"running_var_{key}", torch.ones(num_features))
        self.bits = self.widths[0]
        self.mixed = False

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, widths: tuple[int, ...]) -> SwitchableBatchNorm2d:
        """Every width starts from ``bn``'s affine parameters and statistics."""
        if not (bn.affine and bn.track_running_stats):
            raise ValueError(
                "only BatchNorm2d with affine=True and track_running_stats=True "
                "can be made switchable"
            )
        m = cls(
            bn.num_features,
            widths,
            eps=bn.eps,
            momentum=0.1 if bn.momentum is None else bn.momentum,
        )
        m.to(device=bn.weight.device, dtype=bn.weight.dtype)
        with torch.no_grad():
            for b in m.widths:
                m.weight[str(b)].copy_(bn.weight)
                m.bias[str(b)].copy_(bn.bias)
            for key in [*map(str, m.widths), "mixed"]:
                getattr(m, f"running_mean_{key}").copy_(bn.running_mean)
                getattr(m, f"running_var_{key}").copy_(bn.running_var)
        return m

    def extra_repr(self) -> str:
        return f"{self.num_features}, widths={self.widths}, bits={self.bits}, mixed={self.mixed}"

    def set_bits(self, bits: int, mixed: bool = False) -> None:
        if bits not in self.widths:
            raise ValueError(f"bits={bits!r} has no BatchNorm slot; accepted: {self.widths}")
        self.bits = bits
        self.mixed = bool(mixed)

    def stats_key(self) -> str:
        """The running-statistics slot in use: the width, or "mixed"."""
        return "mixed" if self.mixed else str(self.bits)

    def forward(self, x: Tensor) -> Tensor:
        key = self.stats_key()
        return F.batch_norm(
            x,
            getattr(self, f"running_mean_{key}"),
            getattr(self, f"running_var_{key}"),
            self.weight[str(self.bits)],
            self.bias[str(self.bits)],
            self.training,
            self.momentum,
            self.eps,
        )
