"""lb.recipes: every name resolves to its method's own function, and the configs work."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import lowbit as lb
from lowbit import recipes


@pytest.mark.parametrize("name", recipes.__all__)
def test_every_recipe_is_the_method_packages_own_object(name: str) -> None:
    module, attr = recipes._WHERE[name]
    assert getattr(lb.recipes, name) is getattr(importlib.import_module(module), attr)


def test_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(AttributeError, match="dfp16_training"):
        lb.recipes.no_such_recipe  # noqa: B018


def test_top_level_aliases() -> None:
    assert lb.approx is importlib.import_module("lowbit.arith.approx")
    assert lb.dfp is importlib.import_module("lowbit.arith.dfp")
    assert lb.ivit is importlib.import_module("lowbit.methods.ivit")


@pytest.mark.parametrize(
    "make",
    [
        lambda: lb.recipes.dfp16_training(),
        lambda: lb.recipes.a2q(acc_bits=16, weight_bits=4, act_bits=8),
        lambda: lb.recipes.s2fp8_training(),
    ],
)
def test_recipe_configs_round_trip_and_swap_layers(make) -> None:  # type: ignore[no-untyped-def]
    cfg = make()
    assert lb.nn.QuantConfig.from_json(cfg.to_json()) == cfg
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(2, 1, 8, 8)
    lb.nn.quantize_(model, cfg)
    assert type(model[0]) is not nn.Conv2d and type(model[3]) is not nn.Linear
    assert model(x).shape == (2, 3)
