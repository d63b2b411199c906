"""ALRS: adaptive learning-rate scaling of the shared weight scales, per width.

The weight scale ``s_h`` of a layer is shared by every width, but its gradient at width ``b``
carries the factor ``2^(h-b)`` (``∂Ŵ_b/∂s = 2^(h-b)·(W_b − u)``), so low widths would dominate
its updates. ALRS scales the learning rate of the scales at width ``b`` by

    Δ = h − b even:  10^(−Δ/2)              (8 → 1, 6 → 0.1, 4 → 0.01, 2 → 0.001)
    Δ odd:           5 · 10^(−(Δ+1)/2)      (7 → 0.5, 5 → 0.05, 3 → 0.005)

Only the weight scales are scaled: the activation scales and BatchNorm parameters exist once
per width and see one width's gradients only. Weight decay (5e-5 by default) applies to the
weights and biases of the layers only, never to scales or BatchNorm parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lowbit.methods.double_rounding.convert import dr_layers
from lowbit.methods.double_rounding.quantizer import check_bits


def alrs_factor(bits: int, h: int = 8) -> float:
    """The ALRS learning-rate factor of the weight scales at width ``bits``."""
    check_bits(bits, h)
    delta = h - bits
    if delta % 2 == 0:
        return 10.0 ** (-(delta // 2))
    return 5.0 * 10.0 ** (-((delta + 1) // 2))


def param_groups(model: nn.Module, lr: float, weight_decay: float = 5e-5) -> list[dict[str, Any]]:
    """Optimizer parameter groups of a converted model.

    One group ``"weights"`` (weights and biases of every conv/linear layer, with weight
    decay), one group per switchable layer holding its weight scale (``"scale:<layer>"``, no
    weight decay; these are the groups ALRS rescales), and one group ``"other"`` (activation
    scales, BatchNorm parameters, anything else; no weight decay). Every group has
    ``base_lr`` and ``kind``; scale groups also have ``layer``.
    """
    layers = dr_layers(model)
    scale_ids = {id(m.weight_quant.scale): n for n, m in layers.items()}
    weight_ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight_ids.update(id(p) for p in (m.weight, m.bias) if p is not None)
    weights: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    scales: dict[str, nn.Parameter] = {}
    for p in model.parameters():
        if id(p) in scale_ids:
            scales[scale_ids[id(p)]] = p
        elif id(p) in weight_ids:
            weights.append(p)
        else:
            other.append(p)
    groups: list[dict[str, Any]] = [
        {
            "params": weights,
            "lr": lr,
            "base_lr": lr,
            "weight_decay": weight_decay,
            "kind": "weights",
        }
    ]
    for n in layers:
        groups.append(
            {
                "params": [scales[n]],
                "lr": lr,
                "base_lr": lr,
                "weight_decay": 0.0,
                "kind": "scale",
                "layer": n,
            }
        )
    if other:
        groups.append(
            {"params": other, "lr": lr, "base_lr": lr, "weight_decay": 0.0, "kind": "other"}
        )
    return groups


def set_learning_rates(
    optimizer: torch.optim.Optimizer,
    lr_factor: float,
    bits: int | Mapping[str, int] | None,
    *,
    alrs: bool = True,
    h: int = 8,
) -> None:
    """Set every group's lr to ``base_lr · lr_factor`` (the schedule), times the ALRS factor
    of the layer's width for the scale groups.

    Args:
        optimizer: built on :func:`param_groups`.
        lr_factor: the schedule's multiplier now (cosine).
        bits: the width of this step: one int, or the per-layer dict of a mixed step; None
            (or ``alrs=False``) leaves the scales at the schedule's rate.
        alrs: apply ALRS.
        h: the stored width.
    """
    for group in optimizer.param_groups:
        lr = group.get("base_lr", group["lr"]) * lr_factor
        if alrs and bits is not None and group.get("kind") == "scale":
            b = bits[group["layer"]] if isinstance(bits, Mapping) else bits
            lr *= alrs_factor(b, h)
        group["lr"] = lr
