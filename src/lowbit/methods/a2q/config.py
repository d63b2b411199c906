"""A2Q method arguments and recipes: ``a2q(...)`` and the plain-QAT baseline ``qat_int(...)``.

Both are :class:`lowbit.nn.QuantConfig` objects with ``method`` set (``"a2q"`` or
``"qat_int"``) and the arguments in ``method_args``; ``lowbit.nn.quantize_`` then swaps
``nn.Linear`` and ``nn.Conv2d`` for :class:`~lowbit.methods.a2q.layers.A2QLinear` /
:class:`~lowbit.methods.a2q.layers.A2QConv2d` (importing :mod:`lowbit.methods.a2q` registers
them). The two methods differ only in the weight quantizer: A2Q's ℓ1-constrained,
round-toward-zero weights for a ``acc_bits`` accumulator, or plain per-channel QAT
(round-to-nearest, no constraint) with the same weight and input widths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lowbit.methods.a2q.quantizers import INITS, ROUNDINGS, WEIGHT_SCALES
from lowbit.nn.config import QuantConfig

METHODS = ("a2q", "qat_int")


def _int_in(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name}={v}; accepted: {lo}..{hi}")
    return v


@dataclass(frozen=True)
class A2QArgs:
    """Validated ``method_args`` of ``"a2q"`` / ``"qat_int"``.

    Attributes:
        acc_bits: target accumulator width ``P`` (2..64; None for ``qat_int``).
        weight_bits: ``M`` (2..16).
        act_bits: ``N`` (2..16).
        act_signed: ``"auto"`` (decided on the first batch), True or False.
        weight_scale: ``"learned"`` or ``"max"``.
        rounding: ``"trunc"`` (A2Q) or ``"nearest"`` (only to demonstrate the violation).
        init: ``"norm"`` (A2Q's weight-norm init) or ``"ep"`` (A2Q+'s ℓ1-ball projection).
    """

    acc_bits: int | None = 16
    weight_bits: int = 4
    act_bits: int = 8
    act_signed: bool | str = "auto"
    weight_scale: str = "learned"
    rounding: str = "trunc"
    init: str = "norm"

    def __post_init__(self) -> None:
        if self.acc_bits is not None:
            _int_in("acc_bits", self.acc_bits, 2, 64)
        _int_in("weight_bits", self.weight_bits, 2, 16)
        _int_in("act_bits", self.act_bits, 2, 16)
        if not (isinstance(self.act_signed, bool) or self.act_signed == "auto"):
            raise ValueError(f"act_signed={self.act_signed!r}; accepted: 'auto', True, False")
        if self.weight_scale not in WEIGHT_SCALES:
            raise ValueError(
                f"weight_scale={self.weight_scale!r}; accepted: "
                f"{', '.join(map(repr, WEIGHT_SCALES))}"
            )
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; accepted: {', '.join(map(repr, INITS))}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(
                f"rounding={self.rounding!r}; accepted: {', '.join(map(repr, ROUNDINGS))}"
            )

    @classmethod
    def from_config(cls, config: QuantConfig) -> A2QArgs:
        """The arguments of a config whose ``method`` is ``"a2q"`` or ``"qat_int"``."""
        if config.method not in METHODS:
            raise ValueError(f"method={config.method!r}; accepted: {', '.join(METHODS)}")
        args: Mapping[str, Any] = config.method_args
        names = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(args) - set(names))
        if bad:
            raise ValueError(
                f"unknown {config.method} method_args {bad}; accepted: {', '.join(names)}"
            )
        if config.method == "qat_int":
            if args.get("acc_bits") is not None or "rounding" in args or "init" in args:
                raise ValueError(
                    "method 'qat_int' is plain QAT: it takes no acc_bits, "
                    "rounding or init (use method 'a2q' for an accumulator "
                    "target)"
                )
            return cls(**{**dict(args), "acc_bits": None, "rounding": "nearest"})
        if args.get("acc_bits", 16) is None:
            raise ValueError("method 'a2q' needs acc_bits (an int in 2..64)")
        return cls(**dict(args))


def a2q(
    acc_bits: int = 16,
    weight_bits: int = 4,
    act_bits: int = 8,
    *,
    act_signed: bool | str = "auto",
    weight_scale: str = "learned",
    rounding: str = "trunc",
    init: str = "norm",
) -> QuantConfig:
    """A2Q recipe: Linear/Conv2d layers whose integer dot products provably fit a signed
    ``acc_bits``-bit accumulator (``‖q‖₁ <= (2**(P-1) - 1) · 2**(1_signed - N)`` per channel).

    Args:
        acc_bits: accumulator width ``P``.
        weight_bits: weight width ``M``.
        act_bits: input width ``N``.
        act_signed: input signedness (``"auto"``: decided on the first batch).
        weight_scale: ``"learned"`` or ``"max"`` (fixed) per-channel weight scale.
        rounding: ``"trunc"`` (A2Q); ``"nearest"`` breaks the guarantee (for demonstrations).
        init: ``"norm"`` (A2Q) or ``"ep"`` (A2Q+'s Euclidean-projection initialisation,
            arXiv 2401.10432: keeps the largest weights of each channel at a tight budget).
    """
    args = A2QArgs(acc_bits, weight_bits, act_bits, act_signed, weight_scale, rounding, init)
    return QuantConfig(method="a2q", method_args=dataclasses.asdict(args))


def qat_int(
    weight_bits: int = 4,
    act_bits: int = 8,
    *,
    act_signed: bool | str = "auto",
    weight_scale: str = "learned",
) -> QuantConfig:
    """Plain integer QAT baseline of A2Q: same weight/input quantization, no ℓ1 constraint,
    round-to-nearest weights (its accumulator needs the data-type bound)."""
    A2QArgs(None, weight_bits, act_bits, act_signed, weight_scale, "nearest")
    return QuantConfig(
        method="qat_int",
        method_args=dict(
            weight_bits=weight_bits,
            act_bits=act_bits,
            act_signed=act_signed,
            weight_scale=weight_scale,
        ),
    )


__all__ = ["METHODS", "A2QArgs", "a2q", "qat_int"]
