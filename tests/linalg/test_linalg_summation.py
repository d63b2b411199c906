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
from lowbit.linalg.summation import kahan_constants


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
        arith.add(arith.add(0.1, 0.1, "fp16"), 0.1, "fp16")
    )  # inputs rounded first
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


CASES = [
    ("fp16", "rne", "recursive"),
    ("fp16", "rne", "pairwise"),
    ("fp16", "rne", "kahan"),
    ("bf16", "rne", "recursive"),
    ("bf16", "rne", "pairwise"),
    ("bf16", "rne", "kahan"),
    ("fp16", "rtz", "recursive"),
    ("bf16", "ru", "pairwise"),
    ("bf16", "sr", "recursive"),
    ("fp16", "sr", "kahan"),
]


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


# ---- Kahan's bound: the proof's inequalities, soundness and attainment --------------------------
def _kahan_formula(n: int, u: Fraction, kappa: Fraction, lam: Fraction) -> Fraction:
    """``3u + C_n u^2`` transcribed from the module docstring."""
    q = (1 + u) ** 2
    b = 1 + (lam + kappa + 1) * u + kappa * u * u
    c_n = (
        (lam + kappa + 1 + kappa * u)
        + (2 + u)
        + (n - 1) * kappa
        + (n - 2) * ((2 + u) * b + q * kappa)
    )
    return 3 * u + c_n * u * u


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16", "e4m3", "e5m2"])
def test_kahan_constants_close_the_induction(fmt: str) -> None:
    """The docstring's (E) and (L) hold for the constants the bound uses, the bound is the
    docstring's formula (rounded up), and it is infinite exactly where no constants exist."""
    u_float = unit_roundoff(fmt)
    u = Fraction(u_float)
    finite = 0
    for n in (2, 3, 10, 100, 1000, 10_000, 100_000):
        consts = kahan_constants(n, u_float)
        got = bound(n, fmt, "kahan")
        if consts is None:
            assert got == math.inf
            continue
        kappa, lam = consts
        assert kappa > 0 and lam > 0
        q, t = (1 + u) ** 2, n * u
        b = 1 + (lam + kappa + 1) * u + kappa * u * u
        assert kappa >= q * (b + 1 + kappa * u)  # (E)
        assert lam >= b + 1 + q + t * (kappa * (1 + q) + (2 + u) * b)  # (L)
        exact = _kahan_formula(n, u, kappa, lam)
        assert Fraction(got) >= exact and float(exact) >= math.nextafter(got, 0)
        assert got >= 3 * u_float
        finite += 1
    assert finite >= 1


def test_kahan_bound_shape() -> None:
    # nondecreasing in n, 3u to first order, and directed/stochastic modes use u' = 2u: the
    # same bound as round to nearest in a format with one bit less
    for fmt in ("fp16", "bf16"):
        vals = [bound(n, fmt, "kahan") for n in (2, 10, 100, 1000)]
        assert vals == sorted(vals)
    u32 = unit_roundoff("fp32")
    assert 3 * u32 < bound(1000, "fp32", "kahan") < 3.001 * u32
    f9 = lb.FloatFormat(exp_bits=5, man_bits=9)
    for n in (10, 300):
        assert bound(n, "fp16", "kahan", "sr") == bound(n, f9, "kahan")
        assert bound(n, "fp16", "kahan", "rd") == bound(n, f9, "kahan")
    assert bound(100, "e2m1", "kahan") == math.inf


def _random_kahan_inputs(fmt: str, n: int, trials: int, seed: int) -> np.ndarray:
    """Columns of mixed signs over 2^-8..2^8: the bad cases of Kahan's method mix magnitudes
    (a term that dominates the running sum makes the compensation step inexact)."""
    rng = np.random.default_rng(seed)
    e = rng.integers(-8, 9, size=(n, trials))
    v = rng.uniform(1, 2, size=(n, trials)) * np.ldexp(1.0, e) * rng.choice([-1, 1], (n, trials))
    return _rounded(v, fmt)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_kahan_bound_holds_and_is_attained_within_a_factor_2(fmt: str) -> None:
    n, trials = 4, 40_000
    x = _random_kahan_inputs(fmt, n, trials, zlib.crc32(fmt.encode()))
    g = Fraction(bound(n, fmt, "kahan"))
    worst = Fraction(0)
    got = lbsum(x, fmt, "rne", algorithm="kahan", axis=0)
    for j in range(trials):
        s, abs_sum = _exact(x[:, j])
        err = abs(Fraction(float(got[j])) - s)
        assert err <= g * abs_sum, (j, x[:, j].tolist())
        worst = max(worst, err / abs_sum)
    # the measured worst case is at least half the bound: a bound twice too loose fails here
    assert worst >= g / 2, (float(worst / Fraction(unit_roundoff(fmt))), float(g))


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("fp16", "rd"), ("bf16", "ru"), ("bf16", "rtz"), ("fp16", "sr"), ("bf16", "sr")],
)
def test_kahan_bound_holds_in_directed_and_stochastic_modes(fmt: str, mode: str) -> None:
    n, trials = 6, 8_000
    x = _random_kahan_inputs(fmt, n, trials, zlib.crc32(f"{fmt}{mode}".encode()))
    g = Fraction(bound(n, fmt, "kahan", mode))
    got = lbsum(x, fmt, mode, algorithm="kahan", axis=0, seed=3)
    for j in range(trials):
        s, abs_sum = _exact(x[:, j])
        assert abs(Fraction(float(got[j])) - s) <= g * abs_sum, (j, x[:, j].tolist())
