"""A run's record: ``summary.json`` and the metrics files, from the first line of training to the final status.

``RunRecorder`` owns summary.json. It writes it when training starts (status ``running``), after every
epoch, and once more from ``fit``'s ``finally`` with the status the run ended in: ``completed``,
``interrupted`` (Ctrl-C or SIGTERM: resumable), ``diverged`` or ``failed``. Nothing else writes a run's summary.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from dlx import provenance
from dlx.build import global_batch, lr_factor
from dlx.diagnose import diagnose
from dlx.runs import METRICS_STEPS, Run
from dlx.trackers import open_trackers

if TYPE_CHECKING:
    from dlx.build import Setup

# Kept from the run's first process when it is resumed: where and from what the run was made.
KEPT_ON_RESUME = ("started_at", "git", "experiment_file", "argv", "cwd", "loggers", "extending")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecorder:
    def __init__(self, run: Run, setup: Setup, *, resume: bool = False, note: Any = print) -> None:
        cfg = setup.config
        self.run = run
        self.wall_start = time.perf_counter()
        self.wall_before = 0.0
        self.summary: dict[str, Any] = {
            "status": "running",
            "name": cfg.name,
            "run_id": run.path.name,
            "run_dir": str(run.path),
            "model": {"name": cfg.model.name, "width": cfg.model.width, "depth": cfg.model.depth},
            "dataset": cfg.data.dataset,
            "num_classes": setup.data.num_classes,
            "classes": list(setup.data.classes),  # names in output order: eval, predict and pictures use them
            "seed": cfg.seed,
            "parameters": setup.parameters,
            "flops_per_image": setup.flops_per_image,
            "train_images": len(setup.train),
            "val_images": len(setup.val) if setup.val else 0,
            "test_images": len(setup.test),
            "epochs": cfg.train.epochs,
            # Several processes (DDP): data.batch_size is per process; the global batch is what a step averages.
            "world_size": setup.world.size,
            "global_batch": global_batch(cfg, setup.world.size),
            "grad_accum": cfg.train.grad_accum,
            "lr": cfg.optimizer.lr * lr_factor(cfg, setup.world.size),  # after optimizer.scale_lr
            "started_at": now(),
            **provenance.describe(setup.device, cfg.source_file),
            **setup.transfer.summary(),
        }
        self.summary["precision"] = cfg.train.precision
        self.summary["channels_last"] = cfg.train.channels_last  # train.channels_last: auto resolved for the model
        if setup.precision_auto is not None:
            self.summary["precision_auto"] = setup.precision_auto
        if setup.data.source is not None:  # your own images: where from, how split, what was skipped, mean/std
            self.summary["data"] = setup.data.source
        self.resume = resume
        self.writes = setup.world.main  # with several processes, rank 0 alone writes the run folder
        self.steps: list[dict[str, Any]] = []  # metrics_steps.jsonl: a row every train.log_every steps
        self.config = cfg.to_dict()
        self.trackers = open_trackers(cfg.output.loggers if self.writes else [], note=note)

    def start(
        self, config_yaml: str, state: Any, previous_world_size: int | None = None, extended_from: int | None = None
    ) -> None:
        """The first write of this process: config.yaml for a new run, or the resume note; then summary.json."""
        if not self.writes:
            return
        if self.resume:
            previous = self.run.read_summary()
            self.summary.update({k: previous[k] for k in KEPT_ON_RESUME if k in previous})
            self.wall_before = float(previous.get("wall_seconds") or 0.0)
            note: dict[str, Any] = {"at": now(), "from_epoch": state.epoch, "world_size": self.summary["world_size"]}
            if previous_world_size is not None:
                note["previous_world_size"] = previous_world_size
            if extended_from is not None:
                note["epochs"] = {"from": extended_from, "to": self.summary["epochs"]}
                name = self.config["schedule"]["name"]
                note["schedule"] = (f"{name}: the rate does not depend on the run's length" if name in ("none", "plateau")
                                    else f"{name} recomputed over {self.summary['epochs']} epochs, continued at step "
                                         f"{state.step}")  # fmt: skip
            self.summary["resumed"] = [*previous.get("resumed", []), note]
            self.run.write_metrics(state.history)  # drop rows of an epoch the interrupted process did not checkpoint
            self.steps = [r for r in self.run.read_metrics(METRICS_STEPS) if r.get("step", 0) <= state.step]
            self.run.write_step_metrics(self.steps)
        else:
            self.run.write_config(config_yaml)
        if self.trackers:
            self.summary["loggers"] = self.trackers.start(self.run.path, self.config, self.summary, state.step)
        self.run.write_summary(self.summary)

    def epoch_done(self, state: Any, steps: list[dict[str, Any]] | None = None) -> None:
        """After an epoch's checkpoint: the metrics files, summary.json, then the trackers."""
        self.summary["epochs_completed"] = state.epoch
        if self.writes:
            self.steps += steps or []
            self.run.write_metrics(state.history)
            self.run.write_step_metrics(self.steps)
            self.run.write_summary(self.summary)
            self.trackers.log(steps or [], state.history[-1], state.step)

    def finish(self, status: str, state: Any, saved_epochs: int, **extra: Any) -> dict[str, Any]:
        """Write the final status with everything measured; returns the summary.

        ``saved_epochs``: the epochs last.pt holds; an epoch whose checkpoint could not be written (disk full)
        is not completed, and a resume starts from there.
        """
        s = self.summary
        history = state.history[:saved_epochs]
        s.update(status=status, ended_at=now(), epochs_completed=saved_epochs, **extra)
        s["train_seconds"] = round(state.train_seconds, 3)
        s["wall_seconds"] = round(self.wall_before + time.perf_counter() - self.wall_start, 3)
        if state.best is not None:
            s.update(best_epoch=state.best["epoch"], best_val_acc=state.best["val_acc"],
                     best_val_loss=state.best["val_loss"])  # fmt: skip
        if history:
            last = history[-1]
            s.update(final_train_loss=last["train_loss"], final_train_acc=last["train_acc"])
            rates = [r["images_per_s"] for r in history]
            s["images_per_s"] = round(sum(rates) / len(rates), 1)
        # Over/underfitting, also shown by dlx compare; "at chance" is 1 / the dataset's class count.
        s["diagnosis"] = diagnose(history, num_classes=s["num_classes"])
        if self.writes:
            self.run.write_summary(s)
            self.trackers.finish(status, s, self.run.path)
        return s


def resume_lines(previous_world_size: int | None, setup: Setup) -> list[str]:
    """What a resume on another number of processes changes, said once at the start."""
    if previous_world_size is None:
        return []
    cfg, size = setup.config, setup.world.size
    return [f"resuming a run trained on {previous_world_size} process(es) with {size}: global batch "
            f"{global_batch(cfg, previous_world_size)} -> {global_batch(cfg, size)}"
            + (" (optimizer.scale_lr rescales the rate)" if cfg.optimizer.scale_lr != "none" else "")]  # fmt: skip


def extension_lines(extended_from: int | None, setup: Setup, lr: float) -> list[str]:
    """What --resume --set train.epochs=N changes, said once at the start (and in summary.json: resumed)."""
    if extended_from is None:
        return []
    cfg = setup.config
    schedule = cfg.schedule.name
    what = ("the rate does not depend on the run's length" if schedule in ("none", "plateau")
            else f"the {schedule} schedule now spans {cfg.train.epochs} epochs and continues where the run stands, "
                 f"at lr {lr:.3g}")  # fmt: skip
    return [f"extending the run from {extended_from} to {cfg.train.epochs} epochs: {what}"]
