"""Multi-component floats (MCF) in bf16: Fast2Sum, Grow and MultMC (Collage, Yu et al. 2024).

An MCF is a pair ``(m, r)`` of bf16 tensors that stands for the value ``m + r``: ``m`` is the
"main" component (what the model reads), ``r`` a residual of at most half an ulp of ``m``
that keeps the low-order bits ``m`` cannot hold. Two bf16 numbers carry 16 significant bits,
so small updates that bf16 alone rounds away accumulate in ``r`` until they move ``m``.

Every operation here is a single torch op on bf16 tensors (``two_prod_error`` adds an fp32
step that is exact, in place of an fma). Torch evaluates a bf16 elementwise
op in fp32 and rounds the result to bf16 once; for ``+ - * / sqrt`` of bf16 operands that
double rounding (exact → fp32 → bf16) equals the correctly rounded bf16 result, because fp32's
24 bits are at least 2·8 + 2 (Figueroa, "When is double rounding innocuous?", 1995). So each
line below is one correctly rounded bf16 operation, as on hardware with native bf16 units.

The operations follow the authors' code (amazon-science/collage, ``monitor_metrics.py``) and
``shared/notes/papers.md`` §6:

* ``fast2sum(a, b)``: ``s = a + b``, ``e = b - (s - a)``; ``s + e == a + b`` exactly when
  ``a == 0`` or ``exponent(a) >= exponent(b)`` (Dekker 1971), e.g. when ``|a| >= |b|``.
* ``grow(m, r, v)``: add ``v`` into the MCF: the Fast2Sum error of ``m + v`` goes into ``r``,
  then ``(s, r)`` is renormalised by a second Fast2Sum.
* ``mult_mc(m, r, a_m, a_r)``: multiply by a two-term scalar ``a_m + a_r`` (``beta2 = 0.999``
  is 1.0 in bf16, so ``a_m = 1`` and ``a_r = bf16(0.999 - 1)`` carries the whole decay).
"""

from __future__ import annotations

from typing import Any

import torch

BF16 = torch.bfloat16


def _check_bf16(**tensors: Any) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.dtype != BF16:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a torch.bfloat16 tensor, got {got}")


def _scalar_bf16(name: str, a: Any, like: torch.Tensor) -> torch.Tensor:
    """A bf16 0-d tensor holding ``a``, which must already be a bf16 value."""
    if isinstance(a, torch.Tensor):
        if a.dtype != BF16 or a.numel() != 1:
            raise TypeError(
                f"{name} must be a bf16 scalar tensor or a float, got a "
                f"{a.dtype} tensor of shape {tuple(a.shape)}"
            )
        return a.reshape(()).to(like.device)
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"{name} must be a float or a bf16 scalar tensor, got {a!r}")
    t = torch.tensor(float(a), dtype=BF16, device=like.device)
    if float(t) != float(a):
        raise ValueError(
            f"{name}={a!r} is not a bf16 value (bf16 rounds it to {float(t)!r}); "
            "split it with split_scalar first"
        )
    return t


def fast2sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, e)`` with ``s = bf16(a + b)`` and ``e = b - (s - a)`` (three bf16 ops).

    ``s + e == a + b`` exactly when, elementwise, ``a == 0`` or ``exponent(a) >=
    exponent(b)`` (in particular when ``|a| >= |b|``), barring overflow; otherwise ``e`` is
    only an approximation of the error. Collage applies it with ``a`` a weight and ``b`` a
    small update, where the condition holds.
    """
    _check_bf16(a=a, b=b)
    s = a + b
    e = b - (s - a)
    return s, e


def grow(m: torch.Tensor, r: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Add ``v`` to the MCF ``(m, r)``; returns the new ``(m, r)`` (inputs unchanged).

    ::

        s  = m + v
        r  = r + (v - (s - m))      # the Fast2Sum error of m + v, added to the residual
        m' = s + r                  # renormalise (Fast2Sum of s and r)
        r' = r - (m' - s)

    When ``|m| >= |v|`` the error term ``v - (s - m)`` is exact, and when ``|s| >= |r|`` the
    renormalisation is exact (``m' + r' == s + r``), so the only rounding left is that of the
    residual sum ``r + (v - (s - m))``: a relative error of at most 2⁻⁹ of a quantity of about
    half an ulp of ``m``. A pure bf16 ``m + v`` instead drops all of ``v`` when ``|v|`` is
    below half an ulp of ``m``.
    """
    _check_bf16(m=m, r=r, v=v)
    s = m + v
    r = r + (v - (s - m))
    m2 = s + r
    r2 = r - (m2 - s)
    return m2, r2


