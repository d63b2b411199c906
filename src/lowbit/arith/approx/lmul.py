"""L-Mul: multiplication by integer addition (Luo & Sun 2024, arXiv 2410.00907).

For normal floats ``x = ±(1 + xm)·2^xe`` and ``y = ±(1 + ym)·2^ye`` with m mantissa bits, the
exact mantissa product ``1 + xm + ym + xm·ym`` is replaced by ``1 + xm + ym + 2^-l(m)`` with
``l(m) = m`` for m <= 3, ``3`` for m = 4 and ``4`` for m > 4: no m×m-bit multiplier, one
(exponent + mantissa)-wide integer addition instead — the source of the paper's energy claim.

What :func:`lmul` computes, elementwise (``M = man_bits``, 1..23):

1. Both operands are rounded (RNE) to ``FloatFormat(exp_bits=8, man_bits=M)`` — float32's
   exponent range with M mantissa bits (values beyond its largest number become ±inf).
   Subnormal results of that rounding (|v| < 2^-126) are flushed to ±0 ("denormals are zero":
   the integer-add trick has no meaning for them, and hardware L-Mul units would not carry
   them).
2. **carry form** (default, the hardware form of the paper's Fig. 2): the non-sign bit fields
   are added as integers, ``r = X + Y - ((127 << M) - 2^(M - l))``. When
   ``xm + ym + 2^-l >= 1`` the mantissa sum carries into the exponent, giving
   ``(xm + ym + 2^-l)·2^(xe + ye + 1)`` instead of the literal formula (for M >= 4 a second
   carry is possible: ``xm, ym -> 1`` with ``2^-l`` on top) — closer to the exact product
   near ``xm, ym -> 1``.
   **literal form** (``literal=True``): ``(1 + xm + ym + 2^-l)·2^(xe + ye)`` exactly as the
   paper's equation, a value with at most M + 2 significant bits (rounded RNE to float32's 24
   for M = 23).
3. Signs XOR. A zero operand gives ±0. Underflow — a result below 2^-126 (biased exponent
   <= 0) — gives ±0; overflow — a result of 2^128 or more (biased exponent >= 255) — gives
   ±inf. inf and NaN operands behave as in IEEE multiplication: ±inf times a nonzero number
   is ±inf, 0·inf and anything with NaN is NaN (the canonical quiet NaN).

Every result is a float32 number (for M <= 22 also an e8m(M+1) number); it is returned in the
inputs' dtype (float32/float64: exact; float16/bfloat16: rounded RNE by the dtype cast).

:func:`lmul_matmul` sums L-Mul products in float32: ``C[i, j] = c_K`` with ``c_0 = -0`` and
``c_{k+1} = fl32(c_k + lmul(a_ik, b_kj))`` for k = 0..K-1 (starting at −0 makes the first
addition return the first product, signed zeros included) — the order of the numba kernel
(:mod:`lowbit.kernels.lmul_numba`) and of the numpy reference :func:`lmul_matmul_reference`,
held bit-for-bit equal in the tests. Its torch autograd is straight-through: the gradient of
``A' @ B'`` for the rounded operands A', B' (``grad_A = G @ B'^T``, ``grad_B = A'^T @ G`` in
torch, in the gradient's dtype).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.formats import FloatFormat
from lowbit.rounding.api import round as _round
from lowbit.rounding.backend import backend_of as _backend

_INF = 0x7F800000
_MIN_NORMAL = 0x00800000
_MAN = 0x007FFFFF
_ABS = 0x7FFFFFFF
_SIGN = -0x80000000
_QNAN = 0x7FC00000
_TINY = 2.0**-126
IMPLS = ("auto", "kernel", "reference")


def lmul_offset_bits(man_bits: int) -> int:
    """``l(m)``: the offset ``2^-l`` that replaces the dropped term ``xm·ym``."""
    m = _check_bits(man_bits)
    return m if m <= 3 else (3 if m == 4 else 4)


def lmul_constant(man_bits: int, *, fp32_units: bool = False) -> int:
    """The integer subtracted in the carry form: ``(bias << m) - 2^(m - l(m))`` (bias 127).

    ``fp32_units=True`` gives it for the float32 bit layout (shifted by ``23 - m``), e.g.
    ``0x3F780000`` for every m >= 5 — the paper's PTX constant for m = 23.
    """
    m = _check_bits(man_bits)
    c = (127 << m) - (1 << (m - lmul_offset_bits(m)))
    return c << (23 - m) if fp32_units else c


def _check_bits(man_bits: Any) -> int:
    if isinstance(man_bits, bool) or not isinstance(man_bits, (int, np.integer)):
        raise TypeError(f"man_bits must be an int, got {man_bits!r}")
    if not 1 <= man_bits <= 23:
        raise ValueError(f"man_bits={man_bits} is out of range; accepted: 1..23")
    return int(man_bits)


def lmul_format(man_bits: int) -> FloatFormat:
    """The operand format ``FloatFormat(exp_bits=8, man_bits=m)`` (IEEE specials)."""
    return FloatFormat(8, _check_bits(man_bits))


# =============================================================================================
# operand preparation: RNE to e8mM, then subnormals flushed to zero
# =============================================================================================
def prepare_numpy(
    x: np.ndarray, man_bits: int, mode: str = "rne", *, seed: int | None = None, impl: str = "auto"
) -> np.ndarray:
    """Round ``x`` to e8mM in ``mode`` and flush subnormals to ±0; float32 result (exact).

    float32/float16/bfloat16 inputs in RNE take a numba kernel (integer rounding on the
    float32 bits, :func:`lowbit.kernels.lmul_numba.prepare_f32`); the tests hold it equal to
    the ``lowbit.round`` path (``impl="reference"``), which every other case takes.
    """
    f = lmul_format(man_bits)
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
        if impl != "reference" and mode == "rne":
            from lowbit.kernels import lmul_numba as lk

            xc = np.ascontiguousarray(x).reshape(-1)
            r = lk.prepare_f32(xc.view(np.int32), f.man_bits).view(np.float32)
            return r.reshape(x.shape)
    r = _round(x, f, mode, seed=seed, impl="reference" if impl == "reference" else "auto")
    r = np.asarray(r).astype(np.float32)
    with np.errstate(invalid="ignore"):
        tiny = np.abs(r) < _TINY
    if tiny.any():
        r = np.where(tiny, np.copysign(np.float32(0.0), r), r).astype(np.float32)
    return r


def _prepare_torch(x: Any, man_bits: int) -> Any:
    import torch

    r = _round(x.detach().float(), lmul_format(man_bits), "rne")
    return torch.where(r.abs() < _TINY, torch.copysign(torch.zeros_like(r), r), r)


# =============================================================================================
# the product on float32 bit patterns (numpy and torch share the expression)
# =============================================================================================
def _lmul_int(x: Any, y: Any, man_bits: int, literal: bool, where: Any) -> Any:
    """L-Mul of sign-extended float32 bit patterns (int64 arrays); int64 result in int32 range.

    Inputs must be prepared (e8mM values, no subnormals).
    """
    xa = x & _ABS
    ya = y & _ABS
    s = (x ^ y) & _SIGN
    if literal:
        ssum = (xa & _MAN) + (ya & _MAN) + (1 << (23 - lmul_offset_bits(man_bits)))
        base = ((xa >> 23) + (ya >> 23) - 127) << 23
        w = ssum + _MIN_NORMAL
        r = where(ssum < _MIN_NORMAL, base + ssum, base + (w >> 1) + (w & (w >> 1) & 1))
    else:
        r = xa + ya - lmul_constant(man_bits, fp32_units=True)
    r = where(r < _MIN_NORMAL, 0, r)
    r = where(r >= _INF, _INF, r)
    zero = (xa == 0) | (ya == 0)
    r = where(zero, 0, r)
    nonfin = (xa >= _INF) | (ya >= _INF)
    nan = (xa > _INF) | (ya > _INF) | (zero & nonfin)
    r = where(nonfin, _INF, r)
    return where(nan, _QNAN, r | s)


def lmul_prepared_numpy(
    x32: np.ndarray, y32: np.ndarray, man_bits: int, literal: bool = False
) -> np.ndarray:
    """L-Mul of prepared float32 arrays (broadcast); float32 result."""
    xi = np.asarray(x32, dtype=np.float32).view(np.int32).astype(np.int64)
    yi = np.asarray(y32, dtype=np.float32).view(np.int32).astype(np.int64)
    r = _lmul_int(xi, yi, man_bits, literal, np.where)
    return np.asarray(r).astype(np.int32).view(np.float32)


def lmul(x: Any, y: Any, man_bits: int = 3, *, literal: bool = False) -> Any:
    """L-Mul product of ``x`` and ``y``, elementwise with broadcasting (semantics: module doc).

    Example:
        >>> import numpy as np
        >>> from lowbit.arith.approx import lmul
        >>> float(lmul(np.float32(1.0), np.float32(1.0), 3))   # 1 + 2^-3
        1.125
        >>> float(lmul(np.float32(1.75), np.float32(1.75), 3))  # carry: (.75+.75+.125)*2
        3.25

    Args:
        x, y: numpy arrays / Python or numpy floats, or torch tensors (any device; computed
            there); float16, bfloat16, float32 or float64.
        man_bits: mantissa bits M of the operand format e8mM (1..23).
        literal: the paper's formula ``(1 + xm + ym + 2^-l)·2^(xe+ye)`` without the carry.

    Returns:
        The products, of the inputs' backend, broadcast shape and (promoted) dtype.

    Raises:
        TypeError: integer/bool/complex inputs, or a torch tensor mixed with a numpy array.
        ValueError: ``man_bits`` outside 1..23.
    """
    m = _check_bits(man_bits)
    kx = _backend(x)
    ky = _backend(y)
    if "torch" in (kx, ky):
        return _lmul_torch(x, y, m, bool(literal), kx, ky)
    if "jax" in (kx, ky):
        raise TypeError(
            "lmul supports numpy arrays and torch tensors (convert jax arrays with np.asarray)"
        )
    xa = _numpy_operand(x, "x")
    ya = _numpy_operand(y, "y")
    dt = np.result_type(
        x if isinstance(x, float | int) else xa, y if isinstance(y, float | int) else ya
    )
    if isinstance(x, float | int) and isinstance(y, float | int):
        dt = np.dtype(np.float64)
    r = lmul_prepared_numpy(prepare_numpy(xa, m), prepare_numpy(ya, m), m, bool(literal))
    with np.errstate(over="ignore"):
        out = r.astype(dt)
    return out[()] if out.ndim == 0 else out


def _numpy_operand(x: Any, which: str) -> np.ndarray:
    if isinstance(x, bool) or isinstance(x, np.bool_):
        raise TypeError(f"lmul needs floating-point operands; {which} is a bool")
    a = np.asarray(x, dtype=np.float64) if isinstance(x, float | int) else np.asarray(x)
    from lowbit.rounding.backend import NUMPY_FLOAT_DTYPES

    if a.dtype not in NUMPY_FLOAT_DTYPES:
        raise TypeError(
            f"lmul needs floating-point operands (float16, bfloat16, float32, "
            f"float64); {which} has dtype {a.dtype}"
        )
    return a


def _lmul_torch(x: Any, y: Any, m: int, literal: bool, kx: str, ky: str) -> Any:
    import torch

    if kx != "torch" or ky != "torch":
        if kx == "torch" and isinstance(y, float | int) and not isinstance(y, bool):
            y = torch.tensor(float(y), dtype=x.dtype, device=x.device)
        elif ky == "torch" and isinstance(x, float | int) and not isinstance(x, bool):
            x = torch.tensor(float(x), dtype=y.dtype, device=y.device)
        else:
            raise TypeError(
                "lmul: operands from different backends (torch and numpy); "
                "convert one of them first"
            )
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for name, t in (("x", x), ("y", y)):
        if t.dtype not in floats:
            raise TypeError(
                f"lmul needs floating-point operands (float16, bfloat16, float32, "
                f"float64); {name} has dtype {t.dtype}"
            )
    dt = torch.result_type(x, y)
    xi = _prepare_torch(x, m).view(torch.int32).to(torch.int64)
    yi = _prepare_torch(y, m).view(torch.int32).to(torch.int64)
    r = _lmul_int(xi, yi, m, literal, torch.where)
    return r.to(torch.int32).view(torch.float32).to(dt)


# =============================================================================================
# lmul_matmul
# =============================================================================================
def lmul_matmul_reference(
    a32: np.ndarray, b32: np.ndarray, man_bits: int, literal: bool = False
) -> np.ndarray:
    """The plain reference: prepared float32 (..., M, K) @ (..., K, N), a loop over k of
    vectorized L-Mul products added in float32 from −0 (the documented order)."""
    K = a32.shape[-1]
    shape = np.broadcast_shapes((*a32.shape[:-1], 1), (*b32.shape[:-2], 1, b32.shape[-1]))
    c = np.full(shape, -0.0, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(K):
            c = c + lmul_prepared_numpy(
                a32[..., :, k, None], b32[..., None, k, :], man_bits, literal
            )
    return c


def _gemm_numpy(a32: np.ndarray, b32: np.ndarray, m: int, literal: bool, impl: str) -> np.ndarray:
    """Prepared float32 operands (>= 2-D) -> float32 result of shape batch + (M, N)."""
    from lowbit.arith.matmul import _batch_index, _shapes

    batch, M, K, N = _shapes(a32.shape, b32.shape)
    if impl == "reference":
        return np.ascontiguousarray(lmul_matmul_reference(a32, b32, m, literal))
    from lowbit.kernels import lmul_numba as lk

    A3 = np.ascontiguousarray(a32.reshape(math.prod(a32.shape[:-2]), M, K)).view(np.int32)
    B3 = np.ascontiguousarray(b32.reshape(math.prod(b32.shape[:-2]), K, N))
    ia = _batch_index(a32.shape[:-2], batch)
    ib = _batch_index(b32.shape[:-2], batch)
    C = np.empty((ia.size, M, N), dtype=np.float32)
    if C.size:
        if K == 0:
            C.fill(0.0)
        elif literal or not (np.isfinite(A3.view(np.float32)).all() and np.isfinite(B3).all()):
            lk.lmul_gemm(
                A3,
                B3.view(np.int32),
                ia,
                ib,
                C,
                lmul_constant(m, fp32_units=True),
                1 << (23 - lmul_offset_bits(m)),
                literal,
            )
        else:
            bm, bs = lk.split_operand(B3.view(np.int32))
            lk.lmul_gemm_fast(A3, bm, bs, ia, ib, C, lmul_constant(m, fp32_units=True))
    return C.reshape((*batch, M, N))


_TORCH_FN: Any = None


def _torch_host(x: Any) -> np.ndarray:
    """A torch tensor's values as a numpy array on the host (float32 or float64)."""
    import torch

    x = x.detach()
    if x.dtype != torch.float64:
        x = x.float()
    return x.cpu().numpy()


