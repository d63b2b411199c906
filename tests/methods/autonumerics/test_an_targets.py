"""Targets: references against the standard library, names and intervals checked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.methods.autonumerics import TARGETS, get_target, reference
from lowbit.methods.autonumerics.targets import parse_interval


@pytest.mark.parametrize(
    "name,fn",
    [
        ("exp2", lambda v: 2.0**v),
        ("log2", math.log2),
        ("erf", math.erf),
        ("sigmoid", lambda v: 1 / (1 + math.exp(-v))),
        ("gelu", lambda v: v * math.erfc(-v / math.sqrt(2)) / 2),  # erfc: no cancellation
    ],
)
def test_reference_matches_libm_within_a_few_ulps(name: str, fn) -> None:
    # the float64 formulas are accurate to a few ulps (gelu's product and erfc: up to ~6)
    a, b = TARGETS[name].interval
    x = np.linspace(a, b, 97)
    got = reference(name, x)
    want = np.array([fn(float(v)) for v in x])
    assert np.all(np.abs(got - want) <= 8 * np.spacing(np.maximum(np.abs(want), 1e-300)))


def test_reference_is_correctly_rounded_at_exact_points() -> None:
    assert reference("exp2", np.array([0.0, 1.0, -1.0, 0.5])).tolist() == [
        1.0,
        2.0,
        0.5,
        float(np.sqrt(2.0)),
    ]
    assert reference("log2", np.array([1.0, 2.0, 8.0])).tolist() == [0.0, 1.0, 3.0]


def test_unknown_names_and_bad_intervals_raise() -> None:
    with pytest.raises(ValueError, match="accepted: exp2, log2, erf, sigmoid, gelu"):
        get_target("tanh")
    t = get_target("LOG2")
    assert parse_interval(None, t) == (1.0, 2.0)
    assert parse_interval("1,4", t) == (1.0, 4.0)
    for bad in ("1", "a,b", (2.0, 1.0), "0,1"):
        with pytest.raises(ValueError, match="interval"):
            parse_interval(bad, t)
