"""Optimizers by name (the book's chapter 6: SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam ...).

Each entry is called as ``factory(params, lr=..., weight_decay=..., **optimizer.args)``; its
signature is what ``optimizer.args`` is checked against.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dlx.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")

Params = Iterable[torch.nn.Parameter] | Iterable[dict]


@OPTIMIZERS.register("sgd")
def sgd(params: Params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Plain stochastic gradient descent: W <- W - lr * dL/dW."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("momentum")
def momentum(
    params: Params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, dampening: float = 0.0
) -> torch.optim.Optimizer:
    """SGD with momentum (v <- a*v - lr*g; W <- W + v)."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening)


@OPTIMIZERS.register("nesterov")
def nesterov(params: Params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with Nesterov's accelerated gradient."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=True)


@OPTIMIZERS.register("adagrad")
def adagrad(
    params: Params, lr: float, weight_decay: float = 0.0, lr_decay: float = 0.0, eps: float = 1e-10
) -> torch.optim.Optimizer:
    """AdaGrad: per-parameter learning rates shrinking with the sum of squared gradients."""
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, lr_decay=lr_decay, eps=eps)


@OPTIMIZERS.register("adadelta")
def adadelta(
    params: Params, lr: float, weight_decay: float = 0.0, rho: float = 0.9, eps: float = 1e-6
) -> torch.optim.Optimizer:
    """AdaDelta: AdaGrad with a decaying window and unit-corrected steps (lr 1.0 is customary)."""
    return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay, rho=rho, eps=eps)


@OPTIMIZERS.register("rmsprop")
def rmsprop(
    params: Params,
    lr: float,
    weight_decay: float = 0.0,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
) -> torch.optim.Optimizer:
    """RMSprop: AdaGrad with an exponential moving average of squared gradients."""
    return torch.optim.RMSprop(
        params, lr=lr, weight_decay=weight_decay, alpha=alpha, eps=eps, momentum=momentum, centered=centered
    )


@OPTIMIZERS.register("adam")
def adam(
    params: Params,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = False,
) -> torch.optim.Optimizer:
    """Adam: momentum + RMSprop with bias correction (the book's deep CNN uses lr 1e-3)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, amsgrad=amsgrad)


@OPTIMIZERS.register("adamw")
def adamw(
    params: Params,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = False,
) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, amsgrad=amsgrad)


def build_optimizer(
    name: str, params: Params, lr: float, weight_decay: float | None = None, args: dict | None = None
) -> torch.optim.Optimizer:
    """``weight_decay=None`` keeps the optimizer's own default (0, or 0.01 for AdamW)."""
    kwargs = dict(args or {})
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return OPTIMIZERS.get(name)(params, lr=lr, **kwargs)
