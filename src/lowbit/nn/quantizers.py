"""Quantizers: modules that round one tensor role of one layer (weight, input, gradient, ...).

Every quantizer has

* ``round_value(x, step, stream)``: the rounded value (no autograd), the one definition of
  what the cast does;
* ``rounder(step, stream)``: that function bound to a step and stream, as the backward pass
  of another cast takes it;
* ``forward(x, step, grad, stream)``: the autograd cast: forward ``round_value``, backward
  straight-through (LSQ: its own gradients) followed by ``grad`` (a rounder or None).

Kinds (chosen by :func:`make_quantizer` from a :class:`~lowbit.nn.config.CastSpec`):

* :class:`FloatQuantizer`: element-wise formats (float, fixed point, posit, the bare
  integer grid) with scale 1, a dynamic power-of-two ``absmax`` scale (per tensor, channel or
  group) or a fixed scale.
* :class:`IntQuantizer`: symmetric signed integers with the dynamic scale
  ``s = amax / qmax`` (float32, per tensor / channel / group; an all-zero slice gets
  ``s = 1``) or a fixed one; values ``clamp(round(x / s), -2**(b-1), 2**(b-1) - 1) * s``,
  equal to ``lb.quantize_int(x, b, scale=s, ...)`` bit for bit.
* :class:`LSQQuantizer`: integers with a learnable scale (per tensor or per channel),
  initialised to ``2·mean|x| / sqrt(Q_P)`` (the LSQ paper) from the weight at construction
  or from the first batch, or to ``spec.scale``. Gradient scale ``g = 1/sqrt(N·Q_P)`` with
  ``N`` the number of weights per scale, or the number of features per example for
  activations.
* :class:`MXQuantizer`: OCP MX block formats through ``lb.quantize_mx``, blocks of 32 along
  ``block_axis`` (the layer's reduction axis).
* :class:`S2FP8Quantizer` (``scaling="s2fp8"`` / ``grad_scaling="s2fp8"``): shifted and
  squeezed FP8 (Cambier et al. 2020) through :func:`lowbit.blocks.s2fp8.s2fp8_round`: per
  tensor, statistics over the non-zero entries recomputed at every call, round to nearest
  even; NaN/inf pass through (so an overflowing step still shows as one).

Stochastic modes draw from the stream ``seed`` at ``offset = stream_offset(step, stream)``
(see :mod:`lowbit.nn.functional`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from lowbit.blocks.s2fp8 import s2fp8_round
from lowbit.formats import BlockFormat, FloatFormat, IntFormat
from lowbit.nn.config import CastSpec
from lowbit.nn.functional import (
    Rounder,
    fake_quantize,
    int_fake_quant,
    lsq_quantize,
    mx_fake_quant,
    pow2_scale,
    round_float,
    round_scaled,
    stream_offset,
)


def _check_scale(scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float, got {scale!r}")
    if not (float(scale) > 0 and float(scale) != float("inf")):
        raise ValueError(f"scale={scale!r} must be finite and > 0")
    return float(scale)


def amax_of(x: torch.Tensor, granularity: str, axis: int, group_size: int | None) -> torch.Tensor:
    """Largest magnitude per tensor / channel / group, broadcastable to ``x``.

    Per tensor: a 0-d tensor; per channel: ``x``'s shape with 1 everywhere but ``axis``; per
    group: ``x``'s full shape (each element holds its group's amax).
    """
    x = x.detach()
    if granularity == "per_tensor":
        if x.numel() == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        lo, hi = torch.aminmax(x)
        return torch.maximum(-lo, hi)
    ax = axis % x.ndim
    if granularity == "per_channel":
        dims = [d for d in range(x.ndim) if d != ax]
        return x.abs().amax(dim=dims, keepdim=True) if dims else x.abs()
    assert group_size is not None
    xm = x.movedim(ax, -1)
    n = xm.shape[-1]
    g = xm.reshape(*xm.shape[:-1], n // group_size, group_size).abs().amax(-1, keepdim=True)
    g = g.expand(*xm.shape[:-1], n // group_size, group_size).reshape(xm.shape)
    return g.movedim(-1, ax)


def check_spec_shape(spec: CastSpec, shape: tuple[int, ...], layer: str = "") -> None:
    """Check ``spec``'s granularity axis and group size against a tensor shape.

    Raises:
        ValueError: naming the layer, the axis (out of range) or the group size (not a
            divisor of the axis length).
    """
    if spec.granularity == "per_tensor":
        return
    nd = len(shape)
    if not -nd <= spec.axis < nd:
        raise ValueError(
            f"layer {layer!r}: axis={spec.axis} is out of range for its "
            f"{nd}-d weight of shape {tuple(shape)}; accepted: {-nd}..{nd - 1}"
        )
    if spec.granularity == "per_group":
        n = shape[spec.axis]
        assert spec.group_size is not None
        if n % spec.group_size:
            raise ValueError(
                f"layer {layer!r}: group_size={spec.group_size} does not divide "
                f"the {n} elements along axis {spec.axis} of its weight of "
                f"shape {tuple(shape)}"
            )


class Quantizer(nn.Module):
    """Base class: one cast (format, mode, scaling) of one tensor role.

    Args:
        spec: the resolved cast.
        seed: seed of this quantizer's random stream (stochastic modes).
        block_axis: the axis MX blocks run along (the layer's reduction axis).
        name: ``layer.role`` for messages and summaries.
    """

    def __init__(
        self, spec: CastSpec, *, seed: int = 0, block_axis: int = -1, name: str = ""
    ) -> None:
        super().__init__()
        if not isinstance(spec, CastSpec):
            raise TypeError(f"spec must be a CastSpec, got {type(spec).__name__}")
        self.spec = spec
        self.seed = int(seed)
        self.block_axis = int(block_axis)
        self.qname = name

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Validate ``axis``/``group_size`` against the shape of the tensor to be rounded."""
        check_spec_shape(self.spec, shape, self.qname)

    def round_value(self, x: torch.Tensor, step: int = 0, stream: int = 0) -> torch.Tensor:
        """The rounded value of ``x`` (no autograd)."""
        raise NotImplementedError

    def rounder(self, step: int = 0, stream: int = 0) -> Rounder:
        """``round_value`` bound to a step and stream (for another cast's backward)."""
        return functools.partial(self.round_value, step=step, stream=stream)

    def forward(
        self, x: torch.Tensor, step: int = 0, grad: Rounder | None = None, stream: int = 0
    ) -> torch.Tensor:
        """Autograd cast: value rounded forward, gradient straight through then ``grad``."""
        return fake_quantize(x, self.rounder(step, stream), grad)

    def describe(self) -> str:
        return self.spec.describe()

    def extra_repr(self) -> str:
        return self.describe()


class FloatQuantizer(Quantizer):
    """Element-wise formats: scale 1, dynamic power-of-two ``absmax`` or a fixed scale."""

    def __init__(self, spec: CastSpec, **kw: Any) -> None:
        super().__init__(spec, **kw)
        fmt = spec.format
        if isinstance(fmt, BlockFormat):
            raise ValueError(f"{spec.fmt} is a block format; use MXQuantizer")
        if spec.scaling not in ("none", "absmax", "fixed"):
            raise ValueError(
                f"FloatQuantizer scaling={spec.scaling!r}; accepted: 'none', 'absmax', 'fixed'"
            )
        if spec.scaling == "fixed":
            _check_scale(spec.scale)
        self.fmt = fmt

    def scale_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """The power-of-two scale ``absmax`` uses for ``x`` (None without scaling)."""
        if self.spec.scaling != "absmax":
            return None
        sp = self.spec
        return pow2_scale(amax_of(x, sp.granularity, sp.axis, sp.group_size), self.fmt.max)

    def round_value(self, x: torch.Tensor, step: int = 0, stream: int = 0) -> torch.Tensor:
        sp = self.spec
        off = stream_offset(step, stream) if sp.stochastic else 0
        if sp.scaling == "fixed":
            assert sp.scale is not None
            return round_scaled(
                x, self.fmt, sp.mode, sp.scale, overflow=sp.overflow, seed=self.seed, offset=off
            )
        return round_float(
            x,
            self.fmt,
            sp.mode,
            overflow=sp.overflow,
            seed=self.seed,
            offset=off,
            scale=self.scale_of(x),
        )


class IntQuantizer(Quantizer):
    """Symmetric signed integers, dynamic ``absmax`` scale (float32) or a fixed scale."""

    def __init__(self, spec: CastSpec, **kw: Any) -> None:
        super().__init__(spec, **kw)
        fmt = spec.format
        if not isinstance(fmt, IntFormat) or not fmt.signed:
            raise ValueError(
                f"IntQuantizer needs a signed integer format, got {spec.fmt!r} "
                "(accepted: int2..int32)"
            )
        if spec.scaling not in ("absmax", "fixed"):
            raise ValueError(f"IntQuantizer scaling={spec.scaling!r}; accepted: 'absmax', 'fixed'")
        if spec.scaling == "fixed":
            _check_scale(spec.scale)
        self.bits = fmt.bits
        self.qmin = -(1 << (fmt.bits - 1))
        self.qmax = (1 << (fmt.bits - 1)) - 1

    def scale_of(self, x: torch.Tensor) -> torch.Tensor:
        """The scale(s) for ``x``, broadcastable to it (float32 for float32 ``x``)."""
        sp = self.spec
        dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        if sp.scaling == "fixed":
            return torch.tensor(sp.scale, dtype=dt, device=x.device)
        amax = amax_of(x, sp.granularity, sp.axis, sp.group_size).to(dt)
        s = amax / self.qmax
        return torch.where(s > 0, s, torch.ones_like(s))  # all-zero slices (or underflow)

    def round_value(self, x: torch.Tensor, step: int = 0, stream: int = 0) -> torch.Tensor:
        sp = self.spec
        off = stream_offset(step, stream) if sp.stochastic else 0
        return int_fake_quant(
            x, self.scale_of(x), self.qmin, self.qmax, sp.mode, seed=self.seed, offset=off
        )


class LSQQuantizer(Quantizer):
    """Learned step size quantization (Esser et al. 2020) with a learnable ``scale``.

    Args:
        spec: cast with ``scaling="lsq"`` and an integer format.
        role: ``"weight"`` (N = elements per scale) or ``"act"`` (N = features per example).
        init: a tensor to initialise the scale from now (weights); otherwise the scale is
            initialised from the first forward batch (unless ``spec.scale`` is set).
        channels: number of scales for ``per_channel`` (the size of ``spec.axis``).
        kw: as :class:`Quantizer`.
    """

    def __init__(
        self,
        spec: CastSpec,
        *,
        role: str = "act",
        init: torch.Tensor | None = None,
        channels: int | None = None,
        device: Any = None,
        **kw: Any,
    ) -> None:
        super().__init__(spec, **kw)
        fmt = spec.format
        if not isinstance(fmt, IntFormat):
            raise ValueError(f"LSQ needs an integer format, got {spec.fmt!r}")
        if spec.granularity not in ("per_tensor", "per_channel"):
            raise ValueError(
                f"LSQ granularity={spec.granularity!r}; accepted: 'per_tensor', 'per_channel'"
            )
        if role not in ("weight", "act"):
            raise ValueError(f"role={role!r}; accepted: 'weight', 'act'")
        self.role = role
        if fmt.signed:
            self.qn, self.qp = 1 << (fmt.bits - 1), (1 << (fmt.bits - 1)) - 1
        else:
            self.qn, self.qp = 0, (1 << fmt.bits) - 1
        if spec.granularity == "per_channel":
            if channels is None:
                if init is None:
                    raise ValueError("per-channel LSQ needs channels= or init=")
                channels = init.shape[spec.axis]
            shape: tuple[int, ...] = (int(channels),)
        else:
            shape = ()
        if init is not None:
            device = init.device
        self.scale = nn.Parameter(torch.ones(shape, dtype=torch.float32, device=device))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8, device=device))
        if spec.scale is not None:
            with torch.no_grad():
                self.scale.fill_(_check_scale(spec.scale))
            self.initialized.fill_(1)
        elif init is not None:
            self.init_from(init)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """``scale = 2·mean|x| / sqrt(Q_P)`` (per channel: the mean over each channel)."""
        a = x.detach().abs().to(torch.float32)
        if self.spec.granularity == "per_channel":
            dims = [d for d in range(a.ndim) if d != self.spec.axis % a.ndim]
            m = a.mean(dim=dims) if dims else a
        else:
            m = a.mean()
        s = 2 * m / (self.qp**0.5)
        s = torch.where(s > 0, s, torch.full_like(s, 1e-8))  # all-zero data: tiny step
        self.scale.copy_(s.reshape(self.scale.shape))
        self.initialized.fill_(1)

    def _scale_view(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.granularity != "per_channel":
            return self.scale
        shape = [1] * x.ndim
        shape[self.spec.axis % x.ndim] = self.scale.shape[0]
        return self.scale.view(shape)

    def grad_scale(self, x: torch.Tensor) -> float:
        """LSQ's ``g = 1/sqrt(N·Q_P)`` for input ``x``."""
        if self.role == "act":
            n = x.numel() / max(x.shape[0], 1) if x.ndim > 1 else x.numel()
        else:
            n = x.numel() / self.scale.numel()
        return 1.0 / float(n * self.qp) ** 0.5

    def _maybe_init(self, x: torch.Tensor) -> None:
        if not bool(self.initialized):
            self.init_from(x)

    def round_value(self, x: torch.Tensor, step: int = 0, stream: int = 0) -> torch.Tensor:
        self._maybe_init(x)
        sp = self.spec
        off = stream_offset(step, stream) if sp.stochastic else 0
        s = self._scale_view(x).detach().clamp_min(torch.finfo(torch.float32).tiny)
        return int_fake_quant(
            x, s.to(x.dtype), -self.qn, self.qp, sp.mode, seed=self.seed, offset=off
        )

    def forward(
        self, x: torch.Tensor, step: int = 0, grad: Rounder | None = None, stream: int = 0
    ) -> torch.Tensor:
        self._maybe_init(x)
        sp = self.spec
        off = stream_offset(step, stream) if sp.stochastic else 0
        s = self._scale_view(x)
        if s.dtype != x.dtype:
            s = s.to(x.dtype)
        return lsq_quantize(
            x,
            s,
            self.qn,
            self.qp,
            grad_scale=self.grad_scale(x),
            bwd=grad,
            mode=sp.mode,
            seed=self.seed,
            offset=off,
        )


class MXQuantizer(Quantizer):
    """OCP MX block formats (``lb.quantize_mx``), blocks along ``block_axis``."""

    def __init__(self, spec: CastSpec, **kw: Any) -> None:
        super().__init__(spec, **kw)
        if not isinstance(spec.format, BlockFormat):
            raise ValueError(f"MXQuantizer needs an MX block format, got {spec.fmt!r}")
        self.fmt = spec.format

    def describe(self) -> str:
        return f"{self.spec.describe()} block(axis={self.block_axis})"

    def round_value(self, x: torch.Tensor, step: int = 0, stream: int = 0) -> torch.Tensor:
        sp = self.spec
        off = stream_offset(step, stream) if sp.stochastic else 0
        return mx_fake_quant(x, self.fmt, sp.mode, axis=self.block_axis, seed=self.seed, offset=off)


class S2FP8Quantizer(Quantizer):
    """S2FP8 (shifted and squeezed FP8): ``s2fp8_round`` per tensor, every call.

    The transform's ``alpha``/``beta`` are recomputed from each tensor (no state; see
    :func:`lowbit.blocks.s2fp8.s2fp8_params` to inspect them).
    """

    def __init__(self, spec: CastSpec, **kw: Any) -> None:
        super().__init__(spec, **kw)
        fmt = spec.format
        if not isinstance(fmt, FloatFormat):
            raise ValueError(f"S2FP8 stores a float format; got {spec.fmt!r} (the paper: 'e5m2')")
        if spec.scaling != "s2fp8":
            raise ValueError(f"S2FP8Quantizer needs scaling='s2fp8', got {spec.scaling!r}")
        if spec.mode != "rne":
            raise ValueError(
                f"S2FP8 rounds to nearest even (the paper's choice); mode="
                f"{spec.mode!r} is not supported (accepted: 'rne')"
            )
        if spec.granularity != "per_tensor":
            raise ValueError(
                f"S2FP8 statistics are per tensor; granularity="
                f"{spec.granularity!r} is not supported (use 'per_tensor')"
            )
        self.fmt = fmt

    def round_value(self, x: torch.Tensor, step: int = 0, stream: int = 0) -> torch.Tensor:
        return s2fp8_round(x, self.fmt, nonfinite="propagate")


def make_quantizer(
    spec: CastSpec,
    *,
    seed: int = 0,
    block_axis: int = -1,
    name: str = "",
    role: str = "act",
    init: torch.Tensor | None = None,
    channels: int | None = None,
    device: Any = None,
) -> Quantizer:
    """The quantizer class ``spec`` calls for (see the module docstring)."""
    fmt = spec.format
    kw: dict[str, Any] = dict(seed=seed, block_axis=block_axis, name=name)
    if isinstance(fmt, BlockFormat):
        return MXQuantizer(spec, **kw)
    if spec.scaling == "s2fp8":
        return S2FP8Quantizer(spec, **kw)
    if spec.scaling == "lsq":
        return LSQQuantizer(spec, role=role, init=init, channels=channels, device=device, **kw)
    if isinstance(fmt, IntFormat) and spec.scaling in ("absmax", "fixed"):
        return IntQuantizer(spec, **kw)
    return FloatQuantizer(spec, **kw)


__all__ = [
    "FloatQuantizer",
    "IntQuantizer",
    "LSQQuantizer",
    "MXQuantizer",
    "Quantizer",
    "S2FP8Quantizer",
    "amax_of",
    "check_spec_shape",
    "make_quantizer",
]
