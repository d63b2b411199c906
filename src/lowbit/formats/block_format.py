"""Block formats: elements that share one scale per block (OCP MX v1.0, block floating point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lowbit.formats.fixed_format import FixedFormat
from lowbit.formats.float_format import FloatFormat

ScaleRule = Literal["floor", "ceil"]
# OCP MX v1.0 §5.4.1: the shared scale is an unsigned 8-bit exponent with 0xFF as NaN.
_E8M0 = FloatFormat(8, 0, 127, "fn", signed=False, has_zero=False, name="e8m0")


@dataclass(frozen=True)
class BlockFormat:
    """``block`` consecutive elements of ``elem`` share a power-of-two scale in ``scale_fmt``.

    ``scale_rule="floor"`` is OCP MX v1.0 §6.3: X = 2^(floor(log2 amax) - emax_elem), which can
    clip the largest element; ``"ceil"`` picks the smallest power of two that avoids clipping.
    MXINT8 elements are 8-bit two's complement with an implied scale 2^-6, i.e. the fixed-point
    format Q1.6 (values -2 .. 127/64).
    """

    elem: FloatFormat | FixedFormat
    block: int = 32
    scale_fmt: FloatFormat = _E8M0
    scale_rule: ScaleRule = "floor"
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"block={self.block!r} must be a positive int")
        if self.scale_rule not in ("floor", "ceil"):
            raise ValueError(f"scale_rule={self.scale_rule!r}; accepted: 'floor', 'ceil'")
        if not self.name:
            object.__setattr__(self, "name", f"block<{self.elem},{self.block},{self.scale_fmt}>")

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return self.elem.bits

    @property
    def bits_per_element(self) -> float:
        """Storage cost including the amortized shared scale."""
        return self.elem.bits + self.scale_fmt.bits / self.block

    @property
    def elem_emax(self) -> int:
        """Exponent of the element format's largest power of two (MX v1.0 emax_elem)."""
        if isinstance(self.elem, FloatFormat):
            return self.elem.emax
        return self.elem.int_bits - 1  # Q1.6 (MXINT8): largest element in [1, 2)
