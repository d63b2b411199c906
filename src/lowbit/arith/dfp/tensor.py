"""DFP-P tensors (Das et al., ICLR 2018): one P-bit integer array and one shared exponent.

A dynamic fixed point tensor ``t = (I, E_s)`` stands for ``I · 2**E_s``: every element has the
same exponent, so multiplying two of them is an integer multiply (``I_a · I_b`` with exponent
``E_a + E_b``), which is what INT16 FMA hardware does. The shared exponent is chosen from the
data each time a tensor is converted (hence *dynamic*):

    E_s = floor(log2(max|x|)) - (P - 2),   I = round(x · 2**-E_s)

which puts ``max|x| · 2**-E_s`` in ``[2**(P-2), 2**(P-1))``: one sign bit and no wasted bit.
Rounding can carry the largest magnitude up to ``2**(P-1)`` (e.g. 32767.6 -> 32768 for P=16),
which does not fit a symmetric P-bit integer; then ``E_s`` is raised by one and the tensor is
rounded again from ``x`` (never from the first rounding). Hence always
``2**(P-2) <= max|I| <= 2**(P-1) - 1`` for a tensor with a nonzero element, and the round-trip
error is at most ``2**(E_s-1)`` per element with ``mode="rne"`` (below ``2**E_s`` with
``"sr"``). All-zero (and empty) tensors get ``I = 0`` and ``E_s = 0``. NaN and infinities have
no DFP encoding and raise ``ValueError``.

Down-conversion of an integer result (INT32 accumulator contents ``(I32, E)``) to DFP-P,
:func:`requantize`: ``rs = max(0, bitlen(max|I32|) - (P-1))``, ``I = round(I32 / 2**rs)``,
``E = E + rs`` (with the same one-step raise of ``rs`` if rounding carries to ``2**(P-1)``).

Rounding: ``"rne"`` (nearest, ties to even) or ``"sr"`` (stochastic: with ``y`` the exact
scaled value, ``floor(y) + 1`` when ``r < (y - floor(y)) · 2**32`` for the element's 32 random
bits ``r`` from the counter-based hash of :mod:`lowbit.kernels.randbits`, else ``floor(y)``;
the same seed gives the same result with numpy and torch). Everything is computed exactly:
scaling by a power of two is exact in float64 and integer shifts are exact in int64.

numpy arrays and torch tensors (any device) are accepted; results keep the backend.
"""

from __future__ import annotations

import math
import secrets
from typing import Any, NamedTuple

import numpy as np

from lowbit.kernels.randbits import bits_numpy, bits_torch, seed_keys
from lowbit.rounding.modes import RoundMode, as_mode

MODES = ("rne", "sr")
MAX_BITS = 32


class DFPTensor(NamedTuple):
    """A dynamic fixed point tensor: value ``ints · 2**exp``.

    Attributes:
        ints: integer array (numpy) or tensor (torch): int16 for P <= 16, int32 for
            17 <= P <= 32; any integer dtype is accepted where a DFPTensor is an input.
        exp: the shared exponent (a Python int).
    """

    ints: Any
    exp: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ints.shape)

    @property
    def max_abs(self) -> int:
        """``max|ints|`` as a Python int (0 for an empty tensor)."""
        return max_abs_int(self.ints)

    def dequantize(self, dtype: Any = None) -> Any:
        """``ints · 2**exp`` as floats (see :func:`dequantize`)."""
        return dequantize(self, dtype)


