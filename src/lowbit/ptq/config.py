"""``PTQConfig``: the validated options of one post-training quantization."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from lowbit.formats import IntFormat, get_format
from lowbit.ptq.observers import METHODS

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
WEIGHT_METHODS = ("minmax", "mse")
DEFAULT_GROUP_SIZE = 128
_GRAN_ALIASES = {"tensor": "per_tensor", "channel": "per_channel", "group": "per_group"}


def int_bits(fmt: Any, name: str) -> int:
    """Width of a signed integer format name (``"int8"``) or :class:`~lowbit.IntFormat`."""
    accepted = "a signed integer format 'int2' .. 'int16'"
    try:
        f = get_format(fmt)
    except (ValueError, TypeError):
        raise ValueError(f"{name}={fmt!r} is not a lowbit format; accepted: {accepted}") from None
    if not isinstance(f, IntFormat) or not f.signed or not 2 <= f.bits <= 16:
        raise ValueError(f"{name}={fmt!r} is not supported by PTQ; accepted: {accepted}")
    return f.bits


@dataclass(frozen=True)
class PTQConfig:
    """Options of :func:`lowbit.ptq.calibrate` (see there); validated on construction.

    Round-trips through :meth:`to_dict` / :meth:`from_dict` and :meth:`to_json` /
    :meth:`from_json`.
    """

    weight: str = "int8"
    act: str | None = "int8"
    method: str = "minmax"
    weight_method: str | None = None
    granularity: str = "per_channel"
    group_size: int | None = None
    percentile: float = 99.99
    num_batches: int | None = None
    fold_bn: bool = True
    weight_only: bool = False

    def __post_init__(self) -> None:
        int_bits(self.weight, "weight")
        if self.act is not None:
            int_bits(self.act, "act")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; accepted: {', '.join(map(repr, METHODS))}")
        if self.weight_method is not None and self.weight_method not in WEIGHT_METHODS:
            raise ValueError(
                f"weight_method={self.weight_method!r}; accepted: None, "
                f"{', '.join(map(repr, WEIGHT_METHODS))}"
            )
        gran = _GRAN_ALIASES.get(self.granularity, self.granularity)
        if gran not in GRANULARITIES:
            raise ValueError(
                f"granularity={self.granularity!r}; accepted: {', '.join(map(repr, GRANULARITIES))}"
            )
        object.__setattr__(self, "granularity", gran)
        gs = self.group_size
        if gs is not None:
            if isinstance(gs, bool) or not isinstance(gs, int) or gs < 1:
                raise ValueError(f"group_size must be an int >= 1 or None, got {gs!r}")
            if gran != "per_group":
                raise ValueError(f"group_size={gs} needs granularity='per_group', got {gran!r}")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise ValueError(f"percentile={p!r} is out of range; accepted: (0, 100]")
        nb = self.num_batches
        if nb is not None and (isinstance(nb, bool) or not isinstance(nb, int) or nb < 1):
            raise ValueError(f"num_batches must be an int >= 1 or None, got {nb!r}")
        for name in ("fold_bn", "weight_only"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    # ---- derived ------------------------------------------------------------------------
    @property
    def weight_bits(self) -> int:
        return int_bits(self.weight, "weight")

    @property
    def act_bits(self) -> int | None:
        """Input activation width, ``None`` when weight-only."""
        if self.weight_only or self.act is None:
            return None
        return int_bits(self.act, "act")

    @property
    def effective_group_size(self) -> int:
        return self.group_size if self.group_size is not None else DEFAULT_GROUP_SIZE

    @property
    def effective_weight_method(self) -> str:
        """``weight_method``, or ``"mse"`` when ``method="mse"`` and ``"minmax"`` otherwise."""
        if self.weight_method is not None:
            return self.weight_method
        return "mse" if self.method == "mse" else "minmax"

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PTQConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PTQConfig keys {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> PTQConfig:
        return cls.from_dict(json.loads(s))


__all__ = ["GRANULARITIES", "PTQConfig", "int_bits"]
