"""The two experiment scripts: their rounding helper against lb.round, and --quick end to end."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lowbit as lb

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def weight_rounding():
    return _load("pychop_weight_rounding")


@pytest.mark.parametrize("fmt", ["bf16", "e4m3-ieee", "e5m2"])
def test_round_parameters_is_lb_round_per_tensor(weight_rounding, fmt: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.BatchNorm1d(5))
    rounded, rel = weight_rounding.round_parameters(model, fmt)
    num = den = 0.0
    for p, q in zip(model.parameters(), rounded.parameters(), strict=True):
        want = lb.round(p.detach().numpy(), fmt, "rne")
        assert np.array_equal(q.detach().numpy(), want)
        num += float(((want.astype(np.float64) - p.detach().numpy()) ** 2).sum())
        den += float((p.detach().numpy().astype(np.float64) ** 2).sum())
    assert math.isclose(rel, math.sqrt(num / den), rel_tol=1e-12)
    assert 0 < rel <= lb.get_format(fmt).unit_roundoff  # every weight is a normal number here
    # buffers (BatchNorm running statistics) are not rounded; the original is untouched
    assert torch.equal(rounded[1].running_var, model[1].running_var)
    assert not torch.equal(rounded[0].weight, model[0].weight)


def test_weight_rounding_quick_run(weight_rounding, tmp_path: Path) -> None:
    assert weight_rounding.main(["--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "pychop_weight_rounding.md").read_text()
    assert (tmp_path / "pychop_weight_rounding.png").read_bytes()[:4] == b"\x89PNG"
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in md.splitlines()
        if line.startswith("| ") and "`" in line
    }
    assert set(rows) >= {"fp32", "e4m3-ieee (q43)", "e5m2 (q52)", "bf16"}
    assert rows["fp32"][3] == "+0.00" and rows["fp32"][4] == "0.00e+00"
    # relative weight error grows as mantissa bits shrink (fp16 10 > bf16 7 > e4m3 3 > e5m2 2)
    errs = [float(rows[k][4]) for k in ("fp16 (extra)", "bf16", "e4m3-ieee (q43)", "e5m2 (q52)")]
    assert errs == sorted(errs) and errs[0] > 0
    assert rows["e5m2 (q52)"][5] == "90.78"  # the paper's number quoted beside ours
    assert "Reproduce: `python experiments/pychop_weight_rounding.py" in md


def test_low_precision_training_quick_run(tmp_path: Path) -> None:
    exp = _load("low_precision_training")
    rc = exp.main(["--quick", "--no-progress", "--out", str(tmp_path), "--only", "fp32,fp8"])
    assert rc == 0
    md = (tmp_path / "low_precision_training.md").read_text()
    assert (tmp_path / "low_precision_training.png").read_bytes()[:4] == b"\x89PNG"
    body = [
        line
        for line in md.splitlines()
        if line.startswith("| main") or line.startswith("| small lr")
    ]
    # fp32 reference, fp32 compute RNE/SR, fp8 RNE/SR; small lr: fp32, RNE, SR
    assert len(body) == 8
    assert sum("dynamic (" in line for line in body) == 2  # the fp8 runs scale the loss
    assert "Reproduce: `python experiments/low_precision_training.py" in md
