"""Checkpoints: written atomically, read with ``weights_only=True`` (no arbitrary code on load).

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings), so
``torch.load(..., weights_only=True)`` accepts it. ``last.pt`` carries everything a resume
needs (model, optimizer, scheduler, grad scaler, RNG states, epoch, metric history);
``best.pt`` carries the best-by-validation model weights and the epoch they come from.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import torch

from dlx.distributed import SINGLE, World
from dlx.errors import DlxError, first_line
from dlx.runs import Run, write_bytes_atomic
from dlx.signals import signals_deferred

FORMAT = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Serialize ``state`` and put it at ``path`` atomically (temp file, fsync, rename)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    write_bytes_atomic(path, buf.getvalue())


def read_torch_file(path: str | os.PathLike[str], what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` (tensors and plain values only: no code runs); one-line DlxError otherwise."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which file, not a pickle traceback
        raise DlxError(f"{what} {path} cannot be read: truncated or not a dlx checkpoint ({first_line(e)})") from None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DlxError(f"checkpoint not found: {path}")
    state = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DlxError(f"checkpoint {path} is not a dlx checkpoint (format {FORMAT})")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG the training touches: torch CPU, every CUDA device, Python's ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _epochs(config: Any) -> int | None:
    """train.epochs of a config dict as checkpoints store it."""
    try:
        return int(config["train"]["epochs"])
    except (TypeError, KeyError, ValueError):
        return None


def state_dict_mismatches(own: dict[str, Any], other: dict[str, Any], limit: int = 3) -> str:
    """The first differences between a model's state dict and a saved one, as one line ('' when they fit)."""
    problems = []
    for name, value in own.items():
        if name not in other:
            problems.append(f"{name} missing")
        elif not isinstance(other[name], torch.Tensor) or other[name].shape != value.shape:
            got = tuple(other[name].shape) if isinstance(other[name], torch.Tensor) else type(other[name]).__name__
            problems.append(f"{name} {got} instead of {tuple(value.shape)}")
    problems += [f"{name} not in this model" for name in other if name not in own]
    if not problems:
        return ""
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


class Checkpointer:
    """The checkpoints of one run: ``last.pt`` after every epoch, ``best.pt`` when validation improves.

    ``save_last`` stores everything a resume needs; ``restore`` puts it back into the same objects and returns
    the saved training state; ``load_best`` gives the model the best-by-validation weights for the test.

    With several processes only rank 0 writes (the unwrapped model: no ``module.`` prefix) and the others wait
    at a barrier; every rank restores from last.pt; best weights reach every rank from rank 0.
    """

    def __init__(
        self,
        run: Run,
        model: Any,
        optimizer: Any,
        schedule: Any,
        scaler: Any,
        config: dict[str, Any],
        *,
        classes: list[str] | None = None,
        world: World = SINGLE,
        steps_per_epoch: int | None = None,
        lr_factor: float = 1.0,
    ):
        self.run, self.model, self.optimizer, self.schedule, self.scaler = run, model, optimizer, schedule, scaler
        self.config = config
        self.classes = list(classes) if classes is not None else None  # names in output order, saved with weights
        self.world, self.steps_per_epoch, self.lr_factor = world, steps_per_epoch, lr_factor
        self.epoch = 0  # the epochs last.pt holds: what a resume would start from
        self.previous_world_size: int | None = None  # the processes that wrote last.pt, when a resume has others
        self.extended_from: int | None = None  # the epochs last.pt was trained for, when a resume asks for more

    def save_last(self, state: dict[str, Any]) -> None:
        if self.world.main:
            # Ctrl-C or SIGTERM waits until last.pt and ``self.epoch`` (what summary.json will say) agree.
            with signals_deferred():
                self._write_last(state)
                self.epoch = state["epoch"]
        self.world.barrier()
        self.epoch = state["epoch"]

    def _write_last(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.run.last_checkpoint, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "state": state,
            "config": self.config,
            "classes": self.classes,
            "world_size": self.world.size,
            "steps_per_epoch": self.steps_per_epoch,
            "lr_factor": self.lr_factor,
        })  # fmt: skip

    def save_best(self, epoch: int, row: dict[str, Any]) -> None:
        if self.world.main:
            best = {"model": self.model.state_dict(), "epoch": epoch, "metrics": row, "classes": self.classes}
            save_checkpoint(self.run.best_checkpoint, best)
        self.world.barrier()

    def restore(self, map_location: str | torch.device) -> dict[str, Any]:
        """Load last.pt into the model, optimizer, schedule and scaler, set every RNG; return the training state.

        A run resumed on another number of processes keeps the optimizer's per-parameter state (momenta) and
        re-derives what depends on the global batch: the scaled learning rate and where the schedule stands.
        """
        path = self.run.last_checkpoint
        last = load_checkpoint(path, map_location=map_location)
        missing = [k for k in ("model", "optimizer", "schedule", "scaler", "rng", "state") if k not in last]
        if missing:
            raise DlxError(f"checkpoint {path} lacks {', '.join(missing)}: not a dlx last.pt")
        mismatches = state_dict_mismatches(self.model.state_dict(), last["model"])
        if mismatches:
            raise DlxError(f"checkpoint {path} does not fit this run's model: {mismatches}")
        saved_world = int(last.get("world_size", 1))
        reshaped = (saved_world, last.get("steps_per_epoch", self.steps_per_epoch)) != (
            self.world.size,
            self.steps_per_epoch,
        )
        # dlx train --resume RUN --set train.epochs=N: the schedule is rebuilt over the new length and put at
        # the steps done (its saved state holds the old total).
        before, now = _epochs(last.get("config")), _epochs(self.config)
        self.extended_from = before if before is not None and before != now else None
        reshaped = reshaped or self.extended_from is not None
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.model.load_state_dict(last["model"])
            self.optimizer.load_state_dict(last["optimizer"])
            if reshaped and self.schedule.interval == "step":
                for group, settings in zip(self.optimizer.param_groups, fresh, strict=True):
                    group.update(settings)  # this world's scaled rates; the schedule is put where the run stands
                self.schedule.fast_forward(last["state"]["epoch"] * (self.steps_per_epoch or 0))
            else:
                self.schedule.load_state_dict(last["schedule"])
                ratio = self.lr_factor / float(last.get("lr_factor", 1.0))
                for group in self.optimizer.param_groups if ratio != 1.0 else []:
                    group["lr"] *= ratio  # optimizer.scale_lr for this world's global batch
            self.scaler.load_state_dict(last["scaler"])
            set_rng_state(last["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise DlxError(f"checkpoint {path} does not fit this run: {first_line(e)}") from None
        self.epoch = last["state"]["epoch"]
        self.previous_world_size = saved_world if saved_world != self.world.size else None
        return last["state"]

    def load_best(self, map_location: str | torch.device) -> bool:
        """Give the model the best-by-validation weights (on every rank); False when there is no best.pt."""
        found = False
        if self.world.main and self.run.best_checkpoint.exists():
            self.model.load_state_dict(load_checkpoint(self.run.best_checkpoint, map_location=map_location)["model"])
            found = True
        self.world.broadcast_state(self.model)
        return bool(self.world.broadcast_object(found))
