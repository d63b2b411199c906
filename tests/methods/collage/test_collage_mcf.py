"""Multi-component floats in bf16: the torch ops against the exact-rational reference, and the
error-free properties (Fractions as the oracle)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from lowbit.methods.collage import (
    fast2sum,
    grow,
    mcf_value,
    mult_mc,
    split_scalar,
    two_prod_error,
)
from lowbit.methods.collage.reference import (
    bf16_round,
    fast2sum_ref,
    grow_ref,
    is_bf16,
    mult_mc_ref,
)

BF16 = torch.bfloat16


def F(x: torch.Tensor) -> list[Fraction]:
    """Exact values of a tensor's elements."""
    return [Fraction(float(v)) for v in x.double().flatten()]


def ulp(x: Fraction) -> Fraction:
    """Spacing of bf16 numbers at |x| (normal range)."""
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    return Fraction(2) ** (max(e, -126) - 7)


def rand_bf16(n: int, seed: int, lo_exp: int = -8, hi_exp: int = 8) -> torch.Tensor:
    """Random signed bf16 values with exponents spread over [lo_exp, hi_exp)."""
    g = torch.Generator().manual_seed(seed)
    mant = 1 + torch.rand(n, generator=g, dtype=torch.float64)
    exp = torch.randint(lo_exp, hi_exp, (n,), generator=g).double()
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    return (sign * mant * 2.0**exp).to(BF16)


