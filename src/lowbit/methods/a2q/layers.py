"""A2QLinear / A2QConv2d: QAT layers, and their integer inference with a P-bit accumulator.

Training (fake quantization, float matmul): ``y = Q_act(x) · Q_w(W)ᵀ + b`` with the A2Q (or
plain QAT) weight quantizer and the ``N``-bit input quantizer of
:mod:`lowbit.methods.a2q.quantizers`. The layers share the float layer's parameters; ``weight``
becomes A2Q's direction ``v``, and ``g``, ``s`` and the input scale are new parameters
(``<layer>.weight_quant.log_g``, ``.log_s``, ``<layer>.act_quant.log_s``): build the optimizer
after ``quantize_``.

Integer inference (inside :func:`~lowbit.methods.a2q.evaluate.integer_inference`): each dot
product is computed by :func:`lowbit.arith.intgemm.int_matmul` on the integer codes of the
inputs and weights, accumulated in k order into a signed ``P``-bit accumulator (``"wrap"``:
two's-complement wraparound, as hardware), then ``y = acc · s_x · s_w + b`` in float (the bias
and the rescaling are outside the accumulator; the A2Q bound covers the dot product). Conv2d
uses ``unfold`` (zero padding, any stride/dilation; ``groups == 1``), reduction order
(input channel, kernel row, kernel column), as ``weight.reshape(C_out, -1)``. Every call adds
to the layer's :class:`OverflowStats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.arith.intgemm import int_matmul_detail
from lowbit.methods.a2q.config import A2QArgs
from lowbit.methods.a2q.quantizers import A2QActQuantizer, A2QWeightQuantizer
from lowbit.nn.config import QuantConfig
from lowbit.nn.layers import QuantLayer


@dataclass
class OverflowStats:
    """What a P-bit accumulator did over the integer dot products of one or more layers.

    Attributes:
        outputs: dot products computed.
        steps: accumulation steps (multiply-accumulates).
        overflow_steps: steps whose result left the accumulator range.
        overflowed_outputs: dot products with at least one overflowing step.
        wrong_outputs: dot products whose final accumulator differs from the exact value.
        max_abs: largest |exact partial sum| seen.
    """

    outputs: int = 0
    steps: int = 0
    overflow_steps: int = 0
    overflowed_outputs: int = 0
    wrong_outputs: int = 0
    max_abs: int = 0

    def add(self, other: OverflowStats) -> None:
        """Accumulate ``other`` into this record."""
        for k in ("outputs", "steps", "overflow_steps", "overflowed_outputs", "wrong_outputs"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.max_abs = max(self.max_abs, other.max_abs)

    @property
    def overflow_rate(self) -> float:
        """Fraction of dot products with an overflow (0 when none were computed)."""
        return self.overflowed_outputs / self.outputs if self.outputs else 0.0

    @property
    def wrong_rate(self) -> float:
        """Fraction of dot products whose wrapped result is wrong."""
        return self.wrong_outputs / self.outputs if self.outputs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overflow_rate": self.overflow_rate, "wrong_rate": self.wrong_rate}


class A2QLayer(QuantLayer):
    """Mixin of the A2Q layers (see the module docstring)."""

    ROLES: ClassVar[tuple[str, ...]] = ("weight", "act")
    ACT_ATTRS: ClassVar[tuple[tuple[str, int], ...]] = (("act_quant", -1),)

    weight_quant: A2QWeightQuantizer
    act_quant: A2QActQuantizer
    a2q_args: A2QArgs
    int_acc: tuple[int, str] | None
    overflow_stats: OverflowStats

    def configure(self, config: QuantConfig, name: str = "") -> None:
        assert isinstance(self, nn.Module)
        args = A2QArgs.from_config(config)
        self.lowbit_layer_config = config
        self.lowbit_name = name
        self.lowbit_gemm = None
        self.a2q_args = args
        self.weight_quant = A2QWeightQuantizer(
            self.weight,
            weight_bits=args.weight_bits,
            acc_bits=args.acc_bits,  # type: ignore[attr-defined]
            act_bits=args.act_bits,
            rounding=args.rounding,
            weight_scale=args.weight_scale,
            init=args.init,
            name=f"{name}.weight",
        ).to(self.weight.device)  # type: ignore[attr-defined]
        self.act_quant = A2QActQuantizer(args.act_bits, args.act_signed, name=f"{name}.act").to(
            self.weight.device
        )  # type: ignore[attr-defined]
        self.int_acc = None
        self.overflow_stats = OverflowStats()

    def to_float(self) -> nn.Module:
        """The float layer, its ``weight`` overwritten (in place) with the effective float
        weight ``g_eff · v / ‖v‖₁`` (unquantized), so that it computes what was trained."""
        with torch.no_grad():
            w = self.weight_quant.effective_weight(self.weight, self.act_quant.is_signed)  # type: ignore[attr-defined]
            self.weight.copy_(w)  # type: ignore[attr-defined]
        mod = super().to_float()
        for attr in ("a2q_args", "int_acc", "overflow_stats"):
            mod.__dict__.pop(attr, None)
        return mod

    # ---- helpers --------------------------------------------------------------------------
    @property
    def act_signed(self) -> bool:
        return self.act_quant.is_signed

    def _maybe_init(self) -> None:
        if bool(self.weight_quant.pending_init) and self.act_quant.decided:
            self.weight_quant.ep_init_(self.weight, self.act_signed)  # type: ignore[attr-defined]

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized float weight ``q · s`` (differentiable)."""
        self._maybe_init()
        return self.weight_quant(self.weight, self.act_signed)  # type: ignore[attr-defined]

    def int_weight(self) -> torch.Tensor:
        """The integer weights ``q``, int64, shape ``(C_out, K)``.

        Raises:
            FloatingPointError: the weight, ``g`` or ``s`` is no longer finite (diverged).
        """
        codes = self.weight_quant.codes(self.weight.detach(), self.act_signed)  # type: ignore[attr-defined]
        if not bool(torch.isfinite(codes).all()):
            raise FloatingPointError(
                f"layer {self.lowbit_name!r}: non-finite integer weights "
                "(the weight, g or s diverged)"
            )
        return codes.detach().to(torch.int64)

    def clamp_(self) -> None:
        """Project ``g`` onto the constraint (after an optimizer step)."""
        self.weight_quant.clamp_(self.act_signed)

    def _int_dot(self, x2: torch.Tensor) -> torch.Tensor:
        """``x2 (R, K)`` int64 codes @ qᵀ in the P-bit accumulator -> (R, C_out) float64
        accumulator values; updates the stats."""
        assert self.int_acc is not None
        acc_bits, overflow = self.int_acc
        self._maybe_init()
        q = self.int_weight()
        d = int_matmul_detail(
            x2.cpu(), q.t().contiguous().cpu(), acc_bits=acc_bits, overflow=overflow
        )
        exact = x2.double() @ q.t().double()  # exact: integer sums far below 2**53
        vals = d.values.to(x2.device)
        st = OverflowStats(
            outputs=vals.numel(),
            steps=vals.numel() * x2.shape[1],
            overflow_steps=int(d.overflow_counts.sum()),
            overflowed_outputs=int((d.overflow_counts > 0).sum()),
            wrong_outputs=int((vals.double() != exact).sum()),
            max_abs=int(d.max_abs.max()) if d.max_abs.numel() else 0,
        )
        self.overflow_stats.add(st)
        return vals.double()

    def _rescale(self, acc: torch.Tensor, sx: float, dtype: torch.dtype) -> torch.Tensor:
        sw = self.weight_quant.scale().detach().to(acc.device)
        return (acc * sx * sw).to(dtype)


