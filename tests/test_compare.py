"""dlx compare on hand-written run folders (no training): loading, seeds, filters, formats, pictures."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import statistics
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dlx.cli import app
from dlx.compare import RunRecord, compare, load_runs, make_rows, render
from dlx.compare.plots import MAX_CURVES, curve_runs, curves_figure, heatmaps, pareto_figure, pareto_front
from dlx.compare.records import _parse_config as parse_config
from dlx.compare.records import yaml_loader
from dlx.compare.table import configuration, configuration_key
from dlx.errors import DlxError
from tests.conftest import tiny

runner = CliRunner()


def fake_run(root: Path, run_id: str, *, width: float = 1.0, depth: float = 1.0, seed: int = 0,
             test_acc: float = 0.9, status: str = "completed", name: str = "grid",
             config: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """A run folder as fit writes it: config.yaml, summary.json, metrics.jsonl (two epochs).

    ``config``: more dotted config keys, e.g. ``{"optimizer.lr": 0.01}``.
    """
    path = root / name / run_id
    path.mkdir(parents=True)
    cfg = tiny(root, **{"model.width": width, "model.depth": depth, **(config or {})})
    cfg["seed"], cfg["name"] = seed, name
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    history = [
        {"epoch": 1, "train_loss": 1.0, "train_acc": 0.7, "val_loss": 0.8, "val_acc": 0.75},
        {"epoch": 2, "train_loss": 0.5, "train_acc": 0.95, "val_loss": 0.4, "val_acc": test_acc},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    summary = {
        "status": status, "name": name, "run_id": run_id, "run_dir": str(path), "seed": seed,
        "model": {"name": "deep_cnn", "width": width, "depth": depth},
        "parameters": int(10_000 * width * width * depth), "flops_per_image": int(1e6 * width * depth),
        "epochs": 2, "epochs_completed": 2, "best_epoch": 2, "best_val_acc": test_acc, "test_acc": test_acc,
        "wall_seconds": 10.0 * width * depth, "images_per_s": 1000.0 / (width * depth),
    }  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """A 2 x 3 width x depth grid, two seeds for (1, 1), and some junk."""
    root = tmp_path / "runs"
    for w in (1.0, 2.0):
        for d in (0.5, 1.0, 2.0):
            fake_run(root, f"w{w:g}-d{d:g}-s0", width=w, depth=d, test_acc=0.9 + 0.01 * w + 0.001 * d)
    fake_run(root, "w1-d1-s1", width=1.0, depth=1.0, seed=1, test_acc=0.93)
    (root / "grid" / "corrupt").mkdir()
    (root / "grid" / "corrupt" / "summary.json").write_text('{"status": "compl')
    (root / "grid" / "corrupt" / "config.yaml").write_text("name: x\n")
    (root / "grid" / "half").mkdir()
    (root / "grid" / "half" / "config.yaml").write_text("name: x\n")
    (root / "grid" / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    return root


def test_broken_partial_and_foreign_folders_are_skipped_with_a_reason(grid: Path) -> None:
    runs, skipped = load_runs([grid])
    assert len(runs) == 7
    reasons = {s.path.name: s.reason for s in skipped}
    assert reasons["corrupt"].startswith("summary.json is not valid JSON")
    assert reasons["half"].startswith("partial run: no summary.json")
    assert reasons["empty"].startswith("empty folder")
    assert reasons["notes"] == "not a dlx run: no summary.json"
    with pytest.raises(DlxError, match="no such file or folder"):
        load_runs([grid / "nope"])


def test_runs_differing_only_by_seed_become_one_row_with_mean_std_n(grid: Path) -> None:
    runs, _ = load_runs([grid])
    rows = {r.values["run"]: r for r in make_rows(runs)}
    assert len(rows) == 6
    pair = rows["grid/w1-d1"]
    accs = [0.9 + 0.01 + 0.001, 0.93]
    assert pair.n == 2 and pair.values["seed"] == "0,1"
    assert pair.values["test_acc"] == pytest.approx(statistics.fmean(accs))
    assert pair.std["test_acc"] == pytest.approx(statistics.stdev(accs))
    assert "params" not in pair.std  # same model: no spread
    assert len(make_rows(runs, group=False)) == 7


def test_table_figures_equal_the_summaries(grid: Path) -> None:
    result = runner.invoke(app, ["compare", str(grid), "--format", "json", "--no-group"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 7
    for row in rows:
        summary = json.loads((Path(row["paths"][0]) / "summary.json").read_text())
        assert row["test_acc"] == summary["test_acc"]
        assert row["val_acc"] == summary["best_val_acc"]
        assert row["params"] == summary["parameters"]
        assert row["flops"] == summary["flops_per_image"]
        assert row["wall"] == summary["wall_seconds"]
        assert row["gap"] == pytest.approx(0.95 - summary["best_val_acc"])
        assert row["fit"] in ("ok", "overfits")
    assert "skipped" in result.output and "corrupt" in result.output  # on stderr, the JSON stays clean


def test_where_sort_top_columns_and_formats(grid: Path) -> None:
    result = compare([grid], where=["model.width=2", "depth>=1"], sort="depth", descending=True)
    assert [r.values["run"] for r in result.rows] == ["w2-d2-s0", "w2-d1-s0"]
    best = compare([grid], top=2)
    assert [round(r.values["test_acc"], 4) for r in best.rows] == [0.922, 0.921]
    chosen = compare([grid], columns="run,test_acc", where=["status=completed", "seed!=1"])
    assert chosen.columns == ["run", "test_acc"] and len(chosen.rows) == 6
    text = render(chosen.rows, chosen.columns, "csv")
    records = list(csv.DictReader(io.StringIO(text)))
    assert records[0].keys() == {"run", "test_acc", "n"} and len(records) == 6
    md = render(best.rows, best.columns, "markdown")
    assert md.splitlines()[0].startswith("| run | model | width | depth | params") and "92.20%" in md
    with pytest.raises(DlxError, match="did you mean 'width'"):
        compare([grid], where=["widht=2"])
    with pytest.raises(DlxError, match="unknown column; did you mean 'test_acc'"):
        compare([grid], sort="test_ac")


def test_cli_table_and_pictures(grid: Path, tmp_path: Path) -> None:
    out = tmp_path / "pics"
    result = runner.invoke(app, ["compare", str(grid / "grid"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "w1-d1" in result.output and "92.05 ± 1.34%" in result.output  # the two seeds of (1, 1)
    assert "skipped" in result.output and "empty folder" in result.output
    names = {p.name for p in out.iterdir()}
    assert {"heatmap_test_acc.png", "heatmap_wall_seconds.png", "heatmap_parameters.png", "curves.png",
            "pareto_parameters.png", "pareto_seconds.png"} <= names  # fmt: skip
    bad = runner.invoke(app, ["compare", str(grid), "--format", "xml"])
    assert bad.exit_code == 1 and "choose one of table, csv, markdown, json" in bad.output


def test_heatmap_has_the_grid_shape(grid: Path, tmp_path: Path) -> None:
    runs, _ = load_runs([grid])
    maps = heatmaps(runs, tmp_path)
    matrix = maps[tmp_path / "heatmap_test_acc.png"]
    assert matrix.shape == (3, 2)  # depths x widths
    assert matrix[1, 0] == pytest.approx(statistics.fmean([0.911, 0.93]))  # depth 1, width 1: mean of the seeds
    assert (tmp_path / "heatmap_test_acc.png").stat().st_size > 1000


def test_pareto_front() -> None:
    points = [(10, 0.9), (20, 0.95), (15, 0.85), (30, 0.95), (5, 0.5), (20, 0.97)]
    assert pareto_front(points) == [4, 0, 5]


def test_heatmaps_average_only_runs_that_differ_by_seed(tmp_path: Path) -> None:
    """Runs of one width and depth but another learning rate are two heat maps, never one averaged cell."""
    root = tmp_path / "runs"
    for w in (1.0, 2.0):
        fake_run(root, f"w{w:g}-lr0.01-s0", width=w, test_acc=0.10, config={"optimizer.lr": 0.01})
        fake_run(root, f"w{w:g}-lr0.001-s0", width=w, test_acc=0.99, config={"optimizer.lr": 0.001})
    fake_run(root, "w1-lr0.001-s1", width=1.0, seed=1, test_acc=0.97, config={"optimizer.lr": 0.001})
    runs, _ = load_runs([root])
    pics = tmp_path / "pics"
    maps = heatmaps(runs, pics)
    assert pics / "heatmap_test_acc.png" not in maps
    assert maps[pics / "heatmap_test_acc_lr0.01.png"].tolist() == [[0.10, 0.10]]  # depth 1 x widths 1, 2
    high = maps[pics / "heatmap_test_acc_lr0.001.png"]
    assert high[0, 0] == pytest.approx(0.98) and high[0, 1] == pytest.approx(0.99)  # seeds 0 and 1 averaged
    assert {p.name for p in maps} == {f"heatmap_{m}_{lr}.png" for m in ("test_acc", "wall_seconds", "parameters")
                                      for lr in ("lr0.01", "lr0.001")}  # fmt: skip


def test_pareto_axis_names_its_metric_and_the_legend_covers_no_point(grid: Path) -> None:
    runs, _ = load_runs([grid])
    fig = pareto_figure(make_rows(runs), "params", "parameters")
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test accuracy"
    fig.draw_without_rendering()
    legend, area = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= area.x1 or legend.y0 >= area.y1  # beside or above the axes, not on the points

    # One configuration without a test accuracy: every point is a best validation accuracy, and the axis says so.
    for run_id, change in (("w2-d2-s0", {"test_acc": None}), ("w1-d0.5-s0", {"best_val_acc": 0.6})):
        summary_path = grid / "grid" / run_id / "summary.json"
        summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), **change}))
    runs, _ = load_runs([grid])
    fig = pareto_figure(make_rows(runs), "params", "parameters")
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_ylabel() == "best validation accuracy"
    assert "no test accuracy for 1 of 6 configurations" in ax.get_title()
    points = ax.containers[0].lines[0].get_ydata()  # the errorbar markers
    assert sorted(points) == sorted(r.values["val_acc"] for r in make_rows(runs))


def test_curves_say_how_many_runs_they_leave_out(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    total = MAX_CURVES + 3
    for i in range(total):  # seeds of one configuration, accuracies in no order: 0.80, 0.87, 0.94, ...
        fake_run(root, f"r{i}", seed=i, test_acc=0.80 + (7 * i % total) / 100)
    result = compare([root], output=tmp_path / "pics")
    note = f"curves.png shows {MAX_CURVES} of {total} runs"
    assert [n for n in result.notes if n.startswith(note)], result.notes
    runs, shown_of = curve_runs(result.rows)
    assert shown_of == total and len(runs) == MAX_CURVES
    accs = [r.summary["test_acc"] for r in runs]
    assert accs == sorted(accs, reverse=True) and min(accs) > 0.80 + 2 / 100  # the three worst are left out
    fig = curves_figure(runs, total)
    assert fig.get_suptitle() == f"{MAX_CURVES} of {total} runs shown (best test accuracy first)"
    cli = runner.invoke(app, ["compare", str(root), "--output", str(tmp_path / "cli")])
    assert cli.exit_code == 0 and note in cli.output


def test_curves_of_few_runs_show_them_all_without_a_note(grid: Path, tmp_path: Path) -> None:
    result = compare([grid], output=tmp_path / "pics")
    assert not result.notes
    runs, total = curve_runs(result.rows)
    assert len(runs) == total == 7
    assert curves_figure(runs, total).get_suptitle() == ""


# ---------------------------------------------------------------------------- hostile run folders


def _edit_summary(path: Path, change: Any) -> None:
    """Apply ``change`` (a callable on the summary dict, or the new file text) to a run's summary.json."""
    file = path / "summary.json"
    if isinstance(change, str):
        file.write_text(change)
    else:
        summary = json.loads(file.read_text())
        change(summary)
        file.write_text(json.dumps(summary))


