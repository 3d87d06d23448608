"""A multi-layer perceptron (the book's MultiLayerNet / MultiLayerNetExtend)."""

from __future__ import annotations

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation


@MODELS.register("mlp")
class MLP(nn.Module):
    """Fully connected net: hidden layers of ``hidden`` units (width scales units, depth scales layer count)."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: float = 1.0,
        depth: float = 1.0,
        hidden: list[int] | tuple[int, ...] = (100, 100, 100, 100),
        activation_name: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("hidden must list at least one layer size")
        n_layers = scaled(len(hidden), depth)
        # Deeper than the list: repeat the last size; shallower: keep the first layers.
        sizes = [scaled(h, width) for h in (list(hidden) + [hidden[-1]] * n_layers)[:n_layers]]
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = in_channels * image_size * image_size
        for d_out in sizes:
            layers.append(nn.Linear(d_in, d_out, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(activation(activation_name))
            if dropout:
                layers.append(nn.Dropout(dropout))
            d_in = d_out
        layers.append(nn.Linear(d_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
