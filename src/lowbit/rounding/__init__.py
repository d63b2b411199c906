"""Layer 2: rounding modes, the exact reference and the public element-wise API."""

from lowbit.rounding.api import round, round_reference_numpy
from lowbit.rounding.codes import decode, encode, flip_bits
from lowbit.rounding.modes import RoundMode, as_mode

__all__ = [
    "RoundMode",
    "as_mode",
    "decode",
    "encode",
    "flip_bits",
    "round",
    "round_reference_numpy",
]
