"""Residual networks (He, Zhang, Ren & Sun, 2016): ImageNet ResNet-18/34/50 and CIFAR ResNet-20 ... 110.

ImageNet family: torchvision's architecture (ResNet v1.5: the stride of a bottleneck sits on its 3x3
conv; projection shortcuts only where the shape changes, "option B"). Module and parameter names are
torchvision's, so at ImageNet geometry (3x224x224, 1000 classes, width=1, depth=1) the parameter counts
agree (resnet18: 11,689,512; resnet34: 21,797,672; resnet50: 25,557,032) and torchvision's state dicts load.
For small images the stem becomes a 3x3 stride-1 conv without the max pool (the usual CIFAR adaptation).

CIFAR family (section 4.2 of the paper): a 3x3 conv, then 3 stages of n basic blocks at 16, 32, 64 channels
on 32, 16, 8 px maps, global average pooling and one FC layer; depth 6n + 2. Shortcuts are "option A" as in
the paper: identity, subsampled by 2 and zero-padded with new channels where the shape changes (no
parameters), so the counts are the paper's: 0.27M (20), 0.46M (32), 0.66M (44), 0.85M (56), 1.7M (110).

Both start every residual branch at zero by default (``zero_init_residual``; Goyal et al., 2017): the last
batch norm of each branch has gamma = 0, so each block is the identity at initialization and even the
110-layer net trains from the first step without the paper's warm-up at learning rate 0.01. The price: the
branches stay nearly silent for the first hundreds of steps (Adam moves gamma by ~lr per step), so in a short
run a shallow net (resnet20) learns faster with ``zero_init_residual=False``, torchvision's default.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, is_small, pool_layer, zero_init_


def norm2d(channels: int, batch_norm: bool) -> nn.Module:
    # nn.Identity keeps the module name (bn1, ...), so the state dict layout does not depend on the switch.
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or projected) shortcut: out = act(branch(x) + shortcut(x))."""

    expansion = 1

    def __init__(
        self, c_in: int, planes: int, stride: int, downsample: nn.Module | None, *, batch_norm: bool, act: str
    ) -> None:
        super().__init__()
        # A conv followed by batch norm needs no bias (the norm's beta replaces it); without the norm it does.
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=not batch_norm)
        self.bn1 = norm2d(planes, batch_norm)
        self.relu = activation(act)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=not batch_norm)
        self.bn2 = norm2d(planes, batch_norm)
        self.downsample = downsample

    def last_layers(self) -> tuple[nn.Module, nn.Module]:
        """The branch's last conv and norm (the ones zero-initialized to start the block as the identity)."""
        return self.conv2, self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, plus shortcut; torchvision's v1.5 bottleneck."""

    expansion = 4

    def __init__(
        self, c_in: int, planes: int, stride: int, downsample: nn.Module | None, *, batch_norm: bool, act: str
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=not batch_norm)
        self.bn1 = norm2d(planes, batch_norm)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=not batch_norm)
        self.bn2 = norm2d(planes, batch_norm)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=not batch_norm)
        self.bn3 = norm2d(planes * self.expansion, batch_norm)
        self.relu = activation(act)
        self.downsample = downsample

    def last_layers(self) -> tuple[nn.Module, nn.Module]:
        return self.conv3, self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and append ``extra`` all-zero channels; no parameters."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


def make_stage(
    block: type[BasicBlock | Bottleneck],
    c_in: int,
    planes: int,
    blocks: int,
    stride: int,
    *,
    shortcut: str,
    batch_norm: bool,
    act: str,
) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks; the first one changes the stride/width. Returns the stage and its out channels."""
    c_out = planes * block.expansion
    downsample: nn.Module | None = None
    if stride != 1 or c_in != c_out:
        if shortcut == "A":
            downsample = PadShortcut(stride, c_out - c_in)
        elif shortcut == "B":
            downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=not batch_norm), norm2d(c_out, batch_norm)
            )
        else:
            raise ValueError(f"shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), got {shortcut!r}")
    layers = [block(c_in, planes, stride, downsample, batch_norm=batch_norm, act=act)]
    layers += [block(c_out, planes, 1, None, batch_norm=batch_norm, act=act) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), c_out


def init_resnet(model: nn.Module, zero_init_residual: bool, batch_norm: bool) -> None:
    """torchvision's ResNet initialization; optionally every residual branch starts at zero."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                conv, bn = m.last_layers()
                # No norm to silence the branch: zero its last conv instead (as Fixup does). Either is marked.
                zero_init_(bn if batch_norm else conv)


