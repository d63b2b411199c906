"""S2FP8: shifted and squeezed 8-bit floats (Cambier et al., ICLR 2020, arXiv 2001.05674).

A tensor ``X`` is stored as FP8 values ``Y`` (1-5-2, i.e. ``e5m2``) and two scalars
``(alpha, beta)`` such that, element by element,

    log2|Y_i| = alpha · log2|X_i| + beta,    i.e.    Y_i = sign(X_i) · |X_i|**alpha · 2**beta

with the statistics taken over the **non-zero** entries only (zeros stay zero; including them
would put ``log2 0 = -inf`` into the mean — the classic bug):

    mu = mean_i log2|X_i|,    m = max_i log2|X_i|,    alpha = E / (m - mu),    beta = -alpha · mu

where ``E`` is the largest exponent of the storage format (15 for e5m2, the paper's choice;
``fmt.emax`` in general). The transformed log-magnitudes have mean 0 ("shift") and maximum
``E`` ("squeeze"): the tensor's dynamic range is fitted to the FP8 exponent range, per tensor
and recomputed every call. ``Y`` is the transformed value rounded to nearest (ties to even) on
the format's grid, saturating; decoding is ``|X| = (|Y| · 2**-beta)**(1/alpha)``.

How it is computed (float64, on the host):

* **Statistics.** With ``|x| = f · 2**e`` (``frexp``, ``f`` in [0.5, 1)),
  ``mu = Σe/n + mean(log2 f)`` and ``m - mu = (n·e_M - Σe)/n + (log2 f_M - mean(log2 f))``
  (``M`` the largest entry), the integer parts in exact integer arithmetic. So ``x -> 2**k·x``
  leaves ``alpha`` bit-identical and moves ``beta`` by ``-alpha·k`` (up to one float64
  rounding). ``alpha`` and ``beta`` are returned as Python floats (the paper keeps them in
  fp32; the difference is far below the FP8 rounding).
* **Rounding by thresholds.** The map ``|x| -> |x|**alpha · 2**beta`` is increasing, so rounding
  the transformed value to nearest is the same as comparing ``|x|`` with the pre-images
  ``t_j = 2**((log2 mid_j - beta) / alpha)`` of the midpoints ``mid_j`` between consecutive
  non-negative grid values ``v_{j-1} < v_j``: the code of ``|x|`` is the number of ``t_j <= |x|``
  (ties to even: ``t_j`` is moved one float64 ulp up when ``v_j`` has an odd code, so that a
  value exactly on it rounds down). Only the thresholds and the decoded grid values
  ``2**((log2 v_k - beta) / alpha)`` (a table of at most a few hundred entries for 8-bit
  formats) involve ``log2``/``exp2`` of the transform; the per-element work is one search.
  :func:`s2fp8_round` is exactly ``s2fp8_decode(*s2fp8_encode(x))`` (the table entry of each
  code equals the decoding formula applied to the code's value).
* The plain reference (``impl="reference"``) counts thresholds by broadcast comparison;
  the fast path (``impl="auto"``) searches them (``np.searchsorted``, or ``torch.bucketize``
  on the tensor's own device with each float64 threshold rounded up to the tensor's dtype,
  which gives the same comparisons). The two agree bit for bit.
* Powers of two: ``x -> 2**k·x`` gives the same ``Y`` and ``2**k`` times the decoded values up
  to float64 rounding of ``beta`` and the tables (~1e-16 relative; after the rounding to a
  float32 tensor the results are bit-identical except in the unlikely event that a table
  entry lies within that distance of a float32 rounding boundary).
* Degenerate tensors: no non-zero entry (all zeros, or empty) gives ``alpha = 1, beta = 0``
  and ``Y = X``; when every non-zero magnitude is the same (``m == mu``, e.g. a single non-zero
  value) the squeeze is undefined and we take ``alpha = 1, beta = -mu``, so each non-zero
  ``Y`` is ``±1`` and decodes to ``±2**mu`` (= ``|X|`` up to float64 rounding).
* Underflow: entries whose transformed value falls below half the smallest subnormal round to
  zero, as in real FP8 (entries far below the tensor's mean are lost). Overflow cannot happen:
  the largest transformed value is ``2**E``, on the grid.
* Non-finite inputs: ``nonfinite="raise"`` (default) raises ``ValueError``;
  ``nonfinite="propagate"`` takes the statistics over the finite non-zero entries and passes
  ``±inf``/NaN through ``Y`` and the decoding unchanged (a training loop then sees them).

Backends: numpy arrays and scalars, torch tensors (statistics on the host, the search on the
tensor's device) and jax arrays (through numpy); results in the input's backend, dtype and
shape (grid values of 8-bit formats are exact in float16/bfloat16/float32/float64; decoded
values are rounded once to the dtype).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from lowbit.blocks._common import _BF16, _narrow, to_float64
from lowbit.formats import FloatFormat, get_format
from lowbit.rounding import backend as _B
from lowbit.rounding.codes import decode as lb_decode

NONFINITE = ("raise", "propagate")
IMPLS = ("auto", "reference")
_MAX_GRID_BITS = 16  # formats whose grid is tabulated (every 8- and 16-bit float format)


# ---- checks and the format grid ---------------------------------------------------------------
def _check_fmt(fmt: Any) -> FloatFormat:
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(f, FloatFormat):
        raise ValueError(
            f"S2FP8 stores a float format; fmt={fmt!r} is not one (accepted: "
            "float formats of at most 16 bits such as 'e5m2' (the paper's 1-5-2), "
            "'e4m3', 'fp16', 'bf16')"
        )
    if f.bits > _MAX_GRID_BITS or not f.signed or not f.has_zero:
        raise ValueError(
            f"S2FP8 needs a signed float format with a zero and at most "
            f"{_MAX_GRID_BITS} bits; got {f.name!r}"
        )
    return f


def _check_choice(name: str, value: Any, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"{name}={value!r}; accepted: {', '.join(map(repr, accepted))}")
    return str(value)


@functools.lru_cache(maxsize=32)
def _grid(f: FloatFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(v, log2 v[1:], log2 mid, tie_down) of the non-negative finite values in code order.

    ``v[0] = 0``; ``mid[j-1]`` is the midpoint of ``v[j-1]`` and ``v[j]``; ``tie_down[j-1]``
    says that a value exactly on it rounds down (``v[j]``'s code is odd).
    """
    codes = np.arange(1 << (f.bits - 1), dtype=np.uint32)
    v = np.asarray(lb_decode(codes, f, dtype=np.float64), dtype=np.float64)
    keep = np.isfinite(v)
    v, codes = v[keep], codes[keep]
    if v[0] != 0 or not bool(np.all(np.diff(v) > 0)):
        raise ValueError(f"{f.name}: its non-negative codes do not decode to increasing values")
    mid = (v[:-1] + v[1:]) / 2  # exact: one more bit than the format needs
    for a in (v, mid):
        a.setflags(write=False)
    lv = np.log2(v[1:])
    lm = np.log2(mid)
    tie_down = codes[1:] % 2 == 1
    for a in (lv, lm, tie_down):
        a.setflags(write=False)
    return v, lv, lm, tie_down


