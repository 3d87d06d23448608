"""What a model is: parameter count, FLOPs per image, and a per-layer table (for --dry-run)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def flops_per_image(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), as torch.utils.flop_counter counts them."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """One row per leaf module in call order, with its output shape (batch of 1) and own parameters."""
    rows: list[LayerRow] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(names.get(module, "?"), type(module).__name__, shape, params))

    for module in model.modules():
        if not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows
