"""Build what a ``TrainConfig`` describes around a model: quantization, optimizer, loss scaler."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lowbit.train.config import TrainConfig


def _is_fp32(fmt: str) -> bool:
    import lowbit as lb

    return lb.get_format(fmt) == lb.get_format("fp32")


def _storage(fmt: str) -> str | None:
    """The optimizer's storage format: None (the fp32 container as is) for fp32."""
    return None if _is_fp32(fmt) else fmt


def quantize_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Apply ``config.quant`` to ``model`` in place with ``lowbit.nn.quantize_`` (if set)."""
    if config.quant is None:
        return model
    from lowbit.nn import quantize_

    return quantize_(model, config.quant)


def build_optimizer(params: Iterable[Any], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config``.

    With fp32 weights and fp32 state (the default) this is plain ``torch.optim.AdamW`` /
    ``torch.optim.SGD`` (momentum 0.9), the reference the low-precision runs are compared
    with; otherwise ``lowbit.optim.LowPrecisionAdamW`` / ``LowPrecisionSGD`` with the config's
    weight and state formats (fp32 ones stored as is), the weight-update rounding
    ``update_mode`` (the moments / momentum are rounded with RNE), master weights and ``seed``
    for SR.
    """
    params = list(params)
    plain = _is_fp32(config.weight_fmt) and _is_fp32(config.state_fmt) and not config.master_weights
    if config.optimizer == "adamw":
        if plain:
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        from lowbit.optim import LowPrecisionAdamW

        return LowPrecisionAdamW(
            params,
            lr=config.lr,
            weight_decay=config.weight_decay,
            weight_fmt=_storage(config.weight_fmt),
            state_fmt=_storage(config.state_fmt),
            update_mode=config.update_mode,
            master_weights=config.master_weights,
            seed=config.seed,
        )
    if plain:
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    from lowbit.optim import LowPrecisionSGD

    return LowPrecisionSGD(
        params,
        lr=config.lr,
        momentum=0.9,
        weight_decay=config.weight_decay,
        weight_fmt=_storage(config.weight_fmt),
        state_fmt=_storage(config.state_fmt),
        update_mode=config.update_mode,
        master_weights=config.master_weights,
        seed=config.seed,
    )


def build_scaler(config: TrainConfig) -> Any | None:
    """``lowbit.amp.LossScaler`` for ``config.loss_scaling`` "static"/"dynamic"; None for "none"."""
    if config.loss_scaling == "none":
        return None
    from lowbit.amp import LossScaler

    return LossScaler(dynamic=config.loss_scaling == "dynamic")
