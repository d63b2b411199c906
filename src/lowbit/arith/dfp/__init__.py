"""Dynamic fixed point (DFP) arithmetic: INT16 tensors with a shared exponent, INT32 GEMMs.

Das et al., "Mixed Precision Training of Convolutional Neural Networks using Integer
Operations" (ICLR 2018): a tensor is ``I · 2**E_s`` with ``I`` a P-bit integer array (P = 16)
and one exponent per tensor; GEMMs multiply INT16 pairs into INT32 accumulators, spill each
bounded chunk of the reduction to fp32 and combine the chunks in fp32.

Typical use::

    from lowbit.arith import dfp

    a = dfp.quantize(x)                     # DFPTensor(ints=int16 array, exp=int)
    c, stats = dfp.matmul(a, dfp.quantize(w))
    stats.overflow_count                    # 0: the chunk length is proven safe
    c_bad, bad = dfp.matmul(a, w_q, chunk=None, headroom=0)   # one INT32 accumulator

See :mod:`lowbit.arith.dfp.tensor` (conversion rules) and :mod:`lowbit.arith.dfp.gemm` (the
GEMM, the chunk bound and its proof).
"""

from lowbit.arith.dfp.gemm import (
    ChunkPlan,
    DFPGemmStats,
    acc_limit,
    chunked_gemm,
    k_max,
    matmul,
    matmul_reference,
    plan_chunks,
    planned_gemm,
    shift_values,
)
from lowbit.arith.dfp.tensor import (
    MODES,
    DFPTensor,
    dequantize,
    quantize,
    quantize_values,
    requantize,
    shift_right,
    shifted_max,
)

__all__ = [
    "MODES",
    "ChunkPlan",
    "DFPGemmStats",
    "DFPTensor",
    "acc_limit",
    "chunked_gemm",
    "dequantize",
    "k_max",
    "matmul",
    "matmul_reference",
    "plan_chunks",
    "planned_gemm",
    "quantize",
    "quantize_values",
    "requantize",
    "shift_right",
    "shift_values",
    "shifted_max",
]
