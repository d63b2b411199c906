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

Emulated GEMM (``config.gemm``, a :class:`lowbit.arith.GemmConfig` preset name or dict):
Linear, Conv1d/Conv2d and MatMul compute their matmul with :func:`lowbit.matmul` instead of
torch's float32 matmul, forward and backward (``lowbit.matmul``'s autograd runs both backward
matmuls, ``dL/dx̂ = G·Ŵ`` and ``dL/dŴ = Gᵀ·x̂``, with the same GemmConfig). The roles still
apply around it: ``x̂ = Q_act(x)`` and ``Ŵ = Q_weight(W)`` are the GEMM's operands (which it
then rounds to its own ``mult`` format, if any), the output and gradient casts are unchanged.
Details:

* Linear flattens the input to ``(M, in_features)`` so that the weight gradient's sum over
  every token is one emulated reduction; ``y = gemm(x̂, Ŵᵀ)``.
* Conv: ``F.pad`` (the layer's padding and padding mode), ``F.unfold`` (kernel, stride,
  dilation) and one batched GEMM per group, ``cols_g (N·L, C_g·k) @ Ŵ_gᵀ (C_g·k, O_g)``,
  reduction over (channel, kernel offset) in that order; the output is reshaped back
  (a convolution needs no ``fold``). Any stride, padding, dilation and groups. Backward:
  the weight gradient ``cols_gᵀ·G_g`` (a reduction over N·L) and the patch gradients
  ``G_g·Ŵ_g`` are emulated GEMMs; the overlap-add of the patch gradients onto the input
  (``F.unfold``'s backward) is a plain sum in the tensor's dtype, outside the GEMM.
* MatMul: ``gemm(a, b)`` with ``torch.matmul``'s broadcasting; the gradient of a broadcast
  operand is summed over its broadcast batch dimensions in float64 (``lowbit.matmul``).
* The result, in the GEMM's result dtype (float64 for a float64 accumulator), is cast to the
  input dtype (one rounding to float32), and **the bias is added afterwards in that dtype**:
  the bias plays an accumulator-precision add outside the emulated GEMM.
* Stochastic GEMM configs draw from ``derive_seed(config.seed, name, "gemm", step)``.
* The emulated GEMM runs on the host (numba), orders of magnitude slower than torch's: meant
  for small models and for studying an accelerator's arithmetic, not for speed.

``config.attention_mult`` (MatMul layers only; when set it replaces ``gemm`` there): after
the ``act`` casts,

* ``"lmulN"``: ``lowbit.arith.approx.lmul_matmul(a, b, man_bits=N)`` — L-Mul products (Luo &
  Sun 2024) accumulated in float32, with that function's own autograd;
* a float format name: both operands rounded to it (RNE, the format's overflow default but
  saturating for formats of at most 8 bits, straight-through gradient), then a float32
  ``torch.matmul``: products of fp8/fp16/bf16 values are exact in float32 (``2p <= 24``),
  accumulation is float32. The backward matmuls are float32 on the rounded operands
  (``G`` itself is rounded only by ``grad_act``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.arith.matmul import GemmConfig, get_gemm_config
from lowbit.arith.matmul import matmul as lb_matmul
from lowbit.formats import FloatFormat, get_format
from lowbit.nn.config import CastSpec, QuantConfig
from lowbit.nn.functional import derive_seed, fake_quantize
from lowbit.nn.matmul import MatMul
from lowbit.nn.quantizers import FloatQuantizer, Quantizer, check_spec_shape, make_quantizer

# role -> attribute holding its quantizer
_ATTRS = {
    "weight": "weight_quant",
    "act": "act_quant",
    "output": "output_quant",
    "grad_act": "grad_act_quant",
    "grad_weight": "grad_weight_quant",
}


def gemm_config_of(config: QuantConfig) -> GemmConfig | None:
    """The :class:`GemmConfig` named by ``config.gemm`` (None: torch's own matmul)."""
    g = config.gemm
    if g is None:
        return None
    if isinstance(g, (str, GemmConfig)):
        return get_gemm_config(g)
    return GemmConfig.from_dict(dict(g))


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
    USES_GEMM: ClassVar[bool] = True  # whether ``config.gemm`` applies (not to Embedding)

    lowbit_layer_config: QuantConfig
    lowbit_name: str
    lowbit_gemm: GemmConfig | None

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
                axis = self.WEIGHT_AXIS if role in ("weight", "grad_weight") else self.CHANNEL_AXIS
                kw: dict[str, Any] = dict(
                    seed=derive_seed(config.seed, name, role),
                    block_axis=axis,
                    name=f"{name}.{role}",
                    role="weight" if role == "weight" else "act",
                    device=device,
                )
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
                q = make_quantizer(
                    spec,
                    seed=derive_seed(config.seed, name, attr.removesuffix("_quant")),
                    block_axis=axis,
                    name=f"{name}.{attr}",
                    role="act",
                    device=device,
                )
            setattr(self, attr, q)
        self.lowbit_gemm = gemm_config_of(config) if self.USES_GEMM else None
        if "lowbit_step" in self._buffers:
            del self._buffers["lowbit_step"]
        specs = [config.cast_spec(r) for r in self.ROLES]
        if any(sp is not None and sp.stochastic for sp in specs) or (
            self.lowbit_gemm is not None and self.lowbit_gemm.stochastic
        ):
            self.register_buffer("lowbit_step", torch.zeros((), dtype=torch.int64, device=device))

    @classmethod
    def from_float(cls, mod: nn.Module, config: QuantConfig, name: str = "") -> nn.Module:
        """A quantized copy of ``mod`` that shares its parameters, buffers and hooks."""
        if type(mod) is not cls.FLOAT_TYPE:
            raise TypeError(
                f"{cls.__name__}.from_float takes a {cls.FLOAT_TYPE.__name__}, "
                f"got {type(mod).__name__}"
            )
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
        for attr in ("lowbit_layer_config", "lowbit_name", "lowbit_gemm"):
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
    def _cast(
        x: torch.Tensor, q: Quantizer | None, gq: Quantizer | None, step: int, gstream: int
    ) -> torch.Tensor:
        bwd = gq.rounder(step, gstream) if gq is not None else None
        if q is None:
            return fake_quantize(x, None, bwd)
        return q(x, step, bwd)

    @staticmethod
    def _cast_output(
        y: torch.Tensor, q: Quantizer | None, gq: Quantizer | None, step: int
    ) -> torch.Tensor:
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
        w = self._cast(
            self.weight,
            self.weight_quant,
            self.grad_weight_quant,  # type: ignore[attr-defined]
            step,
            0,
        )
        b = getattr(self, "bias", None)
        if b is not None:
            b = self._cast(b, None, self.grad_weight_quant, step, 1)  # type: ignore[attr-defined]
        return w, b

    def _gemm(self, a: torch.Tensor, b: torch.Tensor, step: int) -> torch.Tensor:
        """``a @ b`` in the emulated GEMM (forward and backward), cast to ``a``'s dtype."""
        g = self.lowbit_gemm
        assert g is not None
        seed = (
            derive_seed(self.lowbit_layer_config.seed, self.lowbit_name, "gemm", step)
            if g.stochastic
            else 0
        )
        y = lb_matmul(a, b, preset=g, seed=seed)
        return y if y.dtype == a.dtype else y.to(a.dtype)

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        return (
            f"{base}, lowbit_name={self.lowbit_name!r}"
            if base
            else f"lowbit_name={self.lowbit_name!r}"
        )


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
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.configure(config or QuantConfig(), name)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        x = self._cast(input, self.act_quant, self.grad_act_quant, step, 1)
        w, b = self._weight_and_bias(step)
        if self.lowbit_gemm is None:
            y = F.linear(x, w, b)
        else:
            y = self._gemm(x.reshape(-1, x.shape[-1]), w.t(), step)
            y = y.reshape(*x.shape[:-1], w.shape[0])
            if b is not None:
                y = y + b  # fp32 add after the GEMM (module docstring)
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)


class _QuantConvNd(QuantLayer):
    WEIGHT_AXIS = 1
    CHANNEL_AXIS = 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        x = self._cast(input, self.act_quant, self.grad_act_quant, step, 1)  # type: ignore[attr-defined]
        w, b = self._weight_and_bias(step)
        if self.lowbit_gemm is None:  # type: ignore[attr-defined]
            y = self._conv_forward(x, w, b)  # type: ignore[attr-defined]
        else:
            y = self._conv_gemm(x, w, b, step)
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)  # type: ignore[attr-defined]

    def _conv_gemm(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, step: int
    ) -> torch.Tensor:
        """The convolution as pad + unfold + one emulated GEMM per group (module docstring)."""
        nd = w.dim() - 2
        unbatched = x.dim() == nd + 1
        if unbatched:
            x = x.unsqueeze(0)
        pad = list(self._reversed_padding_repeated_twice)  # type: ignore[attr-defined]
        if any(pad):
            mode = self.padding_mode  # type: ignore[attr-defined]
            x = F.pad(x, pad, mode="constant" if mode == "zeros" else mode)
        ks = tuple(w.shape[2:])
        stride = tuple(self.stride)  # type: ignore[attr-defined]
        dil = tuple(self.dilation)  # type: ignore[attr-defined]
        if nd == 1:  # a 1-d convolution is a 2-d one of height 1
            x, w = x.unsqueeze(2), w.unsqueeze(2)
            ks, stride, dil = (1, *ks), (1, *stride), (1, *dil)
        n, c = x.shape[:2]
        out_hw = [(x.shape[2 + i] - dil[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in (0, 1)]
        cols = F.unfold(x, ks, dilation=dil, padding=0, stride=stride)  # (N, C·k, L)
        groups = self.groups  # type: ignore[attr-defined]
        o = w.shape[0]
        kg = (c // groups) * ks[0] * ks[1]
        lo = cols.shape[-1]
        a = cols.reshape(n, groups, kg, lo).permute(1, 0, 3, 2).reshape(groups, n * lo, kg)
        bw = w.reshape(groups, o // groups, kg).transpose(1, 2)  # (G, C_g·k, O_g)
        y = self._gemm(a, bw, step)  # type: ignore[attr-defined]  # (G, N·L, O_g)
        y = y.reshape(groups, n, lo, o // groups).permute(1, 0, 3, 2).reshape(n, o, *out_hw)
        if nd == 1:
            y = y.squeeze(2)
        if b is not None:
            y = y + b.reshape(1, o, *([1] * nd))  # fp32 add after the GEMM
        return y.squeeze(0) if unbatched else y


class QuantConv1d(_QuantConvNd, nn.Conv1d):
    """``nn.Conv1d`` with quantized weight, input, output and gradients."""

    FLOAT_TYPE = nn.Conv1d

    def __init__(
        self, *args: Any, config: QuantConfig | None = None, name: str = "", **kwargs: Any
    ) -> None:
        nn.Conv1d.__init__(self, *args, **kwargs)
        self.configure(config or QuantConfig(), name)


class QuantConv2d(_QuantConvNd, nn.Conv2d):
    """``nn.Conv2d`` with quantized weight, input, output and gradients."""

    FLOAT_TYPE = nn.Conv2d

    def __init__(
        self, *args: Any, config: QuantConfig | None = None, name: str = "", **kwargs: Any
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self.configure(config or QuantConfig(), name)


class QuantEmbedding(QuantLayer, nn.Embedding):
    """``nn.Embedding`` with a quantized table, output and gradients (no ``max_norm``)."""

    FLOAT_TYPE = nn.Embedding
    ROLES = ("weight", "output", "grad_act", "grad_weight")
    ACT_ATTRS = ()
    USES_GEMM = False  # a table look-up: no matmul
    WEIGHT_AXIS = -1
    CHANNEL_AXIS = -1

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        config: QuantConfig | None = None,
        name: str = "",
        **kwargs: Any,
    ) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, **kwargs)
        self.configure(config or QuantConfig(), name)

    def configure(self, config: QuantConfig, name: str = "") -> None:
        if self.max_norm is not None or self.sparse:
            raise ValueError(
                f"layer {name!r}: QuantEmbedding supports neither max_norm (it "
                "renormalises the table in place) nor sparse gradients"
            )
        super().configure(config, name)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        w = self._cast(self.weight, self.weight_quant, self.grad_weight_quant, step, 0)
        y = F.embedding(
            input, w, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq, False
        )
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)


class QuantMatMul(QuantLayer, MatMul):
    """``a @ b`` with both operands rounded to ``act``, output to ``output``, gradients to
    ``grad_act`` (``dL/dy``: stream 0, ``dL/da``: 1, ``dL/db``: 2); the product itself in
    torch's matmul, the emulated ``gemm`` or the ``attention_mult`` multiplier (module
    docstring)."""

    FLOAT_TYPE = MatMul
    ROLES = ("act", "output", "grad_act")
    ACT_ATTRS = (("a_quant", -1), ("b_quant", -2))

    lowbit_lmul_bits: int | None
    mult_quant: Quantizer | None

    def __init__(self, *, config: QuantConfig | None = None, name: str = "") -> None:
        MatMul.__init__(self)
        self.configure(config or QuantConfig(), name)

    def configure(self, config: QuantConfig, name: str = "") -> None:
        super().configure(config, name)
        self.lowbit_lmul_bits = None
        self.mult_quant = None
        am = config.attention_mult
        if am is None:
            return
        self.lowbit_gemm = None  # attention_mult replaces gemm for this layer
        if am.startswith("lmul") and am[4:].isdigit():
            self.lowbit_lmul_bits = int(am[4:])
            return
        fmt = get_format(am)
        overflow = "saturate" if isinstance(fmt, FloatFormat) and fmt.bits <= 8 else None
        self.mult_quant = FloatQuantizer(
            CastSpec(fmt=am, mode="rne", overflow=overflow), name=f"{name}.attention_mult"
        )

    def to_float(self) -> nn.Module:
        mod = super().to_float()
        mod._modules.pop("mult_quant", None)
        mod.__dict__.pop("mult_quant", None)
        mod.__dict__.pop("lowbit_lmul_bits", None)
        return mod

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        step = self._next_step()
        a = self._cast(a, self.a_quant, self.grad_act_quant, step, 1)
        b = self._cast(b, self.b_quant, self.grad_act_quant, step, 2)
        if self.lowbit_lmul_bits is not None:
            from lowbit.arith.approx import lmul_matmul

            y = lmul_matmul(a, b, man_bits=self.lowbit_lmul_bits)
        elif self.mult_quant is not None:
            dt = torch.result_type(a, b)
            y = torch.matmul(self.mult_quant(a.float()), self.mult_quant(b.float()))
            y = y if y.dtype == dt else y.to(dt)
        elif self.lowbit_gemm is not None:
            y = self._gemm(a, b, step)
        else:
            y = torch.matmul(a, b)
        return self._cast_output(y, self.output_quant, self.grad_act_quant, step)


QUANT_LAYERS: tuple[type[QuantLayer], ...] = (
    QuantLinear,
    QuantConv1d,
    QuantConv2d,
    QuantEmbedding,
    QuantMatMul,
)

__all__ = [
    "QUANT_LAYERS",
    "QuantConv1d",
    "QuantConv2d",
    "QuantEmbedding",
    "QuantLayer",
    "QuantLinear",
    "QuantMatMul",
]