DEEP = "[" * 100_000 + "]" * 100_000  # json.loads (and PyYAML) raise RecursionError, libyaml crashes the process
HOSTILE_SUMMARIES: dict[str, tuple[Any, str]] = {
    "model-str": (lambda s: s.update(model="deep_cnn"), "summary.json: 'model' must be a mapping, got str"),
    "name-list": (lambda s: s.update(name=["grid"]), "summary.json: 'name' must be text, got list"),
    "run-id-int": (lambda s: s.update(run_id=7), "summary.json: 'run_id' must be text, got int"),
    "model-name-int": (lambda s: s["model"].update(name=3), "summary.json: 'model.name' must be text, got int"),
    "width-str": (lambda s: s["model"].update(width="wide"), "summary.json: 'model.width' must be a number, got str"),
    "test-acc-str": (lambda s: s.update(test_acc="high"), "summary.json: 'test_acc' must be a number, got str"),
    "params-bool": (lambda s: s.update(parameters=True), "summary.json: 'parameters' must be a number, got bool"),
    "diagnosis-str": (lambda s: s.update(diagnosis="ok"), "summary.json: 'diagnosis' must be a mapping, got str"),
    "status-list": (lambda s: s.update(status=["completed"]), "summary.json has no valid status (one of running,"),
    "top-list": ('[{"status": "completed"}]', "summary.json: the top level must be a mapping, got list"),
    "deep": ('{"status": "completed", "x": ' + DEEP + "}", "summary.json: nested deeper than 32 levels"),
    "deep-50": ('{"status": "completed", "x": ' + "[" * 50 + "]" * 50 + "}", "summary.json: nested deeper than"),
    "digits": ('{"status": "completed", "parameters": ' + "1" * 5000 + "}", "summary.json is not valid JSON (Exceeds"),
}  # fmt: skip


