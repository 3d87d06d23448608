"""VGG-11/13/16/19 (Simonyan & Zisserman, 2015), configurations A, B, D and E, with or without batch norm.

Five stages of 3x3 convs (stride 1, padding 1) at 64, 128, 256, 512, 512 channels, each ended by a
2x2 max pool, then three fully connected layers with dropout. At ImageNet geometry (3x224x224, 1000
classes, width=1, depth=1) module and parameter names are torchvision's ``vgg11`` ... ``vgg19_bn``
(``features.N``, ``classifier.N``), so the parameter counts agree (vgg16: 138,357,544) and torchvision's
state dicts load unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, is_small, pool_layer

STAGE_CHANNELS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
    """VGG: stages of 3x3 convs, each ended by a pool, and a 3-layer dropout FC head (subclasses set the depth).

    width: multiplies every conv's channels and the FC hidden units.
    depth: multiplies the number of convs in each stage (vgg16: 2, 2, 3, 3, 3).
    small_input (default: images <= 64 px): a stage whose input is already 1 px skips its pool (28 px: 28-14-7-3-1),
    the head sees a 1x1 pooled map and has 512 hidden units instead of 7x7 and 4096 (the usual CIFAR VGG).
    """

    convs_per_stage: ClassVar[tuple[int, ...]] = (2, 2, 3, 3, 3)

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        image_size: int = 224,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.5,
        batch_norm: bool = False,
        activation_name: str = "relu",
        pool: str = "max",
        small_input: bool | None = None,
    ) -> None:
        super().__init__()
        small = is_small(image_size, small_input)
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for n, base in zip(self.convs_per_stage, STAGE_CHANNELS, strict=True):
            c_out = scaled(base, width)
            for _ in range(scaled(n, depth)):
                layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))  # torchvision keeps the bias even with BN
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(activation(activation_name))
                c_in = c_out
            if size >= 2:  # five halvings need 32 px; below that the last stages keep their 1 px map
                layers.append(pool_layer(pool, 2, 2))
                size //= 2
        self.features = nn.Sequential(*layers)
        grid, hidden = (1, 512) if small else (7, 4096)
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        h = scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * grid * grid, h),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(h, h),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(h, num_classes),
        )
        # torchvision's conv initialization: a plain 16-19 layer net without batch norm does not learn from
        # PyTorch's default init (its activations shrink layer by layer); He init (fan_out) keeps them at scale.
        # The FC layers keep PyTorch's default: torchvision's N(0, 0.01) makes the head's output and the
        # gradient reaching the convs ~100x smaller, and plain SGD then barely moves for the first hundreds of steps.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@MODELS.register("vgg11")
class VGG11(VGG):
    """VGG-11 (configuration A): 1, 1, 2, 2, 2 convs per stage; 132.9M params at ImageNet geometry.

    width multiplies channels and FC units; depth multiplies the convs per stage. See ``VGG``.
    """

    convs_per_stage = (1, 1, 2, 2, 2)


@MODELS.register("vgg13")
class VGG13(VGG):
    """VGG-13 (configuration B): 2, 2, 2, 2, 2 convs per stage; 133.0M params at ImageNet geometry.

    width multiplies channels and FC units; depth multiplies the convs per stage. See ``VGG``.
    """

    convs_per_stage = (2, 2, 2, 2, 2)


@MODELS.register("vgg16")
class VGG16(VGG):
    """VGG-16 (configuration D): 2, 2, 3, 3, 3 convs per stage; 138.4M params at ImageNet geometry.

    width multiplies channels and FC units; depth multiplies the convs per stage. See ``VGG``.
    """

    convs_per_stage = (2, 2, 3, 3, 3)


@MODELS.register("vgg19")
class VGG19(VGG):
    """VGG-19 (configuration E): 2, 2, 4, 4, 4 convs per stage; 143.7M params at ImageNet geometry.

    width multiplies channels and FC units; depth multiplies the convs per stage. See ``VGG``.
    """

    convs_per_stage = (2, 2, 4, 4, 4)
