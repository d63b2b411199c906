"""experiments/lmul.py part (i) in --quick mode: its fp8 baselines against ml_dtypes casts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

from lowbit.arith.approx import lmul

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_lmul_experiment_error_table_matches_independent_casts(tmp_path: Path) -> None:
    exp = _load("lmul")
    assert exp.main(["--quick", "--no-minilm", "--no-progress", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "lmul.json").read_text())
    assert (tmp_path / "lmul.png").read_bytes()[:4] == b"\x89PNG"
    assert "| L-Mul m=3 (carry) |" in (tmp_path / "lmul.md").read_text()
    st = exp.QUICK
    rng = np.random.default_rng(st.seed)
    x = rng.standard_normal(st.pairs)
    y = rng.standard_normal(st.pairs)
    exact = x * y
    for name, dt in (("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2)):
        p = x.astype(dt).astype(np.float64) * y.astype(dt).astype(np.float64)
        p = p.astype(dt).astype(np.float64)
        want = float(np.mean(np.abs(p - exact) / np.abs(exact)))
        assert res["error"]["fp8"][name]["mean"] == want, name
    got = res["error"]["lmul"]["4"]["carry"]["max"]
    assert got == float(np.max(np.abs(lmul(x, y, 4) - exact) / np.abs(exact)))