# ---- backend helpers --------------------------------------------------------------------------
def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch for numpy inputs)."""
    if not type(x).__module__.startswith("torch"):
        return False
    import torch

    return isinstance(x, torch.Tensor)


def max_abs_int(ints: Any) -> int:
    """``max|ints|`` of an integer array or tensor, exactly, as a Python int."""
    if is_torch(ints):
        if ints.numel() == 0:
            return 0
        return max(abs(int(ints.min())), abs(int(ints.max())))
    a = np.asarray(ints)
    if a.size == 0:
        return 0
    return max(abs(int(a.min())), abs(int(a.max())))


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if not 2 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits={bits}; accepted: 2..{MAX_BITS} (16 is DFP-16)")
    return int(bits)


def check_mode(mode: Any) -> str:
    """Validate a DFP rounding mode (``"rne"`` or ``"sr"``, or the RoundMode members)."""
    try:
        m = as_mode(mode)
    except (ValueError, TypeError):
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(map(repr, MODES))}") from None
    if m not in (RoundMode.RNE, RoundMode.SR):
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(map(repr, MODES))}")
    return m.value


def _seed(seed: Any, mode: str) -> int:
    if seed is None:
        return secrets.randbits(63) if mode == "sr" else 0
    seed_keys(seed)  # validates (int >= 0)
    return int(seed)


def _int_dtype(bits: int, torch_backend: bool) -> Any:
    if torch_backend:
        import torch

        return torch.int16 if bits <= 16 else torch.int32
    return np.int16 if bits <= 16 else np.int32


def ldexp64(x: Any, e: int) -> Any:
    """``x · 2**e`` for a float64 array/tensor, exact wherever the result is normal.

    Split in two power-of-two factors so that ``2**e`` itself never overflows a double.
    """
    e = int(e)
    if e == 0:
        return x
    e1 = e // 2
    e2 = e - e1
    if -1022 <= e <= 1023:
        return x * math.ldexp(1.0, e)
    return (x * math.ldexp(1.0, e1)) * math.ldexp(1.0, e2)


def _random_bits(seed: int, n: int, like: Any) -> Any:
    if is_torch(like):
        return bits_torch(seed, 0, n, device=like.device).reshape(like.shape)
    return bits_numpy(seed, 0, n).reshape(like.shape)


def _round_float64(y: Any, mode: str, seed: int) -> Any:
    """Round a float64 array/tensor of exact scaled values to integers (still float64)."""
    if mode == "rne":
        return y.round() if is_torch(y) else np.rint(y)
    q = y.floor() if is_torch(y) else np.floor(y)
    frac = y - q  # exact: y and floor(y) share their binade or frac is small
    r = _random_bits(seed, int(np.prod(y.shape)), y)
    thr = ldexp64(frac, 32)
    if is_torch(y):
        import torch

        return q + (r.to(torch.float64) < thr).to(torch.float64)
    return q + (r.astype(np.float64) < thr)


def _as_float64(x: Any, name: str) -> tuple[Any, bool]:
    """``x`` as float64 (numpy array or torch tensor on its device) and whether it is torch."""
    if is_torch(x):
        import torch

        if not x.is_floating_point():
            raise TypeError(f"{name}: quantize takes floating tensors, got {x.dtype}")
        return x.detach().to(torch.float64), True
    if isinstance(x, DFPTensor):
        raise TypeError(f"{name} is already a DFPTensor; use requantize to change its width")
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(
            f"{name}: quantize takes floating arrays (float16/32/64), got dtype {a.dtype}"
        )
    return a.astype(np.float64), False


def _check_finite(x64: Any, name: str) -> None:
    if is_torch(x64):
        import torch

        bad = int((~torch.isfinite(x64)).sum())
    else:
        bad = int(np.count_nonzero(~np.isfinite(x64)))
    if bad:
        raise ValueError(
            f"{name} holds {bad} NaN/inf value(s); a DFP tensor has no special "
            "values (accepted: finite numbers only)"
        )


def quantize_values(
    x: Any, bits: int = 16, mode: str = "rne", seed: int | None = None, *, name: str = "x"
) -> tuple[Any, int, int]:
    """:func:`quantize` without the integer cast: ``(q, exp, max|q|)``.

    ``q`` holds the DFP integers as floats of ``x``'s backend (float32 when ``x`` is float32,
    float16 or bfloat16, RNE, ``bits <= 24`` and ``2**-exp`` is a normal float32; float64
    otherwise); both dtypes hold them exactly. The layers feed ``q`` to the GEMM directly.
    """
    bits = _check_bits(bits)
    mode = check_mode(mode)
    tb = is_torch(x)
    if tb:
        import torch

        if not x.is_floating_point():
            raise TypeError(f"{name}: quantize takes floating tensors, got {x.dtype}")
        xd = x.detach()
        n = xd.numel()
        amax = float(xd.abs().max()) if n else 0.0
    else:
        if isinstance(x, DFPTensor):
            raise TypeError(f"{name} is already a DFPTensor; use requantize to change its width")
        xd = np.asarray(x)
        if xd.dtype.kind != "f":
            raise TypeError(
                f"{name}: quantize takes floating arrays (float16/32/64), got dtype {xd.dtype}"
            )
        n = xd.size
        amax = float(np.abs(xd).max()) if n else 0.0
    if not math.isfinite(amax):
        x64, _ = _as_float64(x, name)
        _check_finite(x64, name)
    if amax == 0.0:
        if tb:
            return torch.zeros(xd.shape, dtype=torch.float64, device=xd.device), 0, 0
        return np.zeros(xd.shape, dtype=np.float64), 0, 0
    s = _seed(seed, mode)
    _, e = math.frexp(amax)  # amax = f · 2**e, f in [0.5, 1): floor(log2 amax) = e - 1
    exp = (e - 1) - (bits - 2)
    limit = 1 << (bits - 1)
    if mode == "rne" and round(math.ldexp(amax, -exp)) >= limit:
        exp += 1  # rounding would carry max|I| to 2**(P-1): one more exponent step
    small = (tb and xd.dtype in (torch.float32, torch.float16, torch.bfloat16)) or (
        not tb and xd.dtype in (np.float32, np.float16)
    )
    if mode == "rne" and small and bits <= 24 and -126 <= -exp <= 127:
        # float32 is exact here: scaling by a normal power of two loses only bits of results
        # below 2**-126, which round to 0 anyway, and |y| < 2**23 keeps integers exact
        if tb:
            q = (xd.to(torch.float32) * math.ldexp(1.0, -exp)).round_()
        else:
            q = np.rint(xd.astype(np.float32) * np.float32(math.ldexp(1.0, -exp)))
        return q, exp, round(math.ldexp(amax, -exp))
    x64 = xd.to(torch.float64) if tb else xd.astype(np.float64)
    for _ in range(2):
        q = _round_float64(ldexp64(x64, -exp), mode, s)
        qmax = int(q.abs().max()) if tb else int(np.abs(q).max())
        if qmax < limit:
            return q, exp, qmax
        exp += 1  # SR carried max|I| to 2**(P-1): one more exponent step, from x again
    raise AssertionError("unreachable: max|x|·2**-E_s < 2**(P-2) after the raise")


def quantize(
    x: Any, bits: int = 16, mode: str = "rne", seed: int | None = None, *, name: str = "x"
) -> DFPTensor:
    """Convert a float tensor to DFP-``bits`` (module docstring: exponent rule, rounding).

    Args:
        x: float numpy array or torch tensor (any shape, any device).
        bits: P, the integer width including the sign (2..32; 16 is the paper's DFP-16).
        mode: ``"rne"`` or ``"sr"``.
        seed: seed of the stochastic rounding stream (None: a fresh random seed).
        name: how error messages call ``x``.

    Returns:
        ``DFPTensor(ints, exp)`` with ``ints`` int16 (P <= 16) or int32, same shape and
        backend as ``x``, ``2**(P-2) <= max|ints| <= 2**(P-1) - 1`` unless ``x`` is all zero.

    Raises:
        ValueError: ``x`` holds NaN or inf; bad ``bits``/``mode``.
        TypeError: ``x`` is not a floating array.
    """
    q, exp, _ = quantize_values(x, bits, mode, seed, name=name)
    bits = int(bits)
    if is_torch(q):
        return DFPTensor(q.to(_int_dtype(bits, True)), exp)
    return DFPTensor(q.astype(_int_dtype(bits, False)), exp)


def dequantize(t: DFPTensor, dtype: Any = None) -> Any:
    """``t.ints · 2**t.exp`` as floats, correctly rounded to ``dtype``.

    Args:
        t: a DFPTensor.
        dtype: numpy dtype or torch dtype (None: float32). The result is exact whenever the
            integers fit the dtype's significand (|I| <= 2**24 for float32: every DFP-P with
            P <= 25) and the scaled values stay in its normal range; float64 is exact for any
            int32 DFP tensor.

    Returns:
        An array/tensor of ``t``'s backend, shape and device.
    """
    t = as_dfp(t, "t")
    if is_torch(t.ints):
        import torch

        out = ldexp64(t.ints.to(torch.float64), t.exp)
        return out.to(torch.float32 if dtype is None else dtype)
    out = ldexp64(np.asarray(t.ints).astype(np.float64), t.exp)
    return out.astype(np.float32 if dtype is None else dtype)


def as_dfp(t: Any, name: str) -> DFPTensor:
    """Validate a DFPTensor (integer ints, int exp)."""
    if not isinstance(t, DFPTensor):
        raise TypeError(
            f"{name} must be a DFPTensor (from lowbit.arith.dfp.quantize), got {type(t).__name__}"
        )
    if isinstance(t.exp, bool) or not isinstance(t.exp, (int, np.integer)):
        raise TypeError(f"{name}.exp must be an int, got {t.exp!r}")
    ints = t.ints
    if is_torch(ints):
        import torch

        if ints.is_floating_point() or ints.is_complex() or ints.dtype == torch.bool:
            raise TypeError(f"{name}.ints must be an integer tensor, got {ints.dtype}")
    else:
        ints = np.asarray(ints)
        if ints.dtype.kind not in "iu":
            raise TypeError(f"{name}.ints must be an integer array, got dtype {ints.dtype}")
        if ints.dtype == np.uint64:
            raise TypeError(f"{name}.ints: uint64 is not accepted (values must fit int64)")
    return DFPTensor(ints, int(t.exp))


def _to_int64(ints: Any) -> Any:
    if is_torch(ints):
        import torch

        return ints.to(torch.int64)
    return np.asarray(ints).astype(np.int64)


def shift_right(ints: Any, r: int, mode: str = "rne", seed: int | None = None) -> Any:
    """``round(ints / 2**r)`` exactly, as int64 (numpy or torch, as the input).

    ``"rne"``: nearest, ties to even; ``"sr"``: up with probability ``rem / 2**r`` from the
    element's 32 random bits (see the module docstring). ``r = 0`` returns the values unchanged.

    Raises:
        ValueError: ``r`` outside 0..62.
    """
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        raise TypeError(f"r must be an int, got {r!r}")
    r = int(r)
    if not 0 <= r <= 62:
        raise ValueError(f"shift r={r}; accepted: 0..62")
    mode = check_mode(mode)
    v = _to_int64(ints)
    if r == 0:
        return v
    q = v >> r  # arithmetic shift: floor(v / 2**r)
    rem = v - (q << r)  # in [0, 2**r)
    if mode == "rne":
        half = 1 << (r - 1)
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    else:
        s = _seed(seed, mode)
        rb = _random_bits(s, int(np.prod(v.shape)), v)
        if is_torch(v):
            import torch

            thr = ldexp64(rem.to(torch.float64), 32 - r)
            up = rb.to(torch.float64) < thr
        else:
            thr = ldexp64(rem.astype(np.float64), 32 - r)
            up = rb.astype(np.float64) < thr
    if is_torch(v):
        import torch

        return q + up.to(torch.int64)
    return q + up.astype(np.int64)


def shifted_max(m: int, r: int) -> int:
    """``round_rne(m / 2**r)`` for a Python int ``m >= 0``: the largest magnitude after
    :func:`shift_right` with RNE (rounding is monotone and odd, so it maps max|I| to the new
    max|I|)."""
    if r == 0:
        return m
    q = m >> r
    rem = m - (q << r)
    half = 1 << (r - 1)
    return q + (1 if rem > half or (rem == half and q & 1) else 0)


def requantize(
    t: DFPTensor, bits: int = 16, mode: str = "rne", seed: int | None = None
) -> DFPTensor:
    """Down-convert an integer DFP tensor (e.g. INT32 accumulator contents) to DFP-``bits``.

    ``rs = max(0, bitlen(max|I|) - (P-1))``; ``I' = round(I / 2**rs)``; ``E' = E + rs``; if
    rounding carries ``max|I'|`` to ``2**(P-1)``, ``rs`` is raised by one (rounding again from
    ``I``). A tensor that already fits is returned with its values unchanged (as the P-bit
    dtype).

    Raises:
        TypeError/ValueError: ``t`` is not an integer DFPTensor; bad ``bits``/``mode``.
    """
    t = as_dfp(t, "t")
    bits = _check_bits(bits)
    mode = check_mode(mode)
    tb = is_torch(t.ints)
    m = max_abs_int(t.ints)
    rs = max(0, m.bit_length() - (bits - 1))
    s = _seed(seed, mode)
    limit = 1 << (bits - 1)
    dtype = _int_dtype(bits, tb)
    for _ in range(2):
        q = shift_right(t.ints, rs, mode, s)
        if max_abs_int(q) < limit:
            return DFPTensor(q.to(dtype) if tb else q.astype(dtype), t.exp + rs)
        rs += 1
    raise AssertionError("unreachable: max|I| / 2**rs < 2**(P-2) after the raise")


__all__ = [
    "MODES",
    "DFPTensor",
    "dequantize",
    "quantize",
    "quantize_values",
    "requantize",
    "shift_right",
    "shifted_max",
]
