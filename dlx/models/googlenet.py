"""GoogLeNet (Szegedy et al., 2015, "Going deeper with convolutions"): nine inception modules.

An inception module runs four branches side by side and concatenates them: a 1x1 conv; a 1x1
reduction then a 3x3 conv; a 1x1 reduction then a 5x5 conv; a 3x3 max pool then a 1x1 projection.
The 1x1 reductions are what make it affordable. The layout, channel table and auxiliary heads
follow torchvision's ``googlenet`` (which adds batch norm after every conv, as most reimplementations
do; ``batch_norm=False`` gives the paper's plain convs with biases). torchvision's third branch uses a
3x3 conv where the paper has 5x5 (a bug kept for its pretrained weights); here ``branch3_kernel``
defaults to the paper's 5 and ``branch3_kernel=3`` reproduces torchvision exactly: at ImageNet geometry,
without auxiliary heads, module names, shapes and the count (6,624,904) are torchvision's.

Auxiliary classifiers (``aux_logits=True``; after inception 4a and 4d as in the paper): in training mode
the model returns ``AuxOutput(logits, (aux1, aux2), aux_weight=0.3)`` (see ``dlx.models.layers``), and the
objective is ``loss(logits) + 0.3 * (loss(aux1) + loss(aux2))``; in eval mode it returns plain logits.
"""

from __future__ import annotations

import string

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import AuxOutput, activation, is_small, pool_layer

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per module: the paper's table 1, stage by stage.
STAGES: list[list[tuple[int, int, int, int, int, int]]] = [
    [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)],  # 3a, 3b
    [
        (192, 96, 208, 16, 48, 64),  # 4a
        (160, 112, 224, 24, 64, 64),  # 4b
        (128, 128, 256, 24, 64, 64),  # 4c
        (112, 144, 288, 32, 64, 64),  # 4d
        (256, 160, 320, 32, 128, 128),  # 4e
    ],
    [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)],  # 5a, 5b
]


