"""DFP GEMM: INT16 x INT16 products into INT32 chunk accumulators that provably never wrap.

``matmul(a, b)`` computes ``C = A · B`` for DFP tensors ``A = I_a · 2**E_a`` (M x K) and
``B = I_b · 2**E_b`` (K x N) the way an INT16 FMA unit with INT32 accumulators does (Das et al.
2018, Knights Mill ``VP4DPWSSD``), without ever letting an accumulator overflow:

1. **Head-room.** ``I_a`` and ``I_b`` are right-shifted by ``r_a`` and ``r_b`` bits with
   round-to-nearest-even (``I' = round(I / 2**r)``, exponent ``E + r``), chosen by
   :func:`plan_chunks` (``headroom="auto"``: the fewest total bits such that the proven chunk
   bound below reaches ``min(K, min_chunk)``; an int: that many bits in total; a pair: the two
   shifts). ``headroom=0`` keeps the full 16-bit operands.
2. **Chunked INT32 accumulation.** The reduction dimension is cut into consecutive chunks of
   ``c`` products (the last one may be shorter); each chunk is summed in its own
   ``acc_bits``-bit accumulator starting at 0, exactly as the integer unit would.
3. **Combination in fp32.** Each chunk sum ``s`` is converted to fp32 and scaled,
   ``v = fl32(fl32(s) · 2**(E_a' + E_b'))``, and the chunks are added in k order in fp32:
   ``C = v_0``, then ``C = fl32(C + v_i)``. Results are float32 (zeros are +0).

**The chunk bound.** With ``P = max|I_a'| · max|I_b'|`` (the actual maxima after the shifts)
and ``L = 2**(acc_bits-1) - 1``, define ``K_max = floor(L / P)`` (``floor(L)`` when ``P = 0``).

*Claim.* If ``c <= K_max``, no accumulator ever leaves ``[-L, L]``, whatever the operand values
and whatever order the products of a chunk are added in; hence a two's-complement
``acc_bits``-bit accumulator (range ``[-L-1, L]``) never wraps.
*Proof.* Any partial sum of a chunk is a sum of ``j <= c`` products, and
``|Σ a_ik b_kj| <= Σ |a_ik| |b_kj| <= j · max|I_a'| · max|I_b'| = j · P <= c · P <= K_max · P
<= L``, the last step by the definition of the floor. ∎
*Tightness.* For all-max operands (``I_a' = I_b' = m`` everywhere, so ``P = m**2``) the sum of
``K_max + 1`` products is ``(K_max + 1) · P > L``: a longer chunk overflows on some input with
these maxima, so ``K_max`` is the largest chunk that is safe for every such input. For
symmetric INT16 (``max|I| = 2**15 - 1``) and INT32, ``K_max = 2``; with ``I = -2**15``
allowed (``P = 2**30``) ``K_max = 1``: an unchunked INT32 dot product of all-max INT16 inputs
overflows at K = 3 (at K = 2 with ``-2**15``). One-bit shifts of both operands give
``K_max >= 7``, two-bit shifts ``K_max >= 31``.

``chunk="auto"`` uses ``c = min(K, K_max)``; an int uses that many products per chunk (which
may exceed ``K_max``: the overflows are then simulated and counted); ``None`` accumulates the
whole reduction in one accumulator (unchunked), which overflows on adversarial inputs. Every
overflowing step wraps (two's complement, what hardware does); since wrapping is arithmetic
modulo ``2**acc_bits`` the accumulator's final value is the exact chunk sum reduced into the
range, which is what gets converted to fp32.

**Overflow counter** (``stats.overflow_count``): the number of accumulation steps
``acc <- acc + a_ik · b_kj`` whose exact result leaves the accumulator's range (the definition
of :func:`lowbit.arith.intgemm.int_matmul`, products added in k order). When the plan is safe
(``c · P <= L``) the proof above shows it is 0 and it is reported without simulation
(``stats.checked == "bound"``); otherwise every step is simulated in int64 and counted
(``"simulated"``).

**Exact and fast.** Integer chunk sums are computed with float64 GEMMs (BLAS): every product
and partial sum is an integer of magnitude at most ``c · P <= L < 2**53`` (for
``acc_bits <= 54``), so float64 holds it exactly in any summation order. The fp32 scaling is
applied once at the end when ``2**e`` keeps every partial result normal and finite (then
power-of-two scaling commutes with rounding, so the result is the same bit for bit), else per
chunk. :func:`matmul_reference` is the plain definition on Python ints; the fast path equals
it bit for bit (tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from lowbit.arith.dfp.tensor import (
    DFPTensor,
    as_dfp,
    is_torch,
    max_abs_int,
    quantize,
    shifted_max,
)

MAX_EXACT = 1 << 53
_GROUP_BYTES = 32 << 20  # chunk sums held at once by the fast path


def acc_limit(acc_bits: int) -> int:
    """``L = 2**(acc_bits-1) - 1``: the symmetric bound of a signed accumulator."""
    return (1 << (acc_bits - 1)) - 1


def k_max(max_abs_a: int, max_abs_b: int, acc_bits: int = 32) -> int:
    """Largest chunk length that provably cannot overflow: ``floor(L / (max|I_a|·max|I_b|))``
    (module docstring: proof and tightness)."""
    return acc_limit(acc_bits) // max(1, int(max_abs_a) * int(max_abs_b))


@dataclass(frozen=True)
class ChunkPlan:
    """Head-room shifts and chunk length of one DFP GEMM (see :func:`plan_chunks`).

    Attributes:
        k: reduction length K.
        acc_bits: accumulator width.
        shift_a: right shift of ``I_a`` (bits).
        shift_b: right shift of ``I_b``.
        max_abs_a: ``max|I_a|`` after the shift.
        max_abs_b: ``max|I_b|`` after the shift.
        chunk: products per accumulator (0 when K = 0).
        k_max: the proven safe chunk length for these maxima.
    """

    k: int
    acc_bits: int
    shift_a: int
    shift_b: int
    max_abs_a: int
    max_abs_b: int
    chunk: int
    k_max: int

    @property
    def n_chunks(self) -> int:
        return -(-self.k // self.chunk) if self.chunk else 0

    @property
    def max_product(self) -> int:
        return self.max_abs_a * self.max_abs_b

    @property
    def bound(self) -> int:
        """Worst-case magnitude of any partial sum: ``chunk · max|I_a'| · max|I_b'|``."""
        return self.chunk * self.max_product

    @property
    def safe(self) -> bool:
        """Whether the bound proves that no accumulator can overflow."""
        return self.bound <= acc_limit(self.acc_bits)


def _check_int(name: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name}={v}; accepted: {lo}..{hi if hi is not None else ''}")
    return v


def _best_split(max_a: int, max_b: int, h: int, acc_bits: int) -> tuple[int, int, int]:
    """Among ``r_a + r_b = h``: the largest K_max, then the most even split, then larger r_a."""
    best: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    for ra in range(h + 1):
        rb = h - ra
        km = k_max(shifted_max(max_a, ra), shifted_max(max_b, rb), acc_bits)
        key = (km, -abs(ra - rb), ra)
        if best is None or key > best[0]:
            best = (key, (ra, rb, km))
    assert best is not None
    return best[1]


def plan_chunks(
    max_abs_a: int,
    max_abs_b: int,
    k: int,
    *,
    acc_bits: int = 32,
    chunk: int | str | None = "auto",
    headroom: int | str | tuple[int, int] = "auto",
    min_chunk: int = 16,
) -> ChunkPlan:
    """Choose the head-room shifts and the chunk length (module docstring).

    Args:
        max_abs_a: ``max|I_a|`` (before shifts).
        max_abs_b: ``max|I_b|``.
        k: reduction length.
        acc_bits: accumulator width (2..63).
        chunk: ``"auto"`` (``min(K, K_max)``), an int >= 1, or None (one accumulator).
        headroom: ``"auto"`` (fewest total shift bits with ``K_max >= min(K, min_chunk, L)``;
            among the splits of that total the one with the largest ``K_max``, then the most
            even, then the larger ``r_a``), an int (that total, split the same way) or a pair
            ``(r_a, r_b)`` in which one entry may be ``"auto"`` (the fewest bits on that
            operand reaching the same target, the other shift fixed; the layers use it to
            reuse one shifted operand in two GEMMs).
        min_chunk: the chunk length ``headroom="auto"`` guarantees (>= 1).

    Raises:
        ValueError: ``chunk="auto"`` while a single product cannot fit the accumulator
            (``K_max = 0``; use more head-room), or bad arguments.
    """
    max_a = _check_int("max_abs_a", max_abs_a, 0)
    max_b = _check_int("max_abs_b", max_abs_b, 0)
    k = _check_int("k", k, 0)
    acc_bits = _check_int("acc_bits", acc_bits, 2, 63)
    min_chunk = _check_int("min_chunk", min_chunk, 1)
    if isinstance(headroom, str):
        if headroom != "auto":
            raise ValueError(
                f"headroom={headroom!r}; accepted: 'auto', an int >= 0 or a pair (shift_a, shift_b)"
            )
        target = max(1, min(k, min_chunk, acc_limit(acc_bits)))
        h = 0
        while True:
            ra, rb, km = _best_split(max_a, max_b, h, acc_bits)
            if km >= target:
                break
            h += 1
    elif isinstance(headroom, (tuple, list)):
        if len(headroom) != 2:
            raise ValueError(f"headroom={headroom!r}: a pair (shift_a, shift_b) has 2 items")
        autos = [h == "auto" for h in headroom]
        fixed = [
            0 if au else _check_int(f"headroom[{i}]", h, 0, 62)
            for i, (h, au) in enumerate(zip(headroom, autos, strict=True))
        ]
        if all(autos):
            return plan_chunks(
                max_a,
                max_b,
                k,
                acc_bits=acc_bits,
                chunk=chunk,
                headroom="auto",
                min_chunk=min_chunk,
            )
        ra, rb = fixed
        km = k_max(shifted_max(max_a, ra), shifted_max(max_b, rb), acc_bits)
        if any(autos):  # the fewest bits on the free operand reaching the target
            target = max(1, min(k, min_chunk, acc_limit(acc_bits)))
            while km < target and max(ra, rb) < 62:
                if autos[0]:
                    ra += 1
                else:
                    rb += 1
                km = k_max(shifted_max(max_a, ra), shifted_max(max_b, rb), acc_bits)
    else:
        h = _check_int("headroom", headroom, 0, 124)
        ra, rb, km = _best_split(max_a, max_b, h, acc_bits)
    ma, mb = shifted_max(max_a, ra), shifted_max(max_b, rb)
    if chunk is None:
        c = k
    elif isinstance(chunk, str):
        if chunk != "auto":
            raise ValueError(f"chunk={chunk!r}; accepted: 'auto', an int >= 1 or None")
        if km == 0 and k > 0:
            raise ValueError(
                f"one product can reach {ma * mb} > 2**{acc_bits - 1} - 1: no "
                f"chunk fits the {acc_bits}-bit accumulator; use headroom='auto' "
                "(or more head-room bits, or a wider accumulator)"
            )
        c = min(k, km)
    else:
        c = min(k, _check_int("chunk", chunk, 1))
    return ChunkPlan(
        k=k,
        acc_bits=acc_bits,
        shift_a=ra,
        shift_b=rb,
        max_abs_a=ma,
        max_abs_b=mb,
        chunk=c,
        k_max=km,
    )


@dataclass(frozen=True)
class DFPGemmStats:
    """What one DFP GEMM did (all exact integers).

    Attributes:
        m, n, k: the shapes (A is m x k, B is k x n).
        acc_bits: accumulator width.
        shift_a, shift_b: head-room right shifts of the operands.
        max_abs_a, max_abs_b: ``max|I|`` of the operands after the shifts.
        exp: exponent of the integer products, ``E_a + E_b`` after the shifts.
        chunk: products per accumulator; n_chunks: accumulators per output.
        k_max: the proven safe chunk length.
        bound: ``chunk · max_abs_a · max_abs_b``, the largest magnitude any partial sum can
            reach; at most ``2**(acc_bits-1) - 1`` when the plan is safe.
        max_abs_chunk_sum: the largest exact chunk sum magnitude that occurred.
        overflow_count: accumulation steps that overflowed (wrapped).
        checked: ``"bound"`` (0 overflows proven by the bound) or ``"simulated"``.
    """

    m: int
    n: int
    k: int
    acc_bits: int
    shift_a: int
    shift_b: int
    max_abs_a: int
    max_abs_b: int
    exp: int
    chunk: int
    n_chunks: int
    k_max: int
    bound: int
    max_abs_chunk_sum: int
    overflow_count: int
    checked: str

    @property
    def safe(self) -> bool:
        return self.bound <= acc_limit(self.acc_bits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- operands ---------------------------------------------------------------------------------
def _operand(x: Any, name: str, bits: int, mode: str, seed: int | None) -> DFPTensor:
    if isinstance(x, DFPTensor):
        t = as_dfp(x, name)
    else:
        t = quantize(x, bits, mode, seed, name=name)
    if len(t.ints.shape) != 2:
        raise ValueError(f"{name} must be 2-D (M x K or K x N), got shape {tuple(t.ints.shape)}")
    return t


def _operands(
    a: Any, b: Any, bits: int, mode: str, seed: int | None
) -> tuple[DFPTensor, DFPTensor]:
    ta = _operand(a, "a", bits, mode, seed)
    tb = _operand(b, "b", bits, mode, None if seed is None else seed + 1)
    if is_torch(ta.ints) != is_torch(tb.ints):
        raise TypeError("a and b must both be numpy or both torch")
    if is_torch(ta.ints) and ta.ints.device != tb.ints.device:
        raise ValueError(f"a is on {ta.ints.device}, b on {tb.ints.device}")
    if ta.ints.shape[1] != tb.ints.shape[0]:
        raise ValueError(
            f"shapes {tuple(ta.ints.shape)} and {tuple(tb.ints.shape)} do not align (K differs)"
        )
    return ta, tb


def _scale_at_end(e: int, acc_bits: int, n_chunks: int) -> bool:
    """Whether scaling the fp32 sum of unscaled chunk values by ``2**e`` once is bit-identical
    to scaling every chunk: every nonzero partial is an integer of magnitude in
    ``[1, n_chunks · 2**acc_bits)``, so with ``e >= -126`` and ``e + acc_bits +
    bitlen(n_chunks) <= 127`` each scaled partial is normal and finite, where
    ``fl32(2**e · x) = 2**e · fl32(x)``."""
    return e >= -126 and e + acc_bits + max(1, n_chunks).bit_length() <= 127


# ---- reference --------------------------------------------------------------------------------
def matmul_reference(
    a: DFPTensor,
    b: DFPTensor,
    acc_bits: int = 32,
    chunk: int | str | None = "auto",
    headroom: int | str | tuple[int, int] = "auto",
    *,
    min_chunk: int = 16,
) -> tuple[np.ndarray, DFPGemmStats]:
    """The definition on Python ints, one output and one step at a time (small shapes only).

    Same arguments as :func:`matmul` (DFP operands only); returns a numpy float32 result.
    """
    a, b = _operands(a, b, 16, "rne", None)
    ia = np.asarray(_cpu(a.ints)).tolist()
    ib = np.asarray(_cpu(b.ints)).tolist()
    m, k = a.ints.shape
    n = b.ints.shape[1]
    plan = plan_chunks(
        max_abs_int(a.ints),
        max_abs_int(b.ints),
        k,
        acc_bits=acc_bits,
        chunk=chunk,
        headroom=headroom,
        min_chunk=min_chunk,
    )
    # head-room shifts: Python's round() of a Fraction is round-half-even
    sa = [[round(Fraction(int(v), 1 << plan.shift_a)) for v in row] for row in ia]
    sb = [[round(Fraction(int(v), 1 << plan.shift_b)) for v in row] for row in ib]
    e = a.exp + b.exp + plan.shift_a + plan.shift_b
    lo, hi = -(1 << (plan.acc_bits - 1)), acc_limit(plan.acc_bits)
    span = 1 << plan.acc_bits
    out = np.zeros((m, n), dtype=np.float32)
    count = 0
    max_sum = 0
    for i in range(m):
        for j in range(n):
            c_ij: np.float32 | None = None
            for start in range(0, k, max(plan.chunk, 1)):
                acc = exact = 0
                for kk in range(start, min(start + plan.chunk, k)):
                    p = sa[i][kk] * sb[kk][j]
                    exact += p
                    r = acc + p
                    if r < lo or r > hi:
                        count += 1
                        r = (r - lo) % span + lo
                    acc = r
                max_sum = max(max_sum, abs(exact))
                v = np.float32(float(Fraction(_fl32_int(acc)) * Fraction(2) ** e))
                c_ij = v if c_ij is None else np.float32(c_ij + v)
            out[i, j] = np.float32(0.0) if c_ij is None else np.float32(c_ij + np.float32(0.0))
    return out, _stats(m, n, plan, e, max_sum, count, "simulated")


def _fl32_int(v: int) -> float:
    """``v`` rounded to 24 significant bits, ties to even (fp32's significand), as a float.

    The scaled value ``fl32(v) · 2**e`` is then rounded to fp32 by ``np.float32`` of an
    exact Fraction -> float conversion (exact: at most 24 bits), i.e. one correct rounding.
    """
    shift = max(0, abs(v).bit_length() - 24)
    return float(round(Fraction(v, 1 << shift)) << shift) if shift else float(v)


def _stats(
    m: int, n: int, plan: ChunkPlan, e: int, max_sum: int, count: int, checked: str
) -> DFPGemmStats:
    return DFPGemmStats(
        m=m,
        n=n,
        k=plan.k,
        acc_bits=plan.acc_bits,
        shift_a=plan.shift_a,
        shift_b=plan.shift_b,
        max_abs_a=plan.max_abs_a,
        max_abs_b=plan.max_abs_b,
        exp=e,
        chunk=plan.chunk,
        n_chunks=plan.n_chunks,
        k_max=plan.k_max,
        bound=plan.bound,
        max_abs_chunk_sum=int(max_sum),
        overflow_count=int(count),
        checked=checked,
    )


def _cpu(x: Any) -> Any:
    return x.detach().cpu().numpy() if is_torch(x) else x


# ---- fast path --------------------------------------------------------------------------------
def shift_values(q: Any, r: int) -> Any:
    """``round_half_even(q / 2**r)`` as float64, for integer-valued ``q`` (ints or floats of
    magnitude below ``2**53``): the head-room shift of :func:`shift_right`, computed exactly
    in float64 (scaling by ``2**-r`` is exact, ``rint``/``torch.round`` round half to even)."""
    if is_torch(q):
        import torch

        x = q.to(torch.float64)
        return x.mul(math.ldexp(1.0, -r)).round_() if r else x
    x = np.asarray(q, dtype=np.float64)
    if r:
        x = x * math.ldexp(1.0, -r)
        np.rint(x, out=x)
    return x


class _Combiner:
    """fp32 combination of chunk values in k order (scaled per chunk or once at the end).

    CPU arrays go through one fused numba pass per block of chunks
    (:mod:`lowbit.arith.dfp._numba`); tensors on other devices use torch operations with the
    same roundings.
    """

    def __init__(self, torch_backend: bool, e: int, at_end: bool) -> None:
        self.tb, self.e, self.at_end = torch_backend, e, at_end
        self.acc: Any = None
        self.max_sum = 0.0
        e1 = e // 2
        self.f1, self.f2 = math.ldexp(1.0, e1), math.ldexp(1.0, e - e1)

    def add(self, s64: Any, stacked: bool = False) -> None:
        """Add chunk sums in order: ``s64`` holds one chunk's sums, or (``stacked``) those of
        ``s64.shape[0]`` consecutive chunks (float64 holding exact integers)."""
        block_shape = tuple(s64.shape[1:]) if stacked else tuple(s64.shape)
        g = s64.shape[0] if stacked else 1
        if self.tb and s64.device.type != "cpu":
            self._add_torch(s64, stacked)
            return
        if self.tb:
            import torch

            if self.acc is None:
                self.acc = torch.empty(block_shape, dtype=torch.float32)
            s_np = s64.detach().contiguous().numpy().reshape(g, -1)
            acc_np = self.acc.numpy().reshape(-1)
        else:
            if self.acc is None:
                self.acc = np.empty(block_shape, dtype=np.float32)
            s_np = np.ascontiguousarray(s64).reshape(g, -1)
            acc_np = self.acc.reshape(-1)
        from lowbit.arith.dfp._numba import combine_chunks

        started = getattr(self, "_started", False)
        mx = combine_chunks(s_np, acc_np, started, not self.at_end, self.f1, self.f2)
        self._started = True
        self.max_sum = max(self.max_sum, mx)

    def _add_torch(self, s64: Any, stacked: bool) -> None:
        import torch

        self.max_sum = max(self.max_sum, float(s64.abs().max()) if s64.numel() else 0.0)
        v = s64.to(torch.float32)  # one correct rounding of each exact integer
        if not self.at_end:
            v = ((v.to(torch.float64) * self.f1) * self.f2).to(torch.float32)
        parts = [v[i] for i in range(v.shape[0])] if stacked else [v]
        for part in parts:
            if self.acc is None:
                self.acc = part.clone()
            else:
                self.acc.add_(part)

    def result(self) -> Any:
        acc = self.acc
        if self.at_end:
            acc = acc * math.ldexp(1.0, self.e)  # exact in fp32 (see _scale_at_end)
        return acc + 0.0  # -0 -> +0, as the integer reference gives


def chunked_gemm(
    a: Any,
    b: Any,
    chunk: int,
    exp: int,
    acc_bits: int,
    *,
    shift_a: int = 0,
    shift_b: int = 0,
    b_transposed: bool = False,
) -> tuple[Any, int]:
    """The fast path of :func:`matmul` after planning: chunk sums by float64 GEMMs, fp32
    combination in k order.

    Args:
        a: ``M x K`` integers of A (an integer or float array/tensor holding them exactly).
        b: ``K x N`` integers of B (``N x K`` with ``b_transposed``: saves a copy when B is
            stored transposed), or a batch ``(batch, K, N)`` of them (the result is then
            ``(batch, M, N)``: one GEMM per batch item with the shared A).
        chunk: products per accumulator (>= 1).
        exp: exponent of the products (head-room shifts included).
        acc_bits: accumulator width (only decides where the fp32 scaling happens).
        shift_a, shift_b: head-room right shifts (RNE, :func:`shift_values`) applied to each
            chunk's slice of the operands as it is converted to float64 (so a float32
            ``unfold`` of the unshifted integers serves GEMMs with different shifts).

    The caller guarantees ``chunk · max|a'| · max|b'| <= 2**53`` for the shifted operands
    (then every chunk sum, and every BLAS partial sum of it, is an exact float64 integer) and
    that the plan is safe (no accumulator can wrap). Returns ``(C as float32, max |chunk sum|)``.
    """
    tb = is_torch(a)
    m, k = a.shape
    n = b.shape[-2] if b_transposed else b.shape[-1]
    c = int(chunk)
    nc = -(-k // c)
    comb = _Combiner(tb, exp, _scale_at_end(exp, acc_bits, nc))

    def cols_a(s: int, e: int) -> Any:
        return shift_values(a[:, s:e], shift_a)

    def rows_b(s: int, e: int) -> Any:  # B's rows s..e-1 as (..., e-s, N), float64
        if not b_transposed:
            return shift_values(b[..., s:e, :], shift_b)
        part = shift_values(b[..., s:e], shift_b)
        return part.transpose(-1, -2) if tb else part.swapaxes(-1, -2)

    nfull = k // c
    done = 0
    if b.ndim == 2 and nfull > 1 and m * n < 65536:
        # many chunks with small outputs: g at a time with one batched GEMM
        g_max = max(1, _GROUP_BYTES // (8 * m * n))
        for i0 in range(0, nfull, g_max):
            i1 = min(nfull, i0 + g_max)
            g = i1 - i0
            ag = cols_a(i0 * c, i1 * c).reshape(m, g, c)
            ag = ag.permute(1, 0, 2) if tb else ag.transpose(1, 0, 2)
            if b_transposed:
                bg = shift_values(b[:, i0 * c : i1 * c], shift_b).reshape(n, g, c)
                bg = bg.permute(1, 2, 0) if tb else bg.transpose(1, 2, 0)
            else:
                bg = shift_values(b[i0 * c : i1 * c], shift_b).reshape(g, c, n)
            comb.add(ag @ bg, stacked=True)
        done = nfull
    for i in range(done, nc):
        lo, hi = i * c, min(k, (i + 1) * c)
        comb.add(cols_a(lo, hi) @ rows_b(lo, hi))
    return comb.result(), int(comb.max_sum)


def _simulate(ia: Any, ib: Any, plan: ChunkPlan, e: int) -> tuple[np.ndarray, int, int]:
    """Step-by-step int64 simulation of the wrapping accumulators (unsafe plans)."""
    a = np.asarray(_cpu(ia)).astype(np.int64)  # exact: integers below 2**53
    b = np.asarray(_cpu(ib)).astype(np.int64)
    m, n = a.shape[0], b.shape[1]
    c, nc = plan.chunk, plan.n_chunks
    if c * plan.max_product > (1 << 62):
        raise ValueError(
            f"chunk sums up to {c * plan.max_product} exceed int64; use a shorter "
            "chunk or narrower operands"
        )
    kp = nc * c
    ap = np.zeros((m, kp), dtype=np.int64)
    ap[:, : a.shape[1]] = a
    bp = np.zeros((kp, n), dtype=np.int64)
    bp[: b.shape[0]] = b
    lo, hi = -(1 << (plan.acc_bits - 1)), acc_limit(plan.acc_bits)
    span = np.int64(1) << np.int64(plan.acc_bits) if plan.acc_bits < 63 else None
    acc = np.zeros((nc, m, n), dtype=np.int64)
    exact = np.zeros((nc, m, n), dtype=np.int64)
    count = 0
    for j in range(c):
        pa = ap[:, j::c].T  # (nc, m): the j-th product of every chunk
        pb = bp[j::c, :]  # (nc, n)
        p = pa[:, :, None] * pb[:, None, :]
        exact += p
        r = acc + p  # |acc| <= 2**62, |p| <= 2**53: no int64 overflow
        over = (r < lo) | (r > hi)
        count += int(np.count_nonzero(over))
        if span is None:  # acc_bits = 63: wrap by hand (r - lo fits uint64)
            wrapped = (
                (r.astype(np.uint64) - np.uint64(lo & 0xFFFFFFFFFFFFFFFF)) % np.uint64(1 << 63)
            ).astype(np.int64) + lo
        else:
            wrapped = (r - lo) % span + lo
        acc = np.where(over, wrapped, r)
    max_sum = int(np.abs(exact).max()) if exact.size else 0
    if plan.acc_bits <= 54:
        vals = acc.astype(np.float64)  # exact, then one rounding to fp32 below
    else:
        vals = acc  # int64 -> float32 directly: one correct rounding
    comb = _Combiner(False, e, _scale_at_end(e, plan.acc_bits, nc))
    if nc:
        comb.add(
            vals if vals.dtype == np.float64 else vals.astype(np.float32).astype(np.float64),
            stacked=True,
        )
    out = comb.result() if nc else np.zeros((m, n), dtype=np.float32)
    return out, count, max_sum


def planned_gemm(
    a64: Any,
    b64: Any,
    plan: ChunkPlan,
    exp: int,
    *,
    b_transposed: bool = False,
    shifted: bool = False,
) -> tuple[Any, DFPGemmStats]:
    """GEMM of DFP integer operands under a :func:`plan_chunks` plan.

    The layers plan from the operands' maxima and call this with the integers (as floats,
    e.g. an ``unfold``); the plan's head-room shifts are applied here, per chunk, unless
    ``shifted`` says the operands already are shifted. Operand layout as :func:`chunked_gemm`;
    ``exp`` is the products' exponent (shifts included). A safe plan runs the fast path; any
    other is simulated step by step (int64, CPU) and its overflows counted.

    Returns:
        ``(C, stats)`` as :func:`matmul`.
    """
    tb = is_torch(a64)
    m = a64.shape[0]
    if plan.k != a64.shape[1]:
        raise ValueError(f"plan.k={plan.k} but A has {a64.shape[1]} columns")
    if plan.max_product > MAX_EXACT:
        raise ValueError(
            f"max|I_a|·max|I_b| = {plan.max_product} > 2**53: operands wider than "
            "about 26 bits; requantize them first"
        )
    out_shape = (*b64.shape[:-2], m, b64.shape[-2] if b_transposed else b64.shape[-1])
    n = int(np.prod(out_shape)) // max(1, m)
    if plan.k == 0:
        if tb:
            import torch

            out = torch.zeros(out_shape, dtype=torch.float32, device=a64.device)
        else:
            out = np.zeros(out_shape, dtype=np.float32)
        return out, _stats(m, n, plan, exp, 0, 0, "bound")
    if plan.safe and plan.bound <= MAX_EXACT:
        sa, sb = (0, 0) if shifted else (plan.shift_a, plan.shift_b)
        out, max_sum = chunked_gemm(
            a64,
            b64,
            plan.chunk,
            exp,
            plan.acc_bits,
            shift_a=sa,
            shift_b=sb,
            b_transposed=b_transposed,
        )
        return out, _stats(m, n, plan, exp, max_sum, 0, "bound")
    if not shifted:
        a64, b64 = shift_values(a64, plan.shift_a), shift_values(b64, plan.shift_b)
    bn = np.asarray(_cpu(b64))
    if b_transposed:
        bn = bn.swapaxes(-1, -2)
    an = np.asarray(_cpu(a64))
    outs, count, max_sum = [], 0, 0
    for bi in bn.reshape(-1, *bn.shape[-2:]):
        o, cnt, mx = _simulate(an, bi, plan, exp)
        outs.append(o)
        count += cnt
        max_sum = max(max_sum, mx)
    out = np.stack(outs).reshape(out_shape)
    if tb:
        import torch

        out = torch.from_numpy(out).to(a64.device)
    return out, _stats(m, n, plan, exp, max_sum, count, "simulated")


def matmul(
    a: Any,
    b: Any,
    acc_bits: int = 32,
    chunk: int | str | None = "auto",
    headroom: int | str | tuple[int, int] = "auto",
    *,
    min_chunk: int = 16,
    bits: int = 16,
    mode: str = "rne",
    seed: int | None = None,
) -> tuple[Any, DFPGemmStats]:
    """``A · B`` with INT16 products, INT32 chunk accumulators and fp32 combination.

    Args:
        a: ``M x K``: a :class:`DFPTensor`, or a float array/tensor (quantized to DFP-``bits``
            with ``mode``).
        b: ``K x N``, likewise (both numpy or both torch, same device).
        acc_bits: accumulator width (2..63; 32 is the paper's INT32).
        chunk: ``"auto"`` (the proven ``min(K, K_max)``), an int (forced chunk length, may
            overflow) or None (unchunked: one accumulator for the whole reduction).
        headroom: operand right shifts: ``"auto"``, an int total or a pair (module docstring).
        min_chunk: chunk length that ``headroom="auto"`` guarantees.
        bits: DFP width for float operands.
        mode: rounding of float operands (``"rne"`` or ``"sr"``); head-room shifts are RNE.
        seed: SR seed of ``a`` (``b`` uses ``seed + 1``).

    Returns:
        ``(C, stats)``: float32 ``C`` (numpy, or torch on the operands' device) and
        :class:`DFPGemmStats`.

    Raises:
        ValueError: shapes, NaN/inf operands, operands too wide (``max|I_a|·max|I_b| >
            2**53``), or ``chunk="auto"`` with no safe chunk.
    """
    ta, tb = _operands(a, b, bits, mode, seed)
    k = ta.ints.shape[1]
    plan = plan_chunks(
        max_abs_int(ta.ints),
        max_abs_int(tb.ints),
        k,
        acc_bits=acc_bits,
        chunk=chunk,
        headroom=headroom,
        min_chunk=min_chunk,
    )
    if plan.max_product > MAX_EXACT:
        raise ValueError(
            f"max|I_a|·max|I_b| = {plan.max_product} > 2**53: operands wider than "
            "about 26 bits; requantize them first"
        )
    e = ta.exp + tb.exp + plan.shift_a + plan.shift_b
    return planned_gemm(ta.ints, tb.ints, plan, e)


__all__ = [
    "ChunkPlan",
    "DFPGemmStats",
    "acc_limit",
    "chunked_gemm",
    "k_max",
    "matmul",
    "matmul_reference",
    "plan_chunks",
    "planned_gemm",
    "shift_values",
]
