"""Learning curves by optimizer step (``dlx compare --output DIR --x step``): where each run's steps and epochs lie.

A run's metrics_steps.jsonl has a row every ``train.log_every`` optimizer steps (step, fractional epoch,
running loss); its per-epoch rows (metrics.jsonl) go at step = epoch x steps per epoch. Steps per epoch
are read from what the run recorded: the step of the row that ends epoch 1 (the last step of an epoch
always has a row), else summary.json's ``train_images // global_batch`` (the training loop drops a short
last batch). Read only for the runs a picture draws: a sweep's thousands of runs never open these files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.compare.records import RunRecord, _json_line, _read_text, _Unreadable
from dlx.errors import first_line
from dlx.numbers import finite
from dlx.runs import METRICS_STEPS

AXES = ("epoch", "step")  # --x


@dataclass
class StepAxis:
    """How one run's curves lie on an axis of optimizer steps."""

    steps_per_epoch: float
    rows: list[dict[str, Any]]  # metrics_steps.jsonl's rows with a step; none when the run has no such file


def read_steps(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The rows of the run folder's metrics_steps.jsonl that have a number for ``step``, and (none) why not."""
    try:
        text = _read_text(path / METRICS_STEPS)
    except _Unreadable as e:
        return [], str(e)
    if text is None:
        return [], f"no {METRICS_STEPS}"
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = _json_line(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            return [], f"{METRICS_STEPS} line {number} is not valid JSON ({first_line(e)})"
        if isinstance(row, dict) and finite(row.get("step")) is not None:
            rows.append(row)
    return rows, "" if rows else f"no step rows in {METRICS_STEPS}"


def steps_per_epoch(r: RunRecord, rows: list[dict[str, Any]]) -> float | None:
    """Optimizer steps in one of the run's epochs, from its step rows or its summary; None when neither tells."""
    ends = [row for row in rows if (e := finite(row.get("epoch"))) is not None and e <= 1 + 1e-9]
    if ends and abs(float(ends[-1]["epoch"]) - 1) < 1e-9:
        return float(ends[-1]["step"])  # the row of epoch 1's last step
    images, batch = finite(r.summary.get("train_images")), finite(r.summary.get("global_batch"))
    if images is not None and batch is not None and batch > 0:
        return float(max(1, int(images // batch)))
    return None


def step_axes(runs: list[RunRecord]) -> tuple[dict[Path, StepAxis] | None, list[str]]:
    """Each run's place on a step axis, or None (draw by epoch) when a run's steps per epoch are unknown; notes."""
    axes: dict[Path, StepAxis] = {}
    lost: list[str] = []
    notes: list[str] = []
    for r in runs:
        rows, why = read_steps(r.path)
        per_epoch = steps_per_epoch(r, rows)
        if per_epoch is None:
            lost.append(f"{r.label} ({why or 'no steps per epoch recorded'})")
            continue
        axes[r.path] = StepAxis(per_epoch, rows)
        if not rows:
            notes.append(f"curves.png: {r.label} has {why}; its per-epoch points only, at {per_epoch:g} steps an epoch")
    if lost:
        return None, [f"curves.png is drawn by epoch, not step: {len(lost)} run(s) without step rows or steps per "
                      f"epoch: {', '.join(lost)}"]  # fmt: skip
    return axes, notes
