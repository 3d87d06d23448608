"""The model registry. Model files import it; it imports no model file. Every entry is a factory called
with keyword arguments:

in_channels, num_classes, image_size   -- from the dataset
width, depth                           -- multipliers from the experiment (1.0 = the reference network)
dropout, batch_norm                    -- only if the factory accepts them (regularization section)
**model.args                           -- the factory's own keywords, checked against its signature
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from dlx.errors import DlxError, first_line
from dlx.registry import Registry

MODELS: Registry = Registry("model")

# Keywords dlx passes itself; a user may not put them in model.args.
RESERVED_MODEL_ARGS = {"in_channels", "num_classes", "image_size", "width", "depth", "dropout", "batch_norm"}


def accepts(fn: Any, keyword: str) -> bool:
    params = inspect.signature(fn).parameters
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: float = 1.0,
    depth: float = 1.0,
    dropout: float | None = None,
    batch_norm: bool | None = None,
    args: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a registered model; impossible combinations become a one-line DlxError."""
    factory = MODELS.get(name)
    kwargs: dict[str, Any] = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    kwargs.update(width=width, depth=depth, **(args or {}))
    if dropout is not None:
        kwargs["dropout"] = dropout
    if batch_norm is not None:
        kwargs["batch_norm"] = batch_norm
    try:
        return factory(**kwargs)
    except (ValueError, RuntimeError) as e:
        raise DlxError(
            f"model {name!r} cannot be built with width={width}, depth={depth}, "
            f"input {in_channels}x{image_size}x{image_size}: {first_line(e)}"
        ) from None


def scaled(n: int, multiplier: float) -> int:
    """A channel/unit/layer count times a multiplier, never below 1."""
    return max(1, round(n * multiplier))
