"""The closed-form count of finite codes equals a count by decoding every code."""

from __future__ import annotations

import math

import pytest

import lowbit as lb
from lowbit.formats import presets

SMALL_FLOATS = [f for f in presets().values() if isinstance(f, lb.FloatFormat) and f.bits <= 16]
SMALL_FLOATS += [
    lb.FloatFormat(3, 0),
    lb.FloatFormat(2, 3, special="fnuz", bias=2),
    lb.FloatFormat(4, 0, special="fn", signed=False),
]


@pytest.mark.parametrize("fmt", SMALL_FLOATS, ids=str)
def test_n_finite_matches_enumeration(fmt: lb.FloatFormat) -> None:
    counted = sum(1 for c in range(1 << fmt.bits) if math.isfinite(fmt.decode(c)))
    assert fmt.n_finite == counted
