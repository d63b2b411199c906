"""Layer 4: correctly rounded arithmetic in any float format (``lb.arith.add`` ...)."""

from lowbit.arith import approx
from lowbit.arith.context import PrecisionContext, current, precision
from lowbit.arith.intgemm import IntMatmulResult, int_matmul
from lowbit.arith.lparray import LowPrecisionArray, array
from lowbit.arith.matmul import GemmConfig, dot, matmul
from lowbit.arith.ops import (
    abs,
    add,
    div,
    eq,
    exp,
    fma,
    ge,
    gt,
    le,
    log,
    lt,
    maximum,
    minimum,
    mul,
    ne,
    neg,
    sigmoid,
    sqrt,
    sub,
    tanh,
)

__all__ = [
    "GemmConfig",
    "IntMatmulResult",
    "LowPrecisionArray",
    "PrecisionContext",
    "abs",
    "add",
    "approx",
    "array",
    "current",
    "div",
    "dot",
    "eq",
    "exp",
    "fma",
    "ge",
    "gt",
    "int_matmul",
    "le",
    "log",
    "lt",
    "matmul",
    "maximum",
    "minimum",
    "mul",
    "ne",
    "neg",
    "precision",
    "sigmoid",
    "sqrt",
    "sub",
    "tanh",
]
