"""A tiny ResNet-style CNN for the Double Rounding tests (a module with a unique name, so
that test files can import it whatever ``conftest`` module the rest of the suite loaded)."""

from __future__ import annotations

import torch
from torch import nn


class TinyBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyNet(nn.Module):
    """Stem conv + BN + ReLU (kept in full precision), one residual block, pool, fc."""

    def __init__(self, c: int = 12, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.block = TinyBlock(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))
