"""OCP Microscaling (MX) quantization: ``block`` elements share one power-of-two scale.

Conversion follows OCP Microscaling Formats (MX) Specification v1.0, §6.3 ("Conversion from
scalar formats to MX", Algorithm 1): for a block of values ``V_1..V_k``

* ``shared_exp = floor(log2(max_i |V_i|)) - emax_elem`` where ``emax_elem`` is the exponent
  of the element format's largest normal (e4m3: 8, e5m2: 15, e3m2: 4, e2m3: 2, e2m1: 2,
  int8: 0); ``X = 2**shared_exp`` is stored as E8M0 (§5.4.1: biased exponent, bias 127,
  values 2^-127..2^127, code 0xFF = NaN);
* ``P_i = quantize_to_element_format(V_i / X)``, "clamping normal numbers": values beyond the
  element's largest magnitude saturate to ±max instead of becoming inf/NaN (§6.3). The
  rounding is RNE by default; every lowbit mode works.

lowbit's choices where the spec leaves room (all documented on :func:`quantize_mx`):

* ``shared_exp`` is clamped to E8M0's range [-127, 127]. Below, elements lose precision (the
  spec's companion reference library clamps there too); above (only reachable from float64
  inputs with ``amax >= 2**(128 + emax_elem)``) elements saturate, where that library would
  set the scale to NaN. A block with ``amax == 0`` gets the smallest scale 2^-127 (code 0).
* A block holding a NaN or ±inf gets the NaN scale (§5, special values: when X is NaN every
  element of the block is NaN); the dequantized block is all NaN and its element codes are 0.
* ``scale_rule="ceil"`` (not in the spec; no clipping): the smallest power of two ``X`` with
  ``amax / X <= elem max``; it equals the floor rule or is twice it.
* MXINT8 elements (§5.3, INT8: 8-bit two's complement, implied scale 2^-6) saturate to ±127/64
  (symmetric, as the spec's reference implementation does); code 0x80 (−2) decodes but is
  never produced by saturation.
* A last partial block along the axis is allowed; it is padded with zeros logically (zeros
  never change ``amax``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.blocks._common import (
    block_amax,
    check_block,
    expand_blocks,
    floor_log2,
    ldexp,
    normalize_axis,
    scale_down_exact,
    to_float64,
)
from lowbit.formats import BlockFormat, FixedFormat, FloatFormat, get_format
from lowbit.formats.registry import block_presets
from lowbit.kernels import buffers
from lowbit.kernels.randbits import seed_keys
from lowbit.rounding.api import DEFAULT_SR_BITS, resolve_policy
from lowbit.rounding.api import round as lb_round
from lowbit.rounding.codes import decode as lb_decode
from lowbit.rounding.codes import encode as lb_encode
from lowbit.rounding.modes import RoundMode

_SCALE_RULES = ("floor", "ceil")
_IMPLS = ("auto", "reference", "kernel")


@dataclass(frozen=True, eq=False)
class MXTensor:
    """An MX-encoded array (OCP MX v1.0 §5): element codes plus one E8M0 scale per block.

    Attributes:
        elements: uint8 element codes in the original layout (``shape``); float elements are
            sign-magnitude codes of the element format, MXINT8 elements two's complement.
        scales: uint8 E8M0 codes (biased exponent, bias 127; 0xFF is NaN), shaped like
            ``shape`` with ``shape[axis]`` replaced by the number of blocks.
        fmt: the block format (element format, scale format).
        axis: the (non-negative) axis along which blocks run.
        block: elements per block.
        shape: the original array's shape (``(1,)`` for a 0-d input).
    """

    elements: np.ndarray
    scales: np.ndarray
    fmt: BlockFormat
    axis: int
    block: int
    shape: tuple[int, ...]

    @property
    def scale_exponents(self) -> np.ndarray:
        """Unbiased shared exponents as float64 (NaN for NaN scales)."""
        sf = self.fmt.scale_fmt
        e = self.scales.astype(np.float64) - float(sf.bias)  # type: ignore[arg-type]
        return np.where(self.scales == _scale_nan_code(sf), np.nan, e)

    @property
    def nbytes(self) -> int:
        """Storage in bytes with elements packed at their bit width (scales one byte each)."""
        return -(-self.elements.size * self.fmt.elem.bits // 8) + self.scales.size


def _scale_nan_code(sf: FloatFormat) -> int:
    return (1 << sf.exp_bits) - 1


def _resolve_format(fmt: Any) -> BlockFormat:
    f = get_format(fmt)
    if not isinstance(f, BlockFormat):
        raise ValueError(
            f"{f} is an element format, not an MX block format; accepted: "
            f"{', '.join(block_presets())} or a BlockFormat"
        )
    if not isinstance(f.elem, (FloatFormat, FixedFormat)):
        raise ValueError(f"MX element format must be a float or fixed-point format, got {f.elem}")
    sf = f.scale_fmt
    if sf.man_bits != 0 or sf.signed or sf.has_zero:
        raise ValueError(
            f"scale format {sf} is not an E8M0-style power-of-two format "
            "(unsigned, no mantissa, no zero)"
        )
    return f


def _check_options(
    f: BlockFormat, block: Any, scale_rule: Any, overflow: Any, mode: Any, rand_bits: Any, impl: Any
) -> tuple[int, str, str, RoundMode]:
    blk = f.block if block is None else check_block(block)
    rule = f.scale_rule if scale_rule is None else scale_rule
    if rule not in _SCALE_RULES:
        raise ValueError(
            f"scale_rule={scale_rule!r}; accepted: 'floor' (OCP MX v1.0 §6.3), 'ceil' (no clipping)"
        )
    ov = "saturate" if overflow is None else overflow
    if not isinstance(ov, str):
        raise TypeError(f"overflow must be a str, got {overflow!r}")
    pol = resolve_policy(f.elem, mode, ov, True, rand_bits)  # validates mode/overflow per elem
    if impl not in _IMPLS:
        raise ValueError(f"impl={impl!r}; accepted: {', '.join(_IMPLS)}")
    return blk, rule, ov, pol.mode


def _shared_exponents(amax: np.ndarray, f: BlockFormat, rule: str) -> np.ndarray:
    """Per-block shared exponent (int64) from the finite block maxima (OCP MX v1.0 §6.3)."""
    sf = f.scale_fmt
    lo, hi = sf.emin, sf.emax
    pos = amax > 0
    a = np.where(pos, amax, 1.0)
    e = floor_log2(a) - f.elem_emax
    if rule == "ceil":  # a / 2^e lies in [2^emax, 2^(emax+1)); one more if it exceeds max
        e = e + (ldexp(a, -e) > f.elem.max)
    e = np.clip(e, lo, hi)
    return np.where(pos, e, lo).astype(np.int64)


def _mx_reference(
    x64: np.ndarray,
    f: BlockFormat,
    axis: int,
    block: int,
    mode: RoundMode,
    rule: str,
    overflow: str,
    seed: int | None,
    rand_bits: int | None,
    impl: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float64 reference.

    Returns:
        ``(elems, e, bad)``: element values (float64, original layout; 0 in NaN blocks), the
        shared exponents per block and the NaN-block mask, both shaped ``(..., nb)`` with the
        blocked axis moved last.
    """
    xm = np.moveaxis(x64, axis, -1)
    n = xm.shape[-1]
    amax, bad = block_amax(xm, block)
    e = _shared_exponents(amax, f, rule)
    e_full = expand_blocks(e, block, n)
    bad_full = expand_blocks(bad, block, n)
    q = scale_down_exact(np.where(bad_full, 0.0, xm), e_full)
    if overflow == "saturate":  # clamp first: equal to rounding then saturating, every mode
        vmax = f.elem.max
        q = np.clip(q, -vmax, vmax)
    q = np.ascontiguousarray(np.moveaxis(q, -1, axis))  # SR draws follow x's C order
    elems = lb_round(
        q,
        f.elem,
        mode,
        overflow=overflow,
        seed=seed,
        rand_bits=rand_bits,
        impl="reference" if impl == "reference" else "auto",
    )
    return np.asarray(elems, dtype=np.float64), e, bad


