"""ResNet-style CNN for small images (He et al. 2016, the CIFAR variant): three stages of
BasicBlocks, global average pooling and a linear classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lowbit.models._checks import int_tuple, positive_int


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity when shape is kept, else a strided 1×1 conv + BN
    (``shortcut[0]``, ``shortcut[1]``).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """ResNet for 28×28 / 8×8 images.

    Layout: ``stem`` = Sequential(conv3x3, BN, ReLU) (the first conv is ``stem[0]``), then
    ``stages`` = Sequential of stages (``stages[i]`` a Sequential of ``BasicBlock``), the first
    at stride 1 and each later one halving the resolution, then global average pooling and
    ``fc``.

    Args:
        in_channels: image channels.
        num_classes: output logits.
        image_size: input height = width (any size ≥ 1 works: pooling is global).
        widths: channels of each stage (the stem has ``widths[0]``).
        blocks_per_stage: BasicBlocks per stage, an int for all stages or one per stage.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("num_classes", num_classes)
        positive_int("image_size", image_size)
        self.widths = int_tuple("widths", widths)
        self.blocks_per_stage = int_tuple("blocks_per_stage", blocks_per_stage, len(self.widths))
        self.stem = nn.Sequential(
            conv3x3(in_channels, self.widths[0]),
            nn.BatchNorm2d(self.widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        cin = self.widths[0]
        for i, (w, n) in enumerate(zip(self.widths, self.blocks_per_stage, strict=True)):
            blocks = [
                BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1)
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
