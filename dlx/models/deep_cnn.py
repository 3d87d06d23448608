"""The deep CNN of "Deep Learning from Scratch", chapter 8 (figure 8-1), 99.38% on MNIST.

    conv3x3 16 - relu - conv3x3 16 - relu - pool
    conv3x3 32 - relu - conv3x3 32 (padding 2) - relu - pool
    conv3x3 64 - relu - conv3x3 64 - relu - pool
    affine 1024->50 - relu - dropout 0.5 - affine 50->10 - dropout 0.5

123,552 parameters at width=1, depth=1, in the book's order (W1..W8 / b1..b8: six convs, two affine
layers). The book's trained weights fit after two changes (``dlx import-weights book``, dlx.book_weights):
its affine weights are input-major (transposed here), and its dropout is not inverted, so its test-time
factors of 0.5 are folded into the last layer. ``width`` scales channels and hidden units; ``depth``
scales the convs per stage (2 at depth 1; the padding-2 conv stays the last of stage 2).
"""

from __future__ import annotations

import torch
from torch import nn

from dlx.models._registry import MODELS, scaled
from dlx.models.layers import activation, conv_block, pool_layer


@MODELS.register("deep_cnn")
class DeepCNN(nn.Module):
    """The book's VGG-like deep CNN (chapter 8): six 3x3 convs, two affine layers, dropout; 123,552 params."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.5,
        batch_norm: bool = False,
        channels: tuple[int, int, int] = (16, 32, 64),
        hidden: int = 50,
        activation_name: str = "relu",
        pool: str = "max",
        score_dropout: bool = True,
    ) -> None:
        super().__init__()
        convs_per_stage = scaled(2, depth)
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage, base in enumerate(channels):
            c_out = scaled(base, width)
            for i in range(convs_per_stage):
                # The book pads the last conv of stage 2 by 2: 14x14 -> 16x16, so the head sees 4x4x64 = 1024.
                pad = 2 if (stage == 1 and i == convs_per_stage - 1) else 1
                layers += conv_block(c_in, c_out, padding=pad, batch_norm=batch_norm, act=activation_name)
                c_in = c_out
            layers.append(pool_layer(pool, 2))  # the book: max; also avg or stochastic
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, image_size, image_size)).numel()
        if flat == 0:
            raise ValueError(f"image size {image_size} is too small for three pooling stages")
        h = scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, h),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(h, num_classes),
            # The book drops out the class scores too; score_dropout=false keeps the layer (same indices) but off.
            nn.Dropout(dropout if score_dropout else 0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