def _torch_function() -> Any:
    global _TORCH_FN
    if _TORCH_FN is not None:
        return _TORCH_FN
    import torch

    from lowbit.arith.matmul import _sum_to_shape  # noqa: F401  (numpy; torch version below)

    def sum_to(g: Any, shape: tuple[int, ...]) -> Any:
        lead = g.dim() - len(shape)
        if lead:
            g = g.sum(dim=tuple(range(lead)))
        dims = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        return g.sum(dim=dims, keepdim=True) if dims else g

    class LMulMatmul(torch.autograd.Function):
        """C = sum_k lmul(a_ik, b_kj) in float32; straight-through backward."""

        @staticmethod
        def forward(ctx: Any, A: Any, B: Any, m: int, literal: bool, impl: str) -> Any:
            an = prepare_numpy(_torch_host(A), m, impl=impl)
            bn = prepare_numpy(_torch_host(B), m, impl=impl)
            C = _gemm_numpy(an, bn, m, literal, impl)
            ctx.save_for_backward(
                torch.from_numpy(an).to(A.device), torch.from_numpy(bn).to(B.device)
            )
            ctx.meta = (A.dtype, B.dtype, tuple(A.shape), tuple(B.shape))
            dt = torch.result_type(A, B)
            return torch.from_numpy(C).to(device=A.device, dtype=dt)

        @staticmethod
        def backward(ctx: Any, G: Any) -> tuple[Any, ...]:
            ar, br = ctx.saved_tensors
            a_dt, b_dt, a_shape, b_shape = ctx.meta
            ga = gb = None
            if ctx.needs_input_grad[0]:
                ga = sum_to(G @ br.to(G.dtype).transpose(-1, -2), a_shape).to(a_dt)
            if ctx.needs_input_grad[1]:
                gb = sum_to(ar.to(G.dtype).transpose(-1, -2) @ G, b_shape).to(b_dt)
            return ga, gb, None, None, None

    _TORCH_FN = LMulMatmul
    return _TORCH_FN


