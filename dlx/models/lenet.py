"""LeNet-5 (LeCun et al., 1998), in its modern form by default (ReLU, max pooling)."""

from __future__ import annotations

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, pool_layer


@MODELS.register("lenet5")
class LeNet5(nn.Module):
    """LeNet-5: conv5x5 6 - pool - conv5x5 16 - pool - FC 120 - FC 84 - FC classes (61,706 params on 28x28).

    width scales the channels and hidden units; depth scales the convs per stage (added ones keep the size).
    pool: max (the modern form), avg (closest to the paper's subsampling) or stochastic.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: float = 1.0,
        depth: float = 1.0,
        activation_name: str = "relu",
        pool: str = "max",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        convs_per_stage = scaled(1, depth)
        # LeNet-5 was drawn for 32x32 inputs; smaller images are padded in the first conv to the same 28x28 map.
        first_pad = max(0, (32 - image_size + 1) // 2)
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage, base in enumerate((6, 16)):
            c_out = scaled(base, width)
            for i in range(convs_per_stage):
                # Extra convs (depth > 1) keep the size: 5x5 with padding 2.
                pad = first_pad if (stage == 0 and i == 0) else (0 if i == 0 else 2)
                layers.append(nn.Conv2d(c_in, c_out, 5, padding=pad, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(activation(activation_name))
                c_in = c_out
            layers.append(pool_layer(pool, 2))
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, image_size, image_size)).numel()
        h1, h2 = scaled(120, width), scaled(84, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, h1),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(h1, h2),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
