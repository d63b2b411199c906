"""Approximate multipliers: L-Mul (Luo & Sun 2024), multiplication by integer addition.

``lmul(x, y, man_bits)`` is the elementwise product, ``lmul_matmul(a, b, man_bits)`` a matrix
product of L-Mul products summed in float32 (numba kernel; torch autograd, straight-through).
The emulated GEMM ``lowbit.matmul(..., mult="lmulN")`` uses the same products with any
accumulator. Semantics, rounding, subnormal, underflow and overflow rules: :mod:`.lmul`.
"""

from lowbit.arith.approx.lmul import (
    lmul,
    lmul_constant,
    lmul_format,
    lmul_matmul,
    lmul_matmul_reference,
    lmul_offset_bits,
)

__all__ = [
    "lmul",
    "lmul_constant",
    "lmul_format",
    "lmul_matmul",
    "lmul_matmul_reference",
    "lmul_offset_bits",
]
