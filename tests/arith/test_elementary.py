"""exp, log, tanh, sigmoid correctly rounded, against mpmath at 200 bits + the exact oracle.

For a rational input these functions' values are transcendental (Lindemann–Weierstrass) except
at the handful of exact points (exp(0) = 1, log(1) = 0, tanh(0) = 0, sigmoid(0) = 1/2), so a
200-bit approximation decides every rounding boundary of a 16-bit format.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from lowbit import arith
from oracle import DETERMINISTIC_MODES, FloatOracle, all_bfloat16, all_float16, assert_same_bits

_MP = {
    "exp": mpmath.exp,
    "log": mpmath.log,
    "tanh": mpmath.tanh,
    "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
}


def _expected(name: str, oracle: FloatOracle, x: float, modes: tuple[str, ...]) -> dict:
    if math.isnan(x):
        v: float | Fraction = math.nan
    elif math.isinf(x):
        v = {
            "exp": math.inf if x > 0 else 0.0,
            "log": math.inf if x > 0 else math.nan,
            "tanh": math.copysign(1.0, x),
            "sigmoid": 1.0 if x > 0 else 0.0,
        }[name]
    elif name == "log" and x < 0:
        v = math.nan
    elif name == "log" and x == 0:
        v = -math.inf
    elif x == 0 and name in ("tanh",):
        v = x  # keeps the sign of zero
    elif (name, x) in (("exp", 0.0), ("log", 1.0), ("sigmoid", 0.0)):
        v = {"exp": Fraction(1), "log": Fraction(0), "sigmoid": Fraction(1, 2)}[name]
    else:
        with mpmath.workprec(200):
            sign, man, exp, _ = mpmath.mpf(_MP[name](mpmath.mpf(x)))._mpf_
            v = (-1) ** sign * Fraction(int(man)) * Fraction(2) ** int(exp)
    ov = oracle.overflow_options()[0]
    return {m: oracle.round_all(v, (m,), (ov,))[(m, ov)] for m in modes}


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid"])
def test_every_fp16_input(name: str) -> None:
    import lowbit as lb

    fmt = lb.get_format("fp16")
    oracle = FloatOracle(fmt)
    x = all_float16()
    if name in ("exp", "sigmoid"):
        x = x[np.abs(x) < 40]  # beyond, every mode's answer is an overflow/underflow case
    expected = {m: np.empty_like(x) for m in DETERMINISTIC_MODES}
    for i, xi in enumerate(x.tolist()):
        e = _expected(name, oracle, xi, DETERMINISTIC_MODES)
        for m in DETERMINISTIC_MODES:
            expected[m][i] = e[m]
    for m in DETERMINISTIC_MODES:
        got = getattr(arith, name)(x, "fp16", m, inputs="check")
        assert_same_bits(got, expected[m], x, f"{name} fp16 {m}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["exp", "log"])
def test_every_bf16_input(name: str) -> None:
    import lowbit as lb

    oracle = FloatOracle(lb.get_format("bf16"))
    x = all_bfloat16()
    x = x[np.isfinite(x) & (np.abs(x) < 100)] if name == "exp" else x[np.isfinite(x)]
    modes = ("rne", "rtz", "ru", "rd")
    exp_vals = [_expected(name, oracle, xi, modes) for xi in x.tolist()]
    for m in modes:
        got = getattr(arith, name)(x, "bf16", m, inputs="check")
        assert_same_bits(got, np.array([e[m] for e in exp_vals]), x, f"{name} bf16 {m}")


def test_overflow_and_underflow_of_exp_follow_the_mode() -> None:
    assert arith.exp(20.0, "fp16", "rne") == math.inf
    assert arith.exp(20.0, "fp16", "rtz") == 65504.0
    assert arith.exp(-30.0, "fp16", "rne") == 0.0
    assert arith.exp(-30.0, "fp16", "ru") == 2.0**-24
    assert arith.tanh(30.0, "fp16", "rtz") < 1.0
    assert arith.tanh(30.0, "fp16", "rne") == 1.0