def test_summaries_of_the_wrong_shape_are_skipped_and_the_good_runs_compared(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "good-w1", width=1.0)
    fake_run(root, "good-w2", width=2.0)
    for run_id, (change, _) in HOSTILE_SUMMARIES.items():
        path = fake_run(root, run_id)
        (path / "metrics.jsonl").unlink()  # no history: the summary's diagnosis is what compare reads
        _edit_summary(path, change)
    result = compare([root], output=tmp_path / "pics")
    assert sorted(r.path.name for r in result.runs) == ["good-w1", "good-w2"]
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons.keys() == HOSTILE_SUMMARIES.keys()
    for run_id, (_, reason) in HOSTILE_SUMMARIES.items():
        assert reasons[run_id].startswith(reason), (run_id, reasons[run_id])
    assert "heatmap_test_acc.png" in {p.name for p in result.pictures}
    cli = runner.invoke(app, ["compare", str(root), "--format", "csv"])
    assert cli.exit_code == 0, cli.output
    assert "skipped" in cli.stderr and "'model' must be a mapping, got str" in cli.stderr
    assert len(list(csv.DictReader(io.StringIO(cli.stdout)))) == 2


def test_summary_nulls_count_as_absent(tmp_path: Path) -> None:
    path = fake_run(tmp_path / "runs", "nulls")
    _edit_summary(path, lambda s: s.update(model=None, name=None, test_acc=None, diagnosis=None))
    runs, skipped = load_runs([tmp_path / "runs"])
    assert len(runs) == 1 and not skipped


