"""Integer GEMM into a P-bit accumulator: what a fixed-point MAC array computes, overflow included.

``int_matmul(a, b, acc_bits=P)`` multiplies integer matrices exactly and adds the products of
each output, in k order, into a ``P``-bit accumulator, as a dot-product unit does. The point is
to *see* accumulator overflow: an unchunked INT16 GEMM into 32 bits (DFP-16), or a quantized
network whose weights were not trained for a narrow accumulator (A2Q).

Semantics (one output ``c[..., i, j]``; the reference below is the definition):

* ``acc = 0``; for ``k = 0 .. K-1``: ``r = acc + a[i, k] · b[k, j]`` (exact; products are
  never rounded). If ``r`` is outside the accumulator range — ``[-2**(P-1), 2**(P-1) - 1]``
  for a signed (two's-complement) accumulator, ``[0, 2**P - 1]`` for an unsigned one — the
  step *overflows*: ``overflow="wrap"`` keeps ``r mod 2**P`` in range (what hardware does),
  ``"saturate"`` clamps ``r`` to the nearer end, ``"raise"`` raises :class:`OverflowError`
  naming the first overflowing output (row-major order), its step and the exact value.
* ``overflow_count`` counts the overflowing steps over all outputs: a step overflows when
  *its* result ``r`` (the accumulator as it is, plus the product) leaves the range, as an
  overflow flag would see it. In wrap mode the final value is the exact dot product modulo
  ``2**P`` whatever the count; a dot product can wrap out and back in (two counted steps)
  and still be right.
* ``max_abs`` is the largest ``|s_k|`` over every output and every exact partial sum
  ``s_k = Σ_{k' <= k} a[i, k'] · b[k', j]`` (independent of the mode): the accumulator width
  ``P`` avoids every overflow of this product iff ``max_abs`` fits (signed:
  ``max_abs <= 2**(P-1) - 1``, or ``2**(P-1)`` for a negative extreme).

Shapes follow ``np.matmul``: ``(..., M, K) @ (..., K, N)`` with broadcast batch dimensions; a
1-D operand is promoted as numpy does and the added axis removed from the result.

Implementations (``impl=``): ``"reference"`` runs the k loop on numpy object arrays of Python
ints (exact for any integer input); ``"kernel"`` the numba kernel of
:mod:`lowbit.kernels.intgemm_numba`, which needs ``K · max|a| · max|b| <= 2**63 - 1`` (every
product and partial sum fits in int64); ``"auto"`` takes the kernel when that holds and the
reference otherwise. Both give identical results (tested).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

OVERFLOW_MODES = ("wrap", "saturate", "raise")
IMPLS = ("auto", "kernel", "reference")
_I64_MAX = (1 << 63) - 1


class IntMatmulResult(NamedTuple):
    """Result of :func:`int_matmul`.

    Attributes:
        values: the accumulator contents, int64 (numpy array, or a torch tensor when an
            operand was a torch tensor), shape of ``np.matmul(a, b)``.
        overflow_count: overflowing accumulation steps over all outputs.
        max_abs: largest magnitude of any exact partial sum of any output.
    """

    values: Any
    overflow_count: int
    max_abs: int


class IntMatmulDetail(NamedTuple):
    """Per-output result of :func:`int_matmul_detail` (all int64, shape of the product).

    Attributes:
        values: the accumulator contents.
        overflow_counts: overflowing steps of each output.
        max_abs: largest |exact partial sum| of each output.
    """

    values: Any
    overflow_counts: Any
    max_abs: Any


def acc_range(acc_bits: int, signed_acc: bool = True) -> tuple[int, int]:
    """``(lo, hi)`` of a ``acc_bits``-bit accumulator (two's complement when signed)."""
    if signed_acc:
        return -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    return 0, (1 << acc_bits) - 1


def _check_args(acc_bits: Any, overflow: Any, signed_acc: Any, impl: Any) -> None:
    if isinstance(acc_bits, bool) or not isinstance(acc_bits, (int, np.integer)):
        raise TypeError(f"acc_bits must be an int, got {acc_bits!r}")
    top = 64 if signed_acc else 63
    if not 2 <= int(acc_bits) <= top:
        kind = "signed" if signed_acc else "unsigned (values are returned as int64)"
        raise ValueError(f"acc_bits={acc_bits}; accepted for a {kind} accumulator: 2..{top}")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow={overflow!r}; accepted: {', '.join(map(repr, OVERFLOW_MODES))}")
    if not isinstance(signed_acc, (bool, np.bool_)):
        raise TypeError(f"signed_acc must be a bool, got {signed_acc!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}; accepted: {', '.join(map(repr, IMPLS))}")


def _as_int_array(x: Any, name: str) -> tuple[np.ndarray, Any]:
    """``x`` as a numpy integer array; second item: the torch device when ``x`` was a tensor."""
    device = None
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor or array, got {type(x).__name__}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(
                f"{name}: int_matmul takes integer tensors (torch.int8/16/32/64, "
                f"torch.uint8), got {x.dtype}"
            )
        device = x.device
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuO":
        raise TypeError(
            f"{name}: int_matmul takes integer arrays (int8..int64, uint8..uint64 "
            f"or Python ints), got dtype {arr.dtype}"
        )
    if arr.dtype.kind == "O":
        for v in arr.flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name}: object arrays must hold ints, found {v!r}")
    if arr.ndim == 0:
        raise ValueError(
            f"{name}: int_matmul needs at least 1-D operands (as np.matmul), got a scalar"
        )
    return arr, device


