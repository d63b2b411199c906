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

# The torch-based layers are optional (pip install 'lowbit[torch]'): import them on first use so
# that `import lowbit` needs only numpy and numba.
_LAZY_MODULES = ("amp", "data", "methods", "models", "nn", "optim", "ptq", "recipes", "train")
_LAZY_NAMES = {"save": "lowbit.nn.checkpoint", "load": "lowbit.nn.checkpoint"}
_LAZY_ALIASES = {
    "approx": "lowbit.arith.approx",
    "dfp": "lowbit.arith.dfp",
    "ivit": "lowbit.methods.ivit",
    "autonumerics": "lowbit.methods.autonumerics",
    "dr": "lowbit.methods.double_rounding",
}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"lowbit.{name}")
    if name in _LAZY_ALIASES:
        return importlib.import_module(_LAZY_ALIASES[name])
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")


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
    "amp",
    "approx",
    "arith",
    "array",
    "autonumerics",
    "blocks",
    "data",
    "decode",
    "dfp",
    "dot",
    "dr",
    "encode",
    "flip_bits",
    "get_format",
    "ivit",
    "linalg",
    "load",
    "matmul",
    "methods",
    "models",
    "nn",
    "optim",
    "precision",
    "ptq",
    "quantize_bfp",
    "quantize_fixed",
    "quantize_int",
    "quantize_mx",
    "recipes",
    "round",
    "save",
    "sum",
    "train",
]