def _tables(f: FloatFormat, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, decoded grid) for one ``(alpha, beta)``, float64.

    ``decoded[k]`` is :func:`s2fp8_decode`'s value of the grid value ``v[k]``; a magnitude
    ``a`` has code ``#{j: thresholds[j] <= a}``.
    """
    v, lv, lm, tie_down = _grid(f)
    with np.errstate(over="ignore", under="ignore"):
        dec = np.zeros(v.shape, dtype=np.float64)
        dec[1:] = _decode_mag(lv, alpha, beta)
        thr = _decode_mag(lm, alpha, beta)
    return _ties_to_even(thr, tie_down), dec


def _ties_to_even(mid: np.ndarray, tie_down: np.ndarray) -> np.ndarray:
    """Thresholds from midpoints: one ulp up where a value on the midpoint rounds down."""
    return np.where(tie_down, np.nextafter(mid, np.inf), mid)


def _decode_mag(log2y: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``2**((log2|y| - beta) / alpha)``: the one decoding formula (tables and decode)."""
    return np.exp2((log2y - beta) / alpha)


# ---- statistics -------------------------------------------------------------------------------
def _host(x: Any) -> np.ndarray:
    """A numpy view/copy of ``x`` in float32 or float64 (exact), without autograd."""
    kind = _B.backend_of(x)
    if kind == "torch":
        import torch

        t = x.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        elif t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"unsupported dtype {t.dtype}; accepted: {_B.ACCEPTED_DTYPES}")
        return t.cpu().numpy()
    if isinstance(x, bool):
        raise TypeError("bool is not a number to quantize; pass a float")
    if isinstance(x, (float, int, list, tuple)):
        return np.asarray(x, dtype=np.float64)
    a = np.asarray(x)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype not in _B.NUMPY_FLOAT_DTYPES:
        raise TypeError(f"unsupported dtype {a.dtype}; accepted: {_B.ACCEPTED_DTYPES}")
    return a.astype(np.float32)  # float16 / bfloat16: exact