def test_hostile_metrics_rows_are_skipped_with_the_line(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "good")
    (fake_run(root, "deep") / "metrics.jsonl").write_text(DEEP + "\n")
    (fake_run(root, "epoch") / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": [2], "val_acc": 0.5}\n')
    (fake_run(root, "digits") / "metrics.jsonl").write_text('{"epoch": ' + "1" * 5000 + "}\n")
    result = compare([root], output=tmp_path / "pics")
    assert [r.path.name for r in result.runs] == ["good"]
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons["deep"] == "metrics.jsonl line 1: nested deeper than 32 levels"
    assert reasons["epoch"] == "metrics.jsonl line 2: 'epoch' must be a number, got list"
    assert reasons["digits"].startswith("metrics.jsonl line 1 is not valid JSON (Exceeds the limit")


LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{b}: &{b} {{{', '.join(f'k{i}: *{a}' for i in range(10))}}}\n" for a, b in itertools.pairwise("abcdefghij")
)  # ten aliases of ten aliases ... : 10^10 values when walked as a tree
HOSTILE_CONFIGS: dict[str, tuple[str, str]] = {
    "deep": ("seed: 0\nx: " + DEEP + "\n", "config.yaml: nested deeper than 32 levels"),
    "deep-block": ("seed: 0\nx:\n" + "- " * 100_000 + "y\n", "config.yaml: nested deeper than 32 levels"),
    "alias-loop": ("seed: 0\nmodel: &m {name: deep_cnn, inner: *m}\n", "config.yaml: nested deeper than 32 levels"),
    "laughs": (LAUGHS, "config.yaml: more than 100,000 values"),
    "int-key": ("seed: 0\nmodel: {name: deep_cnn, layers: [{1: conv, conv: 8}]}\n",
                "config.yaml: keys must be text, got int"),
    "digits": ("seed: " + "1" * 5000 + "\n", "config.yaml: not valid YAML: Exceeds the limit"),
    "bad-date": ("seed: 0\nwhen: 2024-13-45\n", "config.yaml: not valid YAML: month must be in 1..12"),
    "syntax": ("seed: [0\n", "config.yaml: not valid YAML (line "),  # libyaml words it otherwise
    "list": ("- 1\n", "config.yaml: the top level must be a mapping of keys, got list"),
}  # fmt: skip