def _prepare(
    x: Any,
    fmt: Any,
    block: Any,
    axis: Any,
    mode: Any,
    scale_rule: Any,
    overflow: Any,
    rand_bits: Any,
    impl: Any,
) -> tuple[BlockFormat, int, str, str, RoundMode, int]:
    f = _resolve_format(fmt)
    blk, rule, ov, m = _check_options(f, block, scale_rule, overflow, mode, rand_bits, impl)
    ndim = getattr(x, "ndim", None)
    if ndim is None:
        ndim = np.ndim(x)
    return f, blk, rule, ov, m, normalize_axis(axis, ndim)


def _kernel_ok(x: Any, f: BlockFormat, axis: int, m: RoundMode, ov: str) -> bool:
    """Whether the fused numba kernel covers this call (checked before importing numba)."""
    if not (
        isinstance(x, np.ndarray)
        and x.dtype == np.float32
        and x.ndim >= 1
        and axis == x.ndim - 1
        and x.flags.c_contiguous
    ):
        return False
    if ov != "saturate" or f.scale_fmt.exp_bits > 8:
        return False
    elem = f.elem
    if isinstance(elem, FloatFormat):
        return elem.man_bits <= 20 and elem.has_subnormals and elem.has_neg_zero
    return elem.bits <= 20


