"""Pretrained weights torchvision has for dlx's model families, and how its checkpoints map onto them."""

from __future__ import annotations

import re
from typing import Any

# Registered model -> torchvision builder with pretrained weights; the dlx families keep torchvision's module
# names (see each family's docstring), so torchvision's state dicts load by name. VGG with batch norm is
# torchvision's ``vggNN_bn``.
TORCHVISION = {
    "alexnet": "alexnet",
    "googlenet": "googlenet",
    "densenet121": "densenet121",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "vgg11": "vgg11",
    "vgg13": "vgg13",
    "vgg16": "vgg16",
    "vgg19": "vgg19",
}
_BN_VARIANTS = {"vgg11", "vgg13", "vgg16", "vgg19"}
# torchvision's DenseNet checkpoints predate its module names ("norm.1" for "norm1"); torchvision renames the
# keys when it loads them, and so does dlx (the pattern is torchvision's, models/densenet.py).
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def torchvision_arch(model_name: str, batch_norm: bool | None) -> str | None:
    arch = TORCHVISION.get(model_name)
    if arch in _BN_VARIANTS and batch_norm:
        arch += "_bn"
    return arch


def resolve_weights(arch: str, spec: str) -> Any:
    """``DEFAULT``, ``IMAGENET1K_V1`` or ``ResNet18_Weights.IMAGENET1K_V1`` -> torchvision's weights enum member."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    cls_name, _, member = spec.rpartition(".")
    choices = ["DEFAULT", *(f"{enum.__name__}.{w.name}" for w in enum)]
    if (cls_name and cls_name != enum.__name__) or member not in enum.__members__:
        raise ValueError(f"got {spec!r}; {arch} has: {', '.join(choices)}")
    return enum[member]


def rename_torchvision_keys(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's old DenseNet key names (``norm.1``) -> its module names (``norm1``); other keys unchanged."""
    renamed = {}
    for key, value in state.items():
        old = _DENSENET_OLD_KEY.match(key)
        renamed[old.group(1) + old.group(2) if old else key] = value
    return renamed
