"""I-ViT's integer-only operators (Li & Gu, ICCV 2023; repo zkkli/I-ViT), on numpy or torch.

Every function below that takes integer tensors computes with integer operations only
(``+ - *``, ``//``, ``>>``, ``<<``, max, sum, comparisons) on ``int64`` — numpy arrays or
torch tensors, any integer dtype in (``int8`` ... ``int64``), ``int64`` out. Floats appear
only where a real number becomes an integer constant *before* inference: the quantizer
(:func:`symmetric_scale`, :func:`quantize_symmetric`), :func:`dyadic` and :func:`exp_x0`.

Definitions (``S`` = the real value of one integer step of the input):

* **Dyadic requantization** (:func:`dyadic`, :func:`requant`): a real multiplier ``M`` is
  ``b / 2^c`` with ``(mant, exp) = frexp(M)``, ``b = round_half_away(mant · 2^31)`` (the repo's
  ``Decimal(...).quantize(ROUND_HALF_UP)``), ``c = 31 − exp``; ``requant(acc) = (acc·b +
  2^(c−1)) >> c = ⌊acc·b/2^c + 1/2⌋`` (round half up), then clamped to ``bits``. ``|acc| <
  2^31`` and ``|b| < 2^31`` keep ``acc·b`` inside int64.
* **Shift-exp** (:func:`shift_exp`, the core of Shiftmax and ShiftGELU), for ``x ≤ 0`` with
  ``x0 = ⌊−1/S⌋`` (the code of −1): ``x ← x + (x>>1) − (x>>4)`` (``x·log2 e``, 1.4375 ≈
  1.4427), ``x ← max(x, n·x0)``, ``q = ⌊x/x0⌋``, ``r = x − q·x0 ∈ (x0, 0]`` so ``2^(x·S) =
  2^(r·S − q)`` and ``2^(r·S) ≈ 1 + r·S/2``; ``e = ⌊(r/2 − x0)·2^(n−q)⌋ = ((r − 2·x0) <<
  (n−q)) >> 1``, real value ``e · S/2^n``. ``e`` saturates at ``2^31 − 1`` (only reachable for
  ``x > 0``: ShiftGELU's ``e^(−x_max)`` of a row whose max is negative, where the saturated
  value enters a sum that is clamped to ``2^31 − 1`` anyway).
* **Shiftmax** (:func:`shiftmax`): ``e = shift_exp(x − rowmax(x))``, ``s = min(Σe, 2^31−1)``,
  ``f = (2^31−1) // s``, ``out = (e·f) >> (32 − bits)``: real value ``out / 2^(bits−1)``.
* **ShiftGELU** (:func:`shiftgelu`): ``GELU(x) ≈ x·σ(1.702x)`` with
  ``σ(t) = e^(t−t_max)/(e^(t−t_max) + e^(−t_max))``, ``x0`` taken for the scale ``1.702·S``
  (the repo folds 1.702 into the scale), ``n = 23``; ``σ`` as in Shiftmax with ``bits``
  output bits, result ``x · σ_int`` of scale ``S / 2^(bits−1)``. A ``symmetric`` variant
  (ours) computes ``σ`` elementwise from ``e^(−|t|)``, without the row max that breaks rows
  with a large maximum.
* **I-LayerNorm** (:func:`i_layernorm`): ``μ = ⌊Σx/C + 1/2⌋``, ``y = x − μ``, ``var = Σy²``
  (a SUM), ``std = isqrt(var)`` by Newton's iteration (:func:`isqrt_newton`), ``f =
  (2^31−1) // std``, ``out = (y·f) >> 1`` of scale ``√C / 2^30``, plus the integer bias
  ``⌊β/γ / scale⌋``. When that bias would push the sum out of int32 (``|β/γ| > √C``), one
  more right shift per bit of headroom (:func:`layernorm_shift`; the repo has none).
* **Residual add** (:func:`add_requant`): both branches requantized to the common output
  scale with their own ``(b, c)``, added, clamped.

Choices where the repo computes in float32 and we had to fix an integer meaning: the mean is
rounded half up (the repo's ``torch.round`` is half-to-even); sums and products are exact
(the repo's float32 sums of ~2^29-sized terms are not); ``dyadic`` renormalises the rare
``b = 2^31`` to ``(2^30, c − 1)`` so ``b`` fits int32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

INT32_MAX = (1 << 31) - 1
INT32_MIN = -(1 << 31)
#: The repo's Newton start for the integer square root and its fixed iteration count.
SQRT_START = 1 << 16
SQRT_ITERS = 10


# ---- backend helpers ---------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _as_int64(x: Any, name: str = "x") -> Any:
    """``x`` as int64 (numpy array or torch tensor); TypeError for float/bool/complex input."""
    if _is_torch(x):
        import torch

        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
        return x.to(torch.int64)
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _like(x: Any, v: Any) -> Any:
    """An int64 constant array/tensor ``v`` on ``x``'s backend (and device)."""
    if _is_torch(x):
        import torch

        if _is_torch(v):
            return v.to(device=x.device, dtype=torch.int64)
        return torch.as_tensor(np.asarray(v, dtype=np.int64), device=x.device)
    if _is_torch(v):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.int64)


