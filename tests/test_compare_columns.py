"""dlx compare: config keys as columns, the keys that vary shown by default, exact replicates, curves by step."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dlx.cli import app
from dlx.compare import compare
from dlx.compare.columns import MAX_VARYING
from dlx.config import config_from_dict
from dlx.session import start_run
from tests.conftest import tiny
from tests.test_compare import fake_run

runner = CliRunner()


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ---------------------------------------------------------------------------- config keys as columns


def test_columns_take_config_keys_in_dotted_form(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "adam", test_acc=0.91)
    fake_run(root, "sgd", test_acc=0.87, config={"optimizer.name": "sgd", "data.batch_size": 64})
    result = runner.invoke(app, ["compare", str(root), "--columns", "optimizer.name,test_acc", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "optimizer.name,test_acc,n\nadam,0.91,1\nsgd,0.87,1\n"
    both = compare([root], columns="run,data.batch_size,optimizer", sort="data.batch_size", descending=True)
    assert [r.values["data.batch_size"] for r in both.rows] == [64, 25]
    assert both.rows[0].values["optimizer"] == {"name": "sgd", "lr": 0.003}  # a section: its mapping


def test_an_unknown_column_is_one_line_that_names_the_nearest_key(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "a")
    result = runner.invoke(app, ["compare", str(root), "--columns", "run,optimizer.nmae"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: --columns 'optimizer.nmae': unknown column; did you mean 'optimizer.name'?")
    assert "columns: run, model," in lines[0] and "config key of the runs: optimizer.name, optimizer.lr" in lines[0]
    typo = runner.invoke(app, ["compare", str(root), "--columns", "test_ac"])
    assert typo.exit_code == 1 and "did you mean 'test_acc'?" in typo.output


def test_config_keys_that_differ_are_columns_by_default(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "lr0.01", config={"optimizer.lr": 0.01})
    fake_run(root, "lr0.001", seed=1, config={"optimizer.lr": 0.001})  # the seed differs too: never a column
    result = compare([root])
    assert result.columns[:5] == ["run", "model", "width", "depth", "optimizer.lr"]
    assert "seed" not in result.columns and "name" not in result.columns and not result.notes
    cli = runner.invoke(app, ["compare", str(root), "--format", "csv"])
    assert cli.exit_code == 0, cli.output
    assert {r["run"]: r["optimizer.lr"] for r in csv_rows(cli.stdout)} == {"lr0.01": "0.01", "lr0.001": "0.001"}


def test_varying_keys_leave_out_names_output_and_run_ids_and_stop_at_a_few(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "a", name="one")
    path = fake_run(root, "b", name="two", config={"output.gallery_size": 3, "data.data_dir": str(tmp_path)})
    same = compare([root])
    assert same.columns[4] == "params" and not same.notes  # names, output and data folder: no column
    # A key whose value holds the run's own id differs in every run: not a difference of configuration.
    for run_id in ("c", "d"):
        fake_run(root, run_id, name="three", config={"model.init_from": f"runs/three/{run_id}/checkpoints/best.pt"})
    assert compare([root / "three"]).columns[4] == "params"
    many = {"regularization.dropout": 0.5, "optimizer.lr": 0.1, "optimizer.name": "sgd", "train.epochs": 3,
            "train.log_every": 2, "data.batch_size": 8, "data.val_size": 100, "data.train_size": 300}  # fmt: skip
    fake_run(root, "e", name="two", config=many)
    result = compare([path.parent])
    assert result.columns[4 : 4 + MAX_VARYING + 1] == [
        "data.batch_size", "data.train_size", "data.val_size", "optimizer.lr", "optimizer.name",
        "regularization.dropout", "params",
    ]  # fmt: skip
    assert result.notes == [
        "2 more config keys differ between the runs: train.epochs, train.log_every (show them with --columns)"
    ]


# ---------------------------------------------------------------------------- replicates


CURVES_CALLS: list[dict[str, Any]] = []  # what report.save_curves got while ``trained`` trained


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real one-epoch MNIST runs of one configuration, seeds 0 and 1: runs/tiny/s0, runs/tiny/s1."""
    import torch

    from dlx import report

    root = tmp_path_factory.mktemp("trained") / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the one_thread fixture
    real = report.save_curves

    def spy(history: list[dict[str, Any]], path: Path, steps: list[dict[str, Any]] | None = None) -> None:
        CURVES_CALLS.append({"path": Path(path), "steps": list(steps or [])})
        real(history, path, steps=steps)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(report, "save_curves", spy)
            for seed in (0, 1):
                cfg = tiny(root, seed=seed, **{"train.epochs": 1, "data.train_size": 1000})  # 40 steps, a row every 5
                assert start_run(config_from_dict(cfg), run_id=f"s{seed}", quiet=True)["status"] == "completed"
    finally:
        torch.set_num_threads(threads)
    return root