_CHUNK = 1 << 16  # elements per chunk of the statistics and the search (stays in cache)


def _stats(x: np.ndarray, emax: int, nonfinite: str) -> tuple[float, float]:
    """``(alpha, beta)`` of a float32/float64 array (module docstring).

    Computed over chunks of ``_CHUNK`` elements (the sums add the chunks' pairwise sums in
    order) with unmasked ufuncs only: a zero has ``frexp(0) = (0, 0)``, and ``log2(f + 1)`` of
    its ``f = 0`` adds an exact 0.
    """
    flat = x.reshape(-1)
    if flat.size == 0:
        return 1.0, 0.0
    amax = float(np.max(np.abs(flat)))  # NaN if any NaN
    if not math.isfinite(amax):
        if nonfinite == "raise":
            bad = flat[~np.isfinite(flat)][0]
            raise ValueError(
                f"S2FP8 statistics need finite values; the tensor holds {bad!r} "
                "(pass nonfinite='propagate' to keep NaN/inf and scale the rest)"
            )
        flat = np.where(np.isfinite(flat), flat, flat.dtype.type(0))
        amax = float(np.max(np.abs(flat)))
    if amax == 0:
        return 1.0, 0.0
    n = se = n_top = 0
    slf = 0.0
    for s in range(0, flat.size, _CHUNK):
        a = np.abs(flat[s : s + _CHUNK])
        zero = a == 0
        f, e = np.frexp(a)
        n += a.size - int(np.count_nonzero(zero))
        se += int(e.sum(dtype=np.int64))
        slf += float(np.log2(f + zero, dtype=np.float64).sum())  # exact 0 at the zeros
        n_top += int(np.count_nonzero(a == amax))
    mean_lf = slf / n
    q, r = divmod(se, n)
    mu = q + (r / n + mean_lf)
    if n_top == n:  # every non-zero magnitude equal: m == mu
        return 1.0, -mu
    f_top, e_top = np.frexp(np.float64(amax))
    top = float(n * int(e_top) - se) / n + (float(np.log2(f_top)) - mean_lf)
    if not top > 0.0:  # distinct magnitudes always give top > 0; guard against rounding
        return 1.0, -mu
    alpha = float(emax) / top
    return alpha, -alpha * mu