def _rowmax(x: Any) -> Any:
    return x.amax(dim=-1, keepdim=True) if _is_torch(x) else x.max(axis=-1, keepdims=True)


def _rowsum(x: Any) -> Any:
    return x.sum(dim=-1, keepdim=True) if _is_torch(x) else x.sum(axis=-1, keepdims=True)


def _maximum(a: Any, b: Any) -> Any:
    if _is_torch(a):
        import torch

        return torch.maximum(a, _like(a, b) if not _is_torch(b) else b)
    return np.maximum(a, b)


def _minimum(a: Any, b: Any) -> Any:
    if _is_torch(a):
        import torch

        return torch.minimum(a, _like(a, b) if not _is_torch(b) else b)
    return np.minimum(a, b)


def _clip(x: Any, lo: int, hi: int) -> Any:
    return x.clamp(lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


def _where(m: Any, a: Any, b: Any) -> Any:
    if _is_torch(m):
        import torch

        return torch.where(m, a, b)
    return np.where(m, a, b)


def _check_bits(bits: Any, lo: int = 2, hi: int = 32, name: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an int in {lo}..{hi}, got {bits!r}")
    if not lo <= bits <= hi:
        raise ValueError(f"{name}={bits} is out of range; accepted: {lo}..{hi}")
    return bits


def signed_range(bits: int) -> tuple[int, int]:
    """``(-2^(bits-1), 2^(bits-1) - 1)``: the symmetric ``bits``-bit integer range."""
    _check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _check_int32(x: Any, name: str) -> None:
    """OverflowError when ``x`` leaves the int32 range (the accumulator width I-ViT assumes)."""
    empty = x.numel() == 0 if _is_torch(x) else x.size == 0
    if empty:
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < INT32_MIN or hi > INT32_MAX:
        raise OverflowError(f"{name} leaves int32: range [{lo}, {hi}]")


# ---- quantizer (float -> int, before inference) ------------------------------------------------


def symmetric_scale(min_val: Any, max_val: Any, bits: int) -> Any:
    """``S = max(|min|, |max|) / (2^(bits-1) - 1)``, at least float32 eps (the repo's rule).

    Works elementwise (per-channel weight scales) on floats, numpy arrays or torch tensors;
    returns float64 (numpy) or the tensor's dtype promoted to float64.
    """
    _check_bits(bits)
    n = float((1 << (bits - 1)) - 1)
    eps = float(np.finfo(np.float32).eps)
    if _is_torch(min_val) or _is_torch(max_val):
        import torch

        lo = torch.as_tensor(min_val, dtype=torch.float64)
        hi = torch.as_tensor(max_val, dtype=torch.float64)
        return (torch.maximum(-lo, hi) / n).clamp_min(eps)
    lo = np.asarray(min_val, dtype=np.float64)
    hi = np.asarray(max_val, dtype=np.float64)
    return np.maximum(np.maximum(-lo, hi) / n, eps)


def quantize_symmetric(x: Any, scale: Any, bits: int) -> Any:
    """``clamp(round(x / S), -2^(bits-1), 2^(bits-1)-1)`` as int64 codes (round half to even,
    as ``torch.round``); ``scale`` broadcasts against ``x`` (per-channel along axis 0 needs a
    shape like ``(C, 1)``)."""
    lo, hi = signed_range(bits)
    if _is_torch(x):
        import torch

        s = torch.as_tensor(scale, dtype=torch.float64, device=x.device)
        return torch.round(x.to(torch.float64) / s).clamp(lo, hi).to(torch.int64)
    q = np.rint(np.asarray(x, dtype=np.float64) / np.asarray(scale, dtype=np.float64))
    return np.clip(q, lo, hi).astype(np.int64)


# ---- dyadic requantization ---------------------------------------------------------------------


def dyadic(m: Any) -> tuple[np.ndarray, np.ndarray]:
    """``M ≈ b / 2^c``: ``(mant, exp) = frexp(M)``, ``b = round_half_away(mant·2^31)``,
    ``c = 31 − exp`` (elementwise; float, numpy array or torch tensor in, int64 arrays out).

    Two normalisations keep ``requant`` inside int64 without changing any result:
    ``b = 2^31`` (mantissa within 2^-32 of 1) becomes ``(2^30, c − 1)``; ``|M| < 2^-32``
    becomes ``(0, 1)`` (``|acc·M| < 1/2`` for every int32 ``acc``, so the rounded product is
    0 either way). ``M = 0`` gives ``(0, 1)``.

    Raises:
        ValueError: ``M`` is not finite or ``|M| ≥ 2^30`` (``c`` would be < 1).
    """
    if _is_torch(m):
        m = m.detach().cpu().numpy()
    a = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"dyadic: M must be finite, got {a[~np.isfinite(a)][:3]}")
    if np.any(np.abs(a) >= 2.0**30):
        raise ValueError(f"dyadic: |M| must be < 2^30, got max {np.abs(a).max()}")
    mant, exp = np.frexp(a)
    # |mant|·2^31 < 2^31 is exact in float64 and +0.5 is exact too: floor gives half-away.
    b = (np.sign(mant) * np.floor(np.abs(mant) * 2.0**31 + 0.5)).astype(np.int64)
    c = (31 - exp).astype(np.int64)
    full = np.abs(b) == (1 << 31)
    b = np.where(full, np.sign(b) * (1 << 30), b)
    c = np.where(full, c - 1, c)
    tiny = (c > 62) | (b == 0)
    b = np.where(tiny, 0, b).astype(np.int64)
    c = np.where(tiny, 1, c).astype(np.int64)
    return b, c


def shift_round(p: Any, c: Any) -> Any:
    """``⌊p / 2^c + 1/2⌋ = (p + 2^(c−1)) >> c`` for int64 ``p`` and shifts ``c ≥ 1``."""
    c = _like(p, c)
    one = _like(p, 1)
    return (p + (one << (c - 1))) >> c


def requant(acc: Any, b: Any, c: Any, bits: int | None = None) -> Any:
    """``clamp(⌊acc·b/2^c + 1/2⌋)``: integer multiply, add half, arithmetic right shift.

    Args:
        acc: int32-range integer accumulator (numpy/torch, any integer dtype).
        b, c: from :func:`dyadic`; broadcast against ``acc`` (per-channel along the last
            axis: shape ``(C,)``).
        bits: clamp to the signed ``bits``-bit range; None leaves the result unclamped.

    Raises:
        TypeError: ``acc`` is not an integer array. OverflowError: ``acc`` leaves int32.
        ValueError: ``|b| ≥ 2^31`` or a shift outside ``1..62``.
    """
    acc = _as_int64(acc, "acc")
    _check_int32(acc, "requant input")
    b = _like(acc, b)
    if int(abs(b).max()) > INT32_MAX:
        raise ValueError("requant: |b| must be < 2^31")
    cc = np.asarray(c.detach().cpu().numpy() if _is_torch(c) else c)
    if cc.min() < 1 or cc.max() > 62:
        raise ValueError(f"requant: shifts c must lie in 1..62, got [{cc.min()}, {cc.max()}]")
    out = shift_round(acc * b, c)
    if bits is not None:
        out = _clip(out, *signed_range(bits))
    return out


def add_requant(a: Any, ba: Any, ca: Any, r: Any, br: Any, cr: Any, bits: int) -> Any:
    """Residual add: ``clamp(requant(a) + requant(r))``, each branch with its own ``(b, c)``
    to the common output scale, clamped once after the add (as the repo's ``QuantAct`` with
    ``identity``)."""
    return _clip(requant(a, ba, ca) + requant(r, br, cr), *signed_range(bits))


# ---- Shiftmax / ShiftGELU ----------------------------------------------------------------------


def exp_x0(scale: float) -> int:
    """``x0 = ⌊−1/S⌋``: the integer code of −1 at scale ``S`` (a constant, computed in float64
    before inference as the repo does)."""
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"scale must be a positive finite float, got {scale!r}")
    x0 = math.floor(-1.0 / s)
    if x0 < -(1 << 30):
        raise ValueError(f"scale={s} too small: x0={x0} would overflow the shift-exp")
    return x0


def shift_exp(x: Any, x0: int, n: int) -> Any:
    """Integer ``2^n · e^(x·S)`` for integer ``x`` (``x ≤ 0`` in Shiftmax), see module doc.

    Returns int64 ``e = min(((r − 2·x0) << (n − q)) >> 1, 2^31 − 1)``, real value
    ``e · S / 2^n``.
    """
    x = _as_int64(x)
    x0 = int(x0)
    if x0 > -1:
        raise ValueError(f"x0={x0} must be a negative integer (the code of -1)")
    _check_bits(n, 1, 30, "n")
    x = x + (x >> 1) - (x >> 4)
    x = _maximum(x, n * x0)
    q = x // x0
    r = x - q * x0
    # n - q ≥ 31 already saturates (r - 2·x0 ≥ 2), so the shift is capped to stay in int64.
    sh = _minimum(n - q, 31)
    e = ((r - 2 * x0) << sh) >> 1
    return _minimum(e, INT32_MAX)


def shiftmax(x: Any, x0: int, *, n: int = 15, bits: int = 8, mask: Any = None) -> Any:
    """Integer softmax over the last axis: codes of scale ``1/2^(bits−1)`` (see module doc).

    Args:
        x: integer logits (scale ``S``), any shape.
        x0: :func:`exp_x0` of ``S``.
        n: shift-exp precision (the repo: 15).
        bits: output bits; the row sum is ``2^(bits−1)`` up to the floor losses.
        mask: optional boolean array broadcastable to ``x``; False entries (padded keys) are
            left out of the row max and get ``e = 0`` — an exact integer mask instead of
            BERT's additive ``-inf``.
    """
    _check_bits(bits, 2, 31)
    x = _as_int64(x)
    if mask is None:
        e = shift_exp(x - _rowmax(x), x0, n)
    else:
        # the row max over the unmasked entries only; masked entries get e = 0
        zero = _like(x, 0)
        xmax = _rowmax(_where(mask, x, _like(x, -(1 << 62))))
        e = _where(mask, shift_exp(_where(mask, x - xmax, zero), x0, n), zero)
    s = _minimum(_rowsum(e), INT32_MAX)
    f = INT32_MAX // _maximum(s, 1)
    return (e * f) >> (32 - bits)


