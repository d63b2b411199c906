"""``lowbit train`` run in-process: files written and read back, user errors exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lowbit.cli.main import main
from lowbit.train import History, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_train_digits_w8a8_writes_table_and_plot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    ckpt = tmp_path / "m.safetensors"
    rc = main(
        [
            "train",
            "--data",
            "digits",
            "--model",
            "cnn-small",
            "--epochs",
            "1",
            "--config",
            str(ROOT / "configs" / "w8a8.toml"),
            "--out",
            str(out),
            "--no-progress",
            "--save",
            str(ckpt),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for name in ("history.csv", "history.md", "history.json", "history.png", "config.toml"):
        assert (out / name).is_file(), name
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    h = History.from_dict(json.loads((out / "history.json").read_text()))
    assert h.test_acc == [float(rows[0]["test_acc"])] and h.test_acc[0] > 0.3  # chance: 0.1
    # the printed table and summary carry the same accuracy as the files
    assert f"final test accuracy {100 * h.test_acc[0]:.2f}%" in captured.out
    # the effective config: the file's quantization with the command line's overrides
    eff = TrainConfig.load(out / "config.toml")
    base = TrainConfig.load(ROOT / "configs" / "w8a8.toml")
    assert eff == base.replace(model="cnn-small", data="digits", epochs=1)
    assert eff.quant is not None and eff.quant == base.quant
    # --save: a safetensors checkpoint whose metadata holds the config it was trained with
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as fh:
        meta = fh.metadata()
    assert TrainConfig.from_json(meta["train_config"]) == eff
    assert "quant_config" in meta


def test_train_without_config_is_fp32(tmp_path: Path, capsys) -> None:
    rc = main(
        [
            "train",
            "--data",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--lr",
            "0.01",
            "--seed",
            "4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert TrainConfig.load(tmp_path / "config.toml") == TrainConfig(
        model="mlp", data="digits", epochs=2, lr=0.01, seed=4
    )
    with (tmp_path / "history.csv").open() as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", "resnet-huge"], ["unknown model 'resnet-huge'", "resnet-small"]),
        (["--data", "cifar"], ["unknown data set 'cifar'", "digits"]),
        (["--epochs", "0"], ["epochs", ">= 1"]),
        (["--config", "missing.toml"], ["missing.toml", "not found"]),
        (
            ["--data", "fashion-mnist", "--data-dir", "/nonexistent/fm"],
            ["Fashion-MNIST not found", "/nonexistent/fm", "make data", "--data-dir"],
        ),
    ],
)
def test_user_errors_exit_2(tmp_path: Path, capsys, argv: list[str], words: list[str]) -> None:
    rc = main(
        [
            "train",
            "--data",
            "digits",
            "--model",
            "mlp",
            "--out",
            str(tmp_path),
            "--no-progress",
            *argv,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("lowbit train: error:") and err.count("\n") == 1
    for w in words:
        assert w in err


def test_bad_config_key_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "mlp"\nepoch = 3\n')
    rc = main(["train", "--config", str(bad), "--data", "digits", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown TrainConfig key(s) 'epoch'" in err and "accepted keys" in err
    assert not (tmp_path / "history.csv").exists()


def test_bad_quant_table_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "badq.toml"
    bad.write_text('model = "mlp"\n\n[quant]\nweight = "fp7x"\n')
    rc = main(["train", "--config", str(bad), "--data", "digits", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "fp7x" in err
