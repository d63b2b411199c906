"""Bit codes of formats: ``encode`` (round, then the bit pattern), ``decode`` and ``flip_bits``.

Encodings, by format kind:

* :class:`~lowbit.formats.FloatFormat` — sign | biased exponent | trailing significand
  (IEEE 754-2019 §3.4). ``special`` picks what the top codes mean: ``"ieee"`` (±inf and NaNs
  in the all-ones exponent, §3.4), ``"fn"`` (only S.1…1.1…1 is NaN; OCP OFP8 §5.1), ``"fnuz"``
  (the −0 code is the single NaN), ``"none"`` (every code finite; OCP MX v1.0 §5.3.2/§5.3.3).
  ``signed=False, has_zero=False`` is OCP MX v1.0 §5.4.1 E8M0 (0xFF is NaN).
* :class:`~lowbit.formats.PositFormat` — two's complement posit bit strings (Standard for Posit
  Arithmetic 2022, §3); 1 followed by zeros is NaR, which decodes to NaN.
* :class:`~lowbit.formats.FixedFormat` / :class:`~lowbit.formats.IntFormat` — two's complement
  (or unsigned) integers ``value * 2**frac_bits``.

NaN encodes to one canonical code per format: the positive quiet NaN (exponent all ones, top
fraction bit set) for ``"ieee"``, the positive all-ones code for ``"fn"``, 0x80… for
``"fnuz"``, NaR for posits. Every NaN code decodes to NaN.

Code containers: numpy gets ``uint8``/``uint16``/``uint32``/``uint64`` by the format's width.
torch has no full unsigned 16/32/64-bit types, so torch gets ``torch.uint8`` up to 8 bits and
``torch.int16``/``int32``/``int64`` above, *holding the same bit pattern* (so posit16's NaR
0x8000 is −32768). jax gets ``uint8``/``uint16``/``uint32`` (``uint64`` only with x64
enabled). :func:`decode` accepts any integer container whose values lie in
``[-2**(bits-1), 2**bits)`` and reads the low ``bits`` bits.
"""

from __future__ import annotations

from functools import lru_cache
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
from lowbit.kernels.randbits import bits_numpy, seed_keys
from lowbit.rounding import backend as B
from lowbit.rounding.api import resolve_policy
from lowbit.rounding.api import round as _round
from lowbit.rounding.modes import RoundMode
from lowbit.rounding.posit import decode_posit_codes, posit_codes

# ---- containers ---------------------------------------------------------------------------


def _np_code_dtype(bits: int) -> np.dtype:
    for width, dt in ((8, np.uint8), (16, np.uint16), (32, np.uint32)):
        if bits <= width:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _to_numpy_float64(x: Any) -> tuple[np.ndarray, str, Any]:
    """``x`` as a float64 numpy array, plus its backend name and the original object."""
    kind = B.backend_of(x)
    if kind == "numpy":
        if isinstance(x, bool):
            raise TypeError("bool is not a number to encode; pass a float")
        arr = (
            np.asarray(x, dtype=np.float64)
            if isinstance(x, (float, int, list, tuple))
            else np.asarray(x)
        )
        if arr.dtype not in B.NUMPY_FLOAT_DTYPES:
            raise TypeError(f"unsupported dtype {arr.dtype}; accepted: {B.ACCEPTED_DTYPES}")
        with np.errstate(invalid="ignore"):  # signalling NaNs become quiet ones
            return arr.astype(np.float64), kind, x
    if kind == "torch":
        import torch

        if x.dtype not in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"unsupported dtype {x.dtype}; accepted: {B.ACCEPTED_DTYPES}")
        return x.detach().to("cpu", torch.float64).numpy(), kind, x
    import jax.numpy as jnp

    if x.dtype not in (jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16):
        raise TypeError(f"unsupported dtype {x.dtype}; accepted: {B.ACCEPTED_DTYPES}")
    return np.asarray(x, dtype=np.float64), kind, x


def _codes_to_backend(codes: np.ndarray, bits: int, kind: str, like: Any) -> Any:
    if kind == "numpy":
        return codes
    if kind == "torch":
        import torch

        if bits > 8:  # same bit pattern in the signed type of that width
            codes = codes.view(np.dtype(f"int{codes.dtype.itemsize * 8}"))
        return torch.from_numpy(np.ascontiguousarray(codes)).to(like.device)
    import jax
    import jax.numpy as jnp

    if codes.dtype == np.uint64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"a {bits}-bit code needs uint64, which jax has only with "
            "jax_enable_x64; use numpy or torch for this format"
        )
    return jnp.asarray(codes)


# ---- value -> code ------------------------------------------------------------------------


