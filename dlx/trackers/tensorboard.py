"""TensorBoard event files in ``<run>/tb/``: step and epoch scalars, hyperparameters with the final figures (the
HPARAMS tab), and the misclassified gallery as an image. ``dlx compare --tensorboard DIR`` replays finished runs
through the same writer, one event folder per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.trackers.base import EPOCH_KEYS, FINAL_KEYS, PICTURES, STEP_KEYS, scalar_params

TB_DIR = "tb"


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir  # None: <run>/tb
        self.writer: Any = None
        self.params: dict[str, Any] = {}

    def start(self, run_dir: Path, config: dict[str, Any], summary: dict[str, Any], step: int) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        from dlx.config import flatten

        log_dir = self.log_dir or run_dir / TB_DIR
        # A resumed run drops the events an interrupted process wrote after its checkpoint (purge_step).
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=step or None)
        self.params = scalar_params(flatten(config))
        return {"log_dir": str(log_dir)}

    def log(self, steps: list[dict[str, Any]], epoch: dict[str, Any], step: int) -> None:
        w = self.writer
        for row in steps:
            for key in STEP_KEYS:
                if row.get(key) is not None:
                    w.add_scalar(f"step/{key}", row[key], row["step"])
        for key in EPOCH_KEYS:
            if epoch.get(key) is not None:
                w.add_scalar(f"epoch/{key}", epoch[key], epoch["epoch"])
        w.flush()

    def finish(self, status: str, summary: dict[str, Any], run_dir: Path) -> None:
        from torch.utils.tensorboard.summary import hparams

        w = self.writer
        metrics = {f"final/{k}": float(summary[k]) for k in FINAL_KEYS if isinstance(summary.get(k), (int, float))}
        # Written into this writer's own file (SummaryWriter.add_hparams would start a second run folder).
        for part in hparams({**self.params, "status": status}, metrics):
            w.file_writer.add_summary(part)
        for key, value in metrics.items():
            w.add_scalar(key, value, summary.get("epochs_completed") or 0)
        gallery = run_dir / PICTURES[0]
        if gallery.is_file():
            import numpy as np
            from PIL import Image

            with Image.open(gallery) as im:
                w.add_image("misclassified", np.asarray(im.convert("RGB")), dataformats="HWC")
        w.close()


def replay_run(run_dir: Path, log_dir: Path) -> None:
    """A finished run's files (config, metrics, step metrics, summary, gallery) as TensorBoard events in
    ``log_dir``: what ``dlx compare --tensorboard`` writes for each run."""
    import shutil

    from dlx.config import load_run_config
    from dlx.runs import METRICS_STEPS, Run

    run = Run(run_dir)
    shutil.rmtree(log_dir, ignore_errors=True)  # a second export replaces the first, never doubles it
    tracker = TensorBoardTracker(log_dir)
    summary = run.read_summary()
    tracker.start(run.path, load_run_config(run.config_path).to_dict(), summary, 0)
    steps = run.read_metrics(METRICS_STEPS)
    for row in run.read_metrics():
        tracker.log([s for s in steps if row["epoch"] - 1 < s.get("epoch", 0) <= row["epoch"]], row, 0)
    tracker.finish(str(summary.get("status")), summary, run.path)