def two_prod_error(a: torch.Tensor, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p, e)`` with ``p = bf16(a * b)`` and ``e = fma(a, b, -p)`` rounded to bf16.

    Torch has no bf16 fused multiply-add, so ``e`` is computed as ``bf16(fp32(a) * fp32(b) -
    fp32(p))``; that equals the fma form bit for bit:

    1. ``a * b`` of two bf16 values (8-bit significands) has at most 16 significant bits, so
       the fp32 product (24 bits) is exact, barring underflow below fp32's subnormals;
    2. ``p`` is that exact product rounded to 8 bits, so ``a*b - p`` is a multiple of the
       product's last bit and smaller than half an ulp of ``p``: it fits in 16 bits and the
       fp32 subtraction is exact too;
    3. hence the fp32 result is the exact ``a*b - p``, and rounding it to bf16 once is what
       ``fma(a, b, -p)`` (exact product and sum, one rounding) returns. In fact the error of a
       rounded product is itself a bf16 number (the classic TwoProduct property), so this
       last rounding changes nothing and ``p + e == a * b`` exactly.
    """
    _check_bf16(a=a)
    bt = b if isinstance(b, torch.Tensor) else _scalar_bf16("b", b, a)
    _check_bf16(b=bt)
    p = a * bt
    e = (a.float() * bt.float() - p.float()).to(BF16)
    return p, e


def mult_mc(
    m: torch.Tensor, r: torch.Tensor, a_m: Any, a_r: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiply the MCF ``(m, r)`` by the two-term scalar ``a_m + a_r``; returns new ``(m, r)``.

    ::

        p  = m * a_m
        e  = fma(m, a_m, -p)               # exact error of p (see two_prod_error)
        r  = r * a_m + m * a_r + e         # evaluated left to right, each op in bf16
        m' = p + r
        r' = r - (m' - p)

    ``a_m`` and ``a_r`` are bf16 values (floats that bf16 represents exactly, or bf16 scalar
    tensors); :func:`split_scalar` makes them from a float such as ``beta2``. The one term
    of the exact product left out, ``r * a_r``, is below 2⁻⁹·|a_r·m|.
    """
    _check_bf16(m=m, r=r)
    am = _scalar_bf16("a_m", a_m, m)
    ar = _scalar_bf16("a_r", a_r, m)
    p, e = two_prod_error(m, am)
    r = r * am + m * ar + e
    m2 = p + r
    r2 = r - (m2 - p)
    return m2, r2


def split_scalar(x: float) -> tuple[float, float]:
    """``(hi, lo)``: ``hi = bf16(x)``, ``lo = bf16(x - hi)`` (``x - hi`` computed in fp64).

    ``split_scalar(0.999) == (1.0, -0.00099945068359375)``: bf16 cannot tell 0.999 from 1,
    and the second term keeps the decay to about 2⁻⁹ relative (``hi + lo`` is within
    ``|lo|·2⁻⁹`` of ``x``).
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"x must be a float, got {x!r}")
    hi = float(torch.tensor(float(x), dtype=BF16))
    lo = float(torch.tensor(float(x) - hi, dtype=BF16))
    return hi, lo


def mcf_value(m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``m + r`` in float64 (exact while the exponents of ``m`` and ``r`` are < 45 apart,
    which a renormalised pair with ``|r| <= ulp(m) / 2`` and nonzero ``r`` satisfies unless
    ``r`` is tiny, when the rounding is far below anything the optimizer uses)."""
    _check_bf16(m=m, r=r)
    return m.double() + r.double()


__all__ = ["fast2sum", "grow", "mcf_value", "mult_mc", "split_scalar", "two_prod_error"]
