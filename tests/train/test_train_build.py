"""Builders: a TrainConfig turned into the optimizer, the loss scaler and the quantized model."""

from __future__ import annotations

import pytest
import torch

import lowbit as lb
from lowbit.amp import LossScaler
from lowbit.optim import LowPrecisionAdamW, LowPrecisionSGD
from lowbit.train import TrainConfig, build_optimizer, build_scaler, quantize_model


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _on_grid(model: torch.nn.Module, fmt: str) -> bool:
    return all(
        torch.equal(lb.round(p.detach().contiguous(), fmt), p.detach()) for p in model.parameters()
    )


def _one_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


@pytest.mark.parametrize("optimizer, cls", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_fp32_config_gives_the_torch_optimizer(optimizer: str, cls: type) -> None:
    cfg = TrainConfig(optimizer=optimizer, lr=0.01, weight_decay=0.001)
    opt = build_optimizer(_net().parameters(), cfg)
    assert type(opt) is cls
    g = opt.param_groups[0]
    assert g["lr"] == 0.01 and g["weight_decay"] == 0.001
    if optimizer == "sgd":
        assert g["momentum"] == 0.9


@pytest.mark.parametrize("optimizer, cls", [("adamw", LowPrecisionAdamW), ("sgd", LowPrecisionSGD)])
def test_bf16_weights_give_the_low_precision_optimizer(optimizer: str, cls: type) -> None:
    cfg = TrainConfig(
        optimizer=optimizer, lr=0.01, weight_fmt="bf16", state_fmt="fp32", update_mode="sr", seed=7
    )
    model = _net()
    opt = build_optimizer(model.parameters(), cfg)
    assert type(opt) is cls
    g = opt.param_groups[0]
    assert (g["weight_fmt"], g["state_fmt"], g["update_mode"], g["seed"], g["lr"]) == (
        "bf16",
        None,
        "sr",
        7,
        0.01,
    )
    assert not g["master_weights"]
    assert _on_grid(model, "bf16")  # the optimizer put the weights on their grid
    before = [p.detach().clone() for p in model.parameters()]
    _one_step(model, opt)
    assert _on_grid(model, "bf16")
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_master_weights_alone_selects_the_low_precision_optimizer() -> None:
    opt = build_optimizer(_net().parameters(), TrainConfig(master_weights=True))
    assert type(opt) is LowPrecisionAdamW and opt.param_groups[0]["master_weights"]


@pytest.mark.parametrize("mode, dynamic", [("static", False), ("dynamic", True)])
def test_scaler(mode: str, dynamic: bool) -> None:
    assert build_scaler(TrainConfig()) is None
    sc = build_scaler(TrainConfig(loss_scaling=mode))
    assert isinstance(sc, LossScaler) and sc.dynamic is dynamic


def test_quantize_model() -> None:
    from lowbit.nn import QuantConfig

    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    model = _net()
    ref = model(x)
    assert quantize_model(model, TrainConfig()) is model
    assert torch.equal(model(x), ref)
    q = QuantConfig(weight="e4m3")
    assert quantize_model(model, TrainConfig(quant=q)) is model
    assert model.lowbit_config == q
    # the first layer now computes with its weight rounded to e4m3 (bias unrounded)
    ref0 = _net()[0]
    w0 = lb.round(ref0.weight.detach(), "e4m3", overflow="saturate")
    assert not torch.equal(w0, ref0.weight)
    assert torch.equal(model[0](x), torch.nn.functional.linear(x, w0, ref0.bias))