def _prepare(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], Any]:
    """Broadcast to (Bt, M, K) and (Bt, K, N); returns them, the result shape, the device."""
    a, dev_a = _as_int_array(a, "a")
    b, dev_b = _as_int_array(b, "b")
    device = dev_a if dev_a is not None else dev_b
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(
            f"int_matmul: shapes {a.shape} and {b.shape} do not align (K = "
            f"{a2.shape[-1]} vs {b2.shape[-2]})"
        )
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    a3 = np.broadcast_to(a2, (*batch, m, k)).reshape(-1, m, k)
    b3 = np.broadcast_to(b2, (*batch, k, n)).reshape(-1, k, n)
    shape = (*batch, m, n)
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return a3, b3, shape, device


def _absmax(x: np.ndarray) -> int:
    if x.size == 0:
        return 0
    if x.dtype.kind == "O":
        return max(abs(int(v)) for v in x.flat)
    return max(abs(int(x.min())), abs(int(x.max())))


def _reference(
    a3: np.ndarray, b3: np.ndarray, lo: int, hi: int, acc_bits: int, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int] | None]:
    """The definition, on object arrays of Python ints; sequential over k, vectorized over
    outputs. Returns values, counts, max_abs (object arrays) and, for mode "raise", the first
    overflow ``(flat output index, k, exact value)`` (None if none)."""
    nb, m, kk = a3.shape
    n = b3.shape[2]
    a_o = a3.astype(object)
    b_o = b3.astype(object)
    acc = np.zeros((nb, m, n), dtype=object)
    acc[...] = 0
    exact = acc.copy()
    counts = acc.copy()
    maxabs = acc.copy()
    first_k = np.full((nb, m, n), -1, dtype=np.int64)
    first_v = acc.copy()
    span = 1 << acc_bits
    for k in range(kk):
        p = a_o[:, :, k][:, :, None] * b_o[:, k, :][:, None, :]
        exact = exact + p
        maxabs = np.maximum(maxabs, np.abs(exact))
        r = acc + p
        over = (r < lo) | (r > hi)
        counts = counts + over.astype(np.int64).astype(object)
        new = over & (first_k < 0)
        first_k[new] = k
        first_v[new] = r[new]
        if mode == "saturate":
            r = np.where(r > hi, hi, np.where(r < lo, lo, r))
        else:  # wrap (and raise: the values before the first overflow are what matters)
            r = np.where(over, (r - lo) % span + lo, r)
        acc = r
    first = None
    hits = np.flatnonzero(first_k.reshape(-1) >= 0)
    if hits.size:
        f = int(hits[0])
        first = (f, int(first_k.reshape(-1)[f]), int(first_v.reshape(-1)[f]))
    return acc, counts, maxabs, first


