"""``lowbit dr``: train → export → eval → search on digits, and ``lowbit dr demo --quick``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from lowbit.cli.dr_cmd import parse_targets  # noqa: E402
from lowbit.cli.main import main  # noqa: E402
from lowbit.methods import double_rounding as dr  # noqa: E402

SMALL = '{"widths": [8, 16, 16]}'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("drcli")
    rc = main(
        [
            "dr",
            "train",
            "--data",
            "digits",
            "--model",
            "resnet-small",
            "--model-kw",
            SMALL,
            "--bits",
            "8,4,2",
            "--fp-epochs",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    return out


def test_train_export_eval(run_dir, capsys):
    capsys.readouterr()
    train = json.loads((run_dir / "train.json").read_text())
    assert set(train["accuracy"]) == {"8", "4", "2"} and train["fp32"] > 0.5
    int8 = run_dir / "model-int8.safetensors"
    assert main(["dr", "export", str(run_dir / "ckpt"), "--out", str(int8)]) == 0
    ckpt = dr.load_int8(int8)
    assert ckpt.bits == (8, 4, 2) and all(c.dtype == torch.int8 for c in ckpt.codes.values())
    capsys.readouterr()
    assert main(["dr", "eval", str(int8), "--method", "round", "--no-progress"]) == 0
    out = capsys.readouterr().out
    # the file's accuracies are the training run's, to the last image
    for b in ("8", "4", "2"):
        assert f"{100 * train['accuracy'][b]:.2f}" in out, (b, out)
    assert main(["dr", "eval", str(int8), "--bits", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "floor shift" in out and f"{100 * train['accuracy']['4']:.2f}" in out


def test_search_writes_plot(run_dir, tmp_path, capsys):
    int8 = run_dir / "model-int8.safetensors"
    if not int8.exists():
        assert main(["dr", "export", str(run_dir / "ckpt"), "--out", str(int8)]) == 0
    rc = main(
        [
            "dr",
            "search",
            str(int8),
            "--target-bits",
            "2",
            "..",
            "8",
            "--step",
            "1",
            "--probes",
            "2",
            "--trace-batches",
            "1",
            "--calib-batches",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((tmp_path / "search.json").read_text())
    assert sorted({p["kind"] for p in res["points"]}) == ["ilp", "uniform"]
    assert "HASB + ILP" in capsys.readouterr().out


def test_search_with_measured_loss_scores(run_dir, tmp_path, capsys):
    int8 = run_dir / "model-int8.safetensors"
    if not int8.exists():
        assert main(["dr", "export", str(run_dir / "ckpt"), "--out", str(int8)]) == 0
    args = ["dr", "search", str(int8), "--target-bits", "3,5", "--sensitivity", "loss"]
    args += ["--calib-batches", "2", "--loss-batches", "2", "--out", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 0
    res = json.loads((tmp_path / "search.json").read_text())
    assert res["sensitivity"] == "loss" and res["traces"] == {}
    at_h = {layer: s["8"] for layer, s in res["scores"].items()}
    assert len(set(at_h.values())) == 1  # every layer at 8 bits is the same model
    assert all(s["2"] < s["8"] for s in res["scores"].values())
    assert "measured-loss + ILP" in capsys.readouterr().out


def test_parse_targets():
    assert parse_targets(["3.5", "..", "4.5"], 0.25) == [3.5, 3.75, 4.0, 4.25, 4.5]
    assert parse_targets(["4..5"], 0.5) == [4.0, 4.5, 5.0]
    assert parse_targets(["4,5", "6"], 0.25) == [4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="need HIGH >= LOW"):
        parse_targets(["8", "..", "4"], 0.25)
    with pytest.raises(ValueError, match=r"expected LOW \.\. HIGH"):
        parse_targets(["a", "..", "4"], 0.25)


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["dr"]) == 2
    assert "needs an action" in capsys.readouterr().err
    assert main(["dr", "eval", str(tmp_path / "nope.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["dr", "export", str(tmp_path)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert main(["dr", "train", "--data", "digits", "--bits", "8,x"]) == 2
    assert "comma-separated widths" in capsys.readouterr().err


def test_demo_quick(tmp_path: Path, capsys):
    rc = main(["dr", "demo", "--quick", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "(and identical logits): yes" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["bit_exact"] is True
    assert set(res["double_rounding"]) == set(res["floor_shift"]) == {"8", "6", "4", "2"}
    assert res["double_rounding"]["8"] == res["floor_shift"]["8"]  # no switch at 8 bits
    assert (tmp_path / "dr_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "model-int8.safetensors").stat().st_size > 0
    assert "floor shift" in (tmp_path / "results.md").read_text()
