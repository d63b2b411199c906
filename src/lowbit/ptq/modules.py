"""Fake-quantized Linear / Conv layers produced by :func:`lowbit.ptq.calibrate`.

Each holds its weight already quantized (``round(weight / weight_scale)`` are the integer
codes) and, unless weight-only, quantizes its input per tensor with ``act_scale`` on every
call. They subclass the torch layers, so shapes, ``state_dict`` keys (plus the scale
buffers) and ``isinstance`` checks stay those of the float model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lowbit.ptq.fake_quant import fake_quant_int


class PTQLayer:
    """Mixin: the quantization metadata and the input quantizer."""

    weight_bits: int
    act_bits: int | None
    granularity: str
    group_size: int | None
    weight_scale: torch.Tensor
    act_scale: torch.Tensor | None

    def _init_quant(
        self,
        weight_bits: int,
        act_bits: int | None,
        granularity: str,
        group_size: int | None,
        weight_scale: np.ndarray,
        act_scale: float | None,
        device: Any,
    ) -> None:
        self.weight_bits = weight_bits
        self.act_bits = act_bits if act_scale is not None else None
        self.granularity = granularity
        self.group_size = group_size
        self.register_buffer(
            "weight_scale",  # type: ignore[attr-defined]
            torch.tensor(weight_scale, dtype=torch.float32, device=device),
        )
        self.register_buffer(  # type: ignore[attr-defined]
            "act_scale",
            None
            if act_scale is None
            else torch.tensor(act_scale, dtype=torch.float32, device=device),
        )

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_scale is None or self.act_bits is None:
            return x
        return fake_quant_int(x, self.act_scale, self.act_bits)

    def quant_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.granularity == "per_group" else ""
        a = f"int{self.act_bits}" if self.act_bits is not None else "float"
        return f"weight=int{self.weight_bits} {self.granularity}{g}, act={a}"


class PTQLinear(PTQLayer, nn.Linear):
    """``nn.Linear`` with a quantized weight and (optionally) a quantized input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.quantize_input(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"


class PTQConv1d(PTQLayer, nn.Conv1d):
    """``nn.Conv1d`` with a quantized weight and (optionally) a quantized input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.quantize_input(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"


class PTQConv2d(PTQLayer, nn.Conv2d):
    """``nn.Conv2d`` with a quantized weight and (optionally) a quantized input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.quantize_input(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"


_PTQ_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: PTQLinear,
    nn.Conv1d: PTQConv1d,
    nn.Conv2d: PTQConv2d,
}
QUANTIZABLE = tuple(_PTQ_CLASSES)


def is_target(m: nn.Module) -> bool:
    """A float layer that :func:`to_ptq` can convert (not already converted)."""
    return isinstance(m, QUANTIZABLE) and not isinstance(m, PTQLayer)


@torch.no_grad()
def to_ptq(
    layer: nn.Module,
    qweight: torch.Tensor,
    *,
    weight_bits: int,
    act_bits: int | None,
    granularity: str,
    group_size: int | None,
    weight_scale: np.ndarray,
    act_scale: float | None,
) -> nn.Module:
    """The PTQ twin of a float ``layer`` holding ``qweight`` (the bias is copied)."""
    base = next(t for t in type(layer).__mro__ if t in _PTQ_CLASSES)
    cls = _PTQ_CLASSES[base]
    w = layer.weight
    kw: dict[str, Any] = dict(device=w.device, dtype=w.dtype, bias=layer.bias is not None)
    if isinstance(layer, nn.Linear):
        new = cls(layer.in_features, layer.out_features, **kw)
    else:
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            padding_mode=layer.padding_mode,
            **kw,
        )
    new.weight.copy_(qweight)
    if layer.bias is not None:
        new.bias.copy_(layer.bias)
    new.train(layer.training)
    new._init_quant(
        weight_bits, act_bits, granularity, group_size, weight_scale, act_scale, w.device
    )
    return new


__all__ = ["QUANTIZABLE", "PTQConv1d", "PTQConv2d", "PTQLayer", "PTQLinear", "is_target", "to_ptq"]