def _float_nan_code(fmt: FloatFormat) -> int | None:
    """The canonical NaN code, or ``None`` when the format has no NaN encoding."""
    m, e = fmt.man_bits, fmt.exp_bits
    all_e = ((1 << e) - 1) << m
    if fmt.special == "ieee":
        return all_e | (1 << (m - 1)) if m > 0 else None  # quiet NaN; m == 0 has only inf
    if fmt.special == "fn":
        return all_e | ((1 << m) - 1)
    if fmt.special == "fnuz":
        return 1 << (e + m)
    return None


def _cannot_hold(fmt: Format, what: str) -> ValueError:
    return ValueError(f"{fmt} cannot encode {what}: the format has no code for it")


def _float_values_to_codes(v: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Codes of values that are exactly in ``fmt`` (NaN and ±inf included when it has them)."""
    m, e, bias = fmt.man_bits, fmt.exp_bits, int(fmt.bias)  # type: ignore[arg-type]
    nan = np.isnan(v)
    inf = np.isinf(v)
    if nan.any():
        nan_code = _float_nan_code(fmt)
        if nan_code is None:
            raise _cannot_hold(fmt, "NaN")
    else:
        nan_code = 0
    if inf.any() and not fmt.has_inf:
        raise _cannot_hold(fmt, "±inf")
    neg = np.signbit(v) & ~nan
    if fmt.signed:
        sign = neg.astype(np.uint64) << np.uint64(e + m)
    elif neg.any():
        raise _cannot_hold(fmt, "negative values (it is unsigned)")
    else:
        sign = np.zeros(v.shape, dtype=np.uint64)
    av = np.where(nan | inf, 1.0, np.abs(v))
    if not fmt.has_zero and (av == 0).any():
        raise _cannot_hold(fmt, "zero")
    ex = np.frexp(av)[1].astype(np.int64) - 1  # floor(log2 av) for av > 0
    normal = (av >= fmt.min_normal) if fmt.has_zero else np.ones(v.shape, dtype=bool)
    expf = np.where(normal, ex + bias, 0)
    with np.errstate(over="ignore"):  # the unused branch of np.where may overflow
        sig = np.where(normal, np.ldexp(av, m - ex) - 2.0**m, np.ldexp(av, m - fmt.emin))
    code = sign | (expf.astype(np.uint64) << np.uint64(m)) | sig.astype(np.uint64)
    code = np.where(inf, sign | np.uint64(((1 << e) - 1) << m), code)
    return np.where(nan, np.uint64(nan_code), code)


def _fixed_values_to_codes(v: np.ndarray, fmt: FixedFormat | IntFormat) -> np.ndarray:
    f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
    if not np.isfinite(v).all():
        raise _cannot_hold(fmt, "NaN or ±inf")
    k = np.ldexp(v, f.frac_bits).astype(np.int64)  # exact integers (round() made them so)
    return (k & np.int64((1 << f.bits) - 1)).astype(np.uint64)


def _values_to_codes(v: np.ndarray, fmt: Format) -> np.ndarray:
    if isinstance(fmt, FloatFormat):
        return _float_values_to_codes(v, fmt)
    if isinstance(fmt, PositFormat):
        exact = resolve_policy(fmt, RoundMode.RNE, None, True, None)
        with np.errstate(all="ignore"):
            return posit_codes(v.reshape(-1), fmt, exact, None).astype(np.uint64).reshape(v.shape)
    return _fixed_values_to_codes(v, fmt)


def _encode_numpy(
    x64: np.ndarray, fmt: Format, mode: RoundMode | str, round_kwargs: dict[str, Any]
) -> np.ndarray:
    if "out" in round_kwargs:
        raise TypeError("encode() does not take out=")
    vals = np.asarray(_round(x64, fmt, mode, **round_kwargs), dtype=np.float64)
    return _values_to_codes(vals, fmt).astype(_np_code_dtype(fmt.bits))


def encode(x: Any, fmt: Format | str, mode: RoundMode | str = "rne", **round_kwargs: Any) -> Any:
    """Round ``x`` to ``fmt`` and return the bit codes of the rounded values.

    The rounding is :func:`lowbit.round` applied to the exact input values (in float64, so a
    result that the input dtype could not hold, such as posit16's maxpos for an fp16 input,
    still gets its code). Codes follow IEEE 754-2019 §3.4 / OCP OFP8 §5.1 / OCP MX v1.0 §5.3-5.4
    for floats, the Posit Standard 2022 §3 for posits and two's complement for fixed point;
    see the module docstring for the containers per backend.

    Args:
        x: numpy array or Python float/list, torch tensor (any device) or jax array, of a float
            dtype.
        fmt: target format or its name (``"e4m3"``, ``"posit16"``, ``"q3.12"``, ``"int8"``).
        mode: rounding mode (see :func:`lowbit.round`).
        **round_kwargs: ``overflow``, ``subnormals``, ``seed``, ``rand_bits``, ``offset``,
            ``impl`` — passed to :func:`lowbit.round`.

    Returns:
        Integer codes of ``x``'s shape: numpy ``uint8/16/32/64``; torch ``uint8`` (≤ 8 bits)
        or ``int16/32/64`` holding the same bit pattern, on ``x``'s device; jax ``uint8/16/32``.

    Raises:
        ValueError: a rounded value has no code in ``fmt`` (NaN into a format without NaN such
            as ``e2m1fn`` or fixed point, −x into an unsigned format, 0 into E8M0); unknown
            format or option.
        TypeError: unsupported input type or dtype.
    """
    f = get_element_format(fmt)
    x64, kind, like = _to_numpy_float64(x)
    codes = _encode_numpy(x64, f, mode, round_kwargs)
    return _codes_to_backend(codes, f.bits, kind, like)


# ---- code -> value ------------------------------------------------------------------------


def _decode_float(c: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    m, e, bias = fmt.man_bits, fmt.exp_bits, int(fmt.bias)  # type: ignore[arg-type]
    mant = (c & np.uint64((1 << m) - 1)).astype(np.float64)
    expf = ((c >> np.uint64(m)) & np.uint64((1 << e) - 1)).astype(np.int64)
    neg = ((c >> np.uint64(e + m)) & np.uint64(1)) == 1 if fmt.signed else np.zeros(c.shape, bool)
    val = np.ldexp(mant + 2.0**m, expf - bias - m)
    if fmt.has_zero:
        val = np.where(expf == 0, np.ldexp(mant, fmt.emin - m), val)
    val = np.where(neg, -val, val)
    all_e = (1 << e) - 1
    full_m = float((1 << m) - 1)
    if fmt.special == "ieee":
        top = expf == all_e
        val = np.where(top & (mant == 0), np.where(neg, -np.inf, np.inf), val)
        val = np.where(top & (mant != 0), np.nan, val)
    elif fmt.special == "fn":
        val = np.where((expf == all_e) & (mant == full_m), np.nan, val)
    elif fmt.special == "fnuz":
        val = np.where(c == np.uint64(1 << (e + m)), np.nan, val)
    return val


def _decode_fixed(c: np.ndarray, fmt: FixedFormat | IntFormat) -> np.ndarray:
    f = fmt.fixed if isinstance(fmt, IntFormat) else fmt
    k = c.astype(np.int64)
    if f.signed:
        k = np.where(k >= 1 << (f.bits - 1), k - (1 << f.bits), k)
    return np.ldexp(k.astype(np.float64), -f.frac_bits)


def _decode_arith(c: np.ndarray, fmt: Format) -> np.ndarray:
    """float64 values of uint64 codes (already reduced to the format's width)."""
    with np.errstate(all="ignore"):
        if isinstance(fmt, FloatFormat):
            return _decode_float(c, fmt)
        if isinstance(fmt, PositFormat):
            return decode_posit_codes(c.astype(np.int64), fmt)
        return _decode_fixed(c, fmt)


@lru_cache(maxsize=64)
def _decode_table(fmt: Format) -> np.ndarray:
    tab = _decode_arith(np.arange(1 << fmt.bits, dtype=np.uint64), fmt)
    tab.setflags(write=False)
    return tab


def _decode_numpy(codes: np.ndarray, fmt: Format) -> np.ndarray:
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {c.dtype}")
    bits = fmt.bits
    if c.size:
        lo, hi = int(c.min()), int(c.max())
        if lo < -(1 << (bits - 1)) or hi >= 1 << bits:
            raise ValueError(
                f"codes out of range for {fmt} ({bits} bits): min {lo}, max {hi}; "
                f"accepted: -2**{bits - 1} .. 2**{bits} - 1"
            )
    u = c.astype(np.uint64)  # two's complement wrap for negative signed containers
    if bits < 64:
        u &= np.uint64((1 << bits) - 1)
    if bits <= 16:
        return _decode_table(fmt)[u.astype(np.intp)]
    return _decode_arith(u, fmt)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        np.dtype(np.float64): torch.float64,
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float16): torch.float16,
        B.NUMPY_FLOAT_DTYPES[3]: torch.bfloat16,
    }
    dt = np.dtype(dtype)
    if dt not in table:
        raise TypeError(f"unsupported dtype {dtype}; accepted: {B.ACCEPTED_DTYPES}")
    return table[dt]


