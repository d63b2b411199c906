"""Fused numba kernels for the integer path on CPU: one pass per row instead of ~20 torch
passes over int64 tensors (BERT's 12×128×128 attention maps made the torch path ~10× slower
than float32 inference).

Each kernel computes exactly the reference operator of :mod:`lowbit.methods.ivit.ops` (tested
bit for bit against it); numba is imported on first use and compiles with ``cache=True``.
Inputs keep their integer dtype (numba compiles one version per dtype; arithmetic widens to
int64 inside), and outputs take the narrowest dtype their proven range fits — ``bits``-bit
requantized codes in int8/int16, Shiftmax codes (``< 2^(bits−1)``) in int16, I-LayerNorm
in int32 — so no pass is spent on dtype conversions. Shift-exp of the ``x ≤ 0`` branch reads
a table of its ``n·|x0| + 1`` possible values (an integer ROM: the per-element integer
division by ``x0`` was the bottleneck). The wrappers take and return torch tensors (CPU) and
fall back to the reference operators for anything else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lowbit.methods.ivit import ops

_K: dict[str, Any] = {}
#: Largest shift-exp table (entries ``n·|x0| + 1``); beyond it the reference operator runs.
LUT_MAX = 1 << 20


def _build() -> dict[str, Any]:
    if _K:
        return _K
    import numba

    jit = numba.njit(cache=True, nogil=True)
    inline = numba.njit(cache=True, inline="always")
    imax = ops.INT32_MAX
    start = ops.SQRT_START

    @inline
    def shexp(d: int, x0: int, n: int) -> int:
        d = d + (d >> 1) - (d >> 4)
        lim = n * x0
        if d < lim:
            d = lim
        q = d // x0
        r = d - q * x0
        sh = n - q
        if sh > 31:
            sh = 31
        e = ((r - 2 * x0) << sh) >> 1
        return imax if e > imax else e

    @jit
    def exp_table(x0: int, n: int) -> np.ndarray:
        # lut[t] = shexp(-t) for t = 0 .. n·|x0|; shexp clamps its argument (after the log2 e
        # multiply) at n·x0, so larger t read the last entry.
        size = -n * x0 + 1
        lut = np.empty(size, np.int64)
        for t in range(size):
            d = -t
            q = d // x0
            r = d - q * x0
            sh = n - q
            if sh > 31:
                sh = 31
            e = ((r - 2 * x0) << sh) >> 1
            lut[t] = imax if e > imax else e
        return lut

    @inline
    def shexp_lut(d: int, lut: np.ndarray) -> int:
        # d <= 0 only; equals shexp(d, x0, n) for the table's (x0, n)
        d = d + (d >> 1) - (d >> 4)
        t = -d
        if t >= lut.shape[0]:
            t = lut.shape[0] - 1
        return lut[t]

    @jit
    def requant(
        acc: np.ndarray, b: np.ndarray, c: np.ndarray, lo: int, hi: int, out: np.ndarray
    ) -> tuple[int, int]:
        rows, cols = acc.shape
        amin = np.int64(0)
        amax = np.int64(0)
        for i in range(rows):
            for j in range(cols):
                a = np.int64(acc[i, j])
                amin = min(amin, a)
                amax = max(amax, a)
                cj = c[j]
                v = (a * b[j] + (np.int64(1) << (cj - 1))) >> cj
                out[i, j] = min(max(v, lo), hi)
        return amin, amax

    @jit
    def shiftmax(
        x: np.ndarray,
        mask: np.ndarray,
        rows_per_mask: int,
        x0: int,
        n: int,
        bits: int,
        out: np.ndarray,
    ) -> None:
        rows, cols = x.shape
        e = np.empty(cols, np.int64)
        has_mask = mask.shape[0] > 0
        sh = 32 - bits
        lut = exp_table(x0, n)
        for i in range(rows):
            m = i // rows_per_mask if has_mask else 0
            xmax = -(np.int64(1) << 62)
            for j in range(cols):
                if (not has_mask or mask[m, j]) and x[i, j] > xmax:
                    xmax = np.int64(x[i, j])
            s = np.int64(0)
            for j in range(cols):
                if has_mask and not mask[m, j]:
                    e[j] = 0
                else:
                    e[j] = shexp_lut(x[i, j] - xmax, lut)
                    s += e[j]
            s = min(max(s, 1), imax)
            f = imax // s
            for j in range(cols):
                out[i, j] = (e[j] * f) >> sh

    @jit
    def shiftgelu(
        x: np.ndarray, x0: int, n: int, bits: int, symmetric: bool, out: np.ndarray
    ) -> None:
        rows, cols = x.shape
        sh = 32 - bits
        lut = exp_table(x0, n)
        one = min(np.int64(-x0) << n, imax)
        if symmetric:
            for i in range(rows):
                for j in range(cols):
                    xi = np.int64(x[i, j])
                    e = shexp_lut(-abs(xi), lut)
                    f = imax // min(e + one, imax)
                    num = one if xi > 0 else e
                    out[i, j] = xi * ((num * f) >> sh)
            return
        for i in range(rows):
            xmax = np.int64(x[i, 0])
            for j in range(1, cols):
                xmax = max(xmax, np.int64(x[i, j]))
            emax = shexp(-xmax, x0, n)
            for j in range(cols):
                xi = np.int64(x[i, j])
                e = shexp_lut(xi - xmax, lut)
                f = imax // min(e + emax, imax)
                out[i, j] = xi * ((e * f) >> sh)

    @jit
    def layernorm(x: np.ndarray, bias: np.ndarray, iters: int, shift: int, out: np.ndarray) -> None:
        rows, cols = x.shape
        for i in range(rows):
            s = np.int64(0)
            for j in range(cols):
                s += x[i, j]
            mean = (2 * s + cols) // (2 * cols)
            var = np.int64(0)
            for j in range(cols):
                y = x[i, j] - mean
                var += y * y
            k = np.int64(start)
            if iters >= 0:
                for _ in range(iters):
                    k = (k + var // max(k, 1)) >> 1
            else:
                k = (k + var // k) >> 1
                while True:
                    nxt = (k + var // max(k, 1)) >> 1
                    if nxt >= k:
                        break
                    k = nxt
            f = imax // max(k, 1)
            for j in range(cols):
                out[i, j] = (((x[i, j] - mean) * f) >> (1 + shift)) + bias[j]

    _K.update(
        requant=requant,
        shiftmax=shiftmax,
        shiftgelu=shiftgelu,
        layernorm=layernorm,
        exp_table=exp_table,
    )
    return _K


def _rows(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous ``(rows, last)`` numpy view (or copy) of an integer CPU tensor."""
    a = t.detach().contiguous().numpy()
    return a.reshape(-1, a.shape[-1])