def mcf_inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(m, r, v): m in a wide range, |r| <= ulp(m)/2 (a renormalised residual), |v| <= |m|."""
    g = torch.Generator().manual_seed(seed + 1)
    m = rand_bf16(n, seed)
    r = m.double() * (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 2.0**-8
    v = m.double() * (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1)
    v = v * 2.0 ** -torch.randint(0, 14, (n,), generator=g).double()
    return m, r.to(BF16), v.to(BF16)


# ---- the reference's rounding, exhaustively --------------------------------------------
def test_bf16_round_reference_on_every_7th_code():
    """Every 7th positive finite bf16 code (7 is prime to the 128 mantissas of a binade, so
    every mantissa and every binade is hit) and the subnormal/normal boundary: the value is
    fixed; the midpoint to the next code goes to the even neighbour; a hair above/below the
    midpoint goes up/down."""
    bits = np.arange(0x0001, 0x7F80, dtype=np.uint32)  # positive finite, subnormals included
    vals = (bits << 16).view(np.float32).astype(np.float64)
    nxt = ((bits + 1) << 16).view(np.float32).astype(np.float64)
    step = 7
    idx = np.unique(np.r_[np.arange(0, len(bits), step), [0, 126, 127, 128, len(bits) - 2]])
    for i in idx:
        x, y = Fraction(vals[i]), Fraction(nxt[i])
        assert bf16_round(x) == x and bf16_round(-x) == -x
        mid = (x + y) / 2
        even = x if bits[i] % 2 == 0 else y
        assert bf16_round(mid) == even
        tiny = (y - x) / 2**20
        assert bf16_round(mid - tiny) == x and bf16_round(mid + tiny) == y
    with pytest.raises(OverflowError):
        bf16_round(Fraction(2) ** 128)


# ---- torch ops vs the reference, bit for bit ---------------------------------------------
def test_fast2sum_matches_reference_bit_for_bit():
    a, _, b = mcf_inputs(1500, seed=1)
    s, e = fast2sum(a, b)
    for ai, bi, si, ei in zip(F(a), F(b), F(s), F(e), strict=True):
        assert (si, ei) == fast2sum_ref(ai, bi)


def test_grow_matches_reference_bit_for_bit():
    m, r, v = mcf_inputs(1500, seed=2)
    m2, r2 = grow(m, r, v)
    for args, out in zip(
        zip(F(m), F(r), F(v), strict=True), zip(F(m2), F(r2), strict=True), strict=True
    ):
        assert out == grow_ref(*args)


@pytest.mark.parametrize("beta", [0.999, 0.9, 0.95, 0.9999])
def test_mult_mc_matches_reference_bit_for_bit(beta):
    m, r, _ = mcf_inputs(1000, seed=3)
    a_m, a_r = split_scalar(beta)
    m2, r2 = mult_mc(m, r, a_m, a_r)
    fa_m, fa_r = Fraction(a_m), Fraction(a_r)
    for mi, ri, mo, ro in zip(F(m), F(r), F(m2), F(r2), strict=True):
        assert (mo, ro) == mult_mc_ref(mi, ri, fa_m, fa_r)


# ---- error-free properties (Fractions) ----------------------------------------------------
def test_fast2sum_error_is_exact_when_a_dominates():
    a, _, b = mcf_inputs(3000, seed=4)
    assert bool((a.abs() >= b.abs()).all())
    s, e = fast2sum(a, b)
    for ai, bi, si, ei in zip(F(a), F(b), F(s), F(e), strict=True):
        assert si + ei == ai + bi
        assert si == bf16_round(ai + bi)


def test_fast2sum_needs_its_precondition():
    """With |a| < |b| (exponent of a below b's) the error term can be wrong: 2^-20 + (1 + 2^-7)
    rounds to 1 + 2^-7, and e comes out 0 instead of 2^-20. Grow applies it weight-first."""
    a = torch.tensor([2.0**-20], dtype=BF16)
    b = torch.tensor([1 + 2.0**-7], dtype=BF16)
    s, e = fast2sum(a, b)
    assert float(s) == 1 + 2.0**-7 and float(e) == 0.0
    s, e = fast2sum(b, a)
    assert Fraction(float(s)) + Fraction(float(e)) == Fraction(1 + 2.0**-7) + Fraction(2) ** -20


def test_two_prod_error_is_exact_and_equals_the_fma_form():
    a = rand_bf16(3000, seed=5, lo_exp=-30, hi_exp=30)
    b = rand_bf16(3000, seed=6, lo_exp=-30, hi_exp=30)
    p, e = two_prod_error(a, b)
    for ai, bi, pi, ei in zip(F(a), F(b), F(p), F(e), strict=True):
        assert pi == bf16_round(ai * bi)
        assert ei == bf16_round(ai * bi - pi)  # fma(a, b, -p): exact product, one rounding
        assert pi + ei == ai * bi  # ... and that rounding was exact


def test_grow_error_is_only_the_residual_rounding():
    """Fast2Sum's error term v - (s - m) is exact, the renormalisation is exact, so
    m' + r' == s + bf16(r + delta) exactly, and |r'| <= ulp(m')/2."""
    m, r, v = mcf_inputs(2000, seed=7)
    s, delta = fast2sum(m, v)
    m2, r2 = grow(m, r, v)
    for mi, ri, vi, si, di, mo, ro in zip(
        F(m), F(r), F(v), F(s), F(delta), F(m2), F(r2), strict=True
    ):
        assert si + di == mi + vi
        assert mo + ro == si + bf16_round(ri + di)
        if mo != 0:
            assert abs(ro) <= ulp(mo) / 2


# ---- the note's checks ----------------------------------------------------------------------
def test_split_beta2():
    hi, lo = split_scalar(0.999)
    assert float(torch.tensor(0.999, dtype=BF16)) == 1.0 == hi
    assert is_bf16(Fraction(lo)) and lo == float(bf16_round(Fraction(0.999) - 1))
    assert abs(Fraction(hi) + Fraction(lo) - Fraction(0.999)) <= abs(Fraction(lo)) / 2**9


def test_mult_mc_decays_v_where_plain_bf16_keeps_it():
    """1000 steps of v *= 0.999 with g = 0: plain bf16 keeps v0 (bf16(0.999) == 1 and
    v*0.999 rounds back to v); MultMC reaches 0.999^1000·v0 ≈ 0.368·v0.

    Tolerance: each MultMC step (a_m = 1, so p = m and e = 0) rounds m*a_r and the residual
    sum, each at most 2^-9 relative to a quantity below (|a_r| + 2^-8)·|m|, and the
    renormalisation is exact: at most 2^-9·(2|a_r| + 2^-8) relative to |m| per step (times
    1 + 2^-7 for |m| vs |m + r|), compounded over 1000 steps, beside the exact
    (1 + a_r)^1000."""
    v0 = rand_bf16(64, seed=8, lo_exp=-20, hi_exp=4).abs()
    hi, lo = split_scalar(0.999)
    m, r = v0.clone(), torch.zeros_like(v0)
    plain = v0.clone()
    for _ in range(1000):
        m, r = mult_mc(m, r, hi, lo)
        plain = plain * 0.999
    assert torch.equal(plain, v0)
    per_step = 2.0**-9 * (2 * abs(lo) + 2.0**-8) * (1 + 2.0**-7)
    exact = float((1 + Fraction(lo)) ** 1000)
    tol = ((1 + per_step) ** 1000 - 1) * exact
    got = mcf_value(m, r) / v0.double()
    assert float((got - exact).abs().max()) <= tol
    # the note's target 0.999^1000 = 0.3677; the bf16 split of beta2 alone moves it by 0.06 %
    assert float((got - 0.999**1000).abs().max()) <= abs(exact - 0.999**1000) + tol


def test_grow_keeps_ten_thousand_tiny_updates():
    """theta = 1 plus u = 1e-4 ten thousand times: plain bf16 stays 1.0 (every update lost),
    the MCF reaches 1 + 10^4·bf16(1e-4) = 2.0014 up to the residual roundings, whose sum the
    reference run bounds; normalised EDQ summed over the run: 1 for Grow, 0 for bf16."""
    u = torch.tensor([1e-4], dtype=BF16)
    fu = Fraction(float(u))
    m, r = torch.ones(1, dtype=BF16), torch.zeros(1, dtype=BF16)
    plain = torch.ones(1, dtype=BF16)
    fm, fr, bound = Fraction(1), Fraction(0), Fraction(0)
    lost = 0
    for _ in range(10_000):
        m, r = grow(m, r, u)
        new_plain = plain + u
        lost += int(torch.equal(new_plain, plain))
        plain = new_plain
        _, d = fast2sum_ref(fm, fu)
        bound += ulp(fr + d) / 2 if fr + d != 0 else 0  # rounding of the residual sum
        fm, fr = grow_ref(fm, fr, fu)
    assert (Fraction(float(m)), Fraction(float(r))) == (fm, fr)  # torch == reference
    assert float(plain) == 1.0 and lost == 10_000  # imprecision 100 %
    target = 1 + 10_000 * fu
    assert abs(fm + fr - target) <= bound
    assert abs(float(fm + fr) - 2.0) <= 0.03  # the note's "~2.0 (a few %)"
    edq_norm_mcf = (fm + fr - 1) / (10_000 * fu)  # sum <e,u> / sum ||u||^2
    edq_norm_bf16 = (Fraction(float(plain)) - 1) / (10_000 * fu)
    assert abs(edq_norm_mcf - 1) <= bound / (10_000 * fu) and edq_norm_bf16 == 0


def test_bad_inputs():
    x = torch.ones(3, dtype=BF16)
    with pytest.raises(TypeError, match="bfloat16"):
        grow(x.float(), x, x)
    with pytest.raises(ValueError, match="not a bf16 value"):
        mult_mc(x, x, 0.999, 0.0)
    with pytest.raises(TypeError, match="a_r"):
        mult_mc(x, x, 1.0, "0.1")
    with pytest.raises(TypeError):
        split_scalar("0.999")