def lmul_matmul(
    a: Any, b: Any, man_bits: int = 3, *, literal: bool = False, impl: str = "auto"
) -> Any:
    """Matrix product whose products are L-Mul products, summed in float32 (module doc).

    Shapes follow ``np.matmul``: (..., M, K) @ (..., K, N) with broadcast batch dimensions; a
    1-D ``a`` is a row and a 1-D ``b`` a column, removed afterwards.

    Example:
        >>> import numpy as np
        >>> from lowbit.arith.approx import lmul_matmul
        >>> float(lmul_matmul(np.ones((1, 4), np.float32), np.ones((4, 1), np.float32), 3)[0, 0])
        4.5

    Args:
        a, b: numpy arrays or torch tensors (float16/bfloat16/float32/float64; torch: any
            device, computed on the host, differentiable with a straight-through backward).
        man_bits: mantissa bits of the operand format e8mM (1..23).
        literal: the paper's formula without the carry (see :func:`lmul`).
        impl: ``"auto"``/``"kernel"`` (numba) or ``"reference"`` (numpy loop over k).

    Returns:
        The float32 sums, in the operands' (promoted) dtype.

    Raises:
        ValueError: shapes that do not align, ``man_bits`` outside 1..23, unknown ``impl``.
        TypeError: non-float operands or mixed backends.
    """
    m = _check_bits(man_bits)
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}; accepted: {', '.join(IMPLS)}")
    from lowbit.arith.matmul import _expand, _shapes, _squeeze

    ka, kb = _backend(a), _backend(b)
    if ka != kb:
        raise TypeError(f"operands from different backends: a is {ka}, b is {kb}")
    if ka == "torch":
        for name, t in (("a", a), ("b", b)):
            if not t.is_floating_point():
                raise TypeError(
                    f"lmul_matmul needs floating-point operands; {name} has dtype {t.dtype}"
                )
        a2, b2, sq = _expand(a, b)
        _shapes(tuple(a2.shape), tuple(b2.shape))
        C = _torch_function().apply(a2, b2, m, bool(literal), impl)
        return _squeeze(C, sq)
    if ka != "numpy":
        raise TypeError("lmul_matmul supports numpy arrays and torch tensors")
    an = _numpy_operand(a, "a")
    bn = _numpy_operand(b, "b")
    a2, b2, sq = _expand(an, bn)
    C = _gemm_numpy(prepare_numpy(a2, m), prepare_numpy(b2, m), m, bool(literal), impl)
    dt = np.result_type(an.dtype, bn.dtype)
    C = _squeeze(C, sq).astype(dt)
    return C[()] if C.ndim == 0 else C


__all__ = [
    "lmul",
    "lmul_constant",
    "lmul_format",
    "lmul_matmul",
    "lmul_matmul_reference",
    "lmul_offset_bits",
    "lmul_prepared_numpy",
    "prepare_numpy",
]
