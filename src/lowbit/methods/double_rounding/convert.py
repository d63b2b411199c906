"""Convert a float model into a switchable Double Rounding model, and switch its widths.

:func:`convert` swaps every ``nn.Conv2d`` and ``nn.Linear`` for :class:`DRConv2d` /
:class:`DRLinear`, except the first weight layer (the stem convolution, or the first Linear of
an MLP) and the last ``nn.Linear`` (the classifier), which stay in full precision as in the
paper. Each ``nn.BatchNorm2d`` that follows a converted convolution (in registration order:
``conv1, bn1, conv2, bn2, shortcut.0, shortcut.1``, the order of every ResNet of
``lowbit.models``) becomes a :class:`SwitchableBatchNorm2d` tied to that convolution; a
BatchNorm after a full-precision convolution sees the same input at every width and stays a
plain ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from torch import nn

from lowbit.methods.double_rounding.layers import (
    DRConv2d,
    DRLinear,
    SwitchableBatchNorm2d,
    _check_widths,
)
from lowbit.methods.double_rounding.quantizer import check_method

DRLayer = DRConv2d | DRLinear

DEFAULT_BITS = (8, 6, 4, 2)


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, child)


def convert(
    model: nn.Module, bits: Iterable[int] = DEFAULT_BITS, *, h: int = 8, inplace: bool = False
) -> nn.Module:
    """A switchable copy of ``model`` (or ``model`` itself with ``inplace=True``).

    Args:
        model: a float model made of plain ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d``.
        bits: the widths to train and switch to (each in ``2..h``).
        h: the stored width (8).
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        The converted model, at the highest width. It carries ``dr_bits`` (the widths,
        descending) and ``dr_h``.
    """
    widths = _check_widths(tuple(bits), h)
    if dr_layers(model):
        raise ValueError("model is already converted (it has DRConv2d/DRLinear layers)")
    if not inplace:
        model = copy.deepcopy(model)
    named = list(model.named_modules())
    weight_layers = [n for n, m in named if isinstance(m, (nn.Conv2d, nn.Linear))]
    linears = [n for n, m in named if isinstance(m, nn.Linear)]
    if not weight_layers:
        raise ValueError("model has no nn.Conv2d or nn.Linear layer to convert")
    keep = {weight_layers[0]} | ({linears[-1]} if linears else set())
    last_conv: str | None = None
    swaps: list[tuple[str, nn.Module]] = []
    for name, m in named:
        if isinstance(m, nn.Conv2d):
            last_conv = name
            if name not in keep:
                swaps.append((name, DRConv2d.from_conv(m, widths, h)))
        elif isinstance(m, nn.Linear) and name not in keep:
            swaps.append((name, DRLinear.from_linear(m, widths, h)))
        elif isinstance(m, nn.BatchNorm2d) and last_conv is not None and last_conv not in keep:
            sbn = SwitchableBatchNorm2d.from_bn(m, widths)
            sbn.source = last_conv
            swaps.append((name, sbn))
    for name, new in swaps:
        _set_child(model, name, new)
    model.dr_bits = widths
    model.dr_h = h
    return model


def dr_layers(model: nn.Module) -> dict[str, DRLayer]:
    """The switchable weight layers of ``model`` by name, in registration order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (DRConv2d, DRLinear))}


def switchable_bns(model: nn.Module) -> dict[str, SwitchableBatchNorm2d]:
    """The switchable BatchNorm modules of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SwitchableBatchNorm2d)}


def model_widths(model: nn.Module) -> tuple[int, ...]:
    """The widths a converted model was built for (descending)."""
    widths = getattr(model, "dr_bits", None)
    if widths is None:
        layers = dr_layers(model)
        if not layers:
            raise ValueError(
                "model is not a Double Rounding model (no DRConv2d/DRLinear); convert it first"
            )
        widths = next(iter(layers.values())).widths
    return tuple(widths)


def set_bits(
    model: nn.Module, bits: int | Mapping[str, int], *, method: str | None = None
) -> nn.Module:
    """Switch every layer of ``model`` to a width.

    Args:
        model: a converted model.
        bits: one width for every layer, or a dict ``{layer name: width}`` naming every
            switchable layer (:func:`dr_layers`): a mixed configuration. A dict whose widths
            are all equal is the uniform configuration.
        method: "round" (Double Rounding) or "floor" (floor shift); None keeps each layer's.

    Returns:
        ``model``.
    """
    layers = dr_layers(model)
    if not layers:
        raise ValueError("model has no switchable layer; convert it first")
    if method is not None:
        check_method(method)
    if isinstance(bits, Mapping):
        unknown = sorted(set(bits) - set(layers))
        missing = [n for n in layers if n not in bits]
        if unknown or missing:
            raise ValueError(
                f"per-layer bits must name every switchable layer exactly; "
                f"unknown: {unknown}, missing: {missing}; accepted names: "
                f"{list(layers)}"
            )
        config = {n: bits[n] for n in layers}
    elif isinstance(bits, int) and not isinstance(bits, bool):
        config = dict.fromkeys(layers, bits)
    else:
        raise TypeError(f"bits must be an int or a dict {{layer: int}}, got {bits!r}")
    for n, layer in layers.items():
        layer.set_bits(config[n], method)
    mixed = len(set(config.values())) > 1
    for bn in switchable_bns(model).values():
        bn.set_bits(config[bn.source], mixed=mixed)
    return model


def get_bits(model: nn.Module) -> dict[str, int]:
    """The current width of every switchable layer."""
    return {n: m.bits for n, m in dr_layers(model).items()}


def layer_params(model: nn.Module) -> dict[str, int]:
    """Number of weights of every switchable layer (what the mixed-precision budget counts)."""
    return {n: m.weight.numel() for n, m in dr_layers(model).items()}