def _values_to_backend(vals: np.ndarray, kind: str, like: Any, dtype: Any) -> Any:
    if kind == "torch":
        import torch

        tdt = _torch_dtype(dtype)
        return torch.from_numpy(vals).to(dtype=tdt, device=like.device)
    dt = np.dtype(dtype)
    if dt not in B.NUMPY_FLOAT_DTYPES:
        raise TypeError(f"unsupported dtype {dtype}; accepted: {B.ACCEPTED_DTYPES}")
    with np.errstate(over="ignore"):
        out = vals.astype(dt)
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(out)
    return out


def decode(codes: Any, fmt: Format | str, dtype: Any = np.float32) -> Any:
    """Values of bit codes of ``fmt`` (inverse of :func:`encode` on the format's values).

    NaN codes of every kind decode to NaN (posit NaR included), ±inf and −0 to ±inf and −0
    where the format has them (IEEE 754-2019 §3.4, OCP OFP8 §5.1, OCP MX v1.0 §5.3-5.4, Posit
    Standard 2022 §3). Formats up to 16 bits decode through a cached table of every code.

    Args:
        codes: integer codes: numpy array/int/list, torch tensor or jax array. Values must lie
            in ``[-2**(bits-1), 2**bits)``; negative ones are read as two's complement bit
            patterns (torch's ``int16/32/64`` containers).
        fmt: the format or its name.
        dtype: float dtype of the result (numpy dtype, ``ml_dtypes.bfloat16``, or for torch
            codes also a ``torch.dtype``). Values the dtype cannot hold are rounded to it.

    Returns:
        Values of ``codes``' shape in ``dtype``, on the codes' backend (and torch device).

    Raises:
        ValueError: a code is out of range for the format.
        TypeError: non-integer codes, or an unsupported dtype.
    """
    f = get_element_format(fmt)
    kind = "numpy"
    if not isinstance(codes, (int, list, tuple, np.ndarray, np.generic)):
        kind = B.backend_of(codes)
    if kind == "torch":
        c = codes.detach().cpu().numpy()
    else:
        c = np.asarray(codes)
    vals = _decode_numpy(c, f)
    return _values_to_backend(vals, kind, codes, dtype)