def test_hostile_config_yaml_is_skipped_with_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "good")
    for run_id, (text, _) in HOSTILE_CONFIGS.items():
        (fake_run(root, run_id) / "config.yaml").write_text(text)
    (fake_run(root, "latin1") / "config.yaml").write_bytes("seed: 0\nname: caf\xe9\n".encode("latin-1"))
    result = compare([root], output=tmp_path / "pics")
    assert [r.path.name for r in result.runs] == ["good"]
    reasons = {s.path.name: s.reason for s in result.skipped}
    for run_id, (_, reason) in HOSTILE_CONFIGS.items():
        assert reasons[run_id].startswith(reason), (run_id, reasons[run_id])
    assert reasons["latin1"] == "config.yaml: not a UTF-8 text file"


def test_run_files_that_are_not_regular_files_are_never_opened(tmp_path: Path) -> None:
    """A FIFO would block the read forever, /dev/zero never ends: such runs are skipped, the good one compared."""
    root = tmp_path / "runs"
    fake_run(root, "good")
    for name in ("summary.json", "config.yaml", "metrics.jsonl"):
        path = fake_run(root, f"fifo-{name}")
        (path / name).unlink()
        os.mkfifo(path / name)
    zero = fake_run(root, "zero")
    (zero / "summary.json").unlink()
    (zero / "summary.json").symlink_to("/dev/zero")
    folder = fake_run(root, "folder")
    (folder / "summary.json").unlink()
    (folder / "summary.json").mkdir()
    alone = root / "grid" / "fifo-alone"  # nothing else: not a run folder by its files, but say why
    alone.mkdir()
    os.mkfifo(alone / "summary.json")
    big = fake_run(root, "big")
    with (big / "summary.json").open("r+b") as f:
        f.truncate(2 << 20)  # sparse: 2 MiB of NULs on paper
    result = compare([root], output=tmp_path / "pics")
    assert [r.path.name for r in result.runs] == ["good"]
    assert {s.path.name: s.reason for s in result.skipped} == {
        "fifo-summary.json": "summary.json is not a regular file",
        "fifo-config.yaml": "config.yaml is not a regular file",
        "fifo-metrics.jsonl": "metrics.jsonl is not a regular file",
        "zero": "summary.json is not a regular file",
        "folder": "summary.json is not a regular file",
        "fifo-alone": "not a dlx run: summary.json is not a regular file",
        "big": "summary.json is larger than 1 MiB",
    }


