"""Quantized layers: Linear, Conv1d, Conv2d, Embedding and MatMul with every tensor cast.

For ``y = x·Wᵀ + b`` (Linear; Conv is the same with a convolution) the forward pass computes

    x̂ = Q_act(x),  Ŵ = Q_weight(W),  y = x̂·Ŵᵀ + b,  ŷ = Q_output(y)

in float32 (the matmul accumulates in the tensor's dtype; ``b`` is added unrounded, as an
accumulator-precision bias), and the backward pass, with ``G = R_grad_act(dL/dŷ)``:

    dL/dx = R_grad_act(G·Ŵ)     dL/dW = R_grad_weight(Gᵀ·x̂)     dL/db = R_grad_weight(Σ G)

i.e. the error signal is rounded once before it flows into both backward matmuls (what low
precision hardware does), the input gradient is rounded to ``grad_act`` and the parameter
gradients to ``grad_weight``. The roundings of ``x̂`` and ``Ŵ`` pass the gradient straight
through (LSQ quantizers apply their own masks and scale gradient instead). A role whose
format is None is not rounded; with every role None the layer computes exactly what the
float layer computes.

Embedding: ``Ŵ = Q_weight(W)``, ``y = Ŵ[idx]``, ``ŷ = Q_output(y)``; ``dL/dŷ`` is rounded to
``grad_act`` and ``dL/dW`` to ``grad_weight`` (``act`` is unused: indices are not rounded).
MatMul ``y = a @ b``: both operands are rounded with ``act`` (and their gradients with
``grad_act``), the output with ``output``.

Random streams: the quantizer of ``role`` (``"weight"``, ``"act"``, ``"output"``,
``"grad_act"``, ``"grad_weight"``; MatMul: ``"a"``, ``"b"`` for its operands) in the layer
called ``name`` draws from ``derive_seed(config.seed, name, role)``; the layer keeps a
``lowbit_step`` buffer (only when some cast is stochastic) that counts its training-mode
forward calls, and the step ``t`` and
stream (0: ``dL/dy``, ``dL/dW``; 1: ``dL/dx``, ``dL/db``; 2: ``dL/db`` of MatMul) pick the
counter offset, so runs are reproducible and every step draws fresh bits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.nn.config import QuantConfig
from lowbit.nn.functional import derive_seed, fake_quantize
from lowbit.nn.matmul import MatMul
from lowbit.nn.quantizers import Quantizer, check_spec_shape, make_quantizer

# role -> attribute holding its quantizer
_ATTRS = {"weight": "weight_quant", "act": "act_quant", "output": "output_quant",
          "grad_act": "grad_act_quant", "grad_weight": "grad_weight_quant"}


class QuantLayer:
    """Mixin of the quantized layers: quantizer setup, step counter and the cast helper.

    Subclasses set ``FLOAT_TYPE`` (the float module they replace), ``ROLES`` (the roles they
    round), ``ACT_ATTRS`` (the quantizer attributes of their inputs) and the MX block axes.
    """

    FLOAT_TYPE: ClassVar[type[nn.Module]]
    ROLES: ClassVar[tuple[str, ...]] = ("weight", "act", "output", "grad_act", "grad_weight")
    ACT_ATTRS: ClassVar[tuple[tuple[str, int], ...]] = (("act_quant", -1),)  # (attr, axis)
    WEIGHT_AXIS: ClassVar[int] = -1
    CHANNEL_AXIS: ClassVar[int] = -1  # feature axis of activations and their gradients

    lowbit_layer_config: QuantConfig
    lowbit_name: str

    # ---- construction ------------------------------------------------------------------------
    def configure(self, config: QuantConfig, name: str = "") -> None:
        """(Re)build the quantizers of this layer from a per-layer config.

        Raises:
            ValueError: the weight granularity's axis or group size does not fit the weight.
        """
        assert isinstance(self, nn.Module)
        if not isinstance(config, QuantConfig):
            raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
        self.lowbit_layer_config = config
        self.lowbit_name = name
        weight = getattr(self, "weight", None)
        device = weight.device if isinstance(weight, torch.Tensor) else None
        for role in ("weight", "output", "grad_act", "grad_weight"):
            spec = config.cast_spec(role) if role in self.ROLES else None
            q: Quantizer | None = None
            if spec is not None:
                axis = self.WEIGHT_AXIS if role in ("weight", "grad_weight") \
                    else self.CHANNEL_AXIS
                kw: dict[str, Any] = dict(seed=derive_seed(config.seed, name, role),
                                          block_axis=axis, name=f"{name}.{role}",
                                          role="weight" if role == "weight" else "act",
                                          device=device)
                if role == "weight":
                    assert isinstance(weight, torch.Tensor)
                    check_spec_shape(spec, tuple(weight.shape), name)
                    kw["init"] = weight.detach()
                q = make_quantizer(spec, **kw)
            setattr(self, _ATTRS[role], q)
        spec = config.cast_spec("act") if "act" in self.ROLES else None
        for attr, axis in self.ACT_ATTRS:
            q = None
            if spec is not None:
                q = make_quantizer(spec, seed=derive_seed(config.seed, name,
                                                          attr.removesuffix("_quant")),
                                   block_axis=axis, name=f"{name}.{attr}", role="act",
                                   device=device)
            setattr(self, attr, q)
        if "lowbit_step" in self._buffers:
            del self._buffers["lowbit_step"]
        specs = [config.cast_spec(r) for r in self.ROLES]
        if any(sp is not None and sp.stochastic for sp in specs):
            self.register_buffer("lowbit_step", torch.zeros((), dtype=torch.int64,
                                                            device=device))

    @classmethod
    def from_float(cls, mod: nn.Module, config: QuantConfig, name: str = "") -> nn.Module:
        """A quantized copy of ``mod`` that shares its parameters, buffers and hooks."""
        if type(mod) is not cls.FLOAT_TYPE:
            raise TypeError(f"{cls.__name__}.from_float takes a {cls.FLOAT_TYPE.__name__}, "
                            f"got {type(mod).__name__}")
        new = cls.__new__(cls)
        _copy_module_state(mod, new)
        new.configure(config, name)  # type: ignore[attr-defined]
        return new

    def to_float(self) -> nn.Module:
        """The float module again (same parameters, buffers and hooks; quantizers dropped)."""
        assert isinstance(self, nn.Module)
        mod = self.FLOAT_TYPE.__new__(self.FLOAT_TYPE)
        _copy_module_state(self, mod)
        for attr in (*_ATTRS.values(), *(a for a, _ in self.ACT_ATTRS)):
            mod._modules.pop(attr, None)
            mod.__dict__.pop(attr, None)
        mod._buffers.pop("lowbit_step", None)
        for attr in ("lowbit_layer_config", "lowbit_name"):
            mod.__dict__.pop(attr, None)
        return mod

    # ---- forward helpers ---------------------------------------------------------------------
    def quantizers(self) -> dict[str, Quantizer | None]:
        """Role -> quantizer (None where the role is not rounded)."""
        out: dict[str, Quantizer | None] = {}
        for role in self.ROLES:
            if role == "act":
                for attr, _ in self.ACT_ATTRS:
                    out[attr.removesuffix("_quant")] = getattr(self, attr, None)
            else:
                out[role] = getattr(self, _ATTRS[role], None)
        return out

    def _next_step(self) -> int:
        buf = getattr(self, "lowbit_step", None)
        if buf is None:
            return 0
        step = int(buf)
        if self.training:  # type: ignore[attr-defined]
            with torch.no_grad():
                buf.add_(1)
        return step

    @staticmethod
    def _cast(x: torch.Tensor, q: Quantizer | None, gq: Quantizer | None, step: int,
              gstream: int) -> torch.Tensor:
        bwd = gq.rounder(step, gstream) if gq is not None else None
        if q is None:
            return fake_quantize(x, None, bwd)
        return q(x, step, bwd)

    @staticmethod
    def _cast_output(y: torch.Tensor, q: Quantizer | None, gq: Quantizer | None,
                     step: int) -> torch.Tensor:
        """The output cast; without output rounding ``dL/dy`` is rounded by a tensor hook.

        A hook (unlike an identity autograd function, whose output would be a view) leaves
        ``y`` a plain tensor that the caller may modify in place (``ReLU(inplace=True)``);
        a hook registered before such a change still sees the gradient of ``y`` itself.
        """
        if q is not None:
            return QuantLayer._cast(y, q, gq, step, 0)
        if gq is not None and y.requires_grad:
            y.register_hook(gq.rounder(step, 0))
        return y

    def _weight_and_bias(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self._cast(self.weight, self.weight_quant, self.grad_weight_quant,  # type: ignore[attr-defined]
                       step, 0)
        b = getattr(self, "bias", None)
        if b is not None:
            b = self._cast(b, None, self.grad_weight_quant, step, 1)  # type: ignore[attr-defined]
        return w, b

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, lowbit_name={self.lowbit_name!r}" if base else \
            f"lowbit_name={self.lowbit_name!r}"


def _copy_module_state(src: nn.Module, dst: nn.Module) -> None:
    """Share ``src``'s parameters, buffers, submodules and hooks with ``dst`` (new dicts)."""
    dst.__dict__.update(src.__dict__)
    dst._parameters = dict(src._parameters)
    dst._buffers = dict(src._buffers)
    dst._modules = dict(src._modules)
    dst._non_persistent_buffers_set = set(src._non_persistent_buffers_set)


