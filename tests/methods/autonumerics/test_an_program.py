"""Program representation and both evaluators, held to exact Fraction arithmetic."""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np
import pytest

import lowbit as lb
from lowbit.methods.autonumerics import (
    Program,
    Vertex,
    affine_form,
    evaluate,
    evaluate_in_format,
    format_inputs,
    horner,
    jacobian,
    random_program,
    round_constants,
    ulp,
)
from oracle import all_bfloat16, all_float16, oracle_for


@cache
def _oracle(fmt: str):
    return oracle_for(lb.get_format(fmt))


def _small_program() -> Program:
    """v1 = fma(c0, x, c1); v2 = sub(v1, x); v3 = mul(v2, v2); v4 = scale(v3); out = v4 + c2."""
    return Program(
        (
            Vertex("x"),
            Vertex("const", (), 0.3359375),  # 1: c0
            Vertex("const", (), 0.66015625),  # 2: c1
            Vertex("fma", (1, 0, 2)),  # 3
            Vertex("sub", (3, 0)),  # 4
            Vertex("mul", (4, 4)),  # 5
            Vertex("scale", (5,), -1.375),  # 6
            Vertex("const", (), 1.0078125),  # 7: c2
            Vertex("add", (6, 7)),  # 8
        )
    )


def _exact_ops(x: Fraction, rnd) -> Fraction:
    """The small program with exact operations, each result passed through ``rnd``."""
    c0, c1, c2 = Fraction(0.3359375), Fraction(0.66015625), Fraction(1.0078125)
    v1 = rnd(c0 * x + c1)
    v2 = rnd(v1 - x)
    v3 = rnd(v2 * v2)
    v4 = rnd(Fraction(-1.375) * v3)
    return rnd(v4 + c2)


def test_float64_evaluation_matches_fractions_rounded_per_operation() -> None:
    # real mode: every op is one float64 rounding; fma is a*b then + c (two roundings)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-2, 2, 300)
    got = evaluate(_small_program(), xs)
    for x, g in zip(xs, got, strict=True):
        c0, c1, c2 = 0.3359375, 0.66015625, 1.0078125

        def r(v: Fraction) -> Fraction:
            return Fraction(float(v))  # float(Fraction) is correctly rounded (RNE)

        p = r(Fraction(c0) * Fraction(x))
        v1 = r(p + Fraction(c1))
        v2 = r(v1 - Fraction(x))
        v3 = r(v2 * v2)
        v4 = r(Fraction(-1.375) * v3)
        want = float(r(v4 + Fraction(c2)))
        assert g == want, (x, g, want)


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["rne", "rtz", "ru", "rd"])
def test_in_format_evaluation_matches_exact_oracle(fmt: str, mode: str) -> None:
    orc = _oracle(fmt)
    rng = np.random.default_rng(1)
    xs = np.asarray(lb.round(rng.uniform(-1.5, 1.5, 120), fmt))
    got = evaluate_in_format(_small_program(), xs, fmt, mode)
    for x, g in zip(xs, got, strict=True):
        want = _exact_ops(Fraction(float(x)), lambda v: Fraction(orc.round(v, mode)))
        assert g == float(want), (x, g, float(want))


def test_in_format_rounds_constants_to_nearest_even_once() -> None:
    # 1 + 2^-9 is a tie between 1 and 1 + 2^-7... in bf16 (7 mantissa bits): it rounds to 1
    p = Program((Vertex("x"), Vertex("const", (), 1 + 2.0**-9), Vertex("mul", (0, 1))))
    assert round_constants(p, "bf16").constants().tolist() == [1.0]
    x = np.array([0.5, 0.75, 1.0])
    assert evaluate_in_format(p, x, "bf16").tolist() == [0.5, 0.75, 1.0]


