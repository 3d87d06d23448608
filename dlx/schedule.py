"""Learning-rate schedules by name; all advance once per training step except ``plateau``.

Each entry is called as ``factory(optimizer, epochs=..., steps_per_epoch=..., warmup_steps=...,
**schedule.args)`` and returns a ``Schedule``. Epoch-based shapes (step, multistep, exponential)
change the rate at epoch boundaries, as their torch counterparts do; cosine and onecycle move
every step. Warmup ramps the rate linearly from lr/warmup_steps to lr, then the shape follows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from dlx.registry import Registry

SCHEDULES: Registry = Registry("schedule")

# Keywords dlx passes itself; a user may not put them in schedule.args.
RESERVED_SCHEDULE_ARGS = {"optimizer", "epochs", "steps_per_epoch", "warmup_steps", "mode"}
# Schedules that bring their own warmup or react to metrics: warmup_epochs is refused for them.
NO_WARMUP = {"onecycle": "it warms up by itself: use args.pct_start", "plateau": "it reacts to validation loss"}


@dataclass
class Schedule:
    """A torch scheduler and when to advance it: after each step, or after each validation (with the metric)."""

    scheduler: Any
    interval: Literal["step", "metric", "never"]

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_validation(self, metric: float) -> None:
        if self.interval == "metric":
            self.scheduler.step(metric)

    def fast_forward(self, steps: int) -> None:
        """Put a freshly built per-step schedule at ``steps`` steps: the rate there, in closed form.

        A resume whose steps per epoch changed (another number of processes) continues the shape from the
        epoch it stopped at instead of loading a step count that means something else now.
        """
        if self.interval != "step" or steps <= 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no step is taken
            self.scheduler.last_epoch = steps - 1
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def _lambda(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, warmup_steps: int, shape: Callable[[int], float]
) -> Schedule:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return shape(step)

    return Schedule(LambdaLR(optimizer, factor), "step")


@SCHEDULES.register("none")
def none(optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, warmup_steps: int = 0) -> Schedule:
    """Constant learning rate (after the optional warmup)."""
    if warmup_steps == 0:
        return Schedule(None, "never")
    return _lambda(optimizer, steps_per_epoch, warmup_steps, lambda step: 1.0)


@SCHEDULES.register("step")
def step(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    step_size: int = 10,
    gamma: float = 0.1,
) -> Schedule:
    """Multiply the rate by gamma every step_size epochs."""
    return _lambda(optimizer, steps_per_epoch, warmup_steps, lambda s: gamma ** ((s // steps_per_epoch) // step_size))


def default_milestones(epochs: int) -> list[int]:
    """multistep's default milestones: 50% and 75% of the run, those strictly inside it (1 .. epochs-1)."""
    return sorted({m for m in (epochs // 2, (3 * epochs) // 4) if 1 <= m <= epochs - 1})


def milestone_problem(milestones: object, epochs: int) -> str | None:
    """What is wrong with user-given multistep milestones for a run of ``epochs`` epochs, or None."""
    if not isinstance(milestones, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones):
        return f"got {milestones!r}; expected a list of epoch numbers, e.g. [30, 60]"
    outside = [m for m in milestones if not 1 <= m <= epochs - 1]
    if not outside:
        return None
    if epochs == 1:
        return f"got {milestones}; a 1-epoch run (train.epochs) has no epoch boundary for them; remove them"
    return (f"got {milestones}; each must lie strictly inside the run, in 1..{epochs - 1} "
            f"(train.epochs is {epochs}); outside: {outside}")  # fmt: skip


@SCHEDULES.register("multistep")
def multistep(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    milestones: list[int] | None = None,
    gamma: float = 0.1,
) -> Schedule:
    """Multiply the rate by gamma at each milestone epoch (default: at 50% and 75% of training).

    Milestones lie strictly inside the run (epochs 1 .. epochs-1, counted from 0): the defaults are kept there
    and deduplicated (none for a one-epoch run, one for two epochs); the config refuses others.
    """
    marks = sorted(milestones) if milestones is not None else default_milestones(epochs)

    def shape(s: int) -> float:
        epoch = s // steps_per_epoch
        return gamma ** sum(1 for m in marks if epoch >= m)

    return _lambda(optimizer, steps_per_epoch, warmup_steps, shape)


@SCHEDULES.register("exponential")
def exponential(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, warmup_steps: int = 0, gamma: float = 0.9
) -> Schedule:
    """Multiply the rate by gamma after every epoch."""
    return _lambda(optimizer, steps_per_epoch, warmup_steps, lambda s: gamma ** (s // steps_per_epoch))


@SCHEDULES.register("cosine")
def cosine(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    min_factor: float = 0.0,
) -> Schedule:
    """Cosine annealing from lr to lr*min_factor over the steps after warmup."""
    total = max(1, epochs * steps_per_epoch - warmup_steps)

    def shape(s: int) -> float:
        t = min(1.0, (s - warmup_steps) / total)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return _lambda(optimizer, steps_per_epoch, warmup_steps, shape)


@SCHEDULES.register("onecycle")
def onecycle(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    pct_start: float = 0.25,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
) -> Schedule:
    """Smith's 1cycle: up to lr over pct_start of training, then down to lr/(div*final_div)."""
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # cycle_momentum needs a momentum or betas entry; plain SGD / AdaGrad have none.
    has_momentum = all(("momentum" in g and g["momentum"] > 0) or "betas" in g for g in optimizer.param_groups)
    return Schedule(
        OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=epochs * steps_per_epoch,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            anneal_strategy=anneal_strategy,
            cycle_momentum=cycle_momentum and has_momentum,
        ),
        "step",
    )


@SCHEDULES.register("plateau")
def plateau(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    factor: float = 0.1,
    patience: int = 2,
    threshold: float = 1e-4,
    min_lr: float = 0.0,
) -> Schedule:
    """Multiply the rate by factor when the validation loss stops improving for `patience` evaluations."""
    return Schedule(
        ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience, threshold=threshold, min_lr=min_lr),
        "metric",
    )


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    args: dict | None = None,
) -> Schedule:
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    return SCHEDULES.get(name)(
        optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, warmup_steps=warmup_steps, **(args or {})
    )