def _fast(t: Any) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and t.device.type == "cpu"
        and t.dim() >= 1
        and t.numel() > 0
        and not t.dtype.is_floating_point
        and not t.dtype.is_complex
        and t.dtype != torch.bool
    )


def _dtype_for(bits: int) -> torch.dtype:
    """The torch dtype of signed ``bits``-bit codes."""
    return (
        torch.int8
        if bits <= 8
        else torch.int16
        if bits <= 16
        else torch.int32
        if bits <= 32
        else torch.int64
    )


def _consts(v: Any, cols: int) -> np.ndarray:
    a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
    return np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.int64), (cols,)))


def requant(acc: Any, b: Any, c: Any, bits: int | None = None) -> Any:
    """:func:`ops.requant` (per-tensor or per-last-axis ``(b, c)``), fused on CPU tensors;
    the result is in the dtype of ``bits``-bit codes (int64 when ``bits`` is None)."""
    if not _fast(acc) or np.ndim(b) > 1 or np.ndim(c) > 1:
        return ops.requant(acc, b, c, bits)
    cols = acc.shape[-1]
    bb, cc = _consts(b, cols), _consts(c, cols)
    if int(np.abs(bb).max()) > ops.INT32_MAX:
        raise ValueError("requant: |b| must be < 2^31")
    if cc.min() < 1 or cc.max() > 62:
        raise ValueError(f"requant: shifts c must lie in 1..62, got [{cc.min()}, {cc.max()}]")
    lo, hi = ops.signed_range(bits) if bits is not None else (-(1 << 62), 1 << 62)
    out = torch.empty(acc.shape, dtype=_dtype_for(bits) if bits is not None else torch.int64)
    amin, amax = _build()["requant"](_rows(acc), bb, cc, lo, hi, _rows(out))
    if amin < ops.INT32_MIN or amax > ops.INT32_MAX:
        raise OverflowError(f"requant input leaves int32: range [{amin}, {amax}]")
    return out


def add_requant(a: Any, ba: Any, ca: Any, r: Any, br: Any, cr: Any, bits: int) -> Any:
    """:func:`ops.add_requant` from two fused requantizations."""
    if not (_fast(a) and _fast(r)):
        return ops.add_requant(a, ba, ca, r, br, cr, bits)
    r = r.expand(torch.broadcast_shapes(a.shape, r.shape))
    s = requant(a, ba, ca).add_(requant(r, br, cr))
    return s.clamp_(*ops.signed_range(bits)).to(_dtype_for(bits))


def _check_exp(x0: int, n: int, bits: int) -> None:
    ops._check_bits(bits, 2, 31)
    ops._check_bits(n, 1, 30, "n")
    if int(x0) > -1:
        raise ValueError(f"x0={x0} must be a negative integer (the code of -1)")