def test_a_fifo_swapped_in_after_the_check_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check and the read are one open: a summary.json that turns into a FIFO after its stat cannot block."""
    path = fake_run(tmp_path / "runs", "swapped")
    target = path / "summary.json"
    regular = os.stat(target)
    target.unlink()
    os.mkfifo(target)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p) == str(target) else real_stat(p, *a, **k))

    def unblock() -> None:  # what a blocked reader needs to see end-of-file: a writer that opens and closes
        with contextlib.suppress(OSError):
            os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(5, unblock)
    timer.start()
    try:
        _, skipped = load_runs([tmp_path / "runs"])
    finally:
        timer.cancel()
    assert [s.reason for s in skipped] == ["summary.json is not a regular file"]


def test_output_that_is_a_file_is_one_line_before_anything_is_drawn(grid: Path, tmp_path: Path) -> None:
    file = tmp_path / "taken.png"
    file.write_bytes(b"mine")
    for output, message in ((file, f"--output {file}: is a file; give a folder"),
                            (file / "pics", f"--output {file / 'pics'}: {file} is a file; give a folder")):  # fmt: skip
        result = runner.invoke(app, ["compare", str(grid), "--output", str(output)])
        assert result.exit_code == 1, result.output
        assert result.output == f"error: {message}\n"  # one line, no traceback, no table
        with pytest.raises(DlxError, match="is a file; give a folder"):
            compare([grid], output=output)
    assert file.read_bytes() == b"mine"


def test_config_yaml_is_read_by_libyaml_unless_it_could_nest_deep(tmp_path: Path) -> None:
    """libyaml is the speed of comparing thousands of runs, but crashes the process on very deep nesting."""
    text = (fake_run(tmp_path, "r") / "config.yaml").read_text()
    assert yaml_loader(text) is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert yaml_loader("x:\n" + "- " * 100_000 + "y\n") is yaml.SafeLoader  # RecursionError, not SIGSEGV
    assert yaml_loader("x: " + "[" * 1_001 + "]" * 1_001) is yaml.SafeLoader


YAML_TEXTS = [
    "a: 1\nb: [1, 2.5, -3, 1e3, 1.0e+3, .inf, -.inf, 0o17, 0x1F, 1_000, '1', \"x\\ty\"]\n",
    "a: {b: null, c: ~, d: Null, e: true, f: yes, g: Off, h: ''}\ni: 2001-12-14\n",  # a date: not JSON's
    "a:\n  - b: 1\n    c: [x, y]\n  - {}\n  - []\nd: |\n  two\n  lines\ne: >-\n  folded\n  text\n",
    "a:\n- 1\n- 2\n# a comment\n\nb: x\n  continued\nc: 3",  # a top-level list, no newline at the end
    "a: 1\nb: 2\na: 3\n",  # a repeated key: the last value, the first place
    "base: &b {x: 1, y: [1, 2]}\nthis: *b\nthat: {<<: *b, y: 3}\n",  # aliases and a merge key across entries
    "a: &x 1\nb: &x 2\n",  # one anchor twice: an error, though each entry alone is fine
    "s: !!set {a, b}\no: !!omap [{a: 1}]\nbin: !!binary aGk=\nstr: !!str 12\n",  # tags
    'a: "two\nb: lines"\nc: [1,\n  2]\n',  # a quoted scalar and a flow list over two lines
    "a: 1\r\nb: {c: 2}\r\n",
    "# a comment\n---\nname: x  # another\n...\n",
    "a: 1\n...\nb: 2\n",  # not one document
    "a: 1\nb\n",
    "",
]


@pytest.mark.parametrize("text", YAML_TEXTS)
def test_config_yaml_reads_as_pyyaml_reads_it(tmp_path: Path, text: str) -> None:
    """Read alone or by its entries (the second time, from what the first parsed), a config is what PyYAML reads."""
    try:
        expected: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        expected = "not valid YAML"
    for _ in range(2):
        got = parse_config(text)
        assert got.startswith(expected) if isinstance(got, str) else got == expected
    real = (fake_run(tmp_path, "r", config={"optimizer.lr": float("inf")}) / "config.yaml").read_text()
    assert parse_config(real) == yaml.safe_load(real)
    assert parse_config(real.replace("seed: 0", "seed: 1")) == {**yaml.safe_load(real), "seed": 1}


def test_each_distinct_config_entry_is_parsed_once_per_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of a sweep differ in a few lines of config.yaml: those are what is parsed again, not the ~70 others."""
    root = tmp_path / "runs"
    for seed in range(5):
        fake_run(root, f"s{seed}", seed=seed)
    entries = len(yaml.safe_load((root / "grid" / "s0" / "config.yaml").read_text()))
    parsed: list[str] = []
    load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda text, Loader: parsed.append(text) or load(text, Loader=Loader))
    runs, _ = load_runs([root])
    assert [r.config["seed"] for r in runs] == [0, 1, 2, 3, 4]
    assert len(parsed) == entries + 4  # every entry of the first run, then the seed of each other
    assert parsed[entries:] == [f"seed: {seed}\n" for seed in (1, 2, 3, 4)]


def test_the_grouping_key_groups_as_the_flattened_configuration(tmp_path: Path) -> None:
    """One json.dumps per run (configuration_key) groups runs exactly as the flattened configuration does."""
    configs = [
        {"seed": 0, "model": {"width": 1}, "data": {"dataset": "mnist", "data_dir": "/a", "download": True}},
        {"seed": 1, "model": {"width": 1}, "data": {"dataset": "mnist", "data_dir": "/b"}, "output": {"x": 1}},
        {"seed": 0, "model": {"width": 2}, "data": {"dataset": "mnist"}},
        {"model": {"width": 1}, "data": {"dataset": "mnist"}, "extra": {}},
        {"model": {"width": 1}, "data": {"data_dir": "/a"}},
        {"model": {"width": 1}},
        {"model": {"width": 1}, "data": {}},
    ]
    records = [RunRecord(tmp_path, {}, c, [], {}) for c in configs]
    for a in records:
        for b in records:
            same = configuration(a) == configuration(b)
            assert (configuration_key(a) == configuration_key(b)) == same, (a.config, b.config)