def test_stochastic_in_format_evaluation_is_reproducible_and_uses_fresh_draws() -> None:
    p = horner([1.0, 0.6931, 0.2402])
    x = format_inputs("bf16", (0.0, 1.0))
    a = evaluate_in_format(p, x, "bf16", "sr", seed=3)
    b = evaluate_in_format(p, x, "bf16", "sr", seed=3)
    c = evaluate_in_format(p, x, "bf16", "sr", seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # one fma: each SR result is the round-down or the round-up of the same exact value
    p1 = horner([1.0, 0.6931])
    s = evaluate_in_format(p1, x, "bf16", "sr", seed=5)
    lo = evaluate_in_format(p1, x, "bf16", "rd")
    hi = evaluate_in_format(p1, x, "bf16", "ru")
    assert np.all((s == lo) | (s == hi)) and np.any(s != lo) and np.any(s != hi)


def test_horner_is_the_polynomial() -> None:
    c = [1.5, -0.25, 0.125, 2.0]
    p = horner(c)
    assert p.ops == 3 and p.op_counts() == {"fma": 3}
    x = np.linspace(-1, 1, 9)  # dyadic: every step exact
    assert np.array_equal(evaluate(p, x), ((2.0 * x + 0.125) * x - 0.25) * x + 1.5)
    assert horner([0.7]).ops == 0 and evaluate(horner([0.7]), x).tolist() == [0.7] * 9


def test_affine_form_and_jacobian_agree_with_evaluation() -> None:
    rng = np.random.default_rng(2)
    x = np.linspace(-1, 1, 33)
    seen_affine = seen_other = 0
    for _ in range(150):
        p = random_program(rng, ("add", "sub", "mul", "fma", "scale"), int(rng.integers(1, 6)))
        val, jac = jacobian(p, x)
        np.testing.assert_allclose(val, evaluate(p, x), rtol=1e-12, atol=1e-12)
        c = p.constants()
        # central differences: exact for affine directions, O(h^2) otherwise
        for j in range(c.size):
            h = 1e-6 * max(1.0, abs(c[j]))
            up, dn = c.copy(), c.copy()
            up[j] += h
            dn[j] -= h
            fd = (evaluate(p.with_constants(up), x) - evaluate(p.with_constants(dn), x)) / (2 * h)
            np.testing.assert_allclose(jac[:, j], fd, rtol=1e-5, atol=1e-5 * (1 + abs(fd).max()))
        if p.is_affine():
            seen_affine += 1
            h0, g = affine_form(p, x)
            np.testing.assert_allclose(h0 + g @ c, evaluate(p, x), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(g, jac, rtol=1e-12, atol=1e-12)
        else:
            seen_other += 1
            with pytest.raises(ValueError, match="not affine"):
                affine_form(p, x)
    assert seen_affine > 10 and seen_other > 10


def test_is_affine_by_hand() -> None:
    x, c = Vertex("x"), Vertex("const", (), 0.5)
    assert horner([1, 2, 3]).is_affine()
    # (c x + c)^2 is quadratic in c
    sq = Program((x, c, Vertex("fma", (1, 0, 1)), Vertex("mul", (2, 2))))
    assert not sq.is_affine()
    # k * x is affine in k; k * (c + x) is not (k c)
    assert Program((x, Vertex("scale", (0,), 2.0))).is_affine()
    assert not Program((x, c, Vertex("add", (0, 1)), Vertex("scale", (2,), 2.0))).is_affine()
    # x * x + c: affine
    assert Program((x, c, Vertex("fma", (0, 0, 1)))).is_affine()


def test_program_validation_and_json_roundtrip() -> None:
    with pytest.raises(ValueError, match="starts with the input"):
        Program((Vertex("const", (), 1.0),))
    with pytest.raises(ValueError, match="accepted"):
        Program((Vertex("x"), Vertex("div", (0, 0))))
    with pytest.raises(ValueError, match="takes 3 operands"):
        Program((Vertex("x"), Vertex("fma", (0, 0))))
    with pytest.raises(ValueError, match="not an earlier vertex"):
        Program((Vertex("x"), Vertex("add", (0, 1))))
    p = _small_program()
    q = Program.from_json(p.to_json())
    assert q == p and q.key() == p.key() and q.ops == 5
    assert str(p).endswith("return v5") and "c0 = 0.3359375" in str(p)
    with pytest.raises(ValueError, match="constants given"):
        p.with_constants([1.0])


def test_pruned_drops_unused_vertices_and_keeps_the_function() -> None:
    p = Program(
        (
            Vertex("x"),
            Vertex("const", (), 3.0),
            Vertex("mul", (0, 0)),
            Vertex("const", (), 2.0),
            Vertex("add", (0, 3)),
        )
    )
    assert p.ops == 1 and len(p.pruned().vertices) == 3
    x = np.linspace(0, 1, 5)
    assert np.array_equal(evaluate(p, x), evaluate(p.pruned(), x))


@pytest.mark.parametrize("fmt,codes", [("bf16", all_bfloat16), ("fp16", all_float16)])
def test_format_inputs_are_every_code_in_the_interval(fmt: str, codes) -> None:
    with np.errstate(invalid="ignore"):
        allv = codes()
        allv = allv[np.isfinite(allv)]
    for a, b in [(0.0, 1.0), (1.0, 2.0), (-4.0, 4.0), (0.3, 0.7)]:
        want = np.unique(allv[(allv >= a) & (allv <= b)])  # +0 and -0 collapse to one zero
        got = format_inputs(fmt, (a, b))
        assert np.array_equal(got, want), (fmt, a, b)
    assert format_inputs("bf16", (0.0, 1.0)).size == 127 * 128 + 1


def test_format_inputs_e4m3_and_limits() -> None:
    v = format_inputs("e4m3", (0.0, 448.0))
    assert v[-1] == 448.0 and v.size == 127  # 126 finite positive codes + zero
    with pytest.raises(ValueError, match="more than"):
        format_inputs("fp32", (0.0, 1.0))


def test_ulp_is_the_spacing_of_the_format() -> None:
    with np.errstate(invalid="ignore"):
        v = np.unique(all_bfloat16())
    v = v[np.isfinite(v) & (v >= 0)]
    u = ulp(v[:-1], "bf16")
    assert np.array_equal(u, np.diff(v))  # next value up minus the value, subnormals included
    assert ulp(np.array([1.0, 1.5, 2.0, 0.0]), "fp16").tolist() == [
        2.0**-10,
        2.0**-10,
        2.0**-9,
        2.0**-24,
    ]
