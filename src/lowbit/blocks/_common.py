"""Helpers shared by the block quantizers: backend round trips, axis and block bookkeeping.

Every quantizer in :mod:`lowbit.blocks` computes on a float64 numpy copy of its input (exact
for every accepted input dtype) and converts the result back to the input's backend, dtype,
shape and device. torch and jax are imported only when the caller passed one of their arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from lowbit.rounding import backend as B

Restore = Callable[[np.ndarray], Any]

_BF16 = np.dtype(ml_dtypes.bfloat16)
_F16 = np.dtype(np.float16)


def to_float64(x: Any) -> tuple[np.ndarray, Restore, str]:
    """A float64 numpy copy of ``x`` and a function that turns a float64 result back.

    Returns:
        ``(x64, restore, kind)``: ``restore(res64)`` gives an array of ``x``'s backend, dtype,
        shape and device (values not representable in a narrow dtype are rounded once, to
        nearest even); ``kind`` is ``"numpy"``, ``"torch"`` or ``"jax"``.

    Raises:
        TypeError: unsupported input type or dtype (the message lists the accepted ones).
    """
    if isinstance(x, bool):
        raise TypeError("bool is not a number to quantize; pass a float")
    kind = B.backend_of(x)
    if kind == "numpy":
        if isinstance(x, (float, int, list, tuple)):
            arr = np.asarray(x, dtype=np.float64)
        else:
            arr = np.asarray(x)
        if arr.dtype not in B.NUMPY_FLOAT_DTYPES:
            raise TypeError(f"unsupported dtype {arr.dtype}; accepted: {B.ACCEPTED_DTYPES}")
        dt = arr.dtype
        scalar = isinstance(x, (float, int, np.generic))

        def restore_np(res: np.ndarray) -> Any:
            out = _narrow(res, dt).astype(dt)
            return out.dtype.type(out) if scalar else out

        with np.errstate(invalid="ignore"):  # signalling NaNs become quiet ones
            return arr.astype(np.float64), restore_np, kind
    if kind == "torch":
        import torch

        if x.dtype not in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"unsupported dtype {x.dtype}; accepted: {B.ACCEPTED_DTYPES}")
        tdt, dev = x.dtype, x.device
        npdt = {
            torch.float64: np.dtype(np.float64),
            torch.float32: np.dtype(np.float32),
            torch.float16: _F16,
            torch.bfloat16: _BF16,
        }[tdt]
        x64 = x.detach().to("cpu", torch.float64).numpy()

        def restore_torch(res: np.ndarray) -> Any:
            t = torch.from_numpy(np.ascontiguousarray(_narrow(res, npdt)))
            return t.to(device=dev, dtype=tdt)

        return x64, restore_torch, kind
    import jax
    import jax.numpy as jnp

    if x.dtype not in (jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16):
        raise TypeError(f"unsupported dtype {x.dtype}; accepted: {B.ACCEPTED_DTYPES}")
    jdt = np.dtype(x.dtype)
    devices = list(x.devices()) if hasattr(x, "devices") else []
    x64 = np.asarray(x).astype(np.float64)

    def restore_jax(res: np.ndarray) -> Any:
        arr = jnp.asarray(_narrow(res, jdt).astype(jdt))
        return jax.device_put(arr, devices[0]) if len(devices) == 1 else arr

    return x64, restore_jax, kind


def _narrow(res: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Round float64 values once (RNE) onto fp16/bf16 so the final cast is exact."""
    if dt == _F16 or dt == _BF16:
        from lowbit.rounding.api import round as lb_round

        fmt = "fp16" if dt == _F16 else "bf16"
        return np.asarray(lb_round(res, fmt, "rne", impl="reference"))
    return res


def normalize_axis(axis: Any, ndim: int) -> int:
    """``axis`` as a non-negative int; a 0-d array is treated as shape ``(1,)``."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {axis!r}")
    nd = max(ndim, 1)
    if not -nd <= axis < nd:
        raise ValueError(
            f"axis={axis} is out of range for an array of {ndim} dimension(s); "
            f"accepted: {-nd}..{nd - 1}"
        )
    return int(axis) % nd


def check_block(block: Any, name: str = "block") -> int:
    """A positive int block size."""
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {block!r}")
    if block < 1:
        raise ValueError(f"{name}={block} must be >= 1")
    return int(block)


def to_blocks(xm: np.ndarray, block: int) -> np.ndarray:
    """``(..., n)`` -> ``(..., nb, block)``, the last partial block padded with zeros."""
    n = xm.shape[-1]
    nb = -(-n // block)
    pad = nb * block - n
    if pad:
        widths = [(0, 0)] * (xm.ndim - 1) + [(0, pad)]
        xm = np.pad(xm, widths)
    return xm.reshape(*xm.shape[:-1], nb, block)


def block_amax(xm: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block largest finite magnitude and "has NaN/inf" mask of ``(..., n)`` data.

    Returns arrays shaped ``(..., nb)``; padding zeros never change the maximum.
    """
    xb = to_blocks(xm, block)
    fin = np.isfinite(xb)
    bad = ~fin.all(axis=-1)
    amax = np.max(np.where(fin, np.abs(xb), 0.0), axis=-1, initial=0.0)
    return amax, bad


def expand_blocks(per_block: np.ndarray, block: int, n: int) -> np.ndarray:
    """``(..., nb)`` -> ``(..., n)``: every element gets its block's value."""
    return np.repeat(per_block, block, axis=-1)[..., :n]


def floor_log2(a: np.ndarray) -> np.ndarray:
    """Exact ``floor(log2(a))`` for positive finite float64 (subnormals included); int64."""
    _, e = np.frexp(a)
    return e.astype(np.int64) - 1


def ldexp(x: np.ndarray, e: np.ndarray | int) -> np.ndarray:
    """``x * 2**e`` for float64 ``x`` and int exponents (exact unless it under/overflows)."""
    return np.ldexp(x, np.asarray(e, dtype=np.int32))


def scale_down_exact(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``x / 2**e`` with underflow made harmless for the rounding that follows.

    A nonzero quotient that underflows float64 to 0 is replaced by ±2^-1074: every rounding
    mode treats any nonzero value far below half the target grid's step the same way (0 or
    one step, by its sign and the mode), so the result equals rounding the exact quotient.
    Only float64 inputs with a dynamic range above ~2^900 inside one block can hit this.
    """
    with np.errstate(under="ignore", over="ignore"):
        q = ldexp(x, -np.asarray(e))
    lost = (q == 0) & (x != 0) & np.isfinite(x)
    if lost.any():
        q = np.where(lost, np.copysign(5e-324, x), q)
    return q
