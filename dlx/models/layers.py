"""Small building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def conv_block(
    c_in: int, c_out: int, *, kernel: int = 3, padding: int = 1, batch_norm: bool = False, act: str = "relu"
) -> list[nn.Module]:
    """conv -> [bn] -> activation; the conv has no bias when batch norm follows (it would be redundant)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(activation(act))
    return layers


def is_small(image_size: int, small_input: bool | None) -> bool:
    """Whether a family uses its small-image stem: as chosen (``small_input``), else for images of at most 64 px."""
    return image_size <= 64 if small_input is None else small_input


class StochasticPool2d(nn.Module):
    """Stochastic pooling (Zeiler & Fergus, 2013): sample one activation per window, in proportion to its value.

    Each window's probabilities are its non-negative parts normalised to sum to 1: p_i = max(a_i, 0) / sum_j max(a_j, 0).
    Training draws one element per window from p (the gradient flows to that element, as in max pooling); evaluation
    returns the expectation sum_i p_i a_i, the paper's "probabilistic weighting" that averages the ensemble of poolings.
    A window without positive values (all zero after a ReLU, or all negative after tanh) has no preference: it
    falls back to uniform probabilities over its real (unpadded) elements, which gives 0 for an all-zero window.

    ``padding`` and ``ceil_mode`` follow ``nn.MaxPool2d``; padded positions are never sampled.
    """

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False) -> None:
        super().__init__()
        if padding > kernel_size // 2:
            raise ValueError(f"padding {padding} must be at most half the kernel size {kernel_size}")
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, ceil_mode={self.ceil_mode}"
        )

    def _out_size(self, size: int) -> int:
        k, s, p = self.kernel_size, self.stride, self.padding
        span = size + 2 * p - k
        if span < 0:
            raise ValueError(f"input size {size} is smaller than the pooling kernel {k}")
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        # PyTorch's rule for ceil mode: the last window must start inside the (left-padded) input.
        if self.ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        out_h, out_w = self._out_size(h), self._out_size(w)
        # Pad explicitly (left/top by `padding`, right/bottom as far as ceil mode needs) so unfold sees every window.
        extra_h, extra_w = (out_h - 1) * s + k - (h + 2 * p), (out_w - 1) * s + k - (w + 2 * p)
        pads = (p, p + max(0, extra_w), p, p + max(0, extra_h))
        # Windows as columns: (n*c, k*k, L); channels are folded into the batch so each window is one channel's.
        cols = F.unfold(F.pad(x.reshape(n * c, 1, h, w), pads), k, stride=s)
        valid = F.unfold(F.pad(x.new_ones(1, 1, h, w), pads), k, stride=s)  # 1 where a real element is
        positive = cols.clamp(min=0)
        total = positive.sum(dim=1, keepdim=True)
        weights = torch.where(total > 0, positive, valid)  # the uniform fallback for windows without positives
        if self.training:
            # Inverse-CDF sampling, vectorised over all windows: the first index whose cumulative weight reaches
            # u * total. u lies in (0, 1], so zero-weight elements (empty CDF intervals) are never picked.
            cdf = weights.cumsum(dim=1)
            u = 1.0 - torch.rand_like(cdf[:, :1])
            index = (cdf < u * cdf[:, -1:]).sum(dim=1, keepdim=True).clamp(max=k * k - 1)
            pooled = cols.gather(1, index)
        else:
            pooled = (weights * cols).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True)
        return pooled.reshape(n, c, out_h, out_w)


POOLS = ("max", "avg", "stochastic")


def pool_layer(
    name: str, kernel: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False
) -> nn.Module:
    """A spatial pooling layer by name: ``max``, ``avg`` (padding excluded from the average) or ``stochastic``."""
    if name == "max":
        return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    if name == "avg":
        # count_include_pad=False: a padded border must not dilute the average towards zero.
        return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)
    if name == "stochastic":
        return StochasticPool2d(kernel, stride, padding, ceil_mode)
    raise ValueError(f"unknown pool {name!r}; allowed: {', '.join(POOLS)}")


def replace_activations(module: nn.Module, name: str) -> None:
    """Swap every ``nn.ReLU`` inside ``module`` for the named activation (for blocks built with a hard-coded ReLU)."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, child_name, activation(name))
        else:
            replace_activations(child, name)


# Set on the layer that silences a residual branch at the start (Goyal et al. 2017): the branch's last BatchNorm
# (gamma = 0) or, without batch norm, its last conv (weight and bias 0, as Fixup does). dlx.init.initialize keeps
# such a layer at zero under every initializer, so the block starts as the identity.
ZERO_INIT_ATTR = "zero_init"


def zero_init_(layer: nn.Module) -> None:
    """Start a layer at zero (a BatchNorm's scale and shift, or a conv's weight and bias) and mark it
    (``ZERO_INIT_ATTR``) so that re-initializers keep it there."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    setattr(layer, ZERO_INIT_ATTR, True)


class AuxOutput(NamedTuple):
    """What a model with auxiliary classifiers returns in training mode (in eval mode it returns plain logits).

    The training objective is ``cross_entropy(logits, y) + aux_weight * sum(cross_entropy(a, y) for a in aux)``.
    """

    logits: torch.Tensor
    aux: tuple[torch.Tensor, ...]
    aux_weight: float


def main_logits(out: torch.Tensor | AuxOutput) -> torch.Tensor:
    """The class scores a model returned (the main head's, for a model with auxiliary heads)."""
    return out.logits if isinstance(out, AuxOutput) else out


def aux_loss(out: torch.Tensor | AuxOutput, y: torch.Tensor) -> torch.Tensor | float:
    """The auxiliary heads' weighted loss (0 for a model without them), added to the training objective."""
    if not isinstance(out, AuxOutput):
        return 0.0
    return out.aux_weight * sum(F.cross_entropy(a.float(), y) for a in out.aux)
