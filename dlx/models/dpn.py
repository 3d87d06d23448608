"""Dual path networks (Chen et al., 2017): a ResNet path and a DenseNet path sharing one bottleneck.

Each block's feature map has two parts: ``res`` channels that the block *adds* to (a residual path,
which re-uses features) and a growing set of channels that the block *appends* to (a densely
connected path, which explores new ones). One bottleneck computes both: pre-activation BN-act-conv
1x1 -> grouped 3x3 (ResNeXt, 32 groups) -> 1x1 to ``res + inc`` channels; the first ``res`` are added
to the residual part, the last ``inc`` are concatenated to the dense part. The first block of a stage
projects the input (1x1, carrying the stride) into a fresh residual part and a dense part of ``2 inc``.

The reference configuration is DPN-26, the small DPN for 32x32 images used in common CIFAR code
(four stages of 2 blocks; bottlenecks 96/192/384/768, residual 256/512/1024/2048, increments 16/32/24/128),
in the pre-activation form of the paper's own code.
"""

from __future__ import annotations

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, is_small, pool_layer

GROUPS = 32
BOTTLENECK = (96, 192, 384, 768)  # grouped 3x3 width; 32 groups of 3, 6, 12, 24 channels
RESIDUAL = (256, 512, 1024, 2048)
INCREMENT = (16, 32, 24, 128)
BLOCKS = (2, 2, 2, 2)


class BnActConv(nn.Sequential):
    """Pre-activation conv: batch norm -> activation -> conv (no bias: the next block's norm provides one)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, *, act: str) -> None:
        super().__init__(
            nn.BatchNorm2d(c_in),
            activation(act),
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        )


class DualPathBlock(nn.Module):
    """One dual-path bottleneck on a tensor whose first ``res`` channels are the residual path, the rest dense."""

    def __init__(
        self, c_in: int, bottleneck: int, res: int, inc: int, *, groups: int, stride: int, project: bool, act: str
    ) -> None:
        super().__init__()
        self.res = res
        # The stage's first block starts new paths (new width and/or size): a projection gives the residual part
        # and an initial dense part of 2 * inc channels, as in the paper's code.
        self.proj = BnActConv(c_in, res + 2 * inc, 1, stride, act=act) if project else None
        self.conv1 = BnActConv(c_in, bottleneck, 1, act=act)
        self.conv2 = BnActConv(bottleneck, bottleneck, 3, stride, groups, act=act)
        self.conv3 = BnActConv(bottleneck, res + inc, 1, act=act)
        self.out_channels = (res + 2 * inc if project else c_in) + inc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = x if self.proj is None else self.proj(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        r = self.res
        return torch.cat([paths[:, :r] + out[:, :r], paths[:, r:], out[:, r:]], 1)


@MODELS.register("dpn")
class DPN(nn.Module):
    """Small dual path network (DPN-26: ResNeXt residual path + DenseNet path, 4 stages x 2 blocks) for small images.

    width: multiplies the residual widths, the dense increments, the stem, and the channels per group of the
    grouped 3x3 convs (the cardinality stays 32, ResNeXt's convention: width 0.5 has 32 groups of 1.5 -> 2).
    depth: multiplies the blocks per stage (2, 2, 2, 2).
    small_input (default: images <= 64 px): 3x3 stride-1 stem without pooling (28 px: 28-14-7-4 over the stages);
    otherwise a 7x7/2 conv and a 3x3/2 pool (``pool`` picks it) as in the ImageNet DPNs.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.0,
        activation_name: str = "relu",
        pool: str = "max",
        small_input: bool | None = None,
    ) -> None:
        super().__init__()
        stem = scaled(64, width)
        layers: list[nn.Module]
        if is_small(image_size, small_input):
            layers = [nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)]
        else:
            layers = [nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)]
        layers += [nn.BatchNorm2d(stem), activation(activation_name)]
        if not is_small(image_size, small_input):
            layers.append(pool_layer(pool, 3, 2, padding=1))
        c = stem
        for i, (bneck, res, inc, n) in enumerate(zip(BOTTLENECK, RESIDUAL, INCREMENT, BLOCKS, strict=True)):
            bottleneck = GROUPS * scaled(bneck // GROUPS, width)
            for j in range(scaled(n, depth)):
                block = DualPathBlock(
                    c,
                    bottleneck,
                    scaled(res, width),
                    scaled(inc, width),
                    groups=GROUPS,
                    stride=(1 if i == 0 else 2) if j == 0 else 1,
                    project=j == 0,
                    act=activation_name,
                )
                layers.append(block)
                c = block.out_channels
        # Pre-activation blocks end in a conv: normalize and activate the joined paths before pooling.
        layers += [nn.BatchNorm2d(c), activation(activation_name)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(self.features(x)), 1)))
