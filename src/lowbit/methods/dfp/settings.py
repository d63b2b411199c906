"""DFP-16 training settings (``QuantConfig.method_args`` of ``method="dfp16"``) and the recipe."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lowbit.arith.dfp import plan_chunks
from lowbit.arith.dfp.tensor import check_mode
from lowbit.nn.config import QuantConfig

METHOD = "dfp16"


@dataclass(frozen=True)
class DFPSettings:
    """How a DFP layer computes its three GEMMs (see :mod:`lowbit.arith.dfp.gemm`).

    Attributes:
        bits: DFP width P of activations, weights and output gradients (2..32; 16).
        acc_bits: integer accumulator width (32: INT32).
        chunk: products per accumulator: ``"auto"`` (the proven bound), an int, or None
            (unchunked; overflows on adversarial data, for demonstrations).
        headroom: operand right shifts: ``"auto"``, a total number of bits, or a pair.
        min_chunk: chunk length ``headroom="auto"`` guarantees.
        grad_mode: rounding of output gradients, ``"rne"`` or ``"sr"`` (activations and
            weights are always RNE).
    """

    bits: int = 16
    acc_bits: int = 32
    chunk: int | str | None = "auto"
    headroom: int | str | tuple[int, int] = "auto"
    min_chunk: int = 16
    grad_mode: str = "rne"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise TypeError(f"bits must be an int, got {self.bits!r}")
        if not 2 <= self.bits <= 26:
            raise ValueError(f"bits={self.bits}; accepted: 2..26 (products must stay exact)")
        if isinstance(self.headroom, list):
            object.__setattr__(self, "headroom", tuple(self.headroom))
        object.__setattr__(self, "grad_mode", check_mode(self.grad_mode))
        # validates acc_bits, chunk, headroom and min_chunk with the planner itself
        plan_chunks(
            1,
            1,
            1,
            acc_bits=self.acc_bits,
            chunk=self.chunk,
            headroom=self.headroom,
            min_chunk=self.min_chunk,
        )

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None) -> DFPSettings:
        """Settings from ``QuantConfig.method_args`` (unknown keys raise ValueError)."""
        args = dict(args or {})
        names = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(args) - set(names))
        if bad:
            raise ValueError(f"unknown dfp16 method_args {bad}; accepted: {', '.join(names)}")
        return cls(**args)

    def to_args(self) -> dict[str, Any]:
        """JSON-able ``method_args`` (a headroom pair becomes a list)."""
        d = dataclasses.asdict(self)
        if isinstance(self.headroom, tuple):
            d["headroom"] = list(self.headroom)
        return d

    def describe(self) -> str:
        chunk = "unchunked" if self.chunk is None else f"chunk {self.chunk}"
        return f"dfp{self.bits} int{self.acc_bits} acc, {chunk}, headroom {self.headroom}"


def dfp16_training(
    bits: int = 16,
    acc_bits: int = 32,
    chunk: int | str | None = "auto",
    *,
    headroom: int | str | tuple[int, int] = "auto",
    min_chunk: int = 16,
    grad_mode: str = "rne",
    seed: int = 0,
) -> QuantConfig:
    """INT16 dynamic fixed point training (Das et al. 2018) as a :class:`QuantConfig`.

    ``lowbit.nn.quantize_(model, dfp16_training())`` swaps every ``nn.Linear`` and
    ``nn.Conv2d`` (groups = 1, zero padding) for :class:`DFPLinear` / :class:`DFPConv2d`:
    activations, weights and output gradients are quantized to DFP-``bits`` every step, the
    forward, backward-data and weight-gradient GEMMs run as INT16 x INT16 products in
    ``acc_bits``-bit chunk accumulators combined in fp32, and everything else (bias, BN,
    ReLU, pooling, loss, the optimizer on the fp32 master weights) stays fp32.

    Args:
        bits: DFP width (16).
        acc_bits: accumulator width (32).
        chunk: ``"auto"``, an int or None (see :class:`DFPSettings`).
        headroom: operand right shifts (``"auto"``).
        min_chunk: chunk length guaranteed by ``headroom="auto"``.
        grad_mode: ``"rne"`` or ``"sr"`` for output gradients.
        seed: base seed of the stochastic rounding streams.
    """
    s = DFPSettings(
        bits=bits,
        acc_bits=acc_bits,
        chunk=chunk,
        headroom=headroom,
        min_chunk=min_chunk,
        grad_mode=grad_mode,
    )
    return QuantConfig(method=METHOD, method_args=s.to_args(), seed=seed)


__all__ = ["METHOD", "DFPSettings", "dfp16_training"]
