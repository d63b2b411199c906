"""Every example config in configs/ parses, round-trips and quantizes the model it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lowbit.nn import QuantConfig
from lowbit.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(CONFIGS.glob("*.toml"))

# what each file is meant to hold, spelled with the named recipes of lowbit.nn
EXPECTED_QUANT = {
    "fp32": None,
    "bf16": QuantConfig.from_recipe("bf16"),
    "fp8": QuantConfig.from_recipe("fp8"),
    "w8a8": QuantConfig.from_recipe("w8a8"),
    "w4a8": QuantConfig.from_recipe(
        "w4a8", overrides=(("stem.*", {"weight": "int8"}), ("fc", {"weight": "int8"}))
    ),
}


def test_the_five_example_configs_exist() -> None:
    assert sorted(p.stem for p in FILES) == sorted(EXPECTED_QUANT)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_parses_and_round_trips(path: Path) -> None:
    cfg = TrainConfig.load(path)
    assert cfg.quant == EXPECTED_QUANT[path.stem]
    assert TrainConfig.from_toml(cfg.to_toml()) == cfg
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    if path.stem in ("bf16", "fp8"):  # the optimizer keeps bf16 weights, SR updates
        assert (cfg.weight_fmt, cfg.update_mode, cfg.master_weights) == ("bf16", "sr", False)
    assert cfg.loss_scaling == ("dynamic" if path.stem == "fp8" else "none")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_quantizes_its_model(path: Path) -> None:
    from lowbit.models import build_model
    from lowbit.nn import quantize_

    cfg = TrainConfig.load(path)
    torch.manual_seed(0)
    model = build_model(cfg.model, in_channels=1, num_classes=10, image_size=28)
    if cfg.quant is not None:
        quantize_(model, cfg.quant)
        assert model.lowbit_config == cfg.quant
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