def shiftgelu(x: Any, x0: int, *, n: int = 23, bits: int = 8, symmetric: bool = False) -> Any:
    """Integer ``x·σ(1.702x)``: ``x`` (scale ``S``) times an integer sigmoid of ``bits`` bits;
    ``x0`` = :func:`exp_x0` of ``1.702·S``; result scale ``S / 2^(bits−1)``.

    ``symmetric=False`` (the repo): ``σ = e^(t−t_max)/(e^(t−t_max) + e^(−t_max))`` with the
    row max ``t_max``. When ``t_max`` is large, ``e^(−t_max)`` floors to 0 and every entry
    whose shift-exp is clamped at ``n·x0`` gets ``σ ≈ 1`` instead of ≈ 0 (BERT's FFN rows:
    ``GELU(−3) → −3``). ``symmetric=True`` (ours): elementwise, no row max —
    ``σ(−|t|) = e^(−|t|)/(e^(−|t|) + 1)`` and ``σ(|t|) = 1/(e^(−|t|) + 1)``, both from one
    shift-exp of ``−|x|`` and the code of 1 (``shift_exp(0)``), same integer division.
    """
    _check_bits(bits, 2, 31)
    x = _as_int64(x)
    if symmetric:
        e = shift_exp(-abs(x), x0, n)
        one = min((-int(x0)) << n, INT32_MAX)
        s = _minimum(e + one, INT32_MAX)
        num = _where(x > 0, _like(e, one), e)
    else:
        xmax = _rowmax(x)
        e = shift_exp(x - xmax, x0, n)
        emax = shift_exp(-xmax, x0, n)
        s = _minimum(e + emax, INT32_MAX)
        num = e
    f = INT32_MAX // s
    sig = (num * f) >> (32 - bits)
    return x * sig