def _run_kernel(
    x: np.ndarray,
    f: BlockFormat,
    block: int,
    rule: str,
    m: RoundMode,
    out: np.ndarray | None = None,
    seed: int | None = None,
    rand_bits: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    from lowbit.blocks import _mx_numba

    n = x.shape[-1]
    nb = -(-n // block)
    if out is None:
        out = buffers.empty(x.shape, x.dtype)  # x is C-contiguous (_kernel_ok)
    scales = np.empty((*x.shape[:-1], nb), dtype=np.uint8)
    sf = f.scale_fmt
    rb = DEFAULT_SR_BITS if rand_bits is None else int(rand_bits)
    _mx_numba.run(
        x,
        out,
        scales,
        block,
        f.elem_emax,
        f.elem,
        rule == "ceil",
        sf.emin,
        sf.emax,
        int(sf.bias),
        _scale_nan_code(sf),
        m,  # type: ignore[arg-type]
        _stream_seed(seed, m),
        rb,
    )
    return out, scales


def _stream_seed(seed: int | None, m: RoundMode) -> int:
    """The seed the draws use, as :func:`lowbit.round` picks it (a fresh one for ``None``)."""
    if not m.stochastic:
        return 0
    if seed is None:
        return secrets.randbits(63)
    seed_keys(seed)  # validates: TypeError / ValueError naming the bad seed
    return int(seed)


def _kernel_view(x: Any) -> tuple[Any, Any]:
    """A zero-copy numpy view of a CPU torch tensor / jax array, and how to wrap the result."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return x.detach().numpy(), torch.from_numpy
        return None, None
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        devices = list(x.devices()) if hasattr(x, "devices") else []
        if x.dtype == np.float32 and len(devices) == 1 and devices[0].platform == "cpu":
            import jax.numpy as jnp

            return np.asarray(x), jnp.asarray
        return None, None
    return x, None


def quantize_mx(
    x: Any,
    fmt: BlockFormat | str = "mxfp8_e4m3",
    *,
    block: int | None = None,
    axis: int = -1,
    mode: RoundMode | str = "rne",
    scale_rule: str | None = None,
    overflow: str | None = "saturate",
    seed: int | None = None,
    rand_bits: int | None = None,
    impl: str = "auto",
    out: Any = None,
) -> Any:
    """Quantize ``x`` to an MX format and return the dequantized values (``P_i * X``).

    Blocks of ``block`` consecutive elements along ``axis`` share the scale
    ``X = 2**(floor(log2(amax)) - emax_elem)`` (OCP MX v1.0 §6.3, ``scale_rule="floor"``),
    clamped to E8M0's range 2^-127..2^127 (§5.4.1); each element is ``x / X`` rounded to the
    element format with saturation to ± its largest value. A block containing NaN or ±inf
    dequantizes to all NaN (its scale is the E8M0 NaN, §5); an all-zero block gets scale
    2^-127. The last block may be partial (padded with zeros logically).

    The result has ``x``'s backend (numpy, torch, jax), dtype, shape and device. Values are
    computed exactly in float64 and stored in ``x``'s dtype; they are representable there
    except for fp16/bf16 inputs whose blocks reach below that dtype's smallest subnormal
    (rounded once, to nearest even) and ``scale_rule="ceil"`` blocks of fp32 inputs within
    one element step of fp32's max (the value 2^128 becomes inf).

    Contiguous float32 inputs on the CPU (numpy, torch, jax) blocked along the last axis, with
    ``overflow="saturate"``, run a fused numba kernel in every mode that is bit for bit equal
    to the float64 reference, stochastic draws included (RNE at a good fraction of memory
    speed).

    Args:
        x: numpy array (float64/32/16, bfloat16), Python float or list, torch tensor or jax
            array.
        fmt: an MX preset name (``"mxfp8_e4m3"``, ``"mxfp8_e5m2"``, ``"mxfp6_e3m2"``,
            ``"mxfp6_e2m3"``, ``"mxfp4"``, ``"mxint8"``) or a :class:`BlockFormat`.
        block: elements per block; ``None`` takes the format's (32 for every MX preset).
        axis: the axis along which blocks run.
        mode: rounding mode of the elements (any :class:`RoundMode`; OCP MX uses RNE).
        scale_rule: ``"floor"`` (OCP MX v1.0 §6.3; the largest element may clip) or
            ``"ceil"`` (smallest power of two with ``amax / X <= elem max``: never clips);
            ``None`` takes the format's.
        overflow: ``"saturate"`` (default; OCP MX's "clamping normal numbers") or the element
            format's other overflow option (``"nan"`` for e4m3, ``"inf"`` for e5m2, ``"wrap"``
            for MXINT8), applied as :func:`lowbit.round` does.
        seed: seed for stochastic modes; the draw of an element depends only on
            ``(seed, its flat C-order index in x)``.
        rand_bits: resolution of SR draws / width of ``sr_bits`` noise.
        impl: ``"auto"``, ``"reference"`` (float64 reference only) or ``"kernel"`` (require
            the fused kernel; ``ValueError`` when the call is not covered).
        out: preallocated result (numpy array or torch tensor of ``x``'s shape, dtype and
            device), as in :func:`lowbit.round`; saves the allocation on the fast path.

    Returns:
        The dequantized array (``out`` when given).

    Raises:
        ValueError: unknown format, scale rule, mode, overflow option or axis.
        TypeError: unsupported input type or dtype.
    """
    f, blk, rule, ov, m, ax = _prepare(
        x, fmt, block, axis, mode, scale_rule, overflow, rand_bits, impl
    )
    out_np = _check_out(x, out)
    if impl != "reference":
        xn, wrap = _kernel_view(x)
        if xn is not None and _kernel_ok(xn, f, ax, m, ov):
            res, _ = _run_kernel(xn, f, blk, rule, m, out_np, seed, rand_bits)
            if out is not None:
                return out
            return res if wrap is None else wrap(res)
        if impl == "kernel":
            raise ValueError(
                "impl='kernel': the fused kernel covers contiguous float32 "
                "blocked along the last axis with overflow='saturate'; this "
                "call is not covered"
            )
    x64, restore, _ = to_float64(x)
    shape = x64.shape
    x64 = x64.reshape(shape or (1,))
    elems, e, bad = _mx_reference(x64, f, ax, blk, m, rule, ov, seed, rand_bits, impl)
    n = x64.shape[ax]
    e_full = np.moveaxis(expand_blocks(e, blk, n), -1, ax)
    bad_full = np.moveaxis(expand_blocks(bad, blk, n), -1, ax)
    with np.errstate(over="ignore"):
        deq = ldexp(elems, e_full)
    deq = np.where(bad_full, np.nan, deq).reshape(shape)
    res = restore(deq)
    if out is None:
        return res
    if isinstance(out, np.ndarray):
        np.copyto(out, res)
    else:
        out.copy_(res)
    return out


def _check_out(x: Any, out: Any) -> np.ndarray | None:
    """Validate ``out``; its numpy view when the kernel can write into it."""
    if out is None:
        return None
    import sys

    torch = sys.modules.get("torch")
    if isinstance(x, np.ndarray):
        if (
            isinstance(out, np.ndarray)
            and out.shape == x.shape
            and out.dtype == x.dtype
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            return out
    elif torch is not None and isinstance(x, torch.Tensor):
        if (
            isinstance(out, torch.Tensor)
            and out.shape == x.shape
            and out.dtype == x.dtype
            and out.device == x.device
            and out.is_contiguous()
        ):
            return (
                out.detach().numpy()
                if out.device.type == "cpu" and out.dtype == torch.float32
                else None
            )
    raise ValueError(
        "out must be a writable, contiguous array of x's backend, shape, dtype and "
        f"device (numpy or torch; jax arrays are immutable); got {type(out).__name__}"
    )


def mx_encode(
    x: Any,
    fmt: BlockFormat | str = "mxfp8_e4m3",
    *,
    block: int | None = None,
    axis: int = -1,
    mode: RoundMode | str = "rne",
    scale_rule: str | None = None,
    overflow: str | None = "saturate",
    seed: int | None = None,
    rand_bits: int | None = None,
    impl: str = "auto",
) -> MXTensor:
    """Encode ``x`` as an :class:`MXTensor`: uint8 element codes and E8M0 scale codes.

    Same arguments and semantics as :func:`quantize_mx` (which equals
    ``mx_decode(mx_encode(x, ...))`` cast to ``x``'s dtype; ``impl`` picks how the elements
    are rounded, ``"auto"`` or ``"reference"``). Elements of a NaN block are
    encoded as 0; the NaN scale (code 0xFF, OCP MX v1.0 §5.4.1) makes the block NaN.

    Raises:
        ValueError: as :func:`quantize_mx`; also for element formats wider than 8 bits.
    """
    f, blk, rule, ov, m, ax = _prepare(
        x, fmt, block, axis, mode, scale_rule, overflow, rand_bits, impl
    )
    if impl == "kernel":
        raise ValueError("mx_encode has no fused kernel; impl accepted: 'auto', 'reference'")
    if f.elem.bits > 8:
        raise ValueError(f"element format {f.elem} has {f.elem.bits} bits; codes are uint8")
    x64, _, _ = to_float64(x)
    x64 = x64.reshape(x64.shape or (1,))
    elems, e, bad = _mx_reference(x64, f, ax, blk, m, rule, ov, seed, rand_bits, impl)
    n = x64.shape[ax]
    bad_full = np.moveaxis(expand_blocks(bad, blk, n), -1, ax)
    codes = np.asarray(lb_encode(np.where(bad_full, 0.0, elems), f.elem), dtype=np.uint8)
    sf = f.scale_fmt
    scodes = np.where(bad, _scale_nan_code(sf), e + int(sf.bias))  # type: ignore[operator]
    scales = np.ascontiguousarray(np.moveaxis(scodes.astype(np.uint8), -1, ax))
    return MXTensor(codes, scales, f, ax, blk, tuple(x64.shape))


def mx_decode(t: MXTensor, dtype: Any = np.float64) -> np.ndarray:
    """Values of an :class:`MXTensor` (``P_i * X``, NaN for NaN scales) as a numpy array.

    Args:
        t: the encoded tensor.
        dtype: numpy dtype of the result (float64 holds every MX value exactly).

    Raises:
        TypeError: ``t`` is not an MXTensor or its codes are not uint8.
        ValueError: shapes of elements and scales do not match ``shape``/``block``.
    """
    if not isinstance(t, MXTensor):
        raise TypeError(f"mx_decode takes an MXTensor, got {type(t).__name__}")
    if t.elements.shape != t.shape:
        raise ValueError(f"elements shape {t.elements.shape} != shape {t.shape}")
    n = t.shape[t.axis]
    nb = -(-n // t.block)
    want = (*t.shape[: t.axis], nb, *t.shape[t.axis + 1 :])
    if t.scales.shape != want:
        raise ValueError(f"scales shape {t.scales.shape} != {want} (blocks of {t.block})")
    if t.scales.dtype != np.uint8:
        raise TypeError(f"scale codes must be uint8, got {t.scales.dtype}")
    if t.elements.dtype != np.uint8:
        raise TypeError(f"element codes must be uint8, got {t.elements.dtype}")
    vals = np.asarray(lb_decode(t.elements, t.fmt.elem, dtype=np.float64))
    sc = np.moveaxis(t.scales, t.axis, -1).astype(np.int64)
    nan = sc == _scale_nan_code(t.fmt.scale_fmt)
    e = sc - int(t.fmt.scale_fmt.bias)  # type: ignore[arg-type]
    e_full = np.moveaxis(expand_blocks(np.where(nan, 0, e), t.block, n), -1, t.axis)
    nan_full = np.moveaxis(expand_blocks(nan, t.block, n), -1, t.axis)
    with np.errstate(over="ignore"):
        out = np.where(nan_full, np.nan, ldexp(vals, e_full))
    with np.errstate(over="ignore"):
        return out.astype(dtype)


__all__ = ["MXTensor", "mx_decode", "mx_encode", "quantize_mx"]
