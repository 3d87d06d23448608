"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012), as torchvision defines it, with a stem for small images.

What the book lists as AlexNet's novelties are all here: ReLU activations, overlapping max pooling
(3x3 windows, stride 2), dropout in the fully connected layers, and (optionally, off by default as
in torchvision and most later work) local response normalization after the first two convs.

At ImageNet geometry (3x224x224, 1000 classes, width=1, depth=1, lrn/batch_norm off) the module and
parameter names are torchvision's (``features.N``, ``classifier.N``): 61,100,840 parameters, and
torchvision's AlexNet state dict loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, is_small, pool_layer

# (out channels, kernel, stride, padding) of each conv, grouped by the pooling layer that ends the group.
IMAGENET_CONVS = [[(64, 11, 4, 2)], [(192, 5, 1, 2)], [(384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)]]
# Small images: the 11x11/4 conv would throw away most of a 28x28 digit; a 5x5/1 conv keeps the large-kernel idea.
SMALL_CONVS = [[(64, 5, 1, 2)], [(192, 5, 1, 2)], [(384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)]]


@MODELS.register("alexnet")
class AlexNet(nn.Module):
    """AlexNet: 5 convs (ReLU, overlapping max pooling, optional LRN) + 2 dropout FC layers; torchvision's layout.

    width: multiplies every conv's channels and the FC hidden units (4096).
    depth: multiplies the convs in each of the three conv groups (1, 1, 3); an added conv is a 3x3 conv at the
    group's output width (and in the third group the list 384, 256, 256 is cut or extended with 256s).
    small_input (default: images <= 64 px): 5x5 stride-1 first conv, 3x3/2 pooling padded by 1, and a 2x2 pooled
    grid before the classifier instead of 6x6 (28 and 32 px both reach 4x4 after the third pool).
    """

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
        lrn: bool = False,
        hidden: int = 4096,
        small_input: bool | None = None,
    ) -> None:
        super().__init__()
        small = is_small(image_size, small_input)
        groups = SMALL_CONVS if small else IMAGENET_CONVS
        layers: list[nn.Module] = []
        c_in = in_channels
        for g, convs in enumerate(groups):
            n = scaled(len(convs), depth)
            for i in range(n):
                # Added convs repeat the last conv of the group as a size-preserving 3x3 (a 5x5/11x11 repeat
                # would add far more than "one more layer" of parameters).
                c, k, s, p = convs[i] if i < len(convs) else (convs[-1][0], 3, 1, 1)
                c_out = scaled(c, width)
                layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(activation(activation_name))
                if lrn and g < 2 and i == 0:
                    # The paper's constants (section 3.3): k=2, n=5, alpha=1e-4, beta=0.75, after the ReLU.
                    layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
                c_in = c_out
            layers.append(pool_layer(pool, 3, 2, padding=1 if small else 0))
        self.features = nn.Sequential(*layers)
        grid = 2 if small else 6
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        h = scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c_in * grid * grid, h),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(h, h),
            activation(activation_name),
            nn.Linear(h, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
