"""``dlx compare``: read every run below some folders, one table (or CSV / Markdown / JSON), pictures.

Runs that differ only by seed are one configuration: the table shows mean +- std and n (copies of one
run folder count once). Config keys whose values differ between the runs are columns of their own; any
other config key is one by --columns. Broken, partial or foreign folders are listed as skipped with the
reason; they never stop the comparison. No torch here (but for --tensorboard, torch's event writer):
comparing a thousand runs takes a moment, not a GPU.

Modules: ``records`` (run folders -> RunRecord / Skipped), ``columns`` (what each column shows),
``table`` (rows, filter, sort, formats), ``replicates`` (which run folders are one run) and ``plots``
(heat maps, learning curves, Pareto fronts; matplotlib, imported only when pictures are asked for).
None of the others imports plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dlx.compare.columns import parse_columns, varying_keys
from dlx.compare.records import RunRecord, Skipped, load_runs
from dlx.compare.replicates import distinct_runs
from dlx.compare.steps import AXES
from dlx.compare.table import FORMATS, Row, fill, filter_runs, make_rows, print_table, render, sort_rows
from dlx.errors import DlxError
from dlx.outputs import check_output_folder

__all__ = ["FORMATS", "Comparison", "Row", "RunRecord", "Skipped", "compare", "load_runs", "make_rows",
           "print_table", "render"]  # fmt: skip


@dataclass
class Comparison:
    runs: list[RunRecord]  # after filtering
    rows: list[Row]  # after sorting and top-k
    columns: list[str]
    skipped: list[Skipped]
    pictures: list[Path]
    notes: list[str] = field(default_factory=list)  # for the reader, like the skipped folders (stderr)


def compare(
    paths: list[str | Path],
    *,
    where: list[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    top: int | None = None,
    columns: str | None = None,
    group: bool = True,
    output: str | Path | None = None,
    tensorboard: str | Path | None = None,
    x: str = "epoch",
) -> Comparison:
    """Load, filter, group by seed, sort, cut to top-k and (with ``output``) draw the pictures, the learning curves
    against ``x`` (``epoch`` or ``step``); ``tensorboard``: one TensorBoard event folder per compared run below it
    (``tensorboard --logdir`` shows them side by side)."""
    if x not in AXES:
        raise DlxError(f"--x {x!r}: choose one of {', '.join(AXES)}")
    if x != "epoch" and output is None:
        raise DlxError(f"--x {x} is the x of the learning curves: give --output DIR to draw them")
    for folder, option in ((output, "--output"), (tensorboard, "--tensorboard")):
        if folder is not None:
            check_output_folder(folder, option=option)  # a file in the way is an error now, not after reading
    if tensorboard is not None:
        from dlx.trackers import check_trackers

        check_trackers(["tensorboard"], key="--tensorboard")
    runs, skipped = load_runs(paths)
    runs, notes = distinct_runs(filter_runs(runs, where or []))  # a copied run folder is not a replicate
    varying, left_out = varying_keys(runs) if not columns else ([], [])
    if left_out:
        notes.append(f"{len(left_out)} more config keys differ between the runs: {', '.join(left_out)} "
                     "(show them with --columns)")  # fmt: skip
    rows = make_rows(runs, group=group, keys=varying)
    names = {r.summary.get("name") for r in runs}
    if len(names) == 1:  # one experiment or sweep: its name on every row is noise
        prefix = f"{names.pop()}/"
        for row in rows:
            row.values["run"] = str(row.values["run"]).removeprefix(prefix)
    if top is not None and sort is None:
        sort, descending = "test_acc", True  # "the best k" means by test accuracy unless told otherwise
    rows = sort_rows(rows, sort, descending)
    shown = rows[:top] if top is not None else rows
    cols = parse_columns(columns, shown, runs, varying)
    fill(shown, cols)
    pictures: list[Path] = []
    if output is not None:
        from dlx.compare import plots  # matplotlib only when pictures are asked for

        # Heat maps and Pareto fronts show every configuration; the curves only the chosen (top-k) ones.
        pictures, picture_notes = plots.draw_all(runs, rows, shown, Path(output), x=x)
        notes += picture_notes
    if tensorboard is not None:
        from dlx.trackers.tensorboard import replay_run  # torch's writer only when asked for

        for r in runs:
            replay_run(r.path, Path(tensorboard) / r.label)
        notes.append(
            f"wrote TensorBoard events of {len(runs)} runs to {tensorboard}: tensorboard --logdir {tensorboard}"
        )
    return Comparison(runs, shown, cols, skipped, pictures, notes)