class QuantLinear(QuantLayer, nn.Linear):
    """``nn.Linear`` with quantized weight, input, output and gradients (module docstring)."""

    FLOAT_TYPE = nn.Linear
    WEIGHT_AXIS = 1
    CHANNEL_AXIS = -1

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 config: QuantConfig | None = None, name: str = "", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.configure(config or QuantConfig(), name)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        x = self._cast(input, self.act_quant, self.grad_act_quant, step, 1)
        w, b = self._weight_and_bias(step)
        y = F.linear(x, w, b)
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)


class _QuantConvNd(QuantLayer):
    WEIGHT_AXIS = 1
    CHANNEL_AXIS = 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        x = self._cast(input, self.act_quant, self.grad_act_quant, step, 1)  # type: ignore[attr-defined]
        w, b = self._weight_and_bias(step)
        y = self._conv_forward(x, w, b)  # type: ignore[attr-defined]
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)  # type: ignore[attr-defined]


class QuantConv1d(_QuantConvNd, nn.Conv1d):
    """``nn.Conv1d`` with quantized weight, input, output and gradients."""

    FLOAT_TYPE = nn.Conv1d

    def __init__(self, *args: Any, config: QuantConfig | None = None, name: str = "",
                 **kwargs: Any) -> None:
        nn.Conv1d.__init__(self, *args, **kwargs)
        self.configure(config or QuantConfig(), name)