def shiftmax(x: Any, x0: int, *, n: int = 15, bits: int = 8, mask: Any = None) -> Any:
    """:func:`ops.shiftmax`, fused on CPU tensors (codes ``< 2^(bits−1)``, so int16 for
    ``bits ≤ 16``). ``mask`` must broadcast as BERT's key mask ``(B, 1, ..., 1, N)`` against
    ``x`` ``(B, ..., N)`` (or be None)."""
    _check_exp(x0, n, bits)
    if not _fast(x) or -n * int(x0) > LUT_MAX:
        return ops.shiftmax(x, x0, n=n, bits=bits, mask=mask)
    xr = _rows(x)
    if mask is None:
        m = np.zeros((0, xr.shape[1]), dtype=np.bool_)
        per = 1
    else:
        mt = torch.as_tensor(mask)
        if (
            mt.dim() != x.dim()
            or any(s != 1 for s in mt.shape[1:-1])
            or mt.shape[-1] != x.shape[-1]
            or mt.shape[0] != x.shape[0]
        ):
            return ops.shiftmax(x, x0, n=n, bits=bits, mask=mask)
        m = mt.reshape(mt.shape[0], -1).to(torch.bool).contiguous().numpy()
        per = xr.shape[0] // x.shape[0]
    out = torch.empty(x.shape, dtype=_dtype_for(bits))
    _build()["shiftmax"](xr, m, per, int(x0), n, bits, _rows(out))
    return out


def shiftgelu(x: Any, x0: int, *, n: int = 23, bits: int = 8, symmetric: bool = False) -> Any:
    """:func:`ops.shiftgelu`, fused on CPU tensors (int32 out for ≤ 16-bit inputs and
    ``bits ≤ 16``: ``|x·σ| < 2^15·2^15``)."""
    _check_exp(x0, n, bits)
    if not _fast(x) or -n * int(x0) > LUT_MAX:
        return ops.shiftgelu(x, x0, n=n, bits=bits, symmetric=symmetric)
    small = x.dtype in (torch.int8, torch.int16, torch.uint8) and bits <= 16
    out = torch.empty(x.shape, dtype=torch.int32 if small else torch.int64)
    _build()["shiftgelu"](_rows(x), int(x0), n, bits, bool(symmetric), _rows(out))
    return out


def i_layernorm(
    x: Any, bias_int: Any = 0, *, iters: int | None = ops.SQRT_ITERS, shift: int = 0
) -> Any:
    """:func:`ops.i_layernorm`, fused on CPU tensors (int64 out: the int32 headroom is the
    caller's bias choice, checked by the next requantization)."""
    if not _fast(x):
        return ops.i_layernorm(x, bias_int, iters=iters, shift=shift)
    ops._check_bits(shift + 2, 2, 31, "shift + 2")
    if iters is not None and (isinstance(iters, bool) or not isinstance(iters, int) or iters < 0):
        raise ValueError(f"iters={iters!r}; accepted: an int >= 0, or None (converge)")
    out = torch.empty(x.shape, dtype=torch.int64)
    it = -1 if iters is None else int(iters)
    _build()["layernorm"](_rows(x), _consts(bias_int, x.shape[-1]), it, int(shift), _rows(out))
    return out


def matmul(a: Any, b: Any) -> Any:
    """Integer (batched) matmul ``a @ b``, exact.

    CPU torch tensors whose dtypes bound the sums below ``2^31`` (``K · 2^(bits_a−1) ·
    2^(bits_b−1)``: the attention's int8 ``q @ kᵀ``, and int16 Shiftmax codes times int8
    ``v`` for ``N ≤ 1024``) multiply in int32 (torch's integer matmul), anything else in
    int64. Returns int32 or int64.
    """
    if (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.dtype in (torch.int8, torch.int16)
        and b.dtype in (torch.int8, torch.int16)
    ):
        bound = a.shape[-1] * (1 << (8 * a.element_size() - 1)) * (1 << (8 * b.element_size() - 1))
        if bound <= ops.INT32_MAX:
            return a.to(torch.int32) @ b.to(torch.int32)
    return ops._as_int64(a, "a") @ ops._as_int64(b, "b")


def linear(x: Any, w: Any, bias: Any = None) -> Any:
    """``x @ wᵀ + bias``: int8 operands take ``torch._int_mm`` (int32) and one widening add of
    the int64 bias; others :func:`ops.int_linear`."""
    if (
        isinstance(x, torch.Tensor)
        and x.dtype == torch.int8
        and w.dtype == torch.int8
        and x.device.type == "cpu"
        and hasattr(torch, "_int_mm")
    ):
        lead = x.shape[:-1]
        acc = torch._int_mm(x.reshape(-1, x.shape[-1]).contiguous(), w.t().contiguous())
        acc = acc.reshape(*lead, w.shape[0])
        return acc.to(torch.int64) if bias is None else torch.add(acc, bias)
    return ops.int_linear(x, w, bias)


__all__ = [
    "LUT_MAX",
    "add_requant",
    "i_layernorm",
    "linear",
    "matmul",
    "requant",
    "shiftgelu",
    "shiftmax",
]