class ResNet(nn.Module):
    """ImageNet-style ResNet (subclasses set the block type and blocks per stage); see the module docstring.

    width: multiplies the channels of the stem and of all four stages (64, 128, 256, 512; x4 after bottlenecks).
    depth: multiplies the number of blocks in each stage (resnet34/50: 3, 4, 6, 3).
    small_input (default: images <= 64 px): 3x3 stride-1 stem conv and no stem max pool (``pool`` picks that pool).
    """

    block: ClassVar[type[BasicBlock | Bottleneck]] = BasicBlock
    blocks_per_stage: ClassVar[tuple[int, ...]] = (2, 2, 2, 2)

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        image_size: int = 224,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.0,
        batch_norm: bool = True,
        activation_name: str = "relu",
        pool: str = "max",
        zero_init_residual: bool = True,
        small_input: bool | None = None,
    ) -> None:
        super().__init__()
        stem = scaled(64, width)
        if is_small(image_size, small_input):
            self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=not batch_norm)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=not batch_norm)
            self.maxpool = pool_layer(pool, 3, 2, padding=1)
        self.bn1 = norm2d(stem, batch_norm)
        self.relu = activation(activation_name)
        c = stem
        for i, (planes, n, stride) in enumerate(
            zip((64, 128, 256, 512), self.blocks_per_stage, (1, 2, 2, 2), strict=True)
        ):
            stage, c = make_stage(
                self.block,
                c,
                scaled(planes, width),
                scaled(n, depth),
                stride,
                shortcut="B",
                batch_norm=batch_norm,
                act=activation_name,
            )
            self.add_module(f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        init_resnet(self, zero_init_residual, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@MODELS.register("resnet18")
class ResNet18(ResNet):
    """ResNet-18: basic blocks, 2, 2, 2, 2 per stage; 11.7M params at ImageNet geometry (torchvision's layout).

    width multiplies all channels; depth multiplies the blocks per stage. See ``ResNet``.
    """

    block = BasicBlock
    blocks_per_stage = (2, 2, 2, 2)


@MODELS.register("resnet34")
class ResNet34(ResNet):
    """ResNet-34: basic blocks, 3, 4, 6, 3 per stage; 21.8M params at ImageNet geometry (torchvision's layout).

    width multiplies all channels; depth multiplies the blocks per stage. See ``ResNet``.
    """

    block = BasicBlock
    blocks_per_stage = (3, 4, 6, 3)


@MODELS.register("resnet50")
class ResNet50(ResNet):
    """ResNet-50: bottleneck blocks, 3, 4, 6, 3 per stage; 25.6M params at ImageNet geometry (torchvision's layout).

    width multiplies all channels (bottleneck widths too); depth multiplies the blocks per stage. See ``ResNet``.
    """

    block = Bottleneck
    blocks_per_stage = (3, 4, 6, 3)


class CifarResNet(nn.Module):
    """CIFAR-style ResNet of depth 6n+2 (subclasses set n); see the module docstring.

    width: multiplies the channels of the stem and the three stages (16, 32, 64).
    depth: multiplies n, the basic blocks per stage (resnet56 at depth 2 has n = 18: a ResNet-110).
    shortcut: "A" (the paper's CIFAR choice, zero-padded identity) or "B" (1x1 projection where the shape changes).
    """

    n: ClassVar[int] = 3

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.0,
        batch_norm: bool = True,
        activation_name: str = "relu",
        shortcut: str = "A",
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        # image_size is not needed: all convs keep the size and the global pool takes any map (28 px: 28-14-7).
        c = scaled(16, width)
        self.conv1 = nn.Conv2d(in_channels, c, 3, 1, 1, bias=not batch_norm)
        self.bn1 = norm2d(c, batch_norm)
        self.relu = activation(activation_name)
        n = scaled(self.n, depth)
        for i, (planes, stride) in enumerate(zip((16, 32, 64), (1, 2, 2), strict=True)):
            stage, c = make_stage(
                BasicBlock,
                c,
                scaled(planes, width),
                n,
                stride,
                shortcut=shortcut,
                batch_norm=batch_norm,
                act=activation_name,
            )
            self.add_module(f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        init_resnet(self, zero_init_residual, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@MODELS.register("resnet20")
class ResNet20(CifarResNet):
    """CIFAR ResNet-20: 3 stages x 3 basic blocks at 16/32/64 channels; 0.27M params (He et al., table 6).

    width multiplies the channels; depth multiplies the blocks per stage. See ``CifarResNet``.
    """

    n = 3


@MODELS.register("resnet32")
class ResNet32(CifarResNet):
    """CIFAR ResNet-32: 3 stages x 5 basic blocks at 16/32/64 channels; 0.46M params (He et al., table 6).

    width multiplies the channels; depth multiplies the blocks per stage. See ``CifarResNet``.
    """

    n = 5


@MODELS.register("resnet44")
class ResNet44(CifarResNet):
    """CIFAR ResNet-44: 3 stages x 7 basic blocks at 16/32/64 channels; 0.66M params (He et al., table 6).

    width multiplies the channels; depth multiplies the blocks per stage. See ``CifarResNet``.
    """

    n = 7


@MODELS.register("resnet56")
class ResNet56(CifarResNet):
    """CIFAR ResNet-56: 3 stages x 9 basic blocks at 16/32/64 channels; 0.85M params (He et al., table 6).

    width multiplies the channels; depth multiplies the blocks per stage. See ``CifarResNet``.
    """

    n = 9


@MODELS.register("resnet110")
class ResNet110(CifarResNet):
    """CIFAR ResNet-110: 3 stages x 18 basic blocks at 16/32/64 channels; 1.7M params (He et al., table 6).

    width multiplies the channels; depth multiplies the blocks per stage. See ``CifarResNet``.
    """

    n = 18
