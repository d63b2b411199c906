"""Choose a fused kernel for a rounding call, or return None to fall back to the reference.

Each kernel module exposes ``round_numpy(x, fmt, pol, seed, offset, out)`` returning the
rounded array, or ``None`` when it does not cover the case (dtype, format, mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit.formats import Format, PositFormat
from lowbit.rounding.reference import EdgePolicy


def round_numpy(x: np.ndarray, fmt: Format, pol: EdgePolicy, seed: int, offset: int,
                out: np.ndarray | None) -> np.ndarray | None:
    """Round with a fused kernel; ``None`` when no kernel covers this case."""
    if isinstance(fmt, PositFormat):
        from lowbit.kernels import posit_numba

        return posit_numba.round_numpy(x, fmt, pol, seed, offset, out)
    from lowbit.kernels import float_numba

    return float_numba.round_numpy(x, fmt, pol, seed, offset, out)


def round_torch_cpu(x: Any, fmt: Format, pol: EdgePolicy, seed: int, offset: int,
                    out: Any) -> Any:
    """Round a CPU tensor through zero-copy numpy views; ``None`` when not covered."""
    return None