class BasicConv2d(nn.Module):
    """conv -> [batch norm] -> activation (torchvision's block; its BN eps is 0.001)."""

    def __init__(self, c_in: int, c_out: int, *, batch_norm: bool, act: str, **conv: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=not batch_norm, **conv)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001) if batch_norm else nn.Identity()
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Inception(nn.Module):
    """The four-branch inception module; output channels = 1x1 + 3x3 + 5x5 + pool proj."""

    def __init__(
        self,
        c_in: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        branch3_kernel: int,
        batch_norm: bool,
        act: str,
        pool: str,
    ) -> None:
        super().__init__()
        kw = dict(batch_norm=batch_norm, act=act)
        self.branch1 = BasicConv2d(c_in, ch1x1, kernel_size=1, **kw)
        self.branch2 = nn.Sequential(
            BasicConv2d(c_in, ch3x3red, kernel_size=1, **kw),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1, **kw),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(c_in, ch5x5red, kernel_size=1, **kw),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=branch3_kernel, padding=branch3_kernel // 2, **kw),
        )
        self.branch4 = nn.Sequential(
            pool_layer(pool, 3, 1, padding=1, ceil_mode=True),
            BasicConv2d(c_in, pool_proj, kernel_size=1, **kw),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv 128, FC 1024, dropout 0.7, FC classes."""

    def __init__(self, c_in: int, num_classes: int, *, width: float, batch_norm: bool, act: str) -> None:
        super().__init__()
        c, h = scaled(128, width), scaled(1024, width)
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))  # the paper: 5x5/3 average pool, which is 4x4 at 14x14
        self.conv = BasicConv2d(c_in, c, kernel_size=1, batch_norm=batch_norm, act=act)
        self.fc1 = nn.Linear(c * 16, h)
        self.act = activation(act)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(h, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.avgpool(x)), 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


@MODELS.register("googlenet")
class GoogLeNet(nn.Module):
    """GoogLeNet / Inception v1: stem + 9 inception modules with 1x1 reductions; optional auxiliary classifiers.

    width: multiplies every conv's channels (stem and all branches) and the auxiliary heads' units.
    depth: multiplies the inception modules per stage (2, 5, 2); added modules repeat the channel table of the
    stage's last module, and with fewer modules a stage keeps its first ones.
    small_input (default: images <= 64 px): 3x3 stride-1 first conv and no stem pools, so 28/32 px inputs reach
    the inception stages at full size (28-14-7 across stages 3, 4, 5).
    aux_logits: add the two auxiliary heads; in training mode ``forward`` then returns an ``AuxOutput``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        image_size: int = 224,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.2,
        batch_norm: bool = True,
        activation_name: str = "relu",
        pool: str = "max",
        aux_logits: bool = False,
        aux_weight: float = 0.3,
        branch3_kernel: int = 5,
        small_input: bool | None = None,
    ) -> None:
        super().__init__()
        if branch3_kernel % 2 == 0:
            raise ValueError(f"branch3_kernel must be odd (3 or 5), got {branch3_kernel}")
        kw = dict(batch_norm=batch_norm, act=activation_name)
        small = is_small(image_size, small_input)
        c1, c3 = scaled(64, width), scaled(192, width)
        if small:
            self.conv1 = BasicConv2d(in_channels, c1, kernel_size=3, padding=1, **kw)
            self.maxpool1: nn.Module = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_channels, c1, kernel_size=7, stride=2, padding=3, **kw)
            self.maxpool1 = pool_layer(pool, 3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(c1, c1, kernel_size=1, **kw)
        self.conv3 = BasicConv2d(c1, c3, kernel_size=3, padding=1, **kw)
        self.maxpool2 = nn.Identity() if small else pool_layer(pool, 3, 2, ceil_mode=True)

        # Modules are named as torchvision names them (inception3a, ...), so the reference layout matches its
        # state dict; self.stages keeps their order for forward.
        self.stages: list[list[str]] = []
        c = c3
        for s, table in enumerate(STAGES):
            n = scaled(len(table), depth)
            names = []
            for i in range(n):
                row = table[min(i, len(table) - 1)]
                module = Inception(c, *(scaled(v, width) for v in row), branch3_kernel=branch3_kernel, pool=pool, **kw)
                names.append(f"inception{s + 3}{string.ascii_lowercase[i]}")
                self.add_module(names[-1], module)
                c = module.out_channels
                if s == 0 and i == n - 1:
                    self.maxpool3 = pool_layer(pool, 3, 2, ceil_mode=True)
                if s == 1 and i == n - 1:
                    self.maxpool4 = pool_layer(pool, 2, 2, ceil_mode=True)
            self.stages.append(names)

        # The paper attaches the heads after 4a and 4d (the first and the second-to-last module of stage 4).
        stage4 = self.stages[1]
        self.aux_after = (stage4[0], stage4[max(0, len(stage4) - 2)]) if aux_logits else ()
        self.aux_weight = aux_weight
        if aux_logits:
            ins = [getattr(self, name).out_channels for name in self.aux_after]
            self.aux1 = InceptionAux(ins[0], num_classes, width=width, **kw)
            self.aux2 = InceptionAux(ins[1], num_classes, width=width, **kw)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutput:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        want_aux = self.training and bool(self.aux_after)
        aux: list[torch.Tensor] = []
        for s, names in enumerate(self.stages):
            for name in names:
                x = getattr(self, name)(x)
                if want_aux:
                    # Usually 4a and 4d; at depth < 0.4 stage 4 has one module, which then feeds both heads.
                    aux += [
                        head(x)
                        for head, after in zip((self.aux1, self.aux2), self.aux_after, strict=True)
                        if after == name
                    ]
            if s == 0:
                x = self.maxpool3(x)
            elif s == 1:
                x = self.maxpool4(x)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if want_aux:
            return AuxOutput(logits, (aux[0], aux[1]), self.aux_weight)
        return logits
