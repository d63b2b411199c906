"""lowbit: emulate any low-precision number format, bit-exactly and at memory speed."""

from lowbit import arith, blocks, linalg
from lowbit.arith import GemmConfig, LowPrecisionArray, array, dot, matmul, precision
from lowbit.blocks import (
    quantize_bfp,
    quantize_fixed,
    quantize_int,
    quantize_mx,
)
from lowbit.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    IntFormat,
    PositFormat,
    get_format,
)
from lowbit.linalg import sum
from lowbit.rounding import RoundMode, decode, encode, flip_bits, round

__version__ = "0.1.0"

__all__ = [
    "BlockFormat",
    "FixedFormat",
    "FloatFormat",
    "GemmConfig",
    "IntFormat",
    "LowPrecisionArray",
    "PositFormat",
    "RoundMode",
    "__version__",
    "arith",
    "array",
    "blocks",
    "decode",
    "dot",
    "encode",
    "flip_bits",
    "get_format",
    "linalg",
    "matmul",
    "precision",
    "quantize_bfp",
    "quantize_fixed",
    "quantize_int",
    "quantize_mx",
    "round",
    "sum",
]
