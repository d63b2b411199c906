"""``lowbit demo --quick``: runs end to end on real data and writes its files."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from lowbit.cli.main import main
from lowbit.demo import FORMATS, MODES


def test_demo_quick_writes_table_plot_and_sane_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    t0 = time.perf_counter()
    rc = main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"])
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert rc == 0
    assert elapsed < 60  # the test budget is 30 s on an idle machine; leave room for load
    for name in ("results.csv", "results.md", "errors.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scikit-learn digits" in out and "fp32 test accuracy" in out

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 1 + len(FORMATS) * len(MODES)
    ref = rows[0]
    assert ref["format"].startswith("fp32")
    assert float(ref["test_acc"]) > 0.9  # digits: a 64-64-10 MLP gets ~0.97
    by = {(r["format"], r["mode"]): r for r in rows}
    # 16-bit formats barely change the model; bf16 keeps weights within 2^-8 relative
    for fmt in ("bf16", "fp16"):
        r = by[(fmt, "rne")]
        assert float(r["test_acc"]) > 0.9
        assert 0 < float(r["weights.rel_rms"]) <= 2.0**-8
    # digits pixels are k/16: exact in e4m3 (4 significant bits), not in e5m2 (3)
    assert float(by[("e4m3fn", "rne")]["pixels.rel_rms"]) == 0.0
    assert float(by[("e5m2", "rne")]["pixels.rel_rms"]) > 0.0
    # rtz has larger error than rne on the same data
    assert float(by[("e4m3fn", "rtz")]["weights.rel_rms"]) > float(
        by[("e4m3fn", "rne")]["weights.rel_rms"]
    )
    # posits have no rtz: reported as n/a, not crashed
    assert by[("posit8", "rtz")]["note"].startswith("n/a")
    assert math.isnan(float(by[("posit8", "rtz")]["test_acc"]))
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + rows