class A2QLinear(A2QLayer, nn.Linear):
    """``nn.Linear`` with A2Q (or plain QAT) integer weights and ``N``-bit inputs."""

    FLOAT_TYPE = nn.Linear

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.int_acc is not None:
            return self._int_forward(input)
        x = self.act_quant(input)
        return F.linear(x, self.quantized_weight(), self.bias)

    @torch.no_grad()
    def _int_forward(self, input: torch.Tensor) -> torch.Tensor:
        codes, sx = self.act_quant.int_codes(input)
        acc = self._int_dot(codes.reshape(-1, self.in_features))
        y = self._rescale(acc, sx, input.dtype).reshape(*input.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class A2QConv2d(A2QLayer, nn.Conv2d):
    """``nn.Conv2d`` (``groups == 1``, zero padding) with A2Q integer weights."""

    FLOAT_TYPE = nn.Conv2d

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.int_acc is not None:
            return self._int_forward(input)
        x = self.act_quant(input)
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    @torch.no_grad()
    def _int_forward(self, input: torch.Tensor) -> torch.Tensor:
        codes, sx = self.act_quant.int_codes(input)
        xin = codes.double()  # codes are small integers: exact in float64 for unfold
        padding: Any = self.padding
        if isinstance(padding, str):  # "same" / "valid": explicit zero padding
            xin = F.pad(xin, _same_padding(self)) if padding == "same" else xin
            padding = (0, 0)
        cols = F.unfold(xin, self.kernel_size, self.dilation, padding, self.stride)
        hout, wout = _out_size(self, xin.shape[-2:], padding)
        b, k, l = cols.shape
        x2 = cols.transpose(1, 2).reshape(b * l, k).to(torch.int64)
        acc = self._int_dot(x2)
        y = self._rescale(acc, sx, input.dtype).reshape(b, l, -1).transpose(1, 2)
        y = y.reshape(b, self.out_channels, hout, wout)
        return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)


def _out_size(m: nn.Conv2d, hw: Any, padding: Any) -> tuple[int, int]:
    out = []
    for i in range(2):
        n = hw[i] + 2 * padding[i] - m.dilation[i] * (m.kernel_size[i] - 1) - 1
        out.append(n // m.stride[i] + 1)
    return out[0], out[1]


def _same_padding(m: nn.Conv2d) -> tuple[int, int, int, int]:
    pads: list[int] = []
    for i in (1, 0):  # F.pad order: last dim first
        total = m.dilation[i] * (m.kernel_size[i] - 1)
        pads += [total // 2, total - total // 2]
    return pads[0], pads[1], pads[2], pads[3]


def _linear_handler(mod: nn.Module, cfg: QuantConfig, name: str) -> nn.Module:
    return A2QLinear.from_float(mod, cfg, name)


def _conv_handler(mod: nn.Module, cfg: QuantConfig, name: str) -> nn.Module:
    assert isinstance(mod, nn.Conv2d)
    if mod.groups != 1:
        raise NotImplementedError("A2Q Conv2d with groups > 1")
    if mod.padding_mode != "zeros":
        raise NotImplementedError(f"A2Q Conv2d with padding_mode={mod.padding_mode!r}")
    return A2QConv2d.from_float(mod, cfg, name)


def register() -> None:
    """Register the handlers of methods ``"a2q"`` and ``"qat_int"`` (done on import)."""
    from lowbit.nn.quantize import register_method

    for method in ("a2q", "qat_int"):
        register_method(method, nn.Linear, _linear_handler)
        register_method(method, nn.Conv2d, _conv_handler)


def a2q_layers(model: nn.Module) -> list[tuple[str, A2QLayer]]:
    """``(name, layer)`` of every A2Q/QAT layer of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, A2QLayer)]


__all__ = ["A2QConv2d", "A2QLayer", "A2QLinear", "OverflowStats", "a2q_layers", "register"]
