"""experiments/lee_assign.py --quick end to end (digits, one epoch, two seeds, seed cache)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[3]


def test_quick_run_writes_report(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "lee_assign", ROOT / "experiments" / "lee_assign.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lee_assign"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lee_assign.png").read_bytes()[:4] == b"\x89PNG"
    d = json.loads((tmp_path / "lee_assign.json").read_text())
    assert d["seeds"] == [0, 1] and set(d["per_seed"]) == {"0", "1"}
    labels = {
        "fp32",
        "r=0 (all fp_6_9)",
        "ours r>=0.5",
        "smallest_first r>=0.5",
        "r=1 with rule",
        "r=1 no rule",
        "pi_op",
        "stress fp32",
        "stress r=1 with rule",
        "stress r=1 no rule",
    }
    for seed in ("0", "1"):
        runs = {r["label"]: r for r in d["per_seed"][seed]}
        assert set(runs) == labels
        assert runs["fp32"]["r"] == 0.0 and runs["r=0 (all fp_6_9)"]["r"] == 0.0
        assert runs["ours r>=0.5"]["r"] >= 0.5 and runs["smallest_first r>=0.5"]["r"] >= 0.5
        # same batches, same start: the two r = 1 runs differ only through promotions
        w, wo = runs["r=1 with rule"], runs["r=1 no rule"]
        if not w["promoted"]:
            assert w["test_acc"] == wo["test_acc"] and w["train_loss"] == wo["train_loss"]
        # raw 0-255 pixels overflow fp_4_3_4 (max 30): the rule promotes the input
        assert runs["stress r=1 with rule"]["promoted"]
        assert not runs["stress r=1 no rule"]["promoted"]
    # the seeds differ (weights, batch order), the aggregate is their mean
    a0 = {r["label"]: r["test_acc"] for r in d["per_seed"]["0"]}
    a1 = {r["label"]: r["test_acc"] for r in d["per_seed"]["1"]}
    assert a0 != a1
    agg = {row["label"]: row for row in d["aggregate"]}
    assert agg["fp32"]["acc_mean"] == pytest.approx(50 * (a0["fp32"] + a1["fp32"]))
    assert agg["fp32"]["acc_std"] >= 0
    md = (tmp_path / "lee_assign.md").read_text()
    assert "Reproduce: `python experiments/lee_assign.py`" in md and "## Claims" in md
    assert "seed 0 | seed 1" in md
    # the seeds are cached with their settings: a second call trains nothing
    cache = json.loads((tmp_path / "lee_assign" / "quick-seed1.json").read_text())
    assert cache["settings"]["seed"] == 1 and cache["settings"]["data_seed"] == 0
    assert mod.main(["--quick", "--no-progress", "--out", str(tmp_path), "--seeds", "1"]) == 0
    d1 = json.loads((tmp_path / "lee_assign.json").read_text())
    assert d1["per_seed"]["1"] == d["per_seed"]["1"]
    assert d1["timing"]["this_invocation"]["cpu_seconds"] < 30
