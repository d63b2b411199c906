"""LeNet-5 as PositNN trains it on (Fashion-)MNIST (Raposo, Tomás, Roma, ICASSP 2021).

The network of PositNN's ``examples/fashionmnist_lenet5`` (hpc-ulisboa/posit-neuralnet),
which is LeCun's LeNet-5 with ReLU and max pooling::

    conv1 5×5, 6 channels, padding 2 → max-pool 2 → ReLU
    conv2 5×5, 16 channels           → max-pool 2 → ReLU
    fc1 16·5·5 → 120 → ReLU → fc2 120 → 84 → ReLU → fc3 84 → 10

PositNN writes the first fully connected layer as a 5×5 convolution with 120 channels over
the 5×5 map; on that map it is the same dot products as ``fc1`` here (a Linear layer keeps
the model valid for other image sizes). Max-pooling before the ReLU is PositNN's order; the
two commute. With 1 input channel, 10 classes and 28×28 images it has 61 706 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from lowbit.models._checks import positive_int

ACTIVATIONS = ("relu", "tanh")


class LeNet5(nn.Module):
    """LeNet-5 (``features`` = two conv-pool-activation stages, ``classifier`` = 3 Linear).

    Args:
        in_channels: image channels.
        num_classes: output logits.
        image_size: input height = width; at least 12 (the second pooling needs a 2×2 map).
        activation: ``"relu"`` (PositNN's choice) or ``"tanh"`` (LeCun's 1998 network).

    Raises:
        ValueError: a bad size or an unknown activation (the message lists the accepted).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("num_classes", num_classes)
        if positive_int("image_size", image_size) < 12:
            raise ValueError(
                f"image_size={image_size}: lenet5 needs at least 12 (two 5×5 "
                "convolutions and two poolings)"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; accepted: {', '.join(ACTIVATIONS)}")
        self.activation = activation

        def act() -> nn.Module:
            return nn.ReLU() if activation == "relu" else nn.Tanh()

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.MaxPool2d(2),
            act(),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.MaxPool2d(2),
            act(),
        )
        side = (image_size // 2 - 4) // 2  # conv1 keeps the size, conv2 removes 4
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            act(),
            nn.Linear(120, 84),
            act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


__all__ = ["ACTIVATIONS", "LeNet5"]
