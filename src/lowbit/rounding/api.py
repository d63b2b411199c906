"""``lowbit.round``: element-wise rounding to any format, for numpy, torch and jax arrays."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from lowbit.formats import (
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    PositFormat,
    get_element_format,
)
from lowbit.kernels.randbits import bits_numpy, bits_torch, seed_keys
from lowbit.rounding import backend as B
from lowbit.rounding.modes import RoundMode, as_mode
from lowbit.rounding.reference import EdgePolicy, round_fixed_grid, round_float_grid

DEFAULT_SR_BITS = 32
_IMPLS = ("auto", "reference", "kernel")


def resolve_policy(
    fmt: Format,
    mode: RoundMode | str,
    overflow: str | None,
    subnormals: bool,
    rand_bits: int | None,
) -> EdgePolicy:
    """Validate the options of a rounding call against the format."""
    m = as_mode(mode)
    if not isinstance(subnormals, bool):
        raise TypeError(f"subnormals must be a bool, got {subnormals!r}")
    if isinstance(fmt, FloatFormat):
        accepted = ("nan", "saturate") if fmt.has_nan else ("saturate",)
        default = "nan" if fmt.has_nan else "saturate"
        if fmt.has_inf:
            accepted, default = ("inf", "saturate"), "inf"
    elif isinstance(fmt, (FixedFormat, IntFormat)):
        accepted, default = ("saturate", "wrap"), "saturate"
    else:  # posits never overflow: they saturate at maxpos by definition
        accepted, default = ("saturate",), "saturate"
    ov = default if overflow is None else overflow
    if ov not in accepted:
        raise ValueError(
            f"overflow={overflow!r} is not valid for {fmt}; accepted: {', '.join(accepted)}"
        )
    if ov == "inf":  # IEEE formats: inf on overflow is what the mode table says
        ov = "nan"
    if rand_bits is None:
        if m is RoundMode.SR_BITS:
            raise ValueError("mode='sr_bits' needs rand_bits (number of random bits, 1..32)")
        rand_bits = DEFAULT_SR_BITS
    if isinstance(rand_bits, bool) or not isinstance(rand_bits, (int, np.integer)):
        raise TypeError(f"rand_bits must be an int, got {rand_bits!r}")
    if not 1 <= rand_bits <= 32:
        raise ValueError(f"rand_bits={rand_bits} is out of range; accepted: 1..32")
    if isinstance(fmt, PositFormat) and m not in (RoundMode.RNE, RoundMode.SR):
        raise ValueError(f"posits support modes 'rne' (the standard's) and 'sr'; got {m.value!r}")
    return EdgePolicy(m, ov, subnormals, int(rand_bits))


def _seed(seed: int | None, mode: RoundMode) -> int:
    if seed is None:
        return secrets.randbits(63) if mode.stochastic else 0
    seed_keys(seed)  # validates
    return int(seed)


def round_reference_numpy(
    x64: np.ndarray, fmt: Format, pol: EdgePolicy, seed: int, offset: int = 0
) -> np.ndarray:
    """The reference on a float64 numpy array; returns float64 (shape kept)."""
    flat = np.ascontiguousarray(x64, dtype=np.float64).reshape(-1)
    r = bits_numpy(seed, offset, flat.size) if pol.mode.stochastic else None
    with np.errstate(all="ignore"):
        if isinstance(fmt, FloatFormat):
            out = round_float_grid(flat, fmt, pol, r, B.NumpyOps)
        elif isinstance(fmt, (FixedFormat, IntFormat)):
            out = round_fixed_grid(flat, fmt, pol, r, B.NumpyOps)
        else:
            from lowbit.rounding.posit import round_posit_reference

            out = round_posit_reference(flat, fmt, pol, r)
    return np.asarray(out, dtype=np.float64).reshape(np.shape(x64))


def _check_numpy_dtype(dt: np.dtype) -> None:
    if dt not in B.NUMPY_FLOAT_DTYPES:
        raise TypeError(f"unsupported dtype {dt}; accepted: {B.ACCEPTED_DTYPES}")


def _round_numpy(
    x: Any, fmt: Format, pol: EdgePolicy, seed: int, offset: int, out: Any, impl: str
) -> Any:
    scalar = isinstance(x, (float, int, np.generic)) and not isinstance(x, bool)
    if isinstance(x, bool):
        raise TypeError("bool is not a number to round; pass a float")
    arr = (
        np.asarray(x, dtype=np.float64)
        if isinstance(x, (float, int, list, tuple))
        else np.asarray(x)
    )
    _check_numpy_dtype(arr.dtype)
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != arr.shape or out.dtype != arr.dtype:
            raise ValueError(
                f"out must be a numpy array of shape {arr.shape} and dtype "
                f"{arr.dtype}, got {getattr(out, 'shape', None)} "
                f"{getattr(out, 'dtype', type(out).__name__)}"
            )
    if impl != "reference":
        from lowbit.kernels import dispatch

        res = dispatch.round_numpy(arr, fmt, pol, seed, offset, out)
        if res is not None:
            return res.dtype.type(res) if scalar else res
        if impl == "kernel":
            raise ValueError(f"no fused kernel for {fmt} / {pol.mode.value} / {arr.dtype}")
    with np.errstate(all="ignore"):
        res64 = round_reference_numpy(arr.astype(np.float64), fmt, pol, seed, offset)
        res = res64.astype(arr.dtype)
    if out is not None:
        np.copyto(out, res)
        res = out
    return res.dtype.type(res) if scalar else res


def _round_torch(
    x: Any, fmt: Format, pol: EdgePolicy, seed: int, offset: int, out: Any, impl: str
) -> Any:
    import torch

    if x.dtype not in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"unsupported dtype {x.dtype}; accepted: {B.ACCEPTED_DTYPES}")
    if out is not None and (
        not isinstance(out, torch.Tensor)
        or out.shape != x.shape
        or out.dtype != x.dtype
        or out.device != x.device
    ):
        raise ValueError("out must be a torch tensor with the input's shape, dtype and device")
    x = x.detach()
    if x.device.type == "cpu" and impl != "reference":
        from lowbit.kernels import dispatch

        res = dispatch.round_torch_cpu(x, fmt, pol, seed, offset, out)
        if res is not None:
            return res
    if isinstance(fmt, PositFormat):
        res = torch.from_numpy(
            round_reference_numpy(
                x.detach().to("cpu", torch.float64).numpy(), fmt, pol, seed, offset
            )
        )
        res = res.to(device=x.device, dtype=x.dtype)
    else:
        flat = x.detach().reshape(-1).to(torch.float64)
        r = bits_torch(seed, offset, flat.numel(), device=x.device) if pol.mode.stochastic else None
        ops = B.TorchOps()
        fn = round_float_grid if isinstance(fmt, FloatFormat) else round_fixed_grid
        res = fn(flat, fmt, pol, r, ops).to(x.dtype).reshape(x.shape)  # type: ignore[arg-type]
    if out is not None:
        out.copy_(res)
        return out
    return res


_JAX_CACHE: dict[Any, Any] = {}


def _round_jax(x: Any, fmt: Format, pol: EdgePolicy, seed: int, offset: int) -> Any:
    import jax
    import jax.numpy as jnp

    from lowbit.kernels import float_jax
    from lowbit.kernels.randbits import bits_jax

    if x.dtype not in (jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16):
        raise TypeError(f"unsupported dtype {x.dtype}; accepted: {B.ACCEPTED_DTYPES}")
    too_wide = (
        isinstance(fmt, (FixedFormat, IntFormat))
        and (fmt.fixed if isinstance(fmt, IntFormat) else fmt).bits > 30
    )
    if isinstance(fmt, PositFormat) or x.dtype == jnp.float64 or too_wide:
        # No jax kernel for these: round on the host with the numpy reference.
        res = round_reference_numpy(np.asarray(x, dtype=np.float64), fmt, pol, seed, offset)
        with np.errstate(over="ignore"):
            return jnp.asarray(res.astype(np.dtype(x.dtype)))
    key = (fmt, pol)
    fn = _JAX_CACHE.get(key)
    if fn is None:
        kernel = (
            float_jax.round_float_bits
            if isinstance(fmt, FloatFormat)
            else float_jax.round_fixed_bits
        )

        def _impl(xx: Any, k0: Any, k1: Any, start: Any) -> Any:
            # Bit views only: XLA on CPU flushes subnormal floats to zero.
            if xx.dtype == jnp.bfloat16:
                bits = jax.lax.bitcast_convert_type(xx, jnp.uint16).astype(jnp.uint32) << 16
            else:
                bits = jax.lax.bitcast_convert_type(xx.astype(jnp.float32), jnp.uint32)
            bits = bits.reshape(-1)
            r = bits_jax(k0, k1, start, bits.size) if pol.mode.stochastic else None
            ob = kernel(bits, fmt, pol, r).reshape(xx.shape)  # type: ignore[arg-type]
            if xx.dtype == jnp.bfloat16:
                return jax.lax.bitcast_convert_type((ob >> 16).astype(jnp.uint16), jnp.bfloat16)
            return jax.lax.bitcast_convert_type(ob, jnp.float32).astype(xx.dtype)

        fn = jax.jit(_impl)
        _JAX_CACHE[key] = fn
    k0, k1 = seed_keys(seed)
    if offset + x.size > (1 << 32):
        raise ValueError("jax arrays are limited to 2**32 elements including offset")
    return fn(x, np.uint32(k0), np.uint32(k1), np.uint32(offset))


def round(
    x: Any,
    fmt: Format | str,
    mode: RoundMode | str = "rne",
    *,
    overflow: str | None = None,
    subnormals: bool = True,
    seed: int | None = None,
    rand_bits: int | None = None,
    offset: int = 0,
    out: Any = None,
    impl: str = "auto",
) -> Any:
    """Round every element of ``x`` to the nearest values of ``fmt`` under ``mode``.

    The result has the input's backend, dtype, shape and device; its values are the rounded
    reals stored in the input dtype (use :func:`lowbit.encode` for bit codes).

    Args:
        x: numpy array (float64/32/16, ml_dtypes bfloat16), Python float or list, torch tensor
            (any device) or jax array.
        fmt: a format object or name (``"bf16"``, ``"e4m3"``, ``"e5m10"``, ``"posit16"``,
            ``"q3.12"``, ``"int8"``).
        mode: a :class:`RoundMode` or its name: ``rne rna rnz rtz ru rd ro sr sr_equal sr_bits``.
        overflow: ``"inf"`` (IEEE formats; the §7.4 rule per mode), ``"nan"`` (default for
            formats with NaN but no inf, as ml_dtypes) or ``"saturate"`` (clamp to ±max, as
            torch's CPU float8 cast); fixed point: ``"saturate"`` (default) or ``"wrap"``.
        subnormals: ``False`` rounds among the format's numbers without subnormals (only ±0
            and ±min_normal below min_normal; round-to-nearest ties there go up, as MATLAB
            chop does).
        seed: seed of the counter-based generator for stochastic modes; the draw of element
            ``i`` (flat C order) depends only on ``(seed, offset + i)``. ``None`` picks a fresh
            random seed.
        rand_bits: resolution of the SR draw (default 32), or the number of random bits added
            by ``sr_bits`` (required there).
        offset: index of this array's first element in a larger logical array (chunking).
        out: preallocated output (numpy or torch) of the input's shape and dtype.
        impl: ``"auto"`` (fused kernel when there is one), ``"reference"`` or ``"kernel"``.

    Raises:
        ValueError: unknown format/mode/overflow option, or an ``out`` that does not match.
        TypeError: unsupported input type or dtype.
    """
    f = get_element_format(fmt)
    pol = resolve_policy(f, mode, overflow, subnormals, rand_bits)
    if impl not in _IMPLS:
        raise ValueError(f"impl={impl!r}; accepted: {', '.join(_IMPLS)}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    s = _seed(seed, pol.mode)
    kind = B.backend_of(x)
    if kind == "numpy":
        return _round_numpy(x, f, pol, s, int(offset), out, impl)
    if kind == "torch":
        return _round_torch(x, f, pol, s, int(offset), out, impl)
    if out is not None:
        raise ValueError("out= is not supported for jax arrays (they are immutable)")
    return _round_jax(x, f, pol, s, int(offset))


__all__ = ["resolve_policy", "round", "round_reference_numpy"]
