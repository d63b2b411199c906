"""Choose a fused kernel for a rounding call, or return None to fall back to the reference.

Each kernel module exposes ``round_numpy(x, fmt, pol, seed, offset, out)`` returning the
rounded array, or ``None`` when it does not cover the case (dtype, format, mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.formats import Format, PositFormat
from lowbit.rounding.reference import EdgePolicy


def round_numpy(
    x: np.ndarray, fmt: Format, pol: EdgePolicy, seed: int, offset: int, out: np.ndarray | None
) -> np.ndarray | None:
    """Round with a fused kernel; ``None`` when no kernel covers this case."""
    if isinstance(fmt, PositFormat):
        from lowbit.kernels import posit_numba

        return posit_numba.round_numpy(x, fmt, pol, seed, offset, out)
    from lowbit.kernels import float_numba

    return float_numba.round_numpy(x, fmt, pol, seed, offset, out)


def round_torch_cpu(x: Any, fmt: Format, pol: EdgePolicy, seed: int, offset: int, out: Any) -> Any:
    """Round a CPU tensor through zero-copy numpy views; ``None`` when not covered.

    The numpy kernels see the tensor's own memory, so no copy is made on the way in, and the
    result is a tensor over the kernel's output buffer (``out`` itself when given: a
    contiguous ``out`` is written in place, a strided one gets a final copy).
    """
    from lowbit.kernels._torch_views import as_numpy, as_torch

    a = as_numpy(x)
    direct_out = out is not None and out.is_contiguous()
    o = as_numpy(out) if direct_out else None
    if isinstance(fmt, PositFormat):
        from lowbit.kernels import posit_numba

        res = posit_numba.round_numpy(a, fmt, pol, seed, offset, o)
    else:
        from lowbit.kernels import float_numba

        res = float_numba.round_numpy(a, fmt, pol, seed, offset, o)
    if res is None:
        return None
    if out is None:
        return as_torch(res)
    if not direct_out:
        out.copy_(as_torch(res))
    elif res is not o:  # a kernel that ignored ``out``
        np.copyto(o, res)
    return out
