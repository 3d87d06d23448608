"""The one small interface every tracker implements, and the fan-out that keeps a failing tracker from a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dlx.errors import first_line

# Pictures a finished run has, in the order trackers show them.
PICTURES = ("misclassified.png", "confusion.png", "curves.png")


class Tracker(Protocol):
    name: str

    def start(self, run_dir: Path, config: dict[str, Any], summary: dict[str, Any], step: int) -> dict[str, Any]:
        """Open (or, resuming at ``step`` > 0, reopen) the tracker's run; returns what summary.json records of it."""
        ...

    def log(self, steps: list[dict[str, Any]], epoch: dict[str, Any], step: int) -> None:
        """One epoch: its step rows (metrics_steps.jsonl), its row (metrics.jsonl), the step it ended at."""
        ...

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        """The final status and figures, the pictures; close."""
        ...


EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "running_loss",
              "running_acc", "lr", "images_per_s", "seconds")  # fmt: skip
STEP_KEYS = ("loss", "acc", "lr", "images_per_s")
FINAL_KEYS = ("test_acc", "test_loss", "best_val_acc", "best_val_loss", "final_train_loss", "final_train_acc")


def scalar_params(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config as trackers take hyperparameters: numbers, strings and booleans; lists as text."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


class Trackers:
    """Every configured tracker, called in turn; one that raises is reported once (``note``) and dropped."""

    def __init__(self, trackers: list[Tracker], note: Any = print) -> None:
        self.trackers = trackers
        self.note = note

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, what: str, call: Any) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # a tracker's failure is not the run's: its own files are the record
                self.trackers.remove(tracker)
                self.note(f"{tracker.name}: {what} failed ({type(e).__name__}: {first_line(e)}); no more {tracker.name} logging for this run")  # fmt: skip

    def start(self, run_dir: Path, config: dict[str, Any], summary: dict[str, Any], step: int) -> dict[str, Any]:
        records: dict[str, Any] = {}

        def one(t: Tracker) -> None:
            records[t.name] = t.start(run_dir, config, summary, step)

        self._each("start", one)
        return records

    def log(self, steps: list[dict[str, Any]], epoch: dict[str, Any], step: int) -> None:
        self._each("logging", lambda t: t.log(steps, epoch, step))

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        self._each("finish", lambda t: t.finish(status, summary, run_dir))
