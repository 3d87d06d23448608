"""Densely connected networks (Huang et al., 2017), DenseNet-BC, built on torchvision's ``DenseNet``.

Inside a dense block every layer sees the concatenation of all earlier feature maps and adds ``k``
(the growth rate) new ones: BN-ReLU-Conv1x1 (4k, the "bottleneck") then BN-ReLU-Conv3x3 (k).
Transition layers between blocks halve the channels ("compression" 0.5) with BN-ReLU-Conv1x1 and
halve the size with 2x2 average pooling. Batch norm is part of every layer's composite function,
so this family has no ``batch_norm`` switch.

torchvision builds the network; dlx swaps in the input channels, a small-image stem, the activation
and the transition pooling. At ImageNet geometry (3x224x224, 1000 classes, width=1, depth=1)
``densenet121`` is torchvision's: 7,978,856 parameters, same names, its state dicts load.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, is_small, pool_layer, replace_activations

# torchvision is imported when a DenseNet is built, not when dlx.models is: importing it costs ~2.5 s of every
# run's startup (it loads all of torchvision's models, datasets and transforms).


@functools.cache
def _classes() -> dict[str, type[nn.Module]]:
    """The DenseNet classes, made on first use (they subclass torchvision's DenseNet)."""
    import torchvision

    class DenseNet(torchvision.models.DenseNet):
        """DenseNet-BC (subclasses set growth rate, layers per block and stem width); see the module docstring.

        width: multiplies the growth rate k and the stem's channels (so every layer's and transition's width).
        depth: multiplies the number of layers in each dense block.
        dropout: after every dense layer, as in the paper (which used 0.2 on CIFAR without augmentation).
        pool: the transitions' pooling (the paper: avg); the ImageNet stem keeps its 3x3/2 max pool.
        small_input (default: images <= 64 px): 3x3 stride-1 stem conv and no stem pool (the paper's CIFAR stem).
        """

        growth: ClassVar[int] = 32
        layers_per_block: ClassVar[tuple[int, ...]] = (6, 12, 24, 16)
        init_features: ClassVar[int] = 64

        def __init__(
            self,
            *,
            in_channels: int = 3,
            num_classes: int = 1000,
            image_size: int = 224,
            width: float = 1.0,
            depth: float = 1.0,
            dropout: float = 0.0,
            activation_name: str = "relu",
            pool: str = "avg",
            bn_size: int = 4,
            memory_efficient: bool = False,
            small_input: bool | None = None,
        ) -> None:
            stem = scaled(self.init_features, width)
            super().__init__(
                growth_rate=scaled(self.growth, width),
                block_config=tuple(scaled(n, depth) for n in self.layers_per_block),  # type: ignore[arg-type]
                num_init_features=stem,
                bn_size=bn_size,
                drop_rate=dropout,
                num_classes=num_classes,
                memory_efficient=memory_efficient,
            )
            f = self.features
            # Assigning to an existing name keeps the module's place in the Sequential (and the state dict's keys).
            if is_small(image_size, small_input):
                f.conv0 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
                f.pool0 = nn.Identity()
            else:
                f.conv0 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(f.conv0.weight)  # torchvision's init for its own conv0
            for name, module in f.named_children():
                if name.startswith("transition"):
                    module.pool = pool_layer(pool, 2, 2)
            replace_activations(self, activation_name)
            # torchvision's forward applies F.relu after the last norm; a module honours activation_name there too.
            self.final_act = activation(activation_name)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.final_act(self.features(x))
            out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, (1, 1)), 1)
            return self.classifier(out)

    class DenseNet121(DenseNet):
        growth = 32
        layers_per_block = (6, 12, 24, 16)
        init_features = 64

    class DenseNetCifar(DenseNet):
        growth = 12
        layers_per_block = (16, 16, 16)
        init_features = 24

    for cls in (DenseNet, DenseNet121, DenseNetCifar):  # importable by name: torch.save(model) pickles them
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls
    return {"densenet121": DenseNet121, "densenet_cifar": DenseNetCifar}


def __getattr__(name: str) -> Any:
    """``dlx.models.densenet.DenseNet121`` (and ``DenseNet``, ``DenseNetCifar``) made on first access."""
    if name in ("DenseNet", "DenseNet121", "DenseNetCifar"):
        _classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make(name: str, kwargs: dict[str, Any]) -> nn.Module:
    return _classes()[name](**kwargs)


@MODELS.register("densenet121")
def densenet121(
    *,
    in_channels: int = 3,
    num_classes: int = 1000,
    image_size: int = 224,
    width: float = 1.0,
    depth: float = 1.0,
    dropout: float = 0.0,
    activation_name: str = "relu",
    pool: str = "avg",
    bn_size: int = 4,
    memory_efficient: bool = False,
    small_input: bool | None = None,
) -> nn.Module:
    """DenseNet-121 (BC, k=32): blocks of 6, 12, 24, 16 layers; 8.0M params at ImageNet geometry (torchvision's).

    width multiplies the growth rate and stem; depth multiplies the layers per block. See ``DenseNet``.
    """
    return _make("densenet121", dict(locals()))


@MODELS.register("densenet_cifar")
def densenet_cifar(
    *,
    in_channels: int = 3,
    num_classes: int = 1000,
    image_size: int = 224,
    width: float = 1.0,
    depth: float = 1.0,
    dropout: float = 0.0,
    activation_name: str = "relu",
    pool: str = "avg",
    bn_size: int = 4,
    memory_efficient: bool = False,
    small_input: bool | None = None,
) -> nn.Module:
    """DenseNet-BC-100 (k=12) for CIFAR: 3 blocks of 16 layers, 24-channel 3x3 stem; 0.80M params (paper: 0.8M).

    width multiplies the growth rate and stem; depth multiplies the layers per block. See ``DenseNet``.
    """
    return _make("densenet_cifar", dict(locals()))
