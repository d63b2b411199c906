"""lowbit: emulate any low-precision number format, bit-exactly and at memory speed."""

from lowbit.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    IntFormat,
    PositFormat,
    get_format,
)
from lowbit.rounding import RoundMode, round

__version__ = "0.1.0"

__all__ = [
    "BlockFormat",
    "FixedFormat",
    "FloatFormat",
    "IntFormat",
    "PositFormat",
    "RoundMode",
    "__version__",
    "get_format",
    "round",
]
