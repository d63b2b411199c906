"""Small numba building blocks shared by the fused float and fixed-point kernels.

Why these exist:

* numba widens ``uint32`` arithmetic to ``uint64`` and turns ``uint64 op int64`` into
  ``float64``; the helpers here pin every result width with an explicit cast so that kernels
  stay in 32-bit lanes (twice the SIMD width) and never touch floating point by accident.
* The random bits are the counter-based hash of :mod:`lowbit.kernels.randbits`, recomputed
  inline so that a stochastic kernel reads no second array.
* An LLVM-level hint that numba does not expose: a loop may use 512-bit vectors.

Nothing here is compiled at import time: ``njit`` compiles lazily on first call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from lowbit.kernels.randbits import M1, M2
from lowbit.rounding.modes import RoundMode

# Mode ids passed to the 64-bit kernels as runtime integers (order is part of the kernel ABI).
MODE_IDS: dict[RoundMode, int] = {
    RoundMode.RNE: 0,
    RoundMode.RNA: 1,
    RoundMode.RNZ: 2,
    RoundMode.RTZ: 3,
    RoundMode.RU: 4,
    RoundMode.RD: 5,
    RoundMode.RO: 6,
    RoundMode.SR: 7,
    RoundMode.SR_EQUAL: 8,
    RoundMode.SR_BITS: 9,
}
RNE, RNA, RNZ, RTZ, RU, RD, RO, SR, SR_EQUAL, SR_BITS = range(10)

u32 = np.uint32
u64 = np.uint64
_M1 = np.uint32(M1)
_M2 = np.uint32(M2)
_S15 = np.uint32(15)
_S16 = np.uint32(16)
_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)


# ---- counter-based random bits ----------------------------------------------------------------
@njit
def mix32(x: Any) -> Any:
    """``mix32`` of randbits.py with every intermediate truncated to 32 bits."""
    x = u32(x ^ (x >> _S16))
    x = u32(x * _M1)
    x = u32(x ^ (x >> _S15))
    x = u32(x * _M2)
    return u32(x ^ (x >> _S16))


@njit
def rand_bits_lohi(lo: Any, hi: Any, k0: Any, k1: Any) -> Any:
    """The 32 random bits of the element whose 64-bit flat index is ``hi:lo``."""
    return mix32(u32(mix32(u32(lo ^ k0)) ^ hi ^ k1))


@njit
def rand_bits_at(index: Any, k0: Any, k1: Any) -> Any:
    """The 32 random bits of flat element ``index`` (uint64): ``bits_int`` of randbits.py."""
    return rand_bits_lohi(u32(index & _LO32), u32(index >> _S32), k0, k1)


# ---- memory layout ----------------------------------------------------------------------------
_LINE = 64  # bytes per cache line, and per 512-bit vector


@njit
def line_head(a: Any) -> Any:
    """Elements of the contiguous 1-D array ``a`` before its first cache-line boundary.

    Capped at ``a.size``; 0 when ``a`` starts on a boundary. An address that is not a
    multiple of the itemsize never reaches one: the head is then 0 and nothing changes but
    speed (the split is a performance hint, every element is still written once).
    """
    addr = np.int64(a.ctypes.data)
    gap = (_LINE - addr % _LINE) % _LINE
    if gap % a.itemsize != 0:
        return 0
    return min(a.size, gap // a.itemsize)


# ---- LLVM-level helpers ----------------------------------------------------------------------
_WIDE = '"prefer-vector-width"="512"'


@intrinsic
def prefer_wide_vectors(typingctx: Any) -> Any:
    """Let LLVM vectorize the calling function with 512-bit registers where the CPU has them.

    LLVM's default tuning for AVX-512 client/server cores prefers 256-bit vectors (clock
    throttling on old Skylake parts); a long integer-only loop body such as the rounding core
    runs ~1.6x faster with 512-bit lanes on current cores, which decides whether it keeps up
    with memory. The attribute is only a preference: CPUs without AVX-512 are unaffected.
    ``llvmlite`` validates attribute names, so the string attribute is added to the set
    directly (it is printed verbatim into the function definition).
    """
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        attrs = builder.function.attributes
        if isinstance(attrs, set):  # a hint only: skip it if llvmlite's internals change
            set.add(attrs, _WIDE)
        return context.get_dummy_value()

    return sig, codegen
