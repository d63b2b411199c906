"""Fold BatchNorm (eval statistics) into the convolution or linear layer before it.

``bn(conv(x)) = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` equals ``conv'(x)`` with

    w' = w * inv        b' = (b - mean) * inv + beta        inv = gamma / sqrt(var + eps)

per output channel (computed in float64, stored in the layer's dtype). The result matches the
model's eval-mode outputs up to rounding.

Pairs found:

* neighbours in an ``nn.Sequential``: ``Conv1d/2d/3d`` or ``Linear`` followed by the
  BatchNorm of the same dimension with ``num_features == out_channels`` (a ResNet ``stem``,
  a ``shortcut``/``downsample`` Sequential);
* attribute pairs of one module: ``convN`` and ``bnN`` (``conv``/``bn``, ``conv1``/``bn1``,
  ...). This assumes the module's ``forward`` applies ``bnN`` directly to ``convN``'s output,
  as post-activation ResNet blocks do; pass ``attr_pairs=False`` for blocks where it does not
  (pre-activation blocks apply ``bn1`` before ``conv1``).

Each folded BatchNorm is replaced by ``nn.Identity``. BatchNorms without running statistics
are left alone.
"""

from __future__ import annotations

import itertools
import re

import torch
from torch import nn

_PAIRS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)
_CONV_ATTR = re.compile(r"conv(\d*)$")


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    for lt, bt in _PAIRS:
        if type(layer) is lt and type(bn) is bt:
            out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            return (
                bn.num_features == out
                and bn.track_running_stats
                and bn.running_mean is not None
                and bn.running_var is not None
            )
    return False


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn``'s eval-mode affine map into ``layer``'s weight and bias (in place)."""
    dt = layer.weight.dtype
    var = bn.running_var.to(torch.float64)
    mean = bn.running_mean.to(torch.float64)
    gamma = bn.weight.to(torch.float64) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.to(torch.float64) if bn.bias is not None else torch.zeros_like(var)
    inv = gamma / torch.sqrt(var + bn.eps)
    w = layer.weight.to(torch.float64)
    layer.weight.copy_((w * inv.reshape(-1, *([1] * (w.dim() - 1)))).to(dt))
    b = layer.bias.to(torch.float64) if layer.bias is not None else torch.zeros_like(mean)
    new_b = ((b - mean) * inv + beta).to(dt)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b)
    else:
        layer.bias.copy_(new_b)


def find_bn_pairs(model: nn.Module, *, attr_pairs: bool = True) -> list[tuple[str, str, str]]:
    """``(parent name, layer attribute, bn attribute)`` of every foldable pair, in order."""
    found: list[tuple[str, str, str]] = []
    for pname, parent in model.named_modules():
        kids = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(kids)
            for a, b in itertools.pairwise(names):
                if _foldable(kids[a], kids[b]):
                    found.append((pname, a, b))
        elif attr_pairs:
            for a, mod in kids.items():
                m = _CONV_ATTR.match(a)
                b = f"bn{m.group(1)}" if m else None
                if b is not None and b in kids and _foldable(mod, kids[b]):
                    found.append((pname, a, b))
    return found


def fold_bn(model: nn.Module, *, attr_pairs: bool = True) -> nn.Module:
    """Fold every Conv/Linear + BatchNorm pair of ``model`` (in place; see the module doc).

    Args:
        model: the model (its BatchNorms' running statistics are used).
        attr_pairs: also fold ``convN``/``bnN`` attribute pairs.

    Returns:
        ``model``, with each folded BatchNorm replaced by ``nn.Identity``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_bn takes an nn.Module, got {type(model).__name__}")
    for pname, a, b in find_bn_pairs(model, attr_pairs=attr_pairs):
        parent = model.get_submodule(pname) if pname else model
        fold_into(getattr(parent, a), getattr(parent, b))
        setattr(parent, b, nn.Identity())
    return model


__all__ = ["find_bn_pairs", "fold_bn", "fold_into"]
