"""DFPLinear and DFPConv2d: drop-in layers whose GEMMs are DFP-16 GEMMs (INT32 chunks).

Built by ``lowbit.nn.quantize_(model, dfp16_training())`` (the ``"dfp16"`` method handlers) or
:meth:`from_float`. They share the float layer's parameters (fp32 master weights: the
optimizer updates ``layer.weight`` as usual; the DFP-16 copy is made again every step), and
keep the counters of their three GEMMs in ``layer.dfp_stats`` (:class:`DFPLayerStats`; reset
with ``layer.dfp_stats.reset()``). :func:`lowbit.nn.dequantize_` swaps the float layers back.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lowbit.methods.dfp.functional import DFPConv2dFunction, DFPLayerStats, DFPLinearFunction
from lowbit.methods.dfp.settings import DFPSettings
from lowbit.nn.config import QuantConfig
from lowbit.nn.functional import derive_seed
from lowbit.nn.layers import QuantLayer


class _Describe:
    """What ``lowbit.nn.summary`` shows for one role of a DFP layer."""

    def __init__(self, text: str) -> None:
        self.text = text

    def describe(self) -> str:
        return self.text


class _DFPLayer(QuantLayer):
    """Shared setup of the DFP layers (a QuantLayer, so summary/dequantize_ know them)."""

    ROLES: ClassVar[tuple[str, ...]] = ("weight", "act", "output", "grad_act", "grad_weight")
    ACT_ATTRS: ClassVar[tuple[tuple[str, int], ...]] = (("act_quant", -1),)

    dfp: DFPSettings
    dfp_stats: DFPLayerStats

    def configure(self, config: QuantConfig, name: str = "") -> None:
        """Read the DFP settings from ``config.method_args`` (ValueError on bad ones)."""
        assert isinstance(self, nn.Module)
        if not isinstance(config, QuantConfig):
            raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
        self.dfp = DFPSettings.from_args(config.method_args)
        self.lowbit_layer_config = config
        self.lowbit_name = name
        self.lowbit_gemm = None  # QuantLayer's emulated-GEMM slot: DFP layers use their own
        self.dfp_stats = DFPLayerStats()
        self._buffers.pop("lowbit_step", None)
        if self.dfp.grad_mode == "sr":
            dev = self.weight.device  # type: ignore[attr-defined]
            self.register_buffer("lowbit_step", torch.zeros((), dtype=torch.int64, device=dev))

    def quantizers(self) -> dict[str, Any]:
        s = self.dfp
        q = f"dfp{s.bits} rne"
        chunk = "unchunked" if s.chunk is None else f"chunk {s.chunk}"
        gemm = f"fp32 (int{s.acc_bits} chunks, {chunk})"
        return {
            "weight": _Describe(q),
            "act": _Describe(q),
            "output": _Describe(gemm),
            "grad_act": _Describe(f"dfp{s.bits} {s.grad_mode}"),
            "grad_weight": _Describe(gemm),
        }

    def to_float(self) -> nn.Module:
        mod = super().to_float()
        for attr in ("dfp", "dfp_stats"):
            mod.__dict__.pop(attr, None)
        return mod

    def _grad_seed(self) -> int:
        step = self._next_step()
        if self.dfp.grad_mode != "sr":
            return 0
        return derive_seed(self.lowbit_layer_config.seed, self.lowbit_name, "grad_act", step)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.dfp.describe()}"


class DFPLinear(_DFPLayer, nn.Linear):
    """``nn.Linear`` computing its forward and both backward GEMMs as DFP-16 GEMMs."""

    FLOAT_TYPE = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        config: QuantConfig | None = None,
        name: str = "",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        from lowbit.methods.dfp.settings import dfp16_training

        self.configure(config or dfp16_training(), name)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return DFPLinearFunction.apply(
            input, self.weight, self.bias, self.dfp, self.dfp_stats, self._grad_seed()
        )


class DFPConv2d(_DFPLayer, nn.Conv2d):
    """``nn.Conv2d`` (groups = 1, zero padding) with DFP-16 GEMMs via ``unfold``."""

    FLOAT_TYPE = nn.Conv2d

    def __init__(
        self, *args: Any, config: QuantConfig | None = None, name: str = "", **kwargs: Any
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        check_conv(self)
        from lowbit.methods.dfp.settings import dfp16_training

        self.configure(config or dfp16_training(), name)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() != 4:
            raise ValueError(f"DFPConv2d takes (batch, C, H, W) input, got {tuple(input.shape)}")
        return DFPConv2dFunction.apply(
            input,
            self.weight,
            self.bias,
            tuple(self.stride),
            _padding(self),
            tuple(self.dilation),
            self.dfp,
            self.dfp_stats,
            self._grad_seed(),
        )


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    p = conv.padding
    if p == "valid":
        return (0, 0)
    return (int(p[0]), int(p[1]))  # type: ignore[index]


def check_conv(conv: nn.Conv2d) -> None:
    """Raise NotImplementedError for the convolutions DFPConv2d does not cover (quantize_
    then leaves them fp32 and says why in its summary)."""
    if conv.groups != 1:
        raise NotImplementedError(f"groups={conv.groups}: DFPConv2d supports groups=1")
    if conv.padding_mode != "zeros":
        raise NotImplementedError(f"padding_mode={conv.padding_mode!r}: DFPConv2d supports 'zeros'")
    if conv.padding == "same":
        raise NotImplementedError("padding='same': DFPConv2d takes explicit padding")


def linear_handler(mod: nn.Module, config: QuantConfig, name: str) -> nn.Module:
    """``register_method`` handler of ``nn.Linear``."""
    return DFPLinear.from_float(mod, config, name)


def conv2d_handler(mod: nn.Module, config: QuantConfig, name: str) -> nn.Module:
    """``register_method`` handler of ``nn.Conv2d``."""
    assert isinstance(mod, nn.Conv2d)
    check_conv(mod)
    return DFPConv2d.from_float(mod, config, name)


def dfp_layers(model: nn.Module) -> dict[str, _DFPLayer]:
    """Qualified name -> DFP layer, for every DFP layer in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _DFPLayer)}


def overflow_report(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per-layer GEMM counters (``DFPLayerStats.as_dict()``) of every DFP layer."""
    return {n: m.dfp_stats.as_dict() for n, m in dfp_layers(model).items()}


def total_overflows(model: nn.Module) -> int:
    """Accumulator overflows over every GEMM of every DFP layer since the last reset."""
    return sum(m.dfp_stats.total_overflows for m in dfp_layers(model).values())


def audit_unchunked(model: nn.Module, enabled: bool = True) -> None:
    """Also run every DFP GEMM the naive way (one INT32 accumulator per output, no head-room;
    simulated step by step, slow) and count its overflows in ``dfp_stats`` — a demonstration
    of what the chunking prevents, on the model's real operands. Outputs are unchanged."""
    for m in dfp_layers(model).values():
        m.dfp_stats.audit = bool(enabled)


def reset_stats(model: nn.Module) -> None:
    """Zero the counters of every DFP layer."""
    for m in dfp_layers(model).values():
        m.dfp_stats.reset()


__all__ = [
    "DFPConv2d",
    "DFPLinear",
    "audit_unchunked",
    "check_conv",
    "conv2d_handler",
    "dfp_layers",
    "linear_handler",
    "overflow_report",
    "reset_stats",
    "total_overflows",
]
