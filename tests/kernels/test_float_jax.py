"""The jax bit-level kernel equals the numpy reference bit for bit (XLA flushes subnormals,
so a float-arithmetic jax path would fail exactly on the subnormal cases tested here)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb

jnp = pytest.importorskip("jax.numpy")

FORMATS = [
    "bf16",
    "fp16",
    "e4m3",
    "e5m2",
    "tf32",
    "e2m1",
    "e3m2",
    "e4m3fnuz",
    "e8m0",
    "e6m5",
    "fp32",
    lb.FloatFormat(5, 3, special="none"),
    "q3.12",
    "int8",
    "uint8",
    "uq0.8",
]
MODES = ["rne", "rna", "rnz", "rtz", "ru", "rd", "ro", "sr", "sr_equal", "sr_bits"]


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 40000, dtype=np.uint64).astype(np.uint32)
    bits[:4000] &= 0x807FFFFF  # fp32 subnormals
    bits[4000:8000] = (bits[4000:8000] & 0x80FFFFFF) | 0x3F000000  # around 1
    every_fp16 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    return np.concatenate([bits.view(np.float32), every_fp16])


X = _inputs()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    na, nb = np.isnan(a), np.isnan(b)
    uint = np.uint32 if a.dtype == np.float32 else np.uint16
    return bool(np.array_equal(na, nb) and np.array_equal(a[~na].view(uint), b[~nb].view(uint)))


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_jax_kernel_matches_reference(fmt: object, mode: str) -> None:
    for sub in (True, False):
        kw = {"seed": 11, "subnormals": sub, "rand_bits": 5 if mode == "sr_bits" else None}
        ref = lb.round(X, fmt, mode, impl="reference", **kw)
        got = np.asarray(lb.round(jnp.asarray(X), fmt, mode, **kw))
        assert got.dtype == np.float32
        assert _same_bits(ref, got), (fmt, mode, sub)


@pytest.mark.parametrize("fmt", ["e4m3", "e3m2", "e2m1", "int4", "q1.6", "fp16", "bf16"])
def test_jax_kernel_overflow_options(fmt: str) -> None:
    f = lb.get_format(fmt)
    if isinstance(f, lb.FixedFormat | lb.IntFormat):
        options = ["saturate", "wrap"]
    elif f.has_inf:
        options = ["inf", "saturate"]
    else:
        options = ["nan", "saturate"] if f.has_nan else ["saturate"]
    for ov in options:
        for mode in ("rne", "ru", "rd", "rtz"):
            ref = lb.round(X, fmt, mode, overflow=ov, impl="reference")
            got = np.asarray(lb.round(jnp.asarray(X), fmt, mode, overflow=ov))
            assert _same_bits(ref, got), (fmt, ov, mode)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_jax_half_inputs_keep_dtype_and_bits(dtype: type) -> None:
    every = np.arange(65536, dtype=np.uint16).view(dtype)
    for fmt in ("e4m3", "e5m2", "fp16", "e2m1"):
        ref = lb.round(every, fmt, impl="reference")
        got = lb.round(jnp.asarray(every), fmt)
        assert got.dtype == jnp.dtype(dtype)
        got = np.asarray(got)
        na = np.isnan(ref.astype(np.float32))
        assert np.array_equal(na, np.isnan(got.astype(np.float32)))
        assert np.array_equal(ref.view(np.uint16)[~na], got.view(np.uint16)[~na])
