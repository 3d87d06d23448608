"""Pictures of a comparison: width x depth heat maps, overlaid learning curves, accuracy-vs-cost Pareto fronts.

Built on ``matplotlib.figure.Figure`` (no pyplot, no GUI backend) and written atomically, like
dlx.report. Import lazily: matplotlib takes a while to import.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from dlx.compare.steps import StepAxis, step_axes
from dlx.compare.table import configuration
from dlx.numbers import finite
from dlx.runs import write_png_atomic
from dlx.sweep.spec import abbreviations, cell_name, format_value, name_part

if TYPE_CHECKING:
    from dlx.compare.records import Row, RunRecord

DPI = 110
MAX_CURVES = 12  # more lines than this are unreadable in one plot
GRID_KEYS = ("model.width", "model.depth")  # the axes of a heat map

# What a heat map can show: (file suffix, title, value of a run, cell text).
HEATMAP_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("test_acc", "test accuracy", "test_acc", "{:.2%}"),
    ("wall_seconds", "wall time (s)", "wall_seconds", "{:,.0f}"),
    ("parameters", "parameters", "parameters", "{:,.0f}"),
)


def _save(fig: Figure, path: Path) -> Path:
    return write_png_atomic(fig, path, DPI)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ---------------------------------------------------------------------------- heat maps


def grid_of(runs: list[RunRecord], summary_key: str) -> tuple[list[float], list[float], np.ndarray]:
    """(widths, depths, matrix[depth, width]) of the mean of ``summary_key``; NaN where no run has a value."""
    widths = sorted({float(r.summary["model"]["width"]) for r in runs})
    depths = sorted({float(r.summary["model"]["depth"]) for r in runs})
    sums = np.zeros((len(depths), len(widths)))
    counts = np.zeros_like(sums)
    for r in runs:
        value = finite(r.summary.get(summary_key))
        if value is None:
            continue
        i, j = depths.index(float(r.summary["model"]["depth"])), widths.index(float(r.summary["model"]["width"]))
        sums[i, j] += value
        counts[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return widths, depths, matrix


def _has_width_depth(r: RunRecord) -> bool:
    model = r.summary.get("model")
    return isinstance(model, dict) and finite(model.get("width")) is not None and finite(model.get("depth")) is not None


def configurations(runs: list[RunRecord]) -> list[tuple[dict[str, Any], list[RunRecord]]]:
    """The runs of one grid split by every config key besides width, depth and seed whose values differ.

    Returns ({key: value} naming the split, its runs) in a stable order; one ({}, runs) when nothing
    else differs. A heat map cell may only average runs that differ by seed.
    """
    configs = [configuration(r) for r in runs]
    keys = sorted({k for c in configs for k in c} - set(GRID_KEYS))
    varying = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    groups: dict[tuple[str | None, ...], list[RunRecord]] = {}
    for r, c in zip(runs, configs, strict=True):
        groups.setdefault(tuple(c.get(k) for k in varying), []).append(r)
    return [
        ({k: None if v is None else json.loads(v) for k, v in zip(varying, values, strict=True)}, members)
        for values, members in sorted(groups.items(), key=lambda item: [v or "" for v in item[0]])
    ]


def _heatmap(model: str, title: str, text: str, widths: list[float], depths: list[float], matrix: np.ndarray) -> Figure:
    fig = Figure(figsize=(1.4 + 1.1 * len(widths), 1.2 + 0.8 * len(depths)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.9)
    ax.set_xticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("depth multiplier")
    ax.set_title(f"{model}: {title}", fontsize=10)
    known = matrix[np.isfinite(matrix)]
    middle = (known.min() + known.max()) / 2 if known.size else 0.0
    for i in range(len(depths)):
        for j in range(len(widths)):
            if np.isfinite(matrix[i, j]):
                color = "black" if matrix[i, j] > middle else "white"  # readable on viridis
                ax.text(j, i, text.format(matrix[i, j]), ha="center", va="center", color=color, fontsize=9)
    return fig


def heatmaps(runs: list[RunRecord], out_dir: Path) -> dict[Path, np.ndarray]:
    """A width x depth heat map per metric (and per model) where the runs span such a grid.

    Runs that differ in more than width, depth and seed (another learning rate, say) get heat maps of
    their own, named after the values (``heatmap_test_acc_lr0.01.png``): cells average seeds only.
    """
    by_model: dict[str, list[RunRecord]] = {}
    for r in runs:
        if _has_width_depth(r):
            by_model.setdefault(str(r.summary["model"].get("name")), []).append(r)
    written: dict[Path, np.ndarray] = {}
    for model, model_runs in sorted(by_model.items()):
        for values, members in configurations(model_runs):
            widths, depths, _ = grid_of(members, "test_acc")
            if len(widths) * len(depths) < 2:
                continue  # one model size is not a grid
            short = abbreviations(list(values))
            tag = cell_name([name_part(short[k], v) for k, v in values.items()]) if values else ""
            which = ", ".join(f"{k}={'unset' if v is None else format_value(v)}" for k, v in values.items())
            for suffix, title, key, text in HEATMAP_METRICS:
                _, _, matrix = grid_of(members, key)
                if np.isnan(matrix).all():
                    continue
                stem = f"heatmap_{suffix}" if len(by_model) == 1 else f"heatmap_{_slug(model)}_{suffix}"
                name = f"{stem}_{tag}.png" if tag else f"{stem}.png"
                fig = _heatmap(model, f"{title} ({which})" if which else title, text, widths, depths, matrix)
                written[_save(fig, out_dir / name)] = matrix
    return written


# ---------------------------------------------------------------------------- learning curves


def _best_first(r: RunRecord) -> tuple[int, float]:
    test, val = finite(r.summary.get("test_acc")), finite(r.summary.get("best_val_acc"))
    return (0, -test) if test is not None else (1, -val) if val is not None else (2, 0.0)


def curve_runs(rows: list[Row]) -> tuple[list[RunRecord], int]:
    """The runs the curves draw, and how many had a history: in table order, or the best MAX_CURVES.

    Best: by test accuracy, then (runs without one) by best validation accuracy.
    """
    runs = [r for row in rows for r in row.runs if r.history]
    if len(runs) <= MAX_CURVES:
        return runs, len(runs)
    return sorted(runs, key=_best_first)[:MAX_CURVES], len(runs)


def curves_figure(runs: list[RunRecord], total: int, by_step: dict[Path, StepAxis] | None = None) -> Figure:
    """Loss and accuracy per epoch of ``runs``: training dashed, validation solid, one color per run.

    ``total``: how many runs there were to draw; when more than ``runs``, the title says so. ``by_step``
    (see dlx.compare.steps.step_axes): x is the optimizer step, each epoch's row at epoch x steps per epoch,
    and the running training loss of metrics_steps.jsonl's rows a thin line under the loss curves.
    """
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    if len(runs) < total:
        fig.suptitle(f"{len(runs)} of {total} runs shown (best test accuracy first)")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for r, color in zip(runs, colors, strict=True):
        label = str(r.summary.get("run_id", r.path.name))
        epochs = [row.get("epoch") for row in r.history]
        if by_step is not None:
            axis = by_step[r.path]
            epochs = [None if e is None else e * axis.steps_per_epoch for e in epochs]
            xs = [(row["step"], finite(row.get("loss"))) for row in axis.rows]
            steps = [(x, y) for x, y in xs if y is not None]
            if steps:
                ax_loss.plot(*zip(*steps, strict=True), linestyle="-", color=color, linewidth=0.7, alpha=0.4)
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            train = [(e, finite(row.get(f"train_{metric}"))) for e, row in zip(epochs, r.history, strict=True)]
            val = [(e, finite(row.get(f"val_{metric}"))) for e, row in zip(epochs, r.history, strict=True)]
            train = [(e, v) for e, v in train if v is not None]
            val = [(e, v) for e, v in val if v is not None]
            if train:
                ax.plot(
                    *zip(*train, strict=True),
                    linestyle="--",
                    color=color,
                    alpha=0.8,
                    marker="." if len(train) < 3 else None,
                )
            if val:
                ax.plot(
                    *zip(*val, strict=True),
                    linestyle="-",
                    color=color,
                    label=label,
                    marker="o" if len(val) < 3 else None,
                )
    thin = ", per step thin" if by_step is not None and any(a.rows for a in by_step.values()) else ""
    ax_loss.set_title(f"loss (train dashed{thin}, validation solid)")
    ax_acc.set_title("accuracy (train dashed, validation solid)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch" if by_step is None else "optimizer step")
        if by_step is not None:
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")
    ax_acc.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax_acc.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: it hides no curve
    return fig


# ---------------------------------------------------------------------------- Pareto fronts


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher value), by ascending cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_figure(rows: list[Row], cost: str, cost_label: str) -> Figure | None:
    """Accuracy against a cost column, the Pareto front marked; None with fewer than two points.

    One metric for every point: test accuracy when every configuration has one, else best validation
    accuracy for all of them (the title says why); the y axis names it.
    """
    candidates: list[tuple[float, Row]] = []
    for row in rows:
        x = finite(row.values.get(cost))
        if x is not None and x > 0:
            candidates.append((x, row))
    untested = sum(finite(row.values.get("test_acc")) is None for _, row in candidates)
    acc_key, acc_label = ("val_acc", "best validation accuracy") if untested else ("test_acc", "test accuracy")
    items = [
        (x, y, row.std.get(acc_key, 0.0), str(row.values.get("run")))
        for x, row in candidates
        if (y := finite(row.values.get(acc_key))) is not None
    ]
    if len(items) < 2:
        return None
    points = [(x, y) for x, y, _, _ in items]
    front = pareto_front(points)
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.add_subplot()
    xs, ys, errs = zip(*((x, y, e) for x, y, e, _ in items), strict=True)
    ax.errorbar(xs, ys, yerr=errs, fmt="o", color="0.55", ecolor="0.75", capsize=2, label="configurations")
    fx, fy = [points[i][0] for i in front], [points[i][1] for i in front]
    ax.step(fx, fy, where="post", color="C3", linewidth=1.5)
    ax.scatter(fx, fy, s=60, color="C3", zorder=3, label="Pareto front")
    for i in front:
        ax.annotate(items[i][3], points[i], textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(acc_label)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.1%}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)  # beside the axes: it hides no point
    title = f"{acc_label} against {cost_label}"
    if untested:
        title += f"\n(no test accuracy for {untested} of {len(candidates)} configurations)"
    ax.set_title(title)
    return fig


def pareto_plot(rows: list[Row], cost: str, cost_label: str, path: Path) -> Path | None:
    fig = pareto_figure(rows, cost, cost_label)
    return None if fig is None else _save(fig, path)


def draw_all(
    runs: list[RunRecord], rows: list[Row], chosen: list[Row], out_dir: Path, x: str = "epoch"
) -> tuple[list[Path], list[str]]:
    """Every picture that the runs allow: the files written, and notes for the reader (runs left out).

    ``x``: the x of the learning curves, ``epoch`` or ``step`` (optimizer steps, where the runs tell them).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = list(heatmaps(runs, out_dir))
    notes: list[str] = []
    curves, total = curve_runs(chosen)
    if curves:
        by_step, step_notes = step_axes(curves) if x == "step" else (None, [])
        notes += step_notes
        written.append(_save(curves_figure(curves, total, by_step), out_dir / "curves.png"))
    if len(curves) < total:
        notes.append(
            f"curves.png shows {len(curves)} of {total} runs (best test accuracy first; more are unreadable); "
            "choose others with --top, --sort or --where"
        )
    for picture in (
        pareto_plot(rows, "params", "parameters", out_dir / "pareto_parameters.png"),
        pareto_plot(rows, "wall", "wall seconds", out_dir / "pareto_seconds.png"),
    ):
        if picture is not None:
            written.append(picture)
    return written, notes
