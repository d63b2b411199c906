"""Array backends: recognise numpy / torch / jax arrays and give the reference its primitives.

torch and jax are imported only when the caller already passed one of their arrays, so
``import lowbit`` stays light.
"""

from __future__ import annotations

import sys
from typing import Any

import ml_dtypes
import numpy as np

NUMPY_FLOAT_DTYPES = (
    np.dtype(np.float64),
    np.dtype(np.float32),
    np.dtype(np.float16),
    np.dtype(ml_dtypes.bfloat16),
)
ACCEPTED_DTYPES = "float64, float32, float16, bfloat16"


def backend_of(x: Any) -> str:
    """'numpy', 'torch' or 'jax' (scalars and lists count as numpy)."""
    if isinstance(x, np.ndarray | np.generic | float | int | list | tuple):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return "jax"
    raise TypeError(
        f"unsupported input type {type(x).__name__}; accepted: numpy arrays, Python floats "
        "and lists, torch tensors, jax arrays"
    )


class NumpyOps:
    """Primitives of the reference on numpy float64 arrays."""

    signbit = staticmethod(np.signbit)
    abs = staticmethod(np.abs)
    isfinite = staticmethod(np.isfinite)
    isinf = staticmethod(np.isinf)
    isnan = staticmethod(np.isnan)
    floor = staticmethod(np.floor)
    copysign = staticmethod(np.copysign)
    minimum = staticmethod(np.minimum)
    fmod = staticmethod(np.fmod)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def where(c: Any, a: Any, b: Any) -> Any:
        return np.where(c, a, b)

    @staticmethod
    def frexp(x: Any) -> tuple[Any, Any]:
        return np.frexp(x)

    @staticmethod
    def ldexp(x: Any, e: Any) -> Any:
        return np.ldexp(x, e)

    @staticmethod
    def full_int(like: Any, v: int) -> Any:
        return np.full(np.shape(like), v, dtype=np.int64)

    @staticmethod
    def zeros_bool(like: Any) -> Any:
        return np.zeros(np.shape(like), dtype=bool)

    @staticmethod
    def ones_bool(like: Any) -> Any:
        return np.ones(np.shape(like), dtype=bool)

    @staticmethod
    def as_float(b: Any, like: Any) -> Any:
        return b.astype(like.dtype)

    @staticmethod
    def sr_up(frac: Any, r: Any, nbits: int) -> Any:
        # u = top nbits of r; up iff u < frac * 2^nbits (exact in float64)
        u = (r >> np.uint32(32 - nbits)).astype(np.float64)
        return u < np.ldexp(frac, nbits)

    @staticmethod
    def top_bit(r: Any) -> Any:
        return (r >> np.uint32(31)) == 1

    @staticmethod
    def srbits_up(frac: Any, r: Any, k: int) -> Any:
        u = (r >> np.uint32(32 - k)).astype(np.float64)
        return np.floor(np.ldexp(frac, k)) + u >= 2.0**k


