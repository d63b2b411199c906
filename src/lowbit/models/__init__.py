"""Small models (layer 7): ResNet-style CNN, small CNN, MLP, ViT-style transformer.

``build_model(name, *, in_channels, num_classes, image_size, **kw)`` and ``list_models()``.
"""

from lowbit.models.charlm import CharTransformerLM, build_charlm
from lowbit.models.cnn import CNNSmall
from lowbit.models.mlp import MLP
from lowbit.models.registry import build_model, list_models
from lowbit.models.resnet import BasicBlock, ResNetSmall
from lowbit.models.vit import ViTTiny

__all__ = [
    "MLP",
    "BasicBlock",
    "CNNSmall",
    "CharTransformerLM",
    "ResNetSmall",
    "ViTTiny",
    "build_charlm",
    "build_model",
    "list_models",
]
