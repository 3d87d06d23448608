"""A user's own model for the class_path tests: ``model: {class_path: "tests.custom_net:TinyNet"}``."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv 3x3 -> relu -> max pool 4 -> linear hidden -> relu -> linear classes."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, hidden: int = 32, channels: int = 8
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        flat = channels * (image_size // 4) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class NeedsDepth(nn.Module):
    """A class with a required argument of its own (``blocks``), for the init_args check."""

    def __init__(self, blocks: int, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(blocks, num_classes)


class WrongOutput(nn.Module):
    """Returns feature maps, not class scores: dlx must say so before training."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