class TorchOps:
    """The same primitives on torch float64 tensors (any device); ``r`` is int64."""

    def __init__(self) -> None:
        import torch

        self.t = torch

    def signbit(self, x: Any) -> Any:
        return self.t.signbit(x)

    def abs(self, x: Any) -> Any:
        return self.t.abs(x)

    def isfinite(self, x: Any) -> Any:
        return self.t.isfinite(x)

    def isinf(self, x: Any) -> Any:
        return self.t.isinf(x)

    def isnan(self, x: Any) -> Any:
        return self.t.isnan(x)

    def floor(self, x: Any) -> Any:
        return self.t.floor(x)

    def copysign(self, a: Any, b: Any) -> Any:
        return self.t.copysign(a, b)

    def _t(self, v: Any, like: Any) -> Any:
        if isinstance(v, self.t.Tensor):
            return v
        return self.t.tensor(v, dtype=like.dtype, device=like.device)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        like = a if isinstance(a, self.t.Tensor) else b
        if not isinstance(like, self.t.Tensor):
            like = self.t.zeros((), dtype=self.t.float64, device=c.device)
        return self.t.where(c, self._t(a, like), self._t(b, like))

    def fmod(self, a: Any, b: float) -> Any:
        return self.t.fmod(a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return self.t.minimum(a, self._t(b, a))

    def maximum(self, a: Any, b: Any) -> Any:
        return self.t.maximum(a, self._t(b, a))

    def frexp(self, x: Any) -> tuple[Any, Any]:
        m, e = self.t.frexp(x)
        return m, e.to(self.t.int64)

    def ldexp(self, x: Any, e: Any) -> Any:
        # torch.ldexp multiplies by pow(2, e), which overflows for |e| > 1023 although the
        # result is representable; two half steps keep every intermediate exact.
        e = self._t(e, x.new_zeros((), dtype=self.t.int64)) if not isinstance(e, int) else e
        h = e // 2
        two = self.t.tensor(2.0, dtype=x.dtype, device=x.device)
        return x * self.t.pow(two, h) * self.t.pow(two, e - h)

    def full_int(self, like: Any, v: int) -> Any:
        return self.t.full(like.shape, v, dtype=self.t.int64, device=like.device)

    def zeros_bool(self, like: Any) -> Any:
        return self.t.zeros(like.shape, dtype=self.t.bool, device=like.device)

    def ones_bool(self, like: Any) -> Any:
        return self.t.ones(like.shape, dtype=self.t.bool, device=like.device)

    def as_float(self, b: Any, like: Any) -> Any:
        return b.to(like.dtype)

    def sr_up(self, frac: Any, r: Any, nbits: int) -> Any:
        u = (r >> (32 - nbits)).to(self.t.float64)
        return u < self.ldexp(frac, nbits)

    def top_bit(self, r: Any) -> Any:
        return (r >> 31) == 1

    def srbits_up(self, frac: Any, r: Any, k: int) -> Any:
        u = (r >> (32 - k)).to(self.t.float64)
        return self.t.floor(self.ldexp(frac, k)) + u >= 2.0**k


class JaxOps:
    """The same primitives on jax float32 arrays (float64 only with jax_enable_x64)."""

    def __init__(self) -> None:
        import jax.numpy as jnp

        self.j = jnp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.j, name)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.j.where(c, a, b)

    def frexp(self, x: Any) -> tuple[Any, Any]:
        return self.j.frexp(x)

    def ldexp(self, x: Any, e: Any) -> Any:
        e = self.j.asarray(e, dtype=self.j.int32)
        h = e // 2
        return self.j.ldexp(self.j.ldexp(x, h), e - h)

    def full_int(self, like: Any, v: int) -> Any:
        return self.j.full(like.shape, v, dtype=self.j.int32)

    def zeros_bool(self, like: Any) -> Any:
        return self.j.zeros(like.shape, dtype=bool)

    def ones_bool(self, like: Any) -> Any:
        return self.j.ones(like.shape, dtype=bool)

    def as_float(self, b: Any, like: Any) -> Any:
        return b.astype(like.dtype)

    def sr_up(self, frac: Any, r: Any, nbits: int) -> Any:
        # ceil(frac * 2^nbits) <= 2^32 - 256 in float32, so it converts to uint32 exactly;
        # nbits == 32 with frac*2^32 rounding to 2^32 cannot happen since frac <= 1 - 2^-24.
        u = r >> self.j.uint32(32 - nbits)
        if frac.dtype == self.j.float64:
            return u.astype(frac.dtype) < self.ldexp(frac, nbits)
        thr = self.j.ceil(self.ldexp(frac, nbits))
        return u < thr.astype(self.j.uint32)

    def top_bit(self, r: Any) -> Any:
        return (r >> self.j.uint32(31)) == 1

    def srbits_up(self, frac: Any, r: Any, k: int) -> Any:
        u = r >> self.j.uint32(32 - k)
        fl = self.j.floor(self.ldexp(frac, k)).astype(self.j.uint32)
        limit = self.j.uint32((1 << k) - 1)
        return u > limit - fl
