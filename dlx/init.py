"""Weight initializers by name (the book's section 6.2: std 0.01, Xavier, He).

Each entry fills one weight tensor in place; ``initialize`` applies it to every conv and
linear weight of a model and sets their biases to a constant. Batch-norm layers keep
weight 1, bias 0. ``default`` keeps PyTorch's own initialization. A layer marked ``ZERO_INIT_ATTR`` (what
silences a residual branch at the start: its last batch norm, or its last conv without one) stays zero.
"""

from __future__ import annotations

import torch
from torch import nn

from dlx.models.layers import ZERO_INIT_ATTR
from dlx.registry import Registry

INITIALIZERS: Registry = Registry("initializer")


@INITIALIZERS.register("default")
def default(tensor: torch.Tensor) -> None:
    """PyTorch's default (Kaiming-uniform with a=sqrt(5)); nothing is changed."""


@INITIALIZERS.register("uniform")
def uniform(tensor: torch.Tensor, a: float = -0.05, b: float = 0.05) -> None:
    """U(a, b)."""
    nn.init.uniform_(tensor, a, b)


@INITIALIZERS.register("normal")
def normal(tensor: torch.Tensor, std: float = 0.01, mean: float = 0.0) -> None:
    """N(mean, std^2); the book's first try is std 0.01."""
    nn.init.normal_(tensor, mean, std)


@INITIALIZERS.register("xavier_uniform")
def xavier_uniform(tensor: torch.Tensor, gain: float = 1.0) -> None:
    """Glorot/Xavier uniform: suits sigmoid and tanh."""
    nn.init.xavier_uniform_(tensor, gain=gain)


@INITIALIZERS.register("xavier_normal")
def xavier_normal(tensor: torch.Tensor, gain: float = 1.0) -> None:
    """Glorot/Xavier normal: std sqrt(2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(tensor, gain=gain)


@INITIALIZERS.register("he_uniform")
def he_uniform(tensor: torch.Tensor, mode: str = "fan_in", nonlinearity: str = "relu") -> None:
    """He/Kaiming uniform: suits ReLU."""
    nn.init.kaiming_uniform_(tensor, mode=mode, nonlinearity=nonlinearity)


@INITIALIZERS.register("he_normal")
def he_normal(tensor: torch.Tensor, mode: str = "fan_in", nonlinearity: str = "relu") -> None:
    """He/Kaiming normal: std sqrt(2 / fan_in), the book's choice for ReLU nets."""
    nn.init.kaiming_normal_(tensor, mode=mode, nonlinearity=nonlinearity)


@INITIALIZERS.register("orthogonal")
def orthogonal(tensor: torch.Tensor, gain: float = 1.0) -> None:
    """(Semi-)orthogonal matrix (Saxe et al.)."""
    nn.init.orthogonal_(tensor, gain=gain)


WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


@torch.no_grad()
def initialize(model: nn.Module, name: str, bias: float = 0.0, args: dict | None = None) -> int:
    """Initialize every conv/linear layer of ``model``; returns how many layers were touched."""
    if name == "default":
        return 0
    fn = INITIALIZERS.get(name)
    count = 0
    for module in model.modules():
        # Residual branches may end in a zero-initialized layer (ZERO_INIT_ATTR): keep it at zero, so the block
        # starts as the identity.
        zero = getattr(module, ZERO_INIT_ATTR, False)
        if isinstance(module, WEIGHTED):
            if zero:
                nn.init.zeros_(module.weight)
            else:
                fn(module.weight, **(args or {}))
            if module.bias is not None:
                nn.init.constant_(module.bias, 0.0 if zero else bias)
            count += 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            if zero:
                nn.init.zeros_(module.weight)
            else:
                nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return count