# ---- I-LayerNorm -------------------------------------------------------------------------------


def isqrt_newton(v: Any, iters: int | None = SQRT_ITERS, start: int = SQRT_START) -> Any:
    """Integer square root by Newton's iteration ``I ← (I + v // I) >> 1`` from ``start``.

    ``iters=10`` (the repo): a fixed 10 steps from ``2^16``. For ``2^16 ≤ v < 2^44`` the
    result is ``⌊√v⌋`` or ``⌊√v⌋ + 1`` (integer Newton ends on ``⌊√v⌋ + 1`` when it
    oscillates, e.g. near ``v = k² − 1``, which a fixed count cannot stop; 0.3 % of
    ``v ∈ [2^16, 2^18)``, about 1e-5 above 2^20). Small ``v`` have not come down from ``2^16``
    yet (``v < 4096`` gives 64 or more) and ``v ≳ 2^44.4`` have not come down from the first
    overshoot. ``iters=None``: the converging variant — one unconditional step (which lands
    on or above ``⌊√v⌋`` from any start), then steps while they decrease (the paper's stop
    rule); returns ``⌊√v⌋`` for every ``v ≥ 0`` (``0`` for ``v = 0``).
    """
    v = _as_int64(v, "v")
    if (v < 0).any():
        raise ValueError("isqrt_newton: v must be >= 0")
    if start < 1:
        raise ValueError(f"start={start} must be >= 1")
    i = _like(v, start) + v * 0
    if iters is not None:
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
            raise ValueError(f"iters={iters!r}; accepted: an int >= 0, or None (converge)")
        for _ in range(iters):
            i = (i + v // _maximum(i, 1)) >> 1
        return i
    i = (i + v // i) >> 1
    while True:
        nxt = (i + v // _maximum(i, 1)) >> 1
        dec = nxt < i
        if not dec.any():
            return i
        i = _where(dec, nxt, i)


def layernorm_scale(channels: int, shift: int = 0) -> float:
    """Real value of one step of :func:`i_layernorm`'s output: ``√C / 2^(30 − shift)``
    (before γ)."""
    return math.sqrt(channels) / 2.0 ** (30 - shift)


def layernorm_shift(beta_over_gamma: Any, channels: int) -> int:
    """The headroom shift of :func:`i_layernorm`: the smallest ``k ≥ 0`` with
    ``2^(30−k) + max|⌊β/γ / (√C/2^(30−k))⌋| ≤ 2^31 − 1``, so the normalised codes (at most
    ``2^(30−k)`` in magnitude) plus the integer bias stay in int32.

    The repo uses ``k = 0`` always; that overflows int32 when some ``|β/γ| > √C`` (e.g. a
    channel with γ ≈ 0: MiniLM's last LayerNorm has γ = 5e-33 with β/γ = 57.6).
    """
    r = float(np.max(np.abs(np.asarray(beta_over_gamma, dtype=np.float64)), initial=0.0))
    if not math.isfinite(r):
        raise ValueError("layernorm_shift: beta/gamma is not finite (gamma = 0?)")
    for k in range(0, 30):
        if (1 << (30 - k)) + math.floor(r / layernorm_scale(channels, k)) + 1 <= INT32_MAX:
            return k
    raise ValueError(f"layernorm_shift: max|beta/gamma| = {r} needs more than 29 bits of shift")


def i_layernorm(
    x: Any, bias_int: Any = 0, *, iters: int | None = SQRT_ITERS, shift: int = 0
) -> Any:
    """I-LayerNorm over the last axis (``C`` channels), see module doc; ``bias_int`` (per
    channel, ``⌊β/γ / s⌋``) is added to the normalised codes ``(y·f) >> (1 + shift)``.
    Output scale ``s·γ`` with ``s = √C/2^(30−shift)`` (:func:`layernorm_scale`; γ is applied
    by the next requant; ``shift`` from :func:`layernorm_shift`, 0 in the repo). ``std`` is
    at least 1 (a constant row, ``var = 0``, normalises to 0)."""
    x = _as_int64(x)
    _check_bits(shift + 2, 2, 31, "shift + 2")
    c = int(x.shape[-1])
    mean = (2 * _rowsum(x) + c) // (2 * c)
    y = x - mean
    var = _rowsum(y * y)
    std = _maximum(isqrt_newton(var, iters), 1)
    f = INT32_MAX // std
    return ((y * f) >> (1 + shift)) + _like(y, bias_int)


# ---- integer GEMM ------------------------------------------------------------------------------


def int_linear(x: Any, w: Any, bias: Any = None) -> Any:
    """``x @ wᵀ + bias`` on integers (``x``: ``(..., K)``, ``w``: ``(N, K)``), int64 out.

    torch: int8 operands go through ``torch._int_mm`` (an int8×int8→int32 GEMM, exact for
    ``K < 2^17``), other integer dtypes through an int64 matmul; numpy: int64 matmul.
    """
    if _is_torch(x):
        import torch

        if x.dtype == torch.int8 and w.dtype == torch.int8 and hasattr(torch, "_int_mm"):
            lead = x.shape[:-1]
            acc = torch._int_mm(x.reshape(-1, x.shape[-1]).contiguous(), w.t().contiguous())
            acc = acc.to(torch.int64).reshape(*lead, w.shape[0])
        else:
            acc = _as_int64(x) @ _as_int64(w, "w").t()
    else:
        acc = _as_int64(x) @ _as_int64(w, "w").T
    if bias is not None:
        acc = acc + _as_int64(bias, "bias")
    return acc


__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "SQRT_ITERS",
    "SQRT_START",
    "add_requant",
    "dyadic",
    "exp_x0",
    "i_layernorm",
    "int_linear",
    "isqrt_newton",
    "layernorm_scale",
    "layernorm_shift",
    "quantize_symmetric",
    "requant",
    "shift_exp",
    "shift_round",
    "shiftgelu",
    "shiftmax",
    "signed_range",
    "symmetric_scale",
]
