"""lowbit.linalg.sum: the algorithms against plain loops, and measured errors against bounds.

The errors are measured against exact sums in ``fractions.Fraction`` and compared with the
a-priori bounds times the exact ``sum |x_i|``.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest

import lowbit as lb
from lowbit import arith
from lowbit.linalg import bound, gamma, unit_roundoff
from lowbit.linalg import sum as lbsum


def _rounded(x: np.ndarray, fmt: str) -> np.ndarray:
    return np.asarray(lb.round(x, fmt), dtype=np.float64)


# ---- the algorithms, against scalar loops of lb.arith calls ------------------------------------
def _recursive_loop(v: np.ndarray, fmt: str, mode: str) -> float:
    s = v[0]
    for t in v[1:]:
        s = arith.add(s, t, fmt, mode)
    return float(s)


def _pairwise_rec(v: list[float], fmt: str, mode: str) -> float:
    """Level-by-level pairing of neighbours, an odd last element carried up unchanged."""
    while len(v) > 1:
        nxt = [float(arith.add(v[i], v[i + 1], fmt, mode)) for i in range(0, len(v) - 1, 2)]
        if len(v) % 2:
            nxt.append(v[-1])
        v = nxt
    return v[0]


def _kahan_loop(v: np.ndarray, fmt: str, mode: str) -> float:
    """Higham's Algorithm 4.2, one scalar operation at a time."""
    s, e = v[0], 0.0
    for t in v[1:]:
        temp = s
        y = arith.add(t, e, fmt, mode)
        s = arith.add(temp, y, fmt, mode)
        e = arith.add(arith.sub(temp, s, fmt, mode), y, fmt, mode)
    return float(s)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("mode", ["rne", "rd"])
def test_algorithms_equal_scalar_loops(fmt: str, mode: str) -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 20):
        v = _rounded(rng.standard_normal(n) * 10, fmt)
        assert lbsum(v, fmt, mode) == _recursive_loop(v, fmt, mode)
        assert lbsum(v, fmt, mode, algorithm="pairwise") == _pairwise_rec(list(v), fmt, mode)
        assert lbsum(v, fmt, mode, algorithm="kahan") == _kahan_loop(v, fmt, mode)
    m = _rounded(rng.standard_normal((9, 4)), fmt)  # along an axis: one sum per column
    got = lbsum(m, fmt, mode, axis=0)
    assert np.array_equal(got, [_recursive_loop(c, fmt, mode) for c in m.T])
    got = lbsum(m, fmt, mode, algorithm="kahan", axis=1)
    assert np.array_equal(got, [_kahan_loop(r, fmt, mode) for r in m])


def test_stagnation_and_inputs() -> None:
    assert float(lbsum(np.ones(2100), "fp16")) == 2048.0  # 2048 + 1 is a tie: stays at 2048
    assert float(lbsum(np.ones(2100), "fp16", algorithm="pairwise")) == 2100.0
    assert float(lbsum(np.ones(300), "bf16", algorithm="kahan")) == 300.0
    assert float(lbsum([0.1] * 3, "fp16")) == float(
        arith.add(arith.add(0.1, 0.1, "fp16"), 0.1, "fp16"))  # inputs rounded first
    assert float(lbsum([], "fp16")) == 0.0
    with lb.precision("bf16"):
        assert float(lbsum(np.ones(300))) == 256.0  # bf16: 256 + 1 is a tie
    with pytest.raises(ValueError, match="algorithm"):
        lbsum([1.0], "fp16", algorithm="sorted")


def test_bound_formulas() -> None:
    u = 2.0**-11
    assert unit_roundoff("fp16") == u and unit_roundoff("fp16", "sr") == 2 * u
    assert unit_roundoff("bf16", "rtz") == 2 * 2.0**-8
    assert bound(100, "fp16") == pytest.approx(99 * u / (1 - 99 * u))
    assert bound(100, "fp16", "pairwise") == pytest.approx(7 * u / (1 - 7 * u))
    assert bound(100, "fp16", "kahan") == pytest.approx(2 * u + 200 * u * u)
    assert bound(1, "fp16") == 0.0 and bound(0, "fp16", "kahan") == 0.0
    assert bound(2049, "fp16") == math.inf  # (n-1) u >= 1: vacuous
    assert gamma(3, 0.25) == pytest.approx(3.0)
    s, b = lbsum(np.ones(10), "fp16", return_bound=True)
    assert float(s) == 10.0 and b == pytest.approx(bound(10, "fp16") * 10)
    s, b = lbsum(np.ones((10, 3)), "fp16", axis=0, algorithm="pairwise", return_bound=True)
    assert b.shape == (3,) and np.allclose(b, bound(10, "fp16", "pairwise") * 10)


# ---- measured errors against the bounds, exact sums in Fraction -----------------------------
def _exact(col: np.ndarray) -> tuple[Fraction, Fraction]:
    fr = [Fraction(float(t)) for t in col]
    return sum(fr, Fraction(0)), sum((abs(t) for t in fr), Fraction(0))


CASES = [("fp16", "rne", "recursive"), ("fp16", "rne", "pairwise"), ("fp16", "rne", "kahan"),
         ("bf16", "rne", "recursive"), ("bf16", "rne", "pairwise"), ("bf16", "rne", "kahan"),
         ("fp16", "rtz", "recursive"), ("bf16", "ru", "pairwise"), ("bf16", "sr", "recursive"),
         ("fp16", "sr", "kahan")]


@pytest.mark.parametrize(("fmt", "mode", "algorithm"), CASES)
def test_errors_within_bounds(fmt: str, mode: str, algorithm: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{fmt}{mode}{algorithm}".encode()))
    trials = 40
    checked = 0
    for n in (10, 100, 300):
        data = {
            "uniform": rng.random((n, trials)),
            "normal": rng.standard_normal((n, trials)),
            "decaying": rng.random((n, trials)) * np.logspace(0, -4, n)[:, None],
        }
        for x in data.values():
            x = _rounded(x, fmt)
            got = lbsum(x, fmt, mode, algorithm=algorithm, axis=0, seed=7)
            gf = bound(n, fmt, algorithm, mode)
            if math.isinf(gf):  # (n-1) u >= 1: the bound says nothing (bf16, n = 400)
                continue
            g = Fraction(gf)
            for j in range(trials):
                s, abs_sum = _exact(x[:, j])
                err = abs(Fraction(float(got[j])) - s)
                assert err <= g * abs_sum, (n, j, float(err), float(g * abs_sum))
                checked += 1
    assert checked >= 2 * 3 * trials
