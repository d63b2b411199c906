"""``build_model``: every model by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from lowbit.models.cnn import CNNSmall
from lowbit.models.lenet import LeNet5
from lowbit.models.mlp import MLP
from lowbit.models.resnet import ResNetSmall
from lowbit.models.vit import ViTTiny

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet-small": ResNetSmall,
    "cnn-small": CNNSmall,
    "mlp": MLP,
    "vit-tiny": ViTTiny,
    "lenet5": LeNet5,
}


def list_models() -> list[str]:
    """Names accepted by ``build_model``."""
    return list(MODELS)


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, **kw: Any
) -> nn.Module:
    """Build a model; its initial weights come from torch's global RNG (``torch.manual_seed``).

    Args:
        name: one of ``list_models()``.
        in_channels: image channels (1 for Fashion-MNIST and digits).
        num_classes: output logits.
        image_size: input height = width (28 for Fashion-MNIST, 8 for digits).
        **kw: the model's own options: ``widths``/``blocks_per_stage`` (resnet-small),
            ``widths`` (cnn-small), ``hidden`` (mlp), ``patch_size``/``dim``/``depth``/``heads``/
            ``mlp_ratio`` (vit-tiny).

    Raises:
        ValueError: unknown name (the message lists the names) or a bad size.
        TypeError: an option the model does not take.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}")
    return MODELS[name](in_channels, num_classes, image_size, **kw)
