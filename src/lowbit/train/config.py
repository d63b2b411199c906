"""``TrainConfig``: everything ``lowbit train`` needs to train one model, as one frozen dataclass.

A config round-trips through JSON and TOML. In TOML the training settings are top-level keys
and the quantization of the model (a :class:`lowbit.nn.QuantConfig`) is the ``[quant]`` table::

    model = "resnet-small"
    data = "fashion-mnist"
    epochs = 3
    optimizer = "adamw"
    weight_fmt = "bf16"       # the optimizer stores the weights in bf16 ...
    update_mode = "sr"        # ... and rounds each update stochastically

    [quant]                   # fields of lowbit.nn.QuantConfig
    weight = "int4"
    act = "int8"
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowbit.train import _toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

if TYPE_CHECKING:
    from lowbit.nn import QuantConfig

OPTIMIZERS = ("adamw", "sgd")
# QuantConfig fields holding a format (None there means fp32 and is spelled "none" in TOML)
_FORMAT_FIELDS = ("weight", "act", "grad_act", "grad_weight", "output", "grad_before_allreduce")
LOSS_SCALING = ("none", "static", "dynamic")


def _check_int(name: str, v: Any, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"TrainConfig.{name} must be an int, got {v!r}")
    if v < low:
        raise ValueError(f"TrainConfig.{name} must be >= {low}, got {v}")


def _check_float(name: str, v: Any, *, positive: bool) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"TrainConfig.{name} must be a number, got {v!r}")
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"TrainConfig.{name} must be finite and {bound}, got {v}")


def _check_choice(name: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ValueError(f"TrainConfig.{name} = {v!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run: model, data, schedule, optimizer storage and quantization.

    Attributes:
        model: model name for ``lowbit.models.build_model`` (see ``list_models()``).
        data: data set name for ``lowbit.data.load_dataset`` ("fashion-mnist", "digits", ...).
        data_dir: folder holding the data set's files (None: the default place).
        subset: train on the first ``subset`` examples of a seeded shuffle (None: all).
        epochs: passes over the training set.
        batch_size: examples per optimizer step.
        lr: learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        optimizer: "adamw" or "sgd" (SGD with momentum 0.9).
        weight_fmt: format the optimizer stores the weights in ("fp32", "bf16", ...).
        state_fmt: format of the optimizer's state (moments, momentum buffer).
        update_mode: rounding mode of the weight update ("rne", "sr", ... any ``lb.RoundMode``).
        master_weights: keep an fp32 master copy of the weights (then ``weight_fmt`` is only
            the format the model computes with).
        loss_scaling: "none", "static" or "dynamic" (``lowbit.amp.LossScaler``), for fp16/fp8
            gradients that would underflow.
        seed: seed of the initialisation, the shuffling and every stochastic rounding.
        quant: how ``lowbit.nn.quantize_`` quantizes the model (None: not quantized).
    """

    model: str = "resnet-small"
    data: str = "fashion-mnist"
    data_dir: str | None = None
    subset: int | None = None
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    weight_fmt: str = "fp32"
    state_fmt: str = "fp32"
    update_mode: str = "rne"
    master_weights: bool = False
    loss_scaling: str = "none"
    seed: int = 0
    quant: QuantConfig | None = None

    def __post_init__(self) -> None:
        import lowbit as lb

        for name in ("model", "data", "weight_fmt", "state_fmt", "update_mode"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"TrainConfig.{name} must be a string, got {getattr(self, name)!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise TypeError(f"TrainConfig.data_dir must be a string or None, got {self.data_dir!r}")
        if self.subset is not None:
            _check_int("subset", self.subset, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        _check_float("lr", self.lr, positive=True)
        _check_float("weight_decay", self.weight_decay, positive=False)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("loss_scaling", self.loss_scaling, LOSS_SCALING)
        if not isinstance(self.master_weights, bool):
            raise TypeError(
                f"TrainConfig.master_weights must be a bool, got {self.master_weights!r}"
            )
        for name in ("weight_fmt", "state_fmt"):
            lb.get_format(getattr(self, name))  # raises ValueError naming the unknown format
        try:
            lb.RoundMode(self.update_mode)
        except ValueError:
            modes = ", ".join(m.value for m in lb.RoundMode)
            raise ValueError(
                f"TrainConfig.update_mode = {self.update_mode!r} is not a rounding mode; "
                f"accepted: {modes}"
            ) from None
        if self.quant is not None:
            from lowbit.nn import QuantConfig

            if not isinstance(self.quant, QuantConfig):
                raise TypeError(
                    f"TrainConfig.quant must be a lowbit.nn.QuantConfig or None, got "
                    f"{type(self.quant).__name__}"
                )

    # ---- plain-data forms ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: the fields, with ``quant`` as ``QuantConfig.to_dict()`` (or None)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["quant"] = None if self.quant is None else self.quant.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The config of a dict as written by :meth:`to_dict` (missing keys take defaults).

        Raises:
            ValueError: a key that is not a field (the message lists the fields) or a bad value.
            TypeError: a value of the wrong type.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"a TrainConfig is read from a mapping, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(
                f"unknown TrainConfig key(s) {', '.join(map(repr, unknown))}; accepted keys: "
                f"{', '.join(names)} (the quantization goes in the [quant] table)"
            )
        kw = dict(d)
        q = kw.get("quant")
        if q is not None:
            from lowbit.nn import QuantConfig

            if not isinstance(q, QuantConfig):
                if not isinstance(q, Mapping):
                    raise TypeError(f"TrainConfig quant must be a table/dict, got {q!r}")
                kw["quant"] = QuantConfig.from_dict(dict(q))
        return cls(**kw)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """The config of JSON text written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def to_toml(self) -> str:
        """TOML text: the training settings as top-level keys, the quantization as ``[quant]``.

        Keys whose value is None are left out (TOML has no null); they read back as None.
        The quantization's per-layer overrides become ``[[quant.overrides]]`` tables with a
        ``pattern`` key, a format set to None in one is written ``"none"``.

        Raises:
            ValueError: an override sets a non-format field to None (no TOML form).
        """
        d = self.to_dict()
        q = d["quant"]
        if q is not None:
            tables = []
            for pattern, partial in q.pop("overrides", []):
                t: dict[str, Any] = {"pattern": pattern}
                for k, v in partial.items():
                    if v is None and k not in _FORMAT_FIELDS:
                        raise ValueError(
                            f"quant override {pattern!r}: {k}=None cannot be written to TOML"
                        )
                    t[k] = "none" if v is None else v
                tables.append(t)
            if tables:
                q["overrides"] = tables
        return _toml.dumps(d)

    @classmethod
    def from_toml(cls, text: str) -> TrainConfig:
        """The config of TOML text (see the module docstring for the layout).

        Raises:
            ValueError: invalid TOML, an unknown key or a bad value.
        """
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"invalid TOML config: {e}") from e
        return cls.from_dict(d)

    # ---- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a ``.toml`` or ``.json`` config file.

        Raises:
            ValueError: another suffix, or the file's content is not a valid config.
            FileNotFoundError: no such file.
        """
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".toml", ".json"):
            raise ValueError(f"config file {str(p)!r}: suffix must be .toml or .json")
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} not found")
        text = p.read_text(encoding="utf-8")
        try:
            return cls.from_toml(text) if suffix == ".toml" else cls.from_json(text)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{p}: {e}") from e

    def save(self, path: str | Path) -> Path:
        """Write the config to ``path`` (TOML or JSON by its suffix); returns the path."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".toml", ".json"):
            raise ValueError(f"config file {str(p)!r}: suffix must be .toml or .json")
        p.write_text(
            self.to_toml() if suffix == ".toml" else self.to_json() + "\n", encoding="utf-8"
        )
        return p

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
