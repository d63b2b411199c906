"""lowbit: emulate any low-precision number format, bit-exactly and at memory speed."""

from lowbit import arith
from lowbit.arith import precision
from lowbit.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    IntFormat,
    PositFormat,
    get_format,
)
from lowbit.rounding import RoundMode, decode, encode, flip_bits, round

__version__ = "0.1.0"

__all__ = [
    "BlockFormat",
    "FixedFormat",
    "FloatFormat",
    "IntFormat",
    "PositFormat",
    "RoundMode",
    "__version__",
    "arith",
    "decode",
    "encode",
    "flip_bits",
    "get_format",
    "precision",
    "round",
]
