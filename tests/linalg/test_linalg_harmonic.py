"""The harmonic series in fp16/bf16: published stagnation values, checked exactly."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import lowbit as lb
from lowbit.reports.harmonic import exact_harmonic, harmonic, partial_sums, stagnation
from oracle import FloatOracle


def test_fp16_rne_stagnates_at_7_0859375_from_513() -> None:
    s = partial_sums(1100, "fp16", "rne")[0]
    assert s[511] == 7.0859375 and s[510] < 7.0859375  # s_512 first reaches it
    assert np.all(s[511:] == 7.0859375)  # and no later term changes it
    assert stagnation(s) == (513, 7.0859375)  # Higham & Pranesh (2019)


def _fraction_recursion(oracle: FloatOracle, n: int) -> list[float]:
    """s_k = round(s_{k-1} + round(1/k)) with exact rational rounding (tests/oracle.py)."""
    s, out = 0.0, []
    for k in range(1, n + 1):
        t = oracle.round(Fraction(1, k), "rne")
        s = oracle.round(Fraction(s) + Fraction(t), "rne")
        out.append(s)
    return out


def test_bf16_rne_stagnation_matches_fraction_simulation() -> None:
    n = 160
    ref = _fraction_recursion(FloatOracle(lb.get_format("bf16")), n)
    s = partial_sums(n, "bf16", "rne")[0]
    assert s.tolist() == ref
    st = stagnation(np.array(ref))
    assert st == stagnation(s)
    assert st == (65, 5.0625)


def test_fp16_fraction_simulation_agrees_up_to_stagnation() -> None:
    n = 520
    ref = _fraction_recursion(FloatOracle(lb.get_format("fp16")), n)
    assert partial_sums(n, "fp16", "rne")[0].tolist() == ref


def test_sr_tracks_the_exact_sum() -> None:
    n = 3000
    exact = exact_harmonic(n)
    assert exact[-1] == pytest.approx(float(sum(Fraction(1, k) for k in range(1, n + 1))))
    s = partial_sums(n, "fp16", "sr", seed=0, runs=8)
    assert s.shape == (8, n)
    mean = s[:, -1].mean()
    assert abs(mean - exact[-1]) / exact[-1] < 0.03  # RNE is 20% low here
    assert all(stagnation(r) is None for r in s)
    assert np.array_equal(s, partial_sums(n, "fp16", "sr", seed=0, runs=8))  # reproducible


def test_report_writes_table_and_plot(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    r = harmonic("fp16,bf16", "rne,sr", n=1100, runs=4, out_dir=tmp_path)
    rows = {(x.fmt, x.mode): x for x in r.rows}
    assert rows[("fp16", "rne")].stagnation_n == 513
    assert rows[("fp16", "rne")].stagnation_value == 7.0859375
    assert rows[("bf16", "rne")].stagnation_value == 5.0625
    assert rows[("fp16", "sr")].stagnation_n is None and rows[("fp16", "sr")].runs == 4
    assert r.plot_path is not None and r.plot_path.stat().st_size > 1000
    assert r.markdown_path is not None and "7.0859375" in r.markdown_path.read_text()
    assert r.table()[0]["fmt"] == "fp16"
