"""Inner fit and baselines: LP minimax against Remez and closed forms; the note's table."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit as lb
from lowbit.methods.autonumerics import (
    FormatProblem,
    Program,
    Vertex,
    evaluate,
    fit_constants,
    format_inputs,
    horner,
    minimax_coefficients,
    minimax_lp,
    real_baselines,
    reference,
    refine_discrete,
    remez,
    taylor_coefficients,
)
from lowbit.methods.autonumerics.constants import format_steps

# AutoNumerics note (papers.md §4b): LP minimax on 3001 points, max relative error of 2^x on
# [0, 1] per degree; Taylor about 0 for degrees 5 and 8.
NOTE_MINIMAX = {2: 1.7e-3, 3: 7.5e-5, 4: 2.6e-6, 5: 7.5e-8, 6: 1.9e-9, 7: 4.0e-11, 8: 7.7e-13}
NOTE_TAYLOR = {5: 8.5e-5, 8: 5.5e-8}


@pytest.fixture(scope="module")
def exp2_baselines():
    return {(b.kind, b.degree): b for b in real_baselines("exp2", (0.0, 1.0), range(2, 9))}


def test_minimax_degree5_horner_scores_7_5e_8(exp2_baselines) -> None:
    b = exp2_baselines[("minimax", 5)]
    assert b.ops == 5 and b.program.op_counts() == {"fma": 5}
    # independent reference: Remez exchange in mpmath (40 digits) levels the error at E
    _, e_remez = remez("exp2", (0.0, 1.0), 5, grid=1001)
    assert abs(b.error - e_remez) <= 1e-3 * e_remez
    assert 7.4e-8 < b.error < 7.6e-8


@pytest.mark.parametrize("degree", range(2, 9))
def test_baseline_table_matches_the_note(exp2_baselines, degree: int) -> None:
    assert exp2_baselines[("minimax", degree)].error == pytest.approx(
        NOTE_MINIMAX[degree], rel=0.10
    )
    if degree in NOTE_TAYLOR:
        assert exp2_baselines[("taylor", degree)].error == pytest.approx(
            NOTE_TAYLOR[degree], rel=0.10
        )


def test_lp_minimax_agrees_with_remez_at_degree_3() -> None:
    c_rz, e_rz = remez("exp2", (0.0, 1.0), 3, grid=1001)
    x = np.linspace(0, 1, 3001)
    f = reference("exp2", x)
    c_lp, e_lp = minimax_coefficients(x, f, f, 3)
    np.testing.assert_allclose(c_lp, c_rz, rtol=1e-5)
    assert e_lp == pytest.approx(e_rz, rel=1e-4)


def test_minimax_lp_closed_forms() -> None:
    # best constant: midrange, error half the range
    b = np.array([3.0, -1.0, 0.5, 2.0])
    c, e = minimax_lp(np.ones((4, 1)), b)
    assert c[0] == pytest.approx(1.0) and e == pytest.approx(2.0)
    # best line to x^2 on [0, 1] (Chebyshev): x - 1/8, error 1/8
    x = np.linspace(0, 1, 401)
    c, e = minimax_lp(np.stack([np.ones_like(x), x], axis=1), x**2)
    np.testing.assert_allclose(c, [-0.125, 1.0], atol=1e-9)
    assert e == pytest.approx(0.125, rel=1e-9)


def test_taylor_coefficients_are_the_series() -> None:
    ln2 = np.log(2.0)
    c = taylor_coefficients("exp2", 4, 0.0)
    np.testing.assert_allclose(c, [ln2**k / np.prod(range(1, k + 1)) for k in range(5)], rtol=1e-15)
    # about another centre, re-expanded in powers of x: the same polynomial near the centre
    c1 = taylor_coefficients("exp2", 12, 0.5)
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(evaluate(horner(c1), x), np.exp2(x), rtol=1e-12)


def test_nonlinear_fit_reaches_the_quadratic_minimax() -> None:
    # (a x + b)^2 + c spans every quadratic with a positive leading coefficient, so its best
    # fit must reach the degree-2 minimax error, which the LP gives exactly
    p = Program(
        (
            Vertex("x"),
            Vertex("const", (), 0.5),
            Vertex("const", (), 0.5),
            Vertex("fma", (1, 0, 2)),
            Vertex("const", (), 0.5),
            Vertex("fma", (3, 3, 4)),
        )
    )
    assert not p.is_affine()
    x = np.linspace(0, 1, 1025)
    f = reference("exp2", x)
    _, e = fit_constants(p, x, f, f)
    _, e_lp = minimax_coefficients(x, f, f, 2)
    assert e == pytest.approx(e_lp, rel=1e-4)
    _, e_nm = fit_constants(p, x, f, f, method="nelder-mead")
    assert e_lp * (1 - 1e-9) <= e_nm < 5 * e_lp
    with pytest.raises(ValueError, match="affine"):
        fit_constants(p, x, f, f, method="lp")
    with pytest.raises(ValueError, match="accepted"):
        fit_constants(p, x, f, f, method="cma")


def test_format_steps_walk_the_format_grid() -> None:
    v = format_inputs("bf16", (-2.0, 2.0))
    i = np.array([3, 500, v.size // 2, v.size - 10])
    for k in (1, 2, -1, -3):
        assert np.array_equal(format_steps(v[i], "bf16", k), v[i + k])


def test_refine_discrete_keeps_format_constants_and_never_worsens() -> None:
    prob = FormatProblem("exp2", (0.0, 1.0), "bf16")
    c, _ = minimax_coefficients(prob.x, prob.truth, prob.ulps, 2)
    start = horner(c)
    first = prob.score(Program(start.vertices).with_constants(np.asarray(lb.round(c, "bf16"))))
    p, best, calls = refine_discrete(start, prob.score, "bf16", pair_radius=1)
    assert calls > 1 and best <= first
    assert best == prob.score(p)
    k = p.constants()
    assert np.array_equal(np.asarray(lb.round(k, "bf16")), k)
