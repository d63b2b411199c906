"""A multilayer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lowbit.models._checks import positive_int


class MLP(nn.Module):
    """``body`` = Flatten, then Linear-ReLU per hidden size; ``fc`` the output Linear.

    Args:
        in_channels: image channels.
        num_classes: output logits.
        image_size: input height = width.
        hidden: hidden layer widths (empty: a linear classifier).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        hidden: Sequence[int] = (256, 128),
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("num_classes", num_classes)
        positive_int("image_size", image_size)
        self.hidden = tuple(positive_int("hidden", h) for h in hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        fin = in_channels * image_size * image_size
        for h in self.hidden:
            layers += [nn.Linear(fin, h), nn.ReLU(inplace=True)]
            fin = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(fin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))
