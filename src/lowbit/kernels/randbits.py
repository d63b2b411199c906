"""Counter-based random bits: the same (seed, element index) gives the same 32 bits everywhere.

The generator is a stated integer hash, not a stateful RNG, so numpy, numba, torch (any device)
and jax produce identical draws for any chunking of the array. Definition (all arithmetic mod
2^32 on unsigned 32-bit words; ``mix32`` is the "lowbias32" finaliser of C. Wellons)::

    mix32(x): x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16
    key0, key1 = seed_keys(seed)               # two words derived from the 64-bit seed
    bits(i)    = mix32(mix32(lo32(i) ^ key0) ^ hi32(i) ^ key1)

Stream ``stream`` (e.g. bit position for fault injection) is folded into the seed by
``seed_keys(seed, stream)`` so that independent uses never share draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np

M1 = 0x7FEB352D
M2 = 0x846CA68B
MASK32 = 0xFFFFFFFF


def mix32_int(x: int) -> int:
    """Scalar ``mix32`` on a Python int (the reference for every vectorized version)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * M1) & MASK32
    x ^= x >> 15
    x = (x * M2) & MASK32
    x ^= x >> 16
    return x


def seed_keys(seed: int, stream: int = 0) -> tuple[int, int]:
    """Two 32-bit keys from a seed (any Python int ≥ 0) and a stream number."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    seed = int(seed)
    lo, hi = seed & MASK32, (seed >> 32) & MASK32
    k0 = mix32_int(lo ^ 0x9E3779B9 ^ mix32_int(hi + 0x632BE5AB))
    k1 = mix32_int(k0 ^ 0x85EBCA6B ^ mix32_int(int(stream) + 0x27D4EB2F))
    return k0, k1


def bits_int(seed: int, index: int, stream: int = 0) -> int:
    """Scalar reference: the 32 random bits of element ``index``."""
    k0, k1 = seed_keys(seed, stream)
    return mix32_int(mix32_int((index & MASK32) ^ k0) ^ ((index >> 32) & MASK32) ^ k1)


def _mix32_np(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(M1)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(M2)
    return x ^ (x >> np.uint32(16))


def bits_numpy(seed: int, start: int, count: int, stream: int = 0) -> np.ndarray:
    """uint32 draws for indices ``start .. start+count-1`` (numpy)."""
    k0, k1 = seed_keys(seed, stream)
    idx = np.arange(start, start + count, dtype=np.uint64)
    lo = (idx & np.uint64(MASK32)).astype(np.uint32)
    hi = (idx >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        return _mix32_np(_mix32_np(lo ^ np.uint32(k0)) ^ hi ^ np.uint32(k1))


def bits_torch(seed: int, start: int, count: int, device: Any = None, stream: int = 0) -> Any:
    """int64 tensor holding the same uint32 draws (torch lacks full uint32 arithmetic)."""
    import torch

    k0, k1 = seed_keys(seed, stream)
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    lo = idx & MASK32
    hi = (idx >> 32) & MASK32

    def mix(x: Any) -> Any:
        x = x ^ (x >> 16)
        x = (x * M1) & MASK32
        x = x ^ (x >> 15)
        x = (x * M2) & MASK32
        return x ^ (x >> 16)

    return mix(mix(lo ^ k0) ^ hi ^ k1)


def bits_jax(k0: Any, k1: Any, start: Any, count: int) -> Any:
    """uint32 jax array holding the same draws; keys from :func:`seed_keys` (traceable).

    Indices must stay below 2^32 (jax has no uint64 without x64).
    """
    import jax.numpy as jnp

    lo = jnp.arange(count, dtype=jnp.uint32) + jnp.asarray(start, dtype=jnp.uint32)

    def mix(x: Any) -> Any:
        x = x ^ (x >> 16)
        x = x * jnp.uint32(M1)
        x = x ^ (x >> 15)
        x = x * jnp.uint32(M2)
        return x ^ (x >> 16)

    return mix(mix(lo ^ jnp.asarray(k0, jnp.uint32)) ^ jnp.asarray(k1, jnp.uint32))
