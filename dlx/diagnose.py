"""Over- and underfitting, read from a run's history (one row per epoch, as in metrics.jsonl).

Verdicts, checked in this order (underfitting first: while a model has not learnt, the gap between
training and validation is not the problem to fix, and a model at chance does not "overfit"):

- ``unknown``: no validation was measured;
- ``undertrained``: validation accuracy is at chance (within ``chance_margin`` of 1/``num_classes``),
  or both accuracies are below ``low_acc``, and validation accuracy is still rising (more epochs
  would help);
- ``underfits``: the same, but no longer rising (the model, or its optimization, cannot do better:
  a wider/deeper model or other hyper-parameters);
- ``overfits``: validation loss rose while training loss fell for ``patience`` evaluations in a row,
  or at the end the training accuracy exceeds the validation accuracy by more than ``gap_threshold``;
- ``ok``: none of the above.

Histories carry no class count: ``num_classes`` defaults to 10 (MNIST, CIFAR-10); callers that know
better pass it.

Pure Python, no torch: ``dlx compare`` uses it on any run folder, ``fit`` stores it in summary.json.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

PATIENCE = 3  # evaluations with rising validation loss and falling training loss
GAP_THRESHOLD = 0.05  # train accuracy minus validation accuracy at the end (5 points)
LOW_ACC = 0.90  # both accuracies below this count as "low"
MIN_RISE = 0.002  # a validation-accuracy gain below this (0.2 points) counts as flat
NUM_CLASSES = 10  # chance is 1 / NUM_CLASSES unless the caller knows the class count
CHANCE_MARGIN = 0.02  # validation accuracy up to this far (2 points) above chance counts as chance


_FIGURES = ("train_loss", "train_acc", "val_loss", "val_acc")


def _evaluated(history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Rows with finite train and validation figures (epochs between evaluations are skipped)."""
    rows = []
    for row in history:  # dlx compare calls this for thousands of runs: no per-value function calls
        values = [row.get(k) for k in _FIGURES]
        if all(type(v) in (int, float) and math.isfinite(v) for v in values):  # type(): bools are not figures
            rows.append(
                {**dict(zip(_FIGURES, map(float, values), strict=True)), "epoch": row.get("epoch", len(rows) + 1)}
            )
    return rows


def overfit_streak(rows: Sequence[dict[str, float]]) -> tuple[int, Any]:
    """Longest run of consecutive evaluations where validation loss rose while training loss fell.

    Returns (length, epoch where the streak started); (0, None) when there is none.
    """
    best, best_start, length, start = 0, None, 0, None
    for prev, row in itertools.pairwise(rows):
        if row["val_loss"] > prev["val_loss"] and row["train_loss"] < prev["train_loss"]:
            if length == 0:
                start = prev["epoch"]
            length += 1
            if length > best:
                best, best_start = length, start
        else:
            length = 0
    return best, best_start


def diagnose(
    history: Sequence[dict[str, Any]],
    *,
    patience: int = PATIENCE,
    gap_threshold: float = GAP_THRESHOLD,
    low_acc: float = LOW_ACC,
    min_rise: float = MIN_RISE,
    num_classes: int = NUM_CLASSES,
    chance_margin: float = CHANCE_MARGIN,
) -> dict[str, Any]:
    """The verdict for one run: ``{"verdict", "reason", "gap", "overfit_epochs"}``; never raises."""
    rows = _evaluated(history)
    if not rows:
        return {"verdict": "unknown", "reason": "no validation measured", "gap": None, "overfit_epochs": 0}
    last = rows[-1]
    gap = last["train_acc"] - last["val_acc"]
    streak, since = overfit_streak(rows)
    out = {"gap": round(gap, 6), "overfit_epochs": streak}
    accs = f"train {last['train_acc']:.1%}, validation {last['val_acc']:.1%}"
    chance = 1 / max(num_classes, 1)
    at_chance = last["val_acc"] <= chance + chance_margin
    if at_chance or (last["train_acc"] < low_acc and last["val_acc"] < low_acc):
        # One evaluation shows no trend; a run that short is undertrained by construction.
        rising = len(rows) < 2 or last["val_acc"] - rows[-2]["val_acc"] > min_rise
        what = (f"validation at chance ({accs}; chance is {chance:.1%} for {num_classes} classes)" if at_chance
                else f"accuracies low ({accs})")  # fmt: skip
        if rising:
            return {"verdict": "undertrained", "reason": f"{what} and still rising", **out}
        return {"verdict": "underfits", "reason": f"{what} and no longer rising", **out}
    if streak >= patience:
        reason = f"validation loss rose while training loss fell for {streak} evaluations (from epoch {since})"
        return {"verdict": "overfits", "reason": reason, **out}
    if gap > gap_threshold:
        reason = f"train accuracy exceeds validation by {gap:.1%} at the end (threshold {gap_threshold:.1%})"
        return {"verdict": "overfits", "reason": reason, **out}
    return {"verdict": "ok", "reason": f"no sign of over- or underfitting ({accs})", **out}