def s2fp8_params(
    x: Any, fmt: str | FloatFormat = "e5m2", *, nonfinite: str = "raise"
) -> tuple[float, float]:
    """``(alpha, beta)`` of ``x``: statistics over its non-zero entries (module docstring).

    Args:
        x: numpy / torch / jax array (or a scalar).
        fmt: the storage format; its ``emax`` is the squeeze target (15 for ``"e5m2"``).
        nonfinite: ``"raise"`` or ``"propagate"`` (statistics over the finite entries).

    Raises:
        ValueError: non-finite values with ``nonfinite="raise"``, an unsupported format.
    """
    f = _check_fmt(fmt)
    return _stats(_host(x), f.emax, _check_choice("nonfinite", nonfinite, NONFINITE))


# ---- the codes of magnitudes ------------------------------------------------------------------
def _codes_reference(a: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Code ``#{j: thr[j] <= a}`` of each magnitude, by plain counting (float64 compares)."""
    flat = a.reshape(-1).astype(np.float64)
    out = np.empty(flat.shape, dtype=np.int64)
    for s in range(0, flat.size, 4096):  # in chunks, to bound the comparison matrix
        out[s : s + 4096] = (thr[None, :] <= flat[s : s + 4096, None]).sum(axis=1)
    return out.reshape(a.shape)


def _round_up_to(thr: np.ndarray, dt: Any) -> np.ndarray:
    """Smallest value of float dtype ``dt`` >= each float64 threshold (inf stays inf).

    For a value ``a`` of that dtype, ``a >= thr`` exactly when ``a >= _round_up_to(thr)``.
    """
    with np.errstate(over="ignore"):
        t = thr.astype(dt)
    low = t.astype(np.float64) < thr
    return np.where(low, np.nextafter(t, dt(np.inf)), t)


_KEY = {np.dtype(np.float32): (np.int32, 16), np.dtype(np.float64): (np.int64, 48)}


def _key_tables(thr: np.ndarray, dt: np.dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer search tables for magnitudes of dtype ``dt`` (float32 or float64).

    Non-negative floats order like their bit patterns (keys). With ``S`` = 16 (float32) or 48
    (float64) the key's top bits ``key >> S`` pick one of 2**15 cells; ``base[c]`` counts the
    threshold keys at or below the cell's first key, ``keys`` (padded with the largest key)
    lists them, and ``rounds`` is the most thresholds any cell holds after its first key: the
    code of ``key`` is ``base[c] + sum(keys[base[c] + i] <= key for i < rounds)``, which is
    the count of thresholds ``<= |x|`` exactly.
    """
    it, shift = _KEY[dt]
    keys = _round_up_to(thr, dt.type).view(it)
    cells = np.arange(1 << 15, dtype=np.int64) << shift
    base = np.searchsorted(keys.astype(np.int64), cells, side="right")
    nxt = np.append(base[1:], keys.size)
    # thresholds in (cell start, next cell start): at most nxt - base of them
    rounds = int((nxt - base).max(initial=0))
    pad = np.full(rounds + 1, np.iinfo(it).max, dtype=it)
    return base.astype(np.int32), np.concatenate([keys, pad]), rounds


def _lookup_numpy(xw: np.ndarray, thr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The fast path on a contiguous float32/float64 array: ``sign(x) · table[code(|x|)]``.

    ``table`` holds the results in ``xw``'s dtype. Works chunk by chunk (in cache); NaN and
    ±inf entries (keys at or above the key of +inf) are copied through.
    """
    it, shift = _KEY[xw.dtype]
    base, keys, rounds = _key_tables(thr, xw.dtype)
    flat = xw.reshape(-1)
    out = np.empty_like(flat)
    mask = np.iinfo(it).max
    inf_key = np.array(np.inf, dtype=xw.dtype).view(it)
    for s in range(0, flat.size, _CHUNK):
        xc = flat[s : s + _CHUNK]
        oc = out[s : s + _CHUNK]
        key = xc.view(it) & mask
        code = np.take(base, key >> shift)
        if rounds:
            b = code.copy()
            for i in range(rounds):
                code += np.take(keys, b + i if i else b) <= key
        np.copysign(np.take(table, code), xc, out=oc)
        if key.max() >= inf_key:
            bad = key >= inf_key
            oc[bad] = xc[bad]
    return out.reshape(xw.shape)


def _codes_torch(a: Any, thr: np.ndarray) -> Any:
    """The search on a torch tensor of magnitudes, on its own device (no chunks)."""
    import torch

    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()
    dt = np.dtype(np.float32 if a.dtype == torch.float32 else np.float64)
    it, shift = _KEY[dt]
    base, keys, rounds = _key_tables(thr, dt)
    tit = torch.int32 if it is np.int32 else torch.int64
    key = (a.contiguous().view(tit) & np.iinfo(it).max).reshape(-1)
    base_t = torch.from_numpy(base).to(a.device)
    keys_t = torch.from_numpy(keys).to(a.device)
    b = torch.index_select(base_t, 0, (key >> shift).to(torch.int32))
    code = b.clone()
    for i in range(rounds):
        code += torch.index_select(keys_t, 0, b + i if i else b) <= key
    return code.reshape(a.shape)


def _table_as(table: np.ndarray, target: np.dtype, work: np.dtype) -> np.ndarray:
    """A float64 table rounded once (RNE) to ``target``, held in ``work`` (exactly)."""
    if target in (np.dtype(np.float16), _BF16):
        return _narrow(table, target).astype(work)
    return table.astype(target).astype(work)


def _apply(x: Any, thr: np.ndarray, table: np.ndarray, impl: str) -> Any:
    """``sign(x) · table[code(|x|)]`` in ``x``'s backend/dtype; non-finite entries kept.

    ``impl="reference"``: float64 copy, plain counting, one rounding to the dtype at the end.
    ``impl="auto"``: the key search, on the host for numpy and CPU torch (chunks), with
    ``torch`` ops on other devices; the table is rounded to the dtype first (the same single
    rounding of each entry).
    """
    kind = _B.backend_of(x)
    if impl == "reference" or kind == "jax":
        x64, restore, _ = to_float64(x)
        k = (
            _codes_reference(np.abs(x64), thr)
            if impl == "reference"
            else _lookup_index(np.abs(x64), thr)
        )
        out = np.copysign(np.take(table, k), x64)
        return restore(np.where(np.isfinite(x64), out, x64))
    if kind == "torch":
        import torch

        xt = x.detach()
        npdt = {
            torch.float64: np.dtype(np.float64),
            torch.float32: np.dtype(np.float32),
            torch.float16: np.dtype(np.float16),
            torch.bfloat16: _BF16,
        }.get(xt.dtype)
        if npdt is None:
            raise TypeError(f"unsupported dtype {xt.dtype}; accepted: {_B.ACCEPTED_DTYPES}")
        work = torch.float64 if xt.dtype == torch.float64 else torch.float32
        xw = xt.to(work).contiguous()
        tab = _table_as(table, npdt, np.dtype(np.float64 if work == torch.float64 else np.float32))
        if xw.device.type == "cpu":
            return torch.from_numpy(_lookup_numpy(xw.numpy(), thr, tab)).to(xt.dtype)
        k = _codes_torch(xw.abs(), thr)
        tab_t = torch.from_numpy(tab).to(xw.device)
        out = torch.copysign(torch.index_select(tab_t, 0, k.reshape(-1)).reshape(k.shape), xw)
        fin = torch.isfinite(xw)
        if not bool(fin.all()):
            out = torch.where(fin, out, xw)
        return out.to(xt.dtype)
    scalar = isinstance(x, (float, int, np.generic))
    arr = (
        np.asarray(x, dtype=np.float64)
        if isinstance(x, (float, int, list, tuple))
        else np.asarray(x)
    )
    dt = arr.dtype
    work = np.dtype(np.float64 if dt == np.float64 else np.float32)
    xw = np.ascontiguousarray(arr, dtype=work)
    out = _lookup_numpy(xw, thr, _table_as(table, dt, work))
    out = out.astype(dt)  # exact: the table entries are values of dt
    return dt.type(out) if scalar else out


def _lookup_index(a: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """The fast search's codes of float64 magnitudes (jax inputs)."""
    idx = np.arange(thr.size + 1, dtype=np.float64)
    return _lookup_numpy(np.ascontiguousarray(a), thr, idx).astype(np.int64)


# ---- public API -------------------------------------------------------------------------------
def s2fp8_encode(
    x: Any, fmt: str | FloatFormat = "e5m2", *, nonfinite: str = "raise", impl: str = "auto"
) -> tuple[Any, float, float]:
    """Encode ``x`` as S2FP8: ``(Y, alpha, beta)`` with ``Y`` on the ``fmt`` grid.

    ``Y_i = sign(x_i) · RN(|x_i|**alpha · 2**beta)`` (round to nearest, ties to even,
    saturating), zeros kept with their sign.

    Args:
        x: numpy / torch / jax array (or a scalar); float16, bfloat16, float32 or float64.
        fmt: storage format (default the paper's ``"e5m2"``).
        nonfinite: ``"raise"`` (default) or ``"propagate"`` (module docstring).
        impl: ``"auto"`` (search) or ``"reference"`` (plain counting); bit-identical.

    Returns:
        ``(Y, alpha, beta)``: ``Y`` in ``x``'s backend, dtype, shape and device; the two
        scalars as Python floats.

    Raises:
        ValueError: non-finite values with ``nonfinite="raise"``, an unsupported format.
        TypeError: unsupported input types or dtypes.
    """
    f = _check_fmt(fmt)
    _check_choice("impl", impl, IMPLS)
    alpha, beta = _stats(_host(x), f.emax, _check_choice("nonfinite", nonfinite, NONFINITE))
    thr, _ = _tables(f, alpha, beta)
    return _apply(x, thr, _grid(f)[0], impl), alpha, beta


def s2fp8_decode(y: Any, alpha: float, beta: float) -> Any:
    """Decode S2FP8 values: ``sign(Y) · (|Y| · 2**-beta)**(1/alpha)``; zeros stay zero,
    NaN/inf pass through.

    Computed as ``2**((log2|Y| - beta) / alpha)`` in float64, rounded once to ``y``'s dtype.

    Raises:
        ValueError: ``alpha`` not finite and > 0, or ``beta`` not finite.
        TypeError: non-numeric ``alpha``/``beta``.
    """
    for name, val in (("alpha", alpha), ("beta", beta)):
        if isinstance(val, bool) or not isinstance(val, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a float, got {val!r}")
    alpha, beta = float(alpha), float(beta)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} must be finite and > 0")
    if not np.isfinite(beta):
        raise ValueError(f"beta={beta!r} must be finite")
    y64, restore, _ = to_float64(y)
    out = y64.copy()
    use = np.isfinite(y64) & (y64 != 0)
    if bool(use.any()):
        with np.errstate(over="ignore", under="ignore"):
            mag = _decode_mag(np.log2(np.abs(y64[use])), alpha, beta)
        out[use] = np.copysign(mag, y64[use])
    return restore(out)


def s2fp8_round(
    x: Any, fmt: str | FloatFormat = "e5m2", *, nonfinite: str = "raise", impl: str = "auto"
) -> Any:
    """``s2fp8_decode(*s2fp8_encode(x, fmt))`` in one pass: ``x`` as an S2FP8 tensor holds it.

    Arguments as :func:`s2fp8_encode`; the result has ``x``'s backend, dtype, shape and device.
    """
    f = _check_fmt(fmt)
    _check_choice("impl", impl, IMPLS)
    alpha, beta = _stats(_host(x), f.emax, _check_choice("nonfinite", nonfinite, NONFINITE))
    thr, dec = _tables(f, alpha, beta)
    return _apply(x, thr, dec, impl)


__all__ = ["IMPLS", "NONFINITE", "s2fp8_decode", "s2fp8_encode", "s2fp8_params", "s2fp8_round"]
