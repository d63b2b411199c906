"""`lowbit demo harmonic`: the published fp16 stagnation, checked against a Fraction replay."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

import lowbit as lb
from lowbit.cli.main import main
from oracle import FloatOracle


def _fp16_rne_stagnation() -> tuple[int, float]:
    """Replay s = RNE(s + RNE(1/n)) with exact Fractions and the independent oracle."""
    o = FloatOracle(lb.get_format("fp16"))
    s, n = Fraction(0), 1
    while True:
        t = Fraction(o.round(Fraction(1, n), "rne"))
        s_new = Fraction(o.round(s + t, "rne"))
        if s_new == s:
            return n, float(s)
        s, n = s_new, n + 1


def test_demo_harmonic_prints_the_stagnation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    n, value = _fp16_rne_stagnation()
    assert (n, value) == (513, 7.0859375)  # Higham & Pranesh (2019)
    rc = main(
        [
            "demo",
            "harmonic",
            "--format",
            "fp16",
            "--mode",
            "rne,sr",
            "--n",
            "1200",
            "--runs",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if "rne" in line)
    assert "7.0859375" in row and f" {n} " in row
    assert (tmp_path / "harmonic.png").stat().st_size > 0


def test_demo_harmonic_rejects_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "harmonic", "--format", "fp13x"]) == 2
    assert "fp13x" in capsys.readouterr().err
