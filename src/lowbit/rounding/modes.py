"""Rounding modes (IEEE 754-2019 §4.3 plus round-to-odd and the stochastic family)."""

from __future__ import annotations

from enum import Enum


class RoundMode(str, Enum):
    """How a value between two neighbours ``lo < x < hi`` of a format is rounded.

    Accepts its string value or the listed aliases: ``RoundMode("rne")``, ``"nearest"``.
    """

    RNE = "rne"  #: nearest, ties to even (IEEE roundTiesToEven; the default)
    RNA = "rna"  #: nearest, ties away from zero (IEEE roundTiesToAway)
    RNZ = "rnz"  #: nearest, ties toward zero
    RTZ = "rtz"  #: toward zero (truncation)
    RU = "ru"  #: toward +inf
    RD = "rd"  #: toward -inf
    RO = "ro"  #: round to odd: truncate, then set the last bit if inexact
    SR = "sr"  #: stochastic, up with probability (x - lo)/(hi - lo) (``rand_bits`` of resolution)
    SR_EQUAL = "sr_equal"  #: stochastic, 50/50 between the neighbours when inexact
    SR_BITS = "sr_bits"  #: hardware SR: add ``rand_bits`` random bits below the kept bits, truncate

    @classmethod
    def _missing_(cls, value: object) -> RoundMode | None:
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_")
            for member in cls:
                if member.value == key:
                    return member
            if key in _ALIASES:
                return cls(_ALIASES[key])
        return None

    @property
    def stochastic(self) -> bool:
        return self in (RoundMode.SR, RoundMode.SR_EQUAL, RoundMode.SR_BITS)

    @property
    def nearest(self) -> bool:
        return self in (RoundMode.RNE, RoundMode.RNA, RoundMode.RNZ)


_ALIASES = {
    "nearest": "rne",
    "rn": "rne",
    "ties_even": "rne",
    "ties_to_even": "rne",
    "ties_away": "rna",
    "ties_to_away": "rna",
    "ties_zero": "rnz",
    "ties_to_zero": "rnz",
    "toward_zero": "rtz",
    "truncate": "rtz",
    "rz": "rtz",
    "up": "ru",
    "toward_positive": "ru",
    "down": "rd",
    "toward_negative": "rd",
    "odd": "ro",
    "round_to_odd": "ro",
    "stochastic": "sr",
    "sr_prop": "sr",
    "sr_5050": "sr_equal",
    "sr_k": "sr_bits",
}


def as_mode(mode: RoundMode | str) -> RoundMode:
    """Normalise a mode; an unknown one raises ``ValueError`` listing the accepted names."""
    if isinstance(mode, RoundMode):
        return mode
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a RoundMode or str, got {type(mode).__name__}")
    try:
        return RoundMode(mode)
    except ValueError:
        accepted = [m.value for m in RoundMode] + sorted(_ALIASES)
        raise ValueError(
            f"unknown rounding mode {mode!r}; accepted: {', '.join(accepted)}"
        ) from None
