"""Layer 2: rounding modes, the exact reference and the public element-wise API."""

from lowbit.rounding.api import round, round_reference_numpy
from lowbit.rounding.modes import RoundMode, as_mode

__all__ = ["RoundMode", "as_mode", "round", "round_reference_numpy"]