class QuantConv2d(_QuantConvNd, nn.Conv2d):
    """``nn.Conv2d`` with quantized weight, input, output and gradients."""

    FLOAT_TYPE = nn.Conv2d

    def __init__(self, *args: Any, config: QuantConfig | None = None, name: str = "",
                 **kwargs: Any) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self.configure(config or QuantConfig(), name)


class QuantEmbedding(QuantLayer, nn.Embedding):
    """``nn.Embedding`` with a quantized table, output and gradients (no ``max_norm``)."""

    FLOAT_TYPE = nn.Embedding
    ROLES = ("weight", "output", "grad_act", "grad_weight")
    ACT_ATTRS = ()
    WEIGHT_AXIS = -1
    CHANNEL_AXIS = -1

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 config: QuantConfig | None = None, name: str = "", **kwargs: Any) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, **kwargs)
        self.configure(config or QuantConfig(), name)

    def configure(self, config: QuantConfig, name: str = "") -> None:
        if self.max_norm is not None or self.sparse:
            raise ValueError(f"layer {name!r}: QuantEmbedding supports neither max_norm (it "
                             "renormalises the table in place) nor sparse gradients")
        super().configure(config, name)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        w = self._cast(self.weight, self.weight_quant, self.grad_weight_quant, step, 0)
        y = F.embedding(input, w, self.padding_idx, None, self.norm_type,
                        self.scale_grad_by_freq, False)
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)


class QuantMatMul(QuantLayer, MatMul):
    """``a @ b`` with both operands rounded to ``act``, output to ``output``, gradients to
    ``grad_act`` (``dL/dy``: stream 0, ``dL/da``: 1, ``dL/db``: 2)."""

    FLOAT_TYPE = MatMul
    ROLES = ("act", "output", "grad_act")
    ACT_ATTRS = (("a_quant", -1), ("b_quant", -2))

    def __init__(self, *, config: QuantConfig | None = None, name: str = "") -> None:
        MatMul.__init__(self)
        self.configure(config or QuantConfig(), name)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        a = self._cast(a, self.a_quant, self.grad_act_quant, step, 1)
        b = self._cast(b, self.b_quant, self.grad_act_quant, step, 2)
        y = torch.matmul(a, b)
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)


QUANT_LAYERS: tuple[type[QuantLayer], ...] = (QuantLinear, QuantConv1d, QuantConv2d,
                                               QuantEmbedding, QuantMatMul)

__all__ = [
    "QUANT_LAYERS",
    "QuantConv1d",
    "QuantConv2d",
    "QuantEmbedding",
    "QuantLayer",
    "QuantLinear",
    "QuantMatMul",
]