def _run(
    a: Any, b: Any, acc_bits: int, overflow: str, signed_acc: bool, impl: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...], Any]:
    _check_args(acc_bits, overflow, signed_acc, impl)
    acc_bits = int(acc_bits)
    signed_acc = bool(signed_acc)
    a3, b3, shape, device = _prepare(a, b)
    lo, hi = acc_range(acc_bits, signed_acc)
    kk = a3.shape[2]
    fits = (
        _absmax(a3) <= _I64_MAX
        and _absmax(b3) <= _I64_MAX
        and kk * _absmax(a3) * _absmax(b3) <= _I64_MAX
    )
    if impl == "kernel" and not fits:
        raise ValueError(
            "impl='kernel' needs K·max|a|·max|b| <= 2**63 - 1 (every partial sum "
            f"in int64); here K={kk}, max|a|={_absmax(a3)}, max|b|={_absmax(b3)}. "
            "Use impl='reference' or 'auto'"
        )
    first: tuple[int, int, int] | None = None
    if impl == "reference" or not fits:
        vals_o, counts_o, maxabs_o, first = _reference(a3, b3, lo, hi, acc_bits, overflow)
        values = vals_o.astype(np.int64)
        counts = counts_o.astype(np.int64)
        maxabs = maxabs_o  # may exceed int64: kept as Python ints
    else:
        from lowbit.kernels import intgemm_numba as nk

        nb, m, _ = a3.shape
        n = b3.shape[2]
        values = np.empty((nb, m, n), dtype=np.int64)
        counts = np.empty((nb, m, n), dtype=np.int64)
        maxabs = np.empty((nb, m, n), dtype=np.int64)
        mode = nk.SATURATE if overflow == "saturate" else nk.WRAP
        nk.intgemm_kernel(
            np.ascontiguousarray(a3, dtype=np.int64),
            np.ascontiguousarray(b3, dtype=np.int64),
            lo,
            hi,
            acc_bits,
            signed_acc,
            mode,
            values,
            counts,
            maxabs,
        )
        if overflow == "raise" and counts.any():
            f = int(np.flatnonzero(counts.reshape(-1))[0])
            bi, rem = divmod(f, values.shape[1] * values.shape[2])
            i, j = divmod(rem, values.shape[2])
            _, _, _, first = _reference(
                a3[bi : bi + 1, i : i + 1], b3[bi : bi + 1, :, j : j + 1], lo, hi, acc_bits, "raise"
            )
            assert first is not None
            first = (f, first[1], first[2])
    if overflow == "raise" and first is not None:
        f, k, v = first
        idx = np.unravel_index(f, shape) if shape else ()
        raise OverflowError(
            f"int_matmul: output {tuple(int(t) for t in idx)} overflows the "
            f"{acc_bits}-bit {'signed' if signed_acc else 'unsigned'} "
            f"accumulator at step k={k}: exact value {v} is outside "
            f"[{lo}, {hi}]"
        )
    return values, counts, maxabs, shape, device


def _out(x: np.ndarray, shape: tuple[int, ...], device: Any) -> Any:
    x = np.asarray(x, dtype=np.int64).reshape(shape)
    if device is None:
        return x
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def int_matmul(
    a: Any,
    b: Any,
    *,
    acc_bits: int,
    overflow: str = "wrap",
    signed_acc: bool = True,
    impl: str = "auto",
) -> IntMatmulResult:
    """Integer ``a @ b`` accumulated in k order into a ``acc_bits``-bit accumulator.

    Args:
        a: integer array or torch integer tensor, ``(..., M, K)`` (or 1-D).
        b: integer array or tensor, ``(..., K, N)`` (or 1-D); batch dims broadcast.
        acc_bits: accumulator width P (signed: 2..64; unsigned: 2..63).
        overflow: ``"wrap"`` (two's-complement wraparound each step), ``"saturate"`` (clamp
            each step) or ``"raise"`` (:class:`OverflowError` at the first overflow).
        signed_acc: two's-complement accumulator (True) or unsigned ``[0, 2**P - 1]``.
        impl: ``"auto"``, ``"kernel"`` (numba) or ``"reference"`` (Python ints).

    Returns:
        :class:`IntMatmulResult` ``(values, overflow_count, max_abs)``; ``values`` is a torch
        int64 tensor on the operand's device when an operand was a tensor, else numpy int64.

    Raises:
        OverflowError: ``overflow="raise"`` and some step overflows.
        TypeError: non-integer operands. ValueError: bad shapes or arguments.
    """
    values, counts, maxabs, shape, device = _run(a, b, acc_bits, overflow, signed_acc, impl)
    mx = (
        0 if maxabs.size == 0 else int(max(maxabs.flat) if maxabs.dtype == object else maxabs.max())
    )
    return IntMatmulResult(_out(values, shape, device), int(counts.sum()), mx)


def int_matmul_detail(
    a: Any,
    b: Any,
    *,
    acc_bits: int,
    overflow: str = "wrap",
    signed_acc: bool = True,
    impl: str = "auto",
) -> IntMatmulDetail:
    """:func:`int_matmul` with per-output overflow counts and maxima (for overflow *rates*).

    Same arguments; ``max_abs`` per output must fit in int64 (true whenever the kernel runs).
    """
    values, counts, maxabs, shape, device = _run(a, b, acc_bits, overflow, signed_acc, impl)
    if maxabs.dtype == object and maxabs.size and max(maxabs.flat) > _I64_MAX:
        raise ValueError(
            "int_matmul_detail: a partial sum exceeds int64; use int_matmul for its scalar max_abs"
        )
    return IntMatmulDetail(
        _out(values, shape, device), _out(counts, shape, device), _out(maxabs, shape, device)
    )


__all__ = [
    "IMPLS",
    "OVERFLOW_MODES",
    "IntMatmulDetail",
    "IntMatmulResult",
    "acc_range",
    "int_matmul",
    "int_matmul_detail",
]
