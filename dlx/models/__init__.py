"""The model zoo: importing this package registers every family in ``MODELS`` (see ``dlx.models._registry``).

Model files import the registry module, never this package, so there is no import cycle.
"""

from __future__ import annotations

from dlx.models import (  # noqa: F401 - importing a family registers its models
    alexnet,
    deep_cnn,
    densenet,
    dpn,
    googlenet,
    lenet,
    mlp,
    resnet,
    sequential,
    vgg,
)
from dlx.models._registry import MODELS, RESERVED_MODEL_ARGS, accepts, build_model, scaled

__all__ = ["MODELS", "RESERVED_MODEL_ARGS", "accepts", "build_model", "scaled"]
