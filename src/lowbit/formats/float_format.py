"""Binary floating-point formats: IEEE 754 binary interchange formats and their small cousins.

A ``FloatFormat`` is sign (optional) + ``exp_bits`` exponent + ``man_bits`` trailing significand.
What the top of the code space means is the ``special`` convention:

* ``"ieee"`` – IEEE 754-2019 §3.4: the all-ones exponent holds ±inf (mantissa 0) and NaNs.
* ``"fn"``  – OCP OFP8 E4M3 style (§5.1 of the OFP8 spec): no infinities; only the code with
  all-ones exponent *and* mantissa is NaN, so the top binade is usable for finite values.
* ``"fnuz"`` – Graphcore/AMD style: no infinities, no negative zero; the single NaN is the
  code that would be −0 (sign bit set, all else zero).
* ``"none"`` – OCP MX FP6/FP4 (MX v1.0 §5.3.2/§5.3.3): every code is a finite number.

``has_zero=False`` models OCP E8M0 (MX v1.0 §5.4.1): the exponent field 0 is the normal number
2^-bias, there is no zero and no subnormal, and ``signed=False`` drops the sign bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Special = Literal["ieee", "fn", "fnuz", "none"]
_SPECIALS = ("ieee", "fn", "fnuz", "none")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format with ``exp_bits`` exponent and ``man_bits`` mantissa bits.

    Args:
        exp_bits: width of the biased exponent field (≥ 1).
        man_bits: width of the trailing significand field (≥ 0); precision is ``man_bits + 1``.
        bias: exponent bias; ``None`` means the IEEE default ``2**(exp_bits-1) - 1``.
        special: inf/NaN convention, one of ``"ieee"``, ``"fn"``, ``"fnuz"``, ``"none"``.
        signed: whether a sign bit exists (``False`` only for scale formats such as E8M0).
        has_zero: ``False`` when the exponent field 0 is a normal binade (E8M0).
        name: display name; presets set it, ad-hoc formats derive one.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    special: Special = "ieee"
    signed: bool = True
    has_zero: bool = True
    name: str = dataclasses.field(default="", compare=False)  # display only: equality is the layout

    def __post_init__(self) -> None:
        if not isinstance(self.exp_bits, int) or isinstance(self.exp_bits, bool):
            raise TypeError(f"exp_bits must be an int, got {self.exp_bits!r}")
        if not isinstance(self.man_bits, int) or isinstance(self.man_bits, bool):
            raise TypeError(f"man_bits must be an int, got {self.man_bits!r}")
        if not 1 <= self.exp_bits <= 11:
            raise ValueError(f"exp_bits={self.exp_bits} is out of range; accepted: 1..11")
        if not 0 <= self.man_bits <= 52:
            raise ValueError(f"man_bits={self.man_bits} is out of range; accepted: 0..52")
        if self.special not in _SPECIALS:
            raise ValueError(f"special={self.special!r} is not one of {_SPECIALS}")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        elif not isinstance(self.bias, int) or isinstance(self.bias, bool):
            raise TypeError(f"bias must be an int or None, got {self.bias!r}")
        if self.special == "ieee" and self.exp_bits < 2:
            raise ValueError("an IEEE-style format needs exp_bits >= 2 (one binade is inf/NaN)")
        if not self.has_zero and self.man_bits > 0:
            raise ValueError(
                "has_zero=False is defined only for scale formats with man_bits=0 "
                f"(OCP E8M0); got man_bits={self.man_bits}"
            )
        if self.special == "fnuz" and not self.signed:
            raise ValueError("special='fnuz' needs a sign bit (its NaN is the -0 code)")
        if self.emax < self.emin:
            raise ValueError(f"{self!r} has no finite normal numbers")
        if not self.name:
            object.__setattr__(self, "name", self._derived_name())

    def _derived_name(self) -> str:
        base = f"e{self.exp_bits}m{self.man_bits}"
        default_bias = (1 << (self.exp_bits - 1)) - 1
        suffix = {"ieee": "", "fn": "fn", "fnuz": "fnuz", "none": "fn"}[self.special]
        if self.special == "none":
            suffix = "fn(no-nan)"
        if not self.signed:
            suffix += "u"
        if not self.has_zero:
            suffix += "(no-zero)"
        if self.bias != default_bias:
            suffix += f"(bias={self.bias})"
        return base + suffix

    def __str__(self) -> str:
        return self.name

    # ---- layout -------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Total storage width in bits."""
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def precision(self) -> int:
        """Significand precision p (implicit bit included)."""
        return self.man_bits + 1

    @property
    def has_inf(self) -> bool:
        return self.special == "ieee"

    @property
    def has_nan(self) -> bool:
        # IEEE with no mantissa bits: the all-ones exponent is only ±inf, no NaN code is left
        return self.special != "none" and not (self.special == "ieee" and self.man_bits == 0)

    @property
    def has_neg_zero(self) -> bool:
        return self.signed and self.has_zero and self.special != "fnuz"

    @property
    def has_subnormals(self) -> bool:
        return self.has_zero and self.man_bits > 0

    # ---- exponent range -----------------------------------------------------------------
    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return (1 if self.has_zero else 0) - self.bias  # type: ignore[operator]

    @property
    def _top_field(self) -> int:
        """Largest exponent field that holds a finite number."""
        top = (1 << self.exp_bits) - 1
        if self.special == "ieee" or (self.special == "fn" and self.man_bits == 0):
            top -= 1
        return top

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return self._top_field - self.bias  # type: ignore[operator]

    @property
    def _max_mantissa(self) -> int:
        """Largest mantissa field usable in the top finite binade."""
        full = (1 << self.man_bits) - 1
        if self.special == "fn" and self.man_bits > 0:
            return full - 1
        return full

    # ---- finfo-style values ---------------------------------------------------------------
    @property
    def max_exact(self) -> Fraction:
        return Fraction(2) ** self.emax * (1 + Fraction(self._max_mantissa, 1 << self.man_bits))

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(self.max_exact)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value (numpy's ``tiny``)."""
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (equals ``min_normal`` when there are no subnormals)."""
        if self.has_subnormals:
            return 2.0 ** (self.emin - self.man_bits)
        return self.min_normal

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value: 2^-man_bits."""
        return 2.0**-self.man_bits

    @property
    def unit_roundoff(self) -> float:
        """u = eps/2, the relative error bound of round-to-nearest in the normal range."""
        return 2.0 ** -(self.man_bits + 1)

    @property
    def n_finite(self) -> int:
        """Number of codes that decode to a finite number."""
        signs = 2 if self.signed else 1
        if self.special == "ieee":  # the whole top binade: ±inf and NaNs
            special = signs * (1 << self.man_bits)
        elif self.special == "fn":  # the all-ones code of each sign
            special = signs
        elif self.special == "fnuz":  # the single -0 code
            special = 1
        else:
            special = 0
        return (1 << self.bits) - special

    # ---- codes --------------------------------------------------------------------------
    def nan_codes(self) -> list[int]:
        """Every code that decodes to NaN."""
        return [c for c in range(1 << self.bits) if self._classify(c) == "nan"]

    def special_encodings(self) -> dict[str, list[int]]:
        """Codes of ±inf, NaN and −0 (empty lists where the format lacks them)."""
        sign = 1 << (self.exp_bits + self.man_bits) if self.signed else 0
        inf = ((1 << self.exp_bits) - 1) << self.man_bits
        out: dict[str, list[int]] = {
            "+inf": [inf] if self.has_inf else [],
            "-inf": [inf | sign] if self.has_inf else [],
            "nan": self.nan_codes() if self.bits <= 16 else [],
            "-0": [sign] if self.has_neg_zero else [],
        }
        return out

    def _classify(self, code: int) -> str:
        m_mask = (1 << self.man_bits) - 1
        mant = code & m_mask
        expf = (code >> self.man_bits) & ((1 << self.exp_bits) - 1)
        sign = (code >> (self.exp_bits + self.man_bits)) & 1 if self.signed else 0
        all_e = (1 << self.exp_bits) - 1
        if self.special == "ieee" and expf == all_e:
            return "inf" if mant == 0 else "nan"
        if self.special == "fn" and expf == all_e and mant == m_mask:
            return "nan"
        if self.special == "fnuz" and sign == 1 and expf == 0 and mant == 0:
            return "nan"
        return "finite"

    def decode_exact(self, code: int) -> Fraction | None:
        """Exact value of a code; ``None`` for NaN and ±inf (see :meth:`decode`)."""
        if not 0 <= code < (1 << self.bits):
            raise ValueError(f"code {code} out of range for {self.name} ({self.bits} bits)")
        if self._classify(code) != "finite":
            return None
        mant = code & ((1 << self.man_bits) - 1)
        expf = (code >> self.man_bits) & ((1 << self.exp_bits) - 1)
        sign = (code >> (self.exp_bits + self.man_bits)) & 1 if self.signed else 0
        if self.has_zero and expf == 0:
            mag = Fraction(mant, 1 << self.man_bits) * Fraction(2) ** self.emin
        else:
            mag = (1 + Fraction(mant, 1 << self.man_bits)) * Fraction(2) ** (expf - self.bias)
        return -mag if sign else mag

    def decode(self, code: int) -> float:
        """Value of a code as a Python float (NaN, ±inf and −0 included)."""
        kind = self._classify(code)
        sign = (code >> (self.exp_bits + self.man_bits)) & 1 if self.signed else 0
        if kind == "nan":
            return float("nan")
        if kind == "inf":
            return float("-inf") if sign else float("inf")
        val = self.decode_exact(code)
        assert val is not None
        if val == 0:
            return -0.0 if sign else 0.0
        return float(val)
