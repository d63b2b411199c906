"""``TrainConfig``: validation and the JSON / TOML round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lowbit.train import TrainConfig

NON_DEFAULT = TrainConfig(
    model="cnn-small",
    data="digits",
    data_dir="/tmp/x",
    subset=500,
    epochs=7,
    batch_size=64,
    lr=3e-4,
    weight_decay=1e-4,
    optimizer="sgd",
    weight_fmt="bf16",
    state_fmt="fp16",
    update_mode="sr",
    master_weights=True,
    loss_scaling="dynamic",
    seed=11,
)


def test_non_default_config_differs_from_default_in_every_field() -> None:
    # so the round trips below would notice a field that is dropped and read back as default
    d0, d1 = TrainConfig().to_dict(), NON_DEFAULT.to_dict()
    assert [k for k in d0 if d0[k] == d1[k]] == ["quant"]


@pytest.mark.parametrize("cfg", [TrainConfig(), NON_DEFAULT])
def test_json_and_toml_round_trip(cfg: TrainConfig) -> None:
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig.from_toml(cfg.to_toml()) == cfg
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    path = NON_DEFAULT.save(tmp_path / f"c{suffix}")
    assert TrainConfig.load(path) == NON_DEFAULT


def test_toml_layout_is_flat_keys() -> None:
    text = NON_DEFAULT.to_toml()
    for line in ('weight_fmt = "bf16"', "epochs = 7", "master_weights = true"):
        assert line in text.splitlines()
    assert "quant" not in text  # None has no TOML form: left out, read back as None


def test_missing_keys_take_defaults() -> None:
    cfg = TrainConfig.from_toml('epochs = 2\nupdate_mode = "sr"\n')
    assert cfg == dataclasses.replace(TrainConfig(), epochs=2, update_mode="sr")


def test_unknown_key_names_it_and_lists_the_fields() -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig.from_toml("epoch = 3\n")
    assert "'epoch'" in str(e.value) and "epochs" in str(e.value) and "batch_size" in str(e.value)


@pytest.mark.parametrize(
    "change, err, words",
    [
        ({"optimizer": "adam"}, ValueError, ["'adam'", "adamw", "sgd"]),
        ({"loss_scaling": "auto"}, ValueError, ["'auto'", "dynamic"]),
        ({"epochs": 0}, ValueError, ["epochs", ">= 1"]),
        ({"subset": 0}, ValueError, ["subset"]),
        ({"batch_size": 2.5}, TypeError, ["batch_size"]),
        ({"epochs": True}, TypeError, ["epochs"]),
        ({"lr": -1.0}, ValueError, ["lr", "> 0"]),
        ({"lr": float("nan")}, ValueError, ["lr"]),
        ({"weight_decay": -0.1}, ValueError, ["weight_decay"]),
        ({"weight_fmt": "fp7x"}, ValueError, ["fp7x"]),
        ({"state_fmt": 16}, TypeError, ["state_fmt"]),
        ({"update_mode": "halfway"}, ValueError, ["halfway", "rne", "sr"]),
        ({"master_weights": "yes"}, TypeError, ["master_weights"]),
        ({"quant": {"weight": "int8"}}, TypeError, ["quant"]),
    ],
)
def test_bad_values_raise_clear_errors(change: dict, err: type, words: list[str]) -> None:
    with pytest.raises(err) as e:
        dataclasses.replace(TrainConfig(), **change)
    for w in words:
        assert w in str(e.value)


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 3\n")
    with pytest.raises(ValueError, match="suffix"):
        TrainConfig.load(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="not found"):
        TrainConfig.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("epochs = = 3\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        TrainConfig.load(tmp_path / "bad.toml")


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 5  # type: ignore[misc]


def test_round_trip_with_quant_overrides_and_skip() -> None:
    from lowbit.nn import QuantConfig

    q = QuantConfig.from_recipe(
        "w4a8",
        overrides=[
            ("stem.*", {"weight": None, "act": "int8"}),
            ("fc", {"granularity": "per_tensor"}),
        ],
        skip=("head",),
        grad_mode="sr",
        seed=3,
    )
    cfg = NON_DEFAULT.replace(quant=q)
    text = cfg.to_toml()
    assert "[quant]" in text and text.count("[[quant.overrides]]") == 2
    assert 'weight = "none"' in text  # an override back to fp32 has a TOML spelling
    assert TrainConfig.from_toml(text) == cfg
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_every_recipe_round_trips() -> None:
    from lowbit.nn import QuantConfig

    for name in QuantConfig.recipes():
        cfg = TrainConfig(quant=QuantConfig.from_recipe(name))
        assert TrainConfig.from_toml(cfg.to_toml()) == cfg, name


def test_bad_quant_table_names_the_key() -> None:
    with pytest.raises(ValueError, match="weights"):
        TrainConfig.from_toml('[quant]\nweights = "int8"\n')