def test_two_seeds_are_one_row_and_a_copied_run_folder_counts_once(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(trained, root)
    (row,) = compare([root]).rows
    assert row.n == 2 and row.values["seed"] == "0,1"
    shutil.copytree(root / "tiny" / "s0", root / "tiny" / "s0-backup")
    result = compare([root])
    (row,) = result.rows
    assert row.n == 2 and sorted(r.path.name for r in row.runs) == ["s0", "s1"]
    assert result.notes == [f"{root / 'tiny' / 's0-backup'} is the same run as {root / 'tiny' / 's0'} "
                            "(the same run_id and started_at): counted once"]  # fmt: skip
    cli = runner.invoke(app, ["compare", str(root), "--format", "csv"])
    assert cli.exit_code == 0, cli.output
    assert [r["n"] for r in csv_rows(cli.stdout)] == ["2"]
    assert "s0-backup is the same run as" in cli.stderr


def test_a_copy_resumed_elsewhere_is_the_same_run(trained: Path, tmp_path: Path) -> None:
    """A resume keeps the first process's start and provenance; the copy further along is the one counted."""
    root = tmp_path / "runs"
    shutil.copytree(trained, root)
    moved = root / "tiny" / "s1-moved"
    shutil.copytree(root / "tiny" / "s1", moved)
    summary = json.loads((moved / "summary.json").read_text())
    summary.update(run_id="s1-moved", run_dir=str(moved), epochs_completed=2, ended_at="2999-01-01T00:00:00+00:00",
                   resumed=[{"at": "2999-01-01T00:00:00+00:00", "from_epoch": 1, "world_size": 1}])  # fmt: skip
    (moved / "summary.json").write_text(json.dumps(summary))
    result = compare([root])
    (row,) = result.rows
    assert sorted(r.path.name for r in row.runs) == ["s0", "s1-moved"]
    assert result.notes == [f"{root / 'tiny' / 's1'} is the same run as {moved} (the same provenance): counted once"]


def test_runs_that_differ_by_more_than_the_seed_are_rows_of_their_own(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "lr0.01-s0", seed=0, config={"optimizer.lr": 0.01})
    fake_run(root, "lr0.001-s1", seed=1, config={"optimizer.lr": 0.001})
    fake_run(root, "lr0.001-s2", seed=2, config={"optimizer.lr": 0.001})
    shutil.copytree(root / "grid" / "lr0.01-s0", root / "grid" / "copy")  # no start time: the same summary.json
    result = compare([root], sort="optimizer.lr")
    assert [(r.values["optimizer.lr"], r.n) for r in result.rows] == [(0.001, 2), (0.01, 1)]
    assert result.notes == [f"{root / 'grid' / 'copy'} is the same run as {root / 'grid' / 'lr0.01-s0'} "
                            "(the same summary.json): counted once"]  # fmt: skip


# ---------------------------------------------------------------------------- curves by step


def step_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics_steps.jsonl").read_text().splitlines()]


def test_a_runs_curves_png_draws_its_step_rows(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlx import report

    for seed in (0, 1):
        run = trained / "tiny" / f"s{seed}"
        (call,) = [c for c in CURVES_CALLS if c["path"] == run / "curves.png"]
        assert call["steps"] == step_rows(run) and len(call["steps"]) == 8  # 40 steps, a row every 5
        assert (run / "curves.png").stat().st_size > 1000
    figures: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    history = [json.loads(line) for line in (trained / "tiny" / "s0" / "metrics.jsonl").read_text().splitlines()]
    report.save_curves(history, trained / "unused.png", steps=step_rows(trained / "tiny" / "s0"))
    loss = figures[0].axes[0]
    (thin,) = [line for line in loss.get_lines() if line.get_label() == "train, per step"]
    assert list(thin.get_xdata()) == [row["epoch"] for row in step_rows(trained / "tiny" / "s0")]
    assert list(thin.get_xdata())[-1] == 1.0


def test_compare_draws_curves_by_step_and_falls_back_to_epochs_with_a_note(trained: Path, tmp_path: Path) -> None:
    from dlx.compare import load_runs
    from dlx.compare.plots import curves_figure
    from dlx.compare.steps import step_axes

    root = tmp_path / "runs"
    shutil.copytree(trained, root)
    result = compare([root], output=tmp_path / "pics", x="step")
    assert (tmp_path / "pics" / "curves.png").stat().st_size > 1000 and not result.notes
    runs, _ = load_runs([root])
    axes, notes = step_axes(runs)
    assert axes is not None and not notes
    assert {a.steps_per_epoch for a in axes.values()} == {40.0}  # 1,000 images in batches of 25
    fig = curves_figure(runs, len(runs), axes)
    loss = fig.axes[0]
    assert loss.get_xlabel() == "optimizer step"
    assert sorted(max(line.get_xdata()) for line in loss.get_lines()) == [40] * 6  # per step, train, val of 2 runs

    fake_run(root, "old")  # no metrics_steps.jsonl, no train_images in its summary
    result = compare([root], output=tmp_path / "mixed", x="step")
    assert (tmp_path / "mixed" / "curves.png").stat().st_size > 1000
    (note,) = [n for n in result.notes if n.startswith("curves.png is drawn by epoch, not step: 1 run(s)")]
    assert note.endswith("grid/old (no metrics_steps.jsonl)")
    cli = runner.invoke(app, ["compare", str(root), "--output", str(tmp_path / "cli"), "--x", "step"])
    assert cli.exit_code == 0, cli.output
    assert "curves.png is drawn by epoch" in cli.stderr
    for args, message in ((["--x", "step"], "error: --x step is the x of the learning curves: give --output DIR to draw them"),
                          (["--x", "steps", "--output", str(tmp_path)], "error: --x 'steps': choose one of epoch, step")):  # fmt: skip
        bad = runner.invoke(app, ["compare", str(root), *args])
        assert bad.exit_code == 1 and bad.output == message + "\n", bad.output
