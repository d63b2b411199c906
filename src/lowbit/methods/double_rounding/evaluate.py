"""Accuracy of a switchable model at each width, with Double Rounding or floor-shift switching."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from lowbit.methods.double_rounding.convert import (
    dr_layers,
    get_bits,
    model_widths,
    set_bits,
)
from lowbit.methods.double_rounding.quantizer import check_method


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``loader``; the mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    try:
        for x, y in loader:
            pred = model(x.to(device)).argmax(1)
            correct += int((pred == y.to(device)).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("loader gave no sample")
    return correct / total


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    bits: int | Mapping[str, int] | None = None,
    method: str | None = None,
) -> float:
    """Accuracy at width ``bits`` (one int or a per-layer dict; None: as set now), switching
    by ``method`` ("round" or "floor"; None: as set now). Widths and methods are restored."""
    layers = dr_layers(model)
    if not layers:
        return accuracy(model, loader)
    saved_bits = get_bits(model)
    saved_methods = {n: m.method for n, m in layers.items()}
    saved_mixed = {
        n: (bn.bits, bn.mixed)
        for n, bn in model.named_modules()
        if hasattr(bn, "mixed") and hasattr(bn, "stats_key")
    }
    try:
        set_bits(
            model,
            saved_bits if bits is None else bits,
            method=None if method is None else check_method(method),
        )
        return accuracy(model, loader)
    finally:
        set_bits(model, saved_bits)
        for n, m in layers.items():
            m.method = saved_methods[n]
        for n, (b, mixed) in saved_mixed.items():
            model.get_submodule(n).set_bits(b, mixed)


def evaluate_widths(
    model: nn.Module,
    loader: Iterable,
    *,
    bits: Sequence[int] | None = None,
    methods: Sequence[str] = ("round", "floor"),
) -> dict[str, dict[int, float]]:
    """Accuracy at every width and switching method: ``{method: {width: accuracy}}``.

    The highest width (``h``) needs no switch, so both methods agree there.
    """
    widths = tuple(bits) if bits is not None else model_widths(model)
    return {
        m: {b: evaluate(model, loader, bits=b, method=m) for b in widths}
        for m in (check_method(m) for m in methods)
    }


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, *, n_batches: int = 8) -> int:
    """Re-estimate the transitional BatchNorm statistics for the current mixed configuration.

    Only switchable BatchNorm modules in mixed mode are touched: their ``*_mixed`` statistics
    are reset and replaced by the cumulative average over ``n_batches`` batches of ``loader``
    (forward only, no gradient); every other module stays in eval mode, so nothing else
    changes. Does nothing (returns 0) in a uniform configuration, whose per-width statistics
    come from training.

    Returns:
        The number of batches used.
    """
    from lowbit.methods.double_rounding.layers import SwitchableBatchNorm2d

    bns = [m for m in model.modules() if isinstance(m, SwitchableBatchNorm2d) and m.mixed]
    if not bns:
        return 0
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.running_mean_mixed.zero_()
        m.running_var_mixed.fill_(1.0)
        m.train()
    used = 0
    try:
        for i, (x, _) in enumerate(loader):
            if i >= n_batches:
                break
            for m in bns:  # cumulative average: momentum 1/(n+1) reproduces the plain mean
                m.momentum = 1.0 / (used + 1)
            model(x.to(device))
            used += 1
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.train(was_training)
    return used
