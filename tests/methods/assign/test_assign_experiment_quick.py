"""experiments/lee_assign.py --quick end to end (digits, one epoch)."""

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
    spec = importlib.util.spec_from_file_location("lee_assign", ROOT / "experiments"
                                                  / "lee_assign.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lee_assign"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lee_assign.png").read_bytes()[:4] == b"\x89PNG"
    d = json.loads((tmp_path / "lee_assign.json").read_text())
    runs = {r["label"]: r for r in d["runs"]}
    assert set(runs) == {"fp32", "r=0 (all fp_6_9)", "ours r>=0.5", "smallest_first r>=0.5",
                         "r=1 with rule", "r=1 no rule", "pi_op"}
    assert runs["fp32"]["r"] == 0.0 and runs["r=0 (all fp_6_9)"]["r"] == 0.0
    assert runs["ours r>=0.5"]["r"] >= 0.5 and runs["smallest_first r>=0.5"]["r"] >= 0.5
    # same batches, same start: the two r = 1 runs differ only through promotions
    w, wo = runs["r=1 with rule"], runs["r=1 no rule"]
    if not w["promoted"]:
        assert w["test_acc"] == wo["test_acc"] and w["train_loss"] == wo["train_loss"]
    md = (tmp_path / "lee_assign.md").read_text()
    assert "Reproduce: `python experiments/lee_assign.py`" in md and "## Claims" in md
