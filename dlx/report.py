"""Pictures of a finished run: misclassified test images, the confusion matrix, training curves.

Figures are built with ``matplotlib.figure.Figure`` directly, never through pyplot: no global
figure registry, no GUI backend, safe in threads and in parallel processes. Each PNG is rendered
into memory and written atomically, so a crash never leaves half a picture in a run directory.
Import this module lazily (only when pictures are drawn): importing matplotlib takes a while.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from dlx.numbers import finite
from dlx.runs import write_png_atomic

DPI = 100
TRUE_COLOR = "#1a7f37"  # green: what the image is
PRED_COLOR = "#cf222e"  # red: what the model said


def _save(fig: Figure, path: Path) -> None:
    write_png_atomic(fig, path, DPI)


def _message_figure(text: str, path: Path) -> None:
    fig = Figure(figsize=(4, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    _save(fig, path)


def _name(classes: Sequence[str], index: int) -> str:
    # A class index beyond the list (e.g. a model with more outputs) still gets a readable label.
    return str(classes[index]) if 0 <= index < len(classes) else str(index)


# ---------------------------------------------------------------------------- misclassified gallery


def misclassified_indices(labels: torch.Tensor, preds: torch.Tensor, max_images: int) -> torch.Tensor:
    """Indices (int64, ascending) of the first ``max_images`` samples whose prediction is wrong."""
    if labels.shape != preds.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and preds {tuple(preds.shape)} differ in shape")
    if max_images < 0:
        raise ValueError(f"max_images must be >= 0, got {max_images}")
    wrong = torch.nonzero(labels.cpu() != preds.cpu(), as_tuple=False).flatten()
    return wrong[:max_images]


def save_misclassified(
    images: torch.Tensor,
    labels: torch.Tensor,
    preds: torch.Tensor,
    classes: list[str],
    path: Path,
    max_images: int = 20,
) -> int:
    """Draw the first ``max_images`` misclassified images in a grid; return how many were drawn.

    As in figure 8-2 of "Deep Learning from Scratch", each image carries its true label in the
    top-left corner (green) and the prediction in the bottom-right corner (red).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3, got {tuple(images.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    labels, preds = labels.cpu(), preds.cpu()
    idx = misclassified_indices(labels, preds, max_images)
    total_wrong = int((labels != preds).sum())
    path = Path(path)
    if idx.numel() == 0:
        _message_figure("no misclassified images" if total_wrong == 0 else "no images requested", path)
        return 0

    n = idx.numel()
    # Near-square grids for few images, at most 10 columns for many (5 x 4 for the default 20).
    ncols = min(n, max(5, math.ceil(math.sqrt(n))), 10)
    nrows = math.ceil(n / ncols)
    cell = 1.5
    fig = Figure(figsize=(max(ncols * cell, 4.5), nrows * cell + 0.7))  # wide enough for the title
    fig.suptitle(
        f"misclassified: {n} of {total_wrong} shown\ntop-left: true label, bottom-right: prediction",
        fontsize=10,
    )
    picked = images[idx].cpu()
    for k in range(n):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        img = picked[k]
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        i = int(idx[k])
        _corner_label(ax, _name(classes, int(labels[i])), top_left=True, color=TRUE_COLOR)
        _corner_label(ax, _name(classes, int(preds[i])), top_left=False, color=PRED_COLOR)
    fig.subplots_adjust(
        left=0.02, right=0.98, bottom=0.02, top=1 - 0.7 / (nrows * cell + 0.7), wspace=0.05, hspace=0.05
    )
    _save(fig, path)
    return n


def _corner_label(ax: Any, text: str, *, top_left: bool, color: str) -> None:
    # A translucent white box keeps the label readable on both dark and bright pixels.
    x, y, ha, va = (0.03, 0.97, "left", "top") if top_left else (0.97, 0.03, "right", "bottom")
    box = {"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.75, "linewidth": 0}
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color=color, fontsize=8, fontweight="bold", bbox=box)


# ---------------------------------------------------------------------------- confusion matrix


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [K, K] counts; row = true class, column = predicted class."""
    labels, preds = labels.cpu().long().flatten(), preds.cpu().long().flatten()
    if labels.shape != preds.shape:
        raise ValueError(f"labels ({labels.numel()}) and preds ({preds.numel()}) differ in length")
    for what, t in (("labels", labels), ("preds", preds)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{what} must lie in [0, {num_classes}), got values in [{int(t.min())}, {int(t.max())}]")
    # Each (true, pred) pair becomes one bin of a flat K*K histogram.
    counts = torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def save_confusion(labels: torch.Tensor, preds: torch.Tensor, classes: list[str], path: Path) -> torch.Tensor:
    """Draw the confusion matrix (counts in the cells up to 20 classes); return it."""
    k = len(classes)
    cm = confusion_matrix(labels, preds, k)
    total = int(cm.sum())
    acc = cm.diagonal().sum().item() / total if total else float("nan")

    # Room for the numbers and names up to 40 classes; beyond that the matrix is read as a heat map.
    side = min(max(4.0, 0.45 * k + 2.0), 20.0) if k <= 40 else 10.0
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm.numpy(), cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(f"confusion matrix: {total} test images, accuracy {acc:.2%}", fontsize=10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 40:  # beyond that the names overlap into a black bar
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(classes, rotation=45 if max(map(len, classes), default=0) > 3 else 0, ha="right")
        ax.set_yticklabels(classes)
        ax.tick_params(labelsize=8)
    if k <= 20:
        # White text on dark cells, dark on light ones, so every count stays readable.
        threshold = cm.max().item() / 2
        for r in range(k):
            for c in range(k):
                v = int(cm[r, c])
                ax.text(c, r, str(v), ha="center", va="center", fontsize=8, color="white" if v > threshold else "black")
    fig.tight_layout()
    _save(fig, path)
    return cm


# ---------------------------------------------------------------------------- curves


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the rows where ``key`` has a value: validation may run every few epochs."""
    xs, ys = [], []
    for row in history:
        v = row.get(key)
        if v is not None:
            xs.append(float(row["epoch"]))
            ys.append(float(v))
    return xs, ys


def step_series(steps: list[dict[str, Any]] | None, key: str = "loss") -> tuple[list[float], list[float]]:
    """(fractional epochs, values) of metrics_steps.jsonl's rows that have both: the x of a per-step curve."""
    xs, ys = [], []
    for row in steps or []:
        x, y = finite(row.get("epoch")), finite(row.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def save_curves(history: list[dict[str, Any]], path: Path, steps: list[dict[str, Any]] | None = None) -> None:
    """Loss and accuracy per epoch (train dashed, validation solid, test dotted if recorded), plus lr.

    ``steps``: metrics_steps.jsonl's rows; their training loss (running, in train mode: dropout and augmentation
    on) is a thin line under the per-epoch loss, at its fractional epoch.
    """
    path = Path(path)
    if not history:
        _message_figure("no epochs recorded", path)
        return
    has_lr = any(row.get("lr") is not None for row in history)
    fig = Figure(figsize=(13 if has_lr else 10, 4))
    gs = fig.add_gridspec(1, 3 if has_lr else 2, width_ratios=[3, 3, 2] if has_lr else [1, 1])
    epochs = [float(row["epoch"]) for row in history]
    # Markers keep a single epoch (or a lone validation point) visible: a line needs two points.
    styles = {"train": ("--", "tab:blue"), "val": ("-", "tab:orange"), "test": (":", "tab:green")}
    for col, (metric, ylabel, factor) in enumerate((("loss", "loss", 1.0), ("acc", "accuracy (%)", 100.0))):
        ax = fig.add_subplot(gs[0, col])
        if metric == "loss":
            xs, ys = step_series(steps)
            if xs:
                ax.plot(xs, ys, "-", color="tab:blue", linewidth=0.7, alpha=0.45, label="train, per step")
        for split, (ls, color) in styles.items():
            xs, ys = _series(history, f"{split}_{metric}")
            if xs:
                ax.plot(xs, [y * factor for y in ys], ls, color=color, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" ")[0])
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        _epoch_ticks(ax, epochs)
    if has_lr:
        ax = fig.add_subplot(gs[0, 2])
        xs, ys = _series(history, "lr")
        ax.plot(xs, ys, "-", color="tab:gray", marker="o", markersize=3)
        # A schedule spanning decades (step decay, warmup from ~0) is only readable on a log axis.
        positive = [y for y in ys if y > 0]
        if len(positive) == len(ys) and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title("learning rate")
        ax.grid(alpha=0.3)
        _epoch_ticks(ax, epochs)
    fig.tight_layout()
    _save(fig, path)


def _epoch_ticks(ax: Any, epochs: list[float]) -> None:
    # Whole-number epoch ticks; with a single epoch give the axis some width around it.
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(set(epochs)) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