# ---- fault injection ----------------------------------------------------------------------


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if not 0.0 <= float(p) <= 1.0:  # also rejects NaN
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def flip_bits(
    x: Any,
    fmt: Format | str,
    p: float,
    *,
    seed: int,
    mode: RoundMode | str = "rne",
    offset: int = 0,
) -> Any:
    """Round ``x`` to ``fmt``, flip each bit of each code with probability ``p``, decode.

    Fault injection as in MATLAB chop's bit-flip option, but with ``p`` honoured: bit ``b``
    (0 = least significant) of element ``i`` (flat C order) flips iff the counter-based draw
    ``u = randbits.bits_int(seed, offset + i, stream=b + 1)`` (32 bits) satisfies
    ``u < p * 2**32``. The draws depend only on ``(seed, offset + i, b)``, so results are
    reproducible on every backend and for any chunking. Stochastic rounding in ``encode``
    uses stream 0 of the same seed, independent of the flips.

    Args:
        x: numpy array or Python float/list, torch tensor or jax array (float dtype).
        fmt: the format whose codes are corrupted (its ``bits`` bits all take part).
        p: flip probability of each bit, in ``[0, 1]``.
        seed: seed of the counter-based generator (required, for reproducibility).
        mode: rounding mode used to encode ``x`` first.
        offset: index of ``x``'s first element in a larger logical array.

    Returns:
        The decoded values, with ``x``'s backend, dtype, shape and device. Flipped codes that
        are NaN codes decode to NaN.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``, a bad seed/offset, or a value ``fmt`` cannot
            encode (see :func:`encode`).
    """
    prob = _check_p(p)
    seed_keys(seed)  # validates the seed
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    f = get_element_format(fmt)
    x64, kind, like = _to_numpy_float64(x)
    codes = _encode_numpy(x64, f, mode, {"seed": seed, "offset": int(offset)}).astype(np.uint64)
    flat = codes.reshape(-1)
    threshold = prob * 2.0**32
    mask = np.zeros(flat.shape, dtype=np.uint64)
    if prob > 0.0:
        for b in range(f.bits):
            r = bits_numpy(seed, int(offset), flat.size, stream=b + 1)
            mask |= (r.astype(np.float64) < threshold).astype(np.uint64) << np.uint64(b)
    vals = _decode_numpy(flat ^ mask, f).reshape(codes.shape)
    if kind == "numpy":
        dt = (
            np.asarray(x).dtype
            if not isinstance(x, (float, int, list, tuple))
            else np.dtype(np.float64)
        )
        with np.errstate(over="ignore"):
            res = vals.astype(dt)
        return res.dtype.type(res) if isinstance(x, (float, int, np.generic)) else res
    return _values_to_backend(vals, kind, like, x.dtype if kind == "torch" else np.dtype(x.dtype))


__all__ = ["decode", "encode", "flip_bits"]
