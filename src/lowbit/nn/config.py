"""``QuantConfig``: which format (and rounding mode) every tensor of a layer's step gets.

One config describes the casts of one matmul-like layer ``y = x·Wᵀ (+ b)`` (torchao's
``Float8LinearConfig`` / AQT's ``DotGeneral(fwd, dlhs, drhs)`` idea), forward and backward:

=============  ===========================================  ==========================
field          tensor it rounds                             mode field
=============  ===========================================  ==========================
``weight``     ``W`` before the forward matmul              ``weight_mode``
``act``        the layer input ``x`` before the matmul      ``act_mode``
``output``     the layer output ``y`` (forward only)        ``act_mode``
``grad_act``   ``dL/dy`` before both backward matmuls,      ``grad_mode``
               and the input gradient ``dL/dx``
``grad_weight`` ``dL/dW`` and ``dL/db``                     ``grad_mode``
=============  ===========================================  ==========================

A field that is ``None`` keeps that tensor in its own precision (fp32: no rounding at all).

Scaling (how a format's grid is placed over the data):

* float, fixed-point and posit formats: ``"none"`` (scale 1, plain ``lb.round``) or
  ``"absmax"`` — a power-of-two scale ``2**e`` with ``e = ceil(log2(amax / fmt.max))`` (per
  tensor, or per channel/group for weights), so that scaling is exact and the value equals
  ``lb.round(x / 2**e) * 2**e`` bit for bit. ``scaling=None`` means ``"absmax"`` for weights
  when ``granularity`` is per channel/group and ``"none"`` otherwise.
* integer formats (``"int8"``, ``"int4"``, ...): ``"absmax"`` (default: dynamic symmetric
  scale ``amax / qmax`` held in float32), ``"lsq"`` (a learnable scale, Esser et al. 2020),
  ``"fixed"`` (the constant ``scale``) or ``"none"`` (round to the integer grid itself).
* MX block formats (``"mxfp8_e4m3"``, ...): their own shared power-of-two scale per block of
  32 along the layer's reduction axis; only ``scaling=None``/``"none"`` is accepted.
* gradients: ``grad_scaling`` is ``None`` (= ``"absmax"`` for integer formats, ``"none"``
  otherwise), ``"none"`` or ``"absmax"``; always per tensor.

``granularity`` (``"per_tensor"``, ``"per_channel"``, ``"per_group"``) applies to weight
scales only; activations and gradients are scaled per tensor. ``axis`` is the channel axis
(default 0, the output channel) or, for ``per_group``, the axis along which groups of
``group_size`` consecutive elements run (default 1, the reduction axis of Linear/Conv
weights). Both are checked against each layer's weight by ``quantize_``.

``overrides`` are ``(name_pattern, partial)`` pairs applied in order to every layer whose
qualified name matches the ``fnmatch`` pattern (later pairs win); ``skip`` patterns leave a
layer in fp32. The config round-trips exactly through ``to_dict``/``from_dict``,
``to_json``/``from_json`` and ``to_toml``/``from_toml``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from lowbit.formats import BlockFormat, FixedFormat, FloatFormat, IntFormat, PositFormat
from lowbit.formats import get_format as _get_format
from lowbit.rounding.api import resolve_policy
from lowbit.rounding.modes import as_mode

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
SCALINGS = ("none", "absmax", "lsq", "fixed", "s2fp8")
GRAD_SCALINGS = ("none", "absmax", "s2fp8")
OVERFLOWS = ("saturate", "inf", "nan")
FORMAT_FIELDS = ("weight", "act", "grad_act", "grad_weight", "output", "grad_before_allreduce")
ROLES = ("weight", "act", "output", "grad_act", "grad_weight")
# Per-layer overrides may change these; the rest (seed, skip, ...) are model-wide.
_OVERRIDABLE = (
    "weight",
    "act",
    "grad_act",
    "grad_weight",
    "output",
    "weight_mode",
    "act_mode",
    "grad_mode",
    "granularity",
    "group_size",
    "axis",
    "scaling",
    "grad_scaling",
    "scale",
    "overflow",
    "grad_overflow",
    "gemm",
    "attention_mult",
)
_LMUL = re.compile(r"lmul([1-9]|1[0-9]|2[0-3])")

RECIPES: dict[str, dict[str, Any]] = {
    # torchao-style fp8 training: e4m3 forward, e5m2 backward, stochastic gradient rounding
    "fp8": dict(weight="e4m3", act="e4m3", grad_act="e5m2", grad_weight="e5m2", grad_mode="sr"),
    "w8a8": dict(weight="int8", act="int8", granularity="per_channel"),
    "w4a8": dict(weight="int4", act="int8", granularity="per_channel"),
    "bf16": dict(weight="bf16", act="bf16", grad_act="bf16", grad_weight="bf16"),
    "mxfp8": dict(
        weight="mxfp8_e4m3", act="mxfp8_e4m3", grad_act="mxfp8_e5m2", grad_weight="mxfp8_e5m2"
    ),
}


def _format_name(field: str, value: Any) -> str | None:
    """Validate one format field; ``None``/``"none"`` mean fp32 (no rounding)."""
    if value is None:
        return None
    if isinstance(value, (FloatFormat, FixedFormat, IntFormat, PositFormat, BlockFormat)):
        try:
            same = _get_format(value.name) == value
        except ValueError:
            same = False
        if not same:
            raise TypeError(
                f"{field}: format object {value!r} has no name that get_format "
                "resolves back to it; pass a format name string"
            )
        return value.name
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a format name or None, got {type(value).__name__}")
    if value.strip().lower() == "none":
        return None
    try:
        _get_format(value)
    except ValueError as err:
        raise ValueError(f"{field}={value!r}: {err}") from None
    return value


def _check_choice(field: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{field}={value!r}; accepted: {', '.join(map(repr, accepted))}")


def _check_int(field: str, value: Any, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{field}={value} must be >= {minimum}")


@dataclass(frozen=True)
class CastSpec:
    """How one tensor is rounded: the resolved view of a config for one role of one layer.

    Attributes:
        fmt: format name (as written in the config).
        mode: rounding mode name.
        scaling: ``"none"``, ``"absmax"``, ``"lsq"`` or ``"fixed"`` (resolved, never None).
        granularity: ``"per_tensor"``, ``"per_channel"`` or ``"per_group"``.
        axis: channel axis (per channel) or group axis (per group).
        group_size: elements per group (per group only).
        scale: the fixed scale (``"fixed"``) or the LSQ initial scale (None: from the data).
        overflow: overflow policy passed to ``lb.round`` (None: the format's default).
    """

    fmt: str
    mode: str = "rne"
    scaling: str = "none"
    granularity: str = "per_tensor"
    axis: int = 0
    group_size: int | None = None
    scale: float | None = None
    overflow: str | None = None

    @property
    def format(self) -> Any:
        """The lowbit format object."""
        return _get_format(self.fmt)

    @property
    def stochastic(self) -> bool:
        return as_mode(self.mode).stochastic

    def describe(self) -> str:
        """Short human-readable form, e.g. ``"int8 rne absmax per_channel(axis=0)"``."""
        parts = [self.fmt, self.mode]
        if self.scaling != "none":
            parts.append(
                self.scaling
                if self.scale is None or self.scaling != "fixed"
                else f"fixed({self.scale:g})"
            )
        if self.granularity == "per_channel":
            parts.append(f"per_channel(axis={self.axis})")
        elif self.granularity == "per_group":
            parts.append(f"per_group(axis={self.axis}, size={self.group_size})")
        if self.overflow == "saturate":
            parts.append("sat")
        return " ".join(parts)


@dataclass(frozen=True)
class QuantConfig:
    """Formats and rounding of every tensor of a layer's training step (see module docstring).

    Attributes:
        weight: format of ``W`` in the forward matmul (None: fp32).
        act: format of the layer input ``x``.
        grad_act: format of ``dL/dy`` (before both backward matmuls) and of ``dL/dx``.
        grad_weight: format of ``dL/dW`` and ``dL/db``.
        weight_mode: rounding mode of ``W``.
        act_mode: rounding mode of ``x`` and of the output.
        grad_mode: rounding mode of every gradient (``"sr"`` draws fresh bits every step).
        granularity: weight scale granularity.
        group_size: elements per weight group (``per_group`` only).
        axis: weight channel / group axis (None: 0 per channel, 1 per group).
        scaling: forward scaling (None: per format, see the module docstring).
        grad_scaling: gradient scaling (None: absmax for int formats, none otherwise).
        scale: fixed scale (``scaling="fixed"``) or LSQ initial scale; finite and > 0.
        output: format of the layer output ``y`` (forward only; None: fp32).
        overflow: overflow policy of forward float casts (None: ``"saturate"`` for formats of
            at most 8 bits, as torch's float8 casts, and the format's own default otherwise).
        grad_overflow: overflow policy of gradient float casts (None: the format's own
            default, inf for e5m2 and fp16 and NaN for e4m3fn, so that a loss scaler sees the
            overflow and skips the step; ``"saturate"`` clamps instead).
        seed: base seed of every stochastic rounding stream.
        overrides: ``(fnmatch pattern, partial dict)`` pairs applied to matching layer names.
        skip: fnmatch patterns of layer names left in fp32.
        grad_before_allreduce: format gradients are rounded to before the DDP all-reduce
            (mode ``grad_mode``), see :mod:`lowbit.nn.distributed`.
        gemm: the emulated GEMM (:class:`lowbit.arith.GemmConfig` preset name or its
            ``to_dict()``) that computes the matmuls of Linear/Conv/MatMul layers, forward and
            backward, instead of torch's fp32 matmul (None: torch's).
        attention_mult: multiplier of ``lowbit.nn.MatMul`` layers only (the attention
            matmuls): ``"lmulN"`` (L-Mul with N mantissa bits) or a float format name
            (operands rounded to it, exact products); accumulation in fp32.
        method: a layer-6 method whose registered handlers swap the layers
            (``"dfp16"``, ``"a2q"``, ...; see :func:`lowbit.nn.register_method`).
        method_args: JSON-able arguments of ``method``.
    """

    weight: str | None = None
    act: str | None = None
    grad_act: str | None = None
    grad_weight: str | None = None
    weight_mode: str = "rne"
    act_mode: str = "rne"
    grad_mode: str = "rne"
    granularity: str = "per_tensor"
    group_size: int | None = None
    axis: int | None = None
    scaling: str | None = None
    grad_scaling: str | None = None
    scale: float | None = None
    output: str | None = None
    overflow: str | None = None
    grad_overflow: str | None = None
    seed: int = 0
    overrides: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    skip: tuple[str, ...] = ()
    grad_before_allreduce: str | None = None
    gemm: str | Mapping[str, Any] | None = None
    attention_mult: str | None = None
    method: str | None = None
    method_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in FORMAT_FIELDS:
            object.__setattr__(self, f, _format_name(f, getattr(self, f)))
        for f in ("weight_mode", "act_mode", "grad_mode"):
            object.__setattr__(self, f, as_mode(getattr(self, f)).value)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        if self.granularity == "per_group":
            if self.group_size is None:
                raise ValueError("granularity='per_group' needs group_size (an int >= 1)")
            _check_int("group_size", self.group_size, minimum=1)
        elif self.group_size is not None:
            raise ValueError(
                f"group_size={self.group_size!r} is only used with "
                "granularity='per_group'; leave it None"
            )
        if self.axis is not None:
            _check_int("axis", self.axis)
        if self.scaling is not None:
            _check_choice("scaling", self.scaling, SCALINGS)
        if self.grad_scaling is not None:
            _check_choice("grad_scaling", self.grad_scaling, GRAD_SCALINGS)
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
                raise TypeError(f"scale must be a float, got {self.scale!r}")
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise ValueError(f"scale={self.scale!r} must be finite and > 0")
            object.__setattr__(self, "scale", float(self.scale))
        if self.scaling == "fixed" and self.scale is None:
            raise ValueError("scaling='fixed' needs scale (a float > 0)")
        if self.overflow is not None:
            _check_choice("overflow", self.overflow, OVERFLOWS)
        if self.grad_overflow is not None:
            _check_choice("grad_overflow", self.grad_overflow, OVERFLOWS)
        _check_int("seed", self.seed, minimum=0)
        for role in ("weight", "act", "output"):
            self._check_forward_scaling(role)
        for role in ("grad_act", "grad_weight"):
            name = getattr(self, role)
            fmt = _get_format(name) if name is not None else None
            if (
                isinstance(fmt, IntFormat)
                and not fmt.signed
                and self.grad_scaling in (None, "absmax")
            ):
                raise ValueError(
                    f"{role}={name!r}: gradients take signed formats (their "
                    "absmax scaling is symmetric); use a signed intN"
                )
        for role in ("weight", "act", "output", "grad_act", "grad_weight"):
            spec = self.cast_spec(role)
            if spec is not None and not isinstance(spec.format, BlockFormat):
                try:  # overflow option and mode must suit the format (fails early, not mid-step)
                    resolve_policy(spec.format, spec.mode, spec.overflow, True, None)
                except ValueError as err:
                    raise ValueError(f"{role}={spec.fmt!r}: {err}") from None
        if not isinstance(self.skip, (tuple, list)) or not all(
            isinstance(p, str) for p in self.skip
        ):
            raise TypeError(f"skip must be a tuple of fnmatch patterns, got {self.skip!r}")
        object.__setattr__(self, "skip", tuple(self.skip))
        self._check_extensions()
        object.__setattr__(self, "overrides", self._normalise_overrides(self.overrides))

    def _check_extensions(self) -> None:
        for role, name in (("scaling", self.scaling), ("grad_scaling", self.grad_scaling)):
            if name != "s2fp8":
                continue
            roles = (
                ("weight", "act", "output") if role == "scaling" else ("grad_act", "grad_weight")
            )
            for r in roles:
                fmt_name = getattr(self, r)
                if fmt_name is not None and not isinstance(_get_format(fmt_name), FloatFormat):
                    raise ValueError(
                        f"{role}='s2fp8' needs float formats; {r}={fmt_name!r} is "
                        "not one (S2FP8 stores e5m2)"
                    )
        if self.gemm is not None:
            from lowbit.arith.matmul import GemmConfig, get_gemm_config

            g = self.gemm
            if isinstance(g, GemmConfig):
                g = g.to_dict()
            if isinstance(g, str):
                get_gemm_config(g)  # raises ValueError naming the presets
            elif isinstance(g, Mapping):
                g = GemmConfig.from_dict(dict(g)).to_dict()  # canonical: every key present
            else:
                raise TypeError(
                    f"gemm must be a GemmConfig preset name, a GemmConfig or its "
                    f"to_dict(), got {type(g).__name__}"
                )
            object.__setattr__(self, "gemm", g)
        if self.attention_mult is not None:
            am = self.attention_mult
            if not isinstance(am, str):
                raise TypeError(f"attention_mult must be a string, got {type(am).__name__}")
            if not _LMUL.fullmatch(am):
                try:
                    fmt = _get_format(am)
                except ValueError:
                    fmt = None
                if not isinstance(fmt, FloatFormat):
                    raise ValueError(
                        f"attention_mult={am!r}; accepted: 'lmul1' .. 'lmul23' "
                        "(L-Mul mantissa bits) or a float format name such as "
                        "'e4m3', 'e5m2', 'bf16'"
                    )
        if self.method is not None and not isinstance(self.method, str):
            raise TypeError(f"method must be a string, got {type(self.method).__name__}")
        if not isinstance(self.method_args, Mapping):
            raise TypeError(f"method_args must be a mapping, got {type(self.method_args).__name__}")
        try:
            json.dumps(dict(self.method_args))
        except TypeError as err:
            raise TypeError(f"method_args must be JSON-able: {err}") from None
        object.__setattr__(self, "method_args", dict(self.method_args))

    # ---- validation helpers -----------------------------------------------------------------
    def _check_forward_scaling(self, role: str) -> None:
        name = getattr(self, role)
        if name is None or self.scaling is None:
            return
        fmt = _get_format(name)
        if isinstance(fmt, BlockFormat) and self.scaling != "none":
            raise ValueError(
                f"{role}={name!r} is an MX block format with its own block scales; "
                f"scaling={self.scaling!r} is not accepted (use None or 'none')"
            )
        if self.scaling == "lsq" and role != "output":
            if not isinstance(fmt, IntFormat):
                raise ValueError(
                    f"scaling='lsq' needs integer formats; {role}={name!r} is not "
                    "one (accepted: int2..int32, uint2..uint32)"
                )
            if self.granularity == "per_group" and role == "weight":
                raise ValueError(
                    "scaling='lsq' supports granularity 'per_tensor' and "
                    "'per_channel', not 'per_group'"
                )
        if self.scaling in ("absmax", "fixed") and isinstance(fmt, IntFormat) and not fmt.signed:
            raise ValueError(
                f"{role}={name!r}: unsigned integer formats need scaling='lsq' "
                "or 'none'; absmax/fixed scaling is symmetric (use a signed intN)"
            )

    def _normalise_overrides(self, overrides: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
        pairs = _override_pairs(overrides)
        out = []
        for pattern, partial in pairs:
            bad = sorted(set(partial) - set(_OVERRIDABLE))
            if bad:
                raise ValueError(
                    f"override {pattern!r}: keys {bad} cannot be overridden per "
                    f"layer; accepted: {', '.join(_OVERRIDABLE)}"
                )
            try:  # each override must give a valid config on its own
                merged = dataclasses.replace(self, overrides=(), skip=(), **partial)
            except (ValueError, TypeError) as err:
                raise type(err)(f"override {pattern!r}: {err}") from None
            # keep the canonical values (e.g. "none" -> None, RoundMode -> its name)
            out.append((pattern, {k: getattr(merged, k) for k in _OVERRIDABLE if k in partial}))
        return tuple(out)

    def __hash__(self) -> int:  # overrides hold dicts; the JSON form identifies the config
        return hash(self.to_json(sort_keys=True))

    # ---- per-layer resolution -------------------------------------------------------------
    def skips(self, name: str) -> bool:
        """Whether the layer called ``name`` matches a ``skip`` pattern."""
        return any(fnmatchcase(name, p) for p in self.skip)

    def for_layer(self, name: str) -> QuantConfig:
        """This config with every override whose pattern matches ``name`` applied in order."""
        partial: dict[str, Any] = {}
        for pattern, p in self.overrides:
            if fnmatchcase(name, pattern):
                partial.update(p)
        if not partial:
            return self
        return dataclasses.replace(self, **partial)

    @property
    def is_fp32(self) -> bool:
        """True when no tensor of a layer is rounded and its matmuls are torch's own."""
        return (
            all(getattr(self, r) is None for r in ROLES)
            and self.gemm is None
            and self.attention_mult is None
            and self.method is None
        )

    def cast_spec(self, role: str) -> CastSpec | None:
        """The resolved :class:`CastSpec` of ``role`` (one of ``ROLES``), or None (fp32)."""
        if role not in ROLES:
            raise ValueError(f"role={role!r}; accepted: {', '.join(ROLES)}")
        name = getattr(self, role)
        if name is None:
            return None
        fmt = _get_format(name)
        grad = role.startswith("grad")
        mode = self.grad_mode if grad else (self.weight_mode if role == "weight" else self.act_mode)
        gran = self.granularity if role == "weight" else "per_tensor"
        if isinstance(fmt, BlockFormat):
            scaling = "none"
        elif grad:
            scaling = self.grad_scaling or ("absmax" if isinstance(fmt, IntFormat) else "none")
        elif self.scaling is not None:
            # outputs have no parameters: an LSQ config scales them dynamically
            scaling = "absmax" if (self.scaling == "lsq" and role == "output") else self.scaling
        elif isinstance(fmt, IntFormat):
            scaling = "fixed" if self.scale is not None else "absmax"
        else:
            scaling = "absmax" if gran != "per_tensor" else "none"
        if scaling == "none" and not isinstance(fmt, BlockFormat):
            gran = "per_tensor"  # one grid for the whole tensor
        axis = 0
        if gran == "per_channel":
            axis = 0 if self.axis is None else self.axis
        elif gran == "per_group":
            axis = 1 if self.axis is None else self.axis
        overflow = self.grad_overflow if grad else self.overflow
        if not isinstance(fmt, FloatFormat):
            overflow = None  # integer/fixed/posit/MX casts always saturate
        elif overflow is None and fmt.bits <= 8 and not grad:
            overflow = "saturate"
        return CastSpec(
            fmt=name,
            mode=mode,
            scaling=scaling,
            granularity=gran,
            axis=axis,
            group_size=self.group_size if gran == "per_group" else None,
            scale=self.scale if scaling in ("fixed", "lsq") else None,
            overflow=overflow,
        )

    @property
    def stochastic(self) -> bool:
        """Whether any cast of this (per-layer) config draws random bits."""
        return any(s is not None and s.stochastic for s in map(self.cast_spec, ROLES))

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); inverse of :meth:`from_dict`."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "overrides":
                v = [[p, dict(partial)] for p, partial in v]
            elif f.name == "skip":
                v = list(v)
            elif f.name in ("method_args", "gemm") and isinstance(v, Mapping):
                v = dict(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantConfig:
        """Build a config from :meth:`to_dict` output (or a hand-written dict / TOML table).

        Extra conveniences: ``"recipe": name`` starts from a named recipe; ``overrides`` may
        be a list of ``[pattern, partial]`` pairs, a list of tables with a ``pattern`` key
        (and optionally ``unset``: names of fields set to None), or a mapping
        pattern -> partial; format strings ``"none"`` mean None.

        Raises:
            ValueError: unknown keys (the message lists the accepted ones) or bad values.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"config must be a mapping, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(d) - {*names, "recipe"})
        if bad:
            raise ValueError(
                f"unknown QuantConfig keys {bad}; accepted: {', '.join(names)}, recipe"
            )
        kw = {k: v for k, v in d.items() if k != "recipe"}
        if "skip" in kw:
            kw["skip"] = tuple(kw["skip"])
        if "overrides" in kw:
            kw["overrides"] = _override_pairs(kw["overrides"])
        if "recipe" in d:
            return cls.from_recipe(d["recipe"], **kw)
        return cls(**kw)

    def to_json(self, **kwargs: Any) -> str:
        """JSON text (keys in field order); ``kwargs`` go to ``json.dumps``."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> QuantConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def to_toml(self) -> str:
        """TOML text that :meth:`from_toml` reads back to an equal config.

        TOML has no null: fields at None are left out (they are the defaults); inside an
        override table a format set to None is written ``"none"`` and other fields set to
        None are listed in ``unset = [...]``.
        """
        lines = []
        for f in dataclasses.fields(self):
            if f.name == "overrides":
                continue
            v = getattr(self, f.name)
            if v is None:
                if f.default is not None:
                    raise ValueError(f"{f.name}=None cannot be written to TOML")
                continue
            if f.name == "gemm" and isinstance(v, Mapping):
                v = {k: x for k, x in v.items() if x is not None}  # None = GemmConfig default
            lines.append(f"{f.name} = {_toml_value(v)}")
        for pattern, partial in self.overrides:
            lines.append("")
            lines.append("[[overrides]]")
            lines.append(f"pattern = {_toml_value(pattern)}")
            unset = [k for k, v in partial.items() if v is None and k not in FORMAT_FIELDS]
            for k, v in partial.items():
                if k not in unset:
                    lines.append(f"{k} = {_toml_value('none' if v is None else v)}")
            if unset:
                lines.append(f"unset = {_toml_value(unset)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, source: str | os.PathLike[str], *, table: str | None = None) -> QuantConfig:
        """Read a config from TOML text or a ``.toml`` file path.

        Args:
            source: TOML text, or a path (``str`` ending in ``.toml`` or an ``os.PathLike``).
            table: dotted name of the table holding the config (e.g. ``"quant"``); None reads
                the top level.

        Raises:
            ValueError: TOML syntax errors, a missing table or bad config values.
        """
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        if isinstance(source, os.PathLike) or (
            isinstance(source, str) and source.strip().endswith(".toml") and "\n" not in source
        ):
            with open(source, "rb") as fh:
                text = fh.read().decode()
        elif isinstance(source, str):
            text = source
        else:
            raise TypeError(f"source must be TOML text or a path, got {type(source).__name__}")
        try:
            doc: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"invalid TOML: {err}") from None
        if table:
            for part in table.split("."):
                if not isinstance(doc, dict) or part not in doc:
                    raise ValueError(f"TOML has no table {table!r}")
                doc = doc[part]
        return cls.from_dict(doc)

    # ---- recipes ------------------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, name: str, **changes: Any) -> QuantConfig:
        """A named recipe (``"fp8"``, ``"w8a8"``, ``"w4a8"``, ``"bf16"``, ``"mxfp8"``).

        * ``fp8``: e4m3 weights/activations, e5m2 gradients with stochastic rounding.
        * ``w8a8``: int8 weights (per output channel absmax) and activations (per tensor).
        * ``w4a8``: int4 weights per output channel, int8 activations.
        * ``bf16``: every tensor in bf16, RNE.
        * ``mxfp8``: MXFP8 e4m3 forward, MXFP8 e5m2 gradients.

        ``changes`` replace fields of the recipe.
        """
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
        return cls(**{**RECIPES[name], **changes})

    @staticmethod
    def recipes() -> list[str]:
        """Names accepted by :meth:`from_recipe`."""
        return list(RECIPES)


def _override_pairs(overrides: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Overrides in any accepted spelling -> ``((pattern, dict), ...)``."""
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    elif isinstance(overrides, (list, tuple)):
        items = []
        for item in overrides:
            if isinstance(item, Mapping):
                if "pattern" not in item:
                    raise ValueError(f"override table {dict(item)!r} lacks its 'pattern' key")
                partial = {k: v for k, v in item.items() if k not in ("pattern", "unset")}
                unset = item.get("unset", ())
                if isinstance(unset, str) or not isinstance(unset, (list, tuple)):
                    raise TypeError(
                        f"override {item['pattern']!r}: unset must be a list of "
                        f"field names, got {unset!r}"
                    )
                partial.update(dict.fromkeys(unset))
                items.append((item["pattern"], partial))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise TypeError(f"override {item!r} must be a (pattern, partial dict) pair")
    else:
        raise TypeError(f"overrides must be (pattern, dict) pairs, got {overrides!r}")
    out = []
    for pattern, partial in items:
        if not isinstance(pattern, str):
            raise TypeError(f"override pattern must be a str, got {pattern!r}")
        if not isinstance(partial, Mapping):
            raise TypeError(f"override {pattern!r}: partial must be a dict, got {partial!r}")
        out.append((pattern, dict(partial)))
    return tuple(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # shortest round-trip repr; TOML reads it back to the same double
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is a JSON string for these characters
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # an inline table; TOML has no null, so None entries are errors
        return (
            "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
        )
    raise TypeError(f"cannot write {v!r} to TOML")


__all__ = ["GRANULARITIES", "RECIPES", "ROLES", "SCALINGS", "CastSpec", "QuantConfig"]
