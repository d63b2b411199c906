"""Fixed-point and integer formats: a uniform grid of step 2^-frac_bits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class FixedFormat:
    """Q(int_bits, frac_bits): two's complement when ``signed`` (the sign bit is extra).

    ``FixedFormat(3, 12, signed=True)`` is 16 bits wide and spans [-8, 8 - 2^-12] in steps of
    2^-12. Out-of-range results saturate or wrap, as the rounding call's ``overflow=`` says.
    """

    int_bits: int
    frac_bits: int
    signed: bool = True
    name: str = dataclasses.field(default="", compare=False)  # display only: equality is the layout

    def __post_init__(self) -> None:
        for field, val in (("int_bits", self.int_bits), ("frac_bits", self.frac_bits)):
            if not isinstance(val, int) or isinstance(val, bool):
                raise TypeError(f"{field} must be an int, got {val!r}")
        if self.int_bits < 0 or self.frac_bits < -64 or self.bits < 1 or self.bits > 53:
            raise ValueError(
                f"FixedFormat(int_bits={self.int_bits}, frac_bits={self.frac_bits}) is invalid;"
                " accepted: int_bits >= 0 and 1 <= total bits <= 53 (exact in float64)"
            )
        if not self.name:
            kind = "q" if self.signed else "uq"
            object.__setattr__(self, "name", f"{kind}{self.int_bits}.{self.frac_bits}")

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return self.int_bits + self.frac_bits + int(self.signed)

    @property
    def step(self) -> float:
        return 2.0**-self.frac_bits

    @property
    def code_min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def code_max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max_exact(self) -> Fraction:
        return Fraction(self.code_max) * Fraction(2) ** -self.frac_bits

    @property
    def max(self) -> float:
        return float(self.max_exact)

    @property
    def min(self) -> float:
        """Most negative value (0 when unsigned)."""
        return float(Fraction(self.code_min) * Fraction(2) ** -self.frac_bits)

    @property
    def min_normal(self) -> float:
        return self.step

    @property
    def min_subnormal(self) -> float:
        return self.step

    @property
    def eps(self) -> float:
        """Absolute resolution (the grid step)."""
        return self.step

    @property
    def unit_roundoff(self) -> float:
        """Absolute error bound of round-to-nearest inside the range."""
        return self.step / 2

    def decode_exact(self, code: int) -> Fraction:
        """Value of a two's complement (or unsigned) code."""
        if not 0 <= code < (1 << self.bits):
            raise ValueError(f"code {code} out of range for {self.name} ({self.bits} bits)")
        if self.signed and code >= 1 << (self.bits - 1):
            code -= 1 << self.bits
        return Fraction(code) * Fraction(2) ** -self.frac_bits

    def decode(self, code: int) -> float:
        return float(self.decode_exact(code))


@dataclass(frozen=True)
class IntFormat:
    """A ``bits``-wide integer, signed (two's complement) or unsigned."""

    bits: int
    signed: bool = True
    name: str = dataclasses.field(default="", compare=False)  # display only: equality is the layout

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise TypeError(f"bits must be an int, got {self.bits!r}")
        if not 1 <= self.bits <= 53 or (self.signed and self.bits < 2):
            raise ValueError(
                f"IntFormat bits={self.bits} is out of range; accepted: 2..53 "
                "(1..53 unsigned; exact in float64)"
            )
        if not self.name:
            object.__setattr__(self, "name", f"{'int' if self.signed else 'uint'}{self.bits}")

    def __str__(self) -> str:
        return self.name

    @property
    def fixed(self) -> FixedFormat:
        """The same grid as a :class:`FixedFormat` with no fraction bits."""
        return FixedFormat(self.bits - int(self.signed), 0, self.signed, name=self.name)

    @property
    def max(self) -> float:
        return self.fixed.max

    @property
    def min(self) -> float:
        return self.fixed.min

    @property
    def min_normal(self) -> float:
        return 1.0

    @property
    def min_subnormal(self) -> float:
        return 1.0

    @property
    def eps(self) -> float:
        return 1.0

    @property
    def unit_roundoff(self) -> float:
        return 0.5

    def decode_exact(self, code: int) -> Fraction:
        return self.fixed.decode_exact(code)

    def decode(self, code: int) -> float:
        return float(self.decode_exact(code))
