"""A ~20k-parameter CNN: two conv-BN-ReLU-maxpool layers and a linear classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lowbit.models._checks import int_tuple, positive_int


class CNNSmall(nn.Module):
    """``features`` = [conv3x3-BN-ReLU-maxpool2] × 2, then flatten and ``fc``.

    With the default widths (16, 32), 1 input channel, 10 classes and 28×28 images it has
    20 538 parameters (15 690 of them in ``fc``, which sees 32 × 7 × 7 features); on 8×8
    images ``fc`` sees 32 × 2 × 2. Needs ``image_size >= 4`` (two pools).

    Args:
        in_channels: image channels.
        num_classes: output logits.
        image_size: input height = width (≥ 4).
        widths: output channels of the two convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        widths: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("num_classes", num_classes)
        if positive_int("image_size", image_size) < 4:
            raise ValueError(f"image_size={image_size}: cnn-small needs at least 4 (two pools)")
        w = int_tuple("widths", widths, 2)
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in w:
            layers += [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = image_size // 4  # two floor-halving pools
        self.fc = nn.Linear(cin * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
