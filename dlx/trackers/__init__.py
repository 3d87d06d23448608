"""Experiment trackers beside a run's own files: TensorBoard, MLflow, Weights & Biases (``output.loggers``).

Each is an optional extra (``pip install 'dlx[tensorboard]'``); a missing package is a one-line error before the
run folder exists. Trackers run in the process that writes the run folder (rank 0) and are fed once per epoch:
the step rows of metrics_steps.jsonl, the epoch's row of metrics.jsonl, and at the end the final summary and
pictures. The training steps never wait for them; a tracker that fails is reported once and dropped, the run
goes on (its own files are the record).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from dlx.errors import DlxError
from dlx.trackers.base import Tracker, Trackers

__all__ = ["TRACKERS", "Tracker", "Trackers", "check_trackers", "open_trackers"]

# name -> (the module it imports, the dlx extra that installs it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def check_trackers(names: list[str], key: str = "output.loggers") -> None:
    """Every tracker's package is installed; otherwise one line naming the extra that installs it."""
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise DlxError(f"{key}: {name} needs the {module} package: pip install 'dlx[{extra}]'")


def open_trackers(names: list[str], note: Any = print) -> Trackers:
    """The trackers ``output.loggers`` names; ``note(text)`` reports a tracker that failed."""
    made: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            from dlx.trackers.tensorboard import TensorBoardTracker

            made.append(TensorBoardTracker())
        elif name == "mlflow":
            from dlx.trackers.mlflow import MLflowTracker

            made.append(MLflowTracker())
        elif name == "wandb":
            from dlx.trackers.wandb import WandbTracker

            made.append(WandbTracker())
    return Trackers(made, note)
