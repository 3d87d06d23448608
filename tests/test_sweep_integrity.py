"""Sweeps run nothing that shouldn't run and lose nothing: isolated workers, build checks for every cell,
broken cells kept, absurd sizes refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlx.cli import app
from dlx.errors import ConfigError, DlxError
from dlx.sweep import load_sweep, run_sweep
from tests.test_sweep import closing_counts, line_console, write_sweep

runner = CliRunner()


def test_workers_never_import_modules_from_the_working_directory(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A json.py where `dlx sweep` runs is not imported by the workers; a class_path module there still is."""
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "json-was-imported"
    (work / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('shadowed json')\n")
    (work / "mynet.py").write_text(
        "from torch import nn\n\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self, in_channels=1, num_classes=10, image_size=28):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))\n"
    )
    path = write_sweep(tmp_path, runs_dir, {"seeds": [0]}, model={"class_path": "mynet:Net"}, regularization={})
    monkeypatch.chdir(work)
    result = run_sweep(load_sweep(path), console=line_console()[0])
    assert [st.state for st in result.states] == ["completed"], [st.note for st in result.states]
    assert not marker.exists()
    index = json.loads((runs_dir / "grid" / "sweep.json").read_text())
    assert index["import_path"] == str(work)


def test_cells_whose_optimizer_cannot_be_built_are_refused_before_anything_runs(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"grid": {"optimizer.args.eps": [1e-8, -1]}})
    with pytest.raises(ConfigError) as e:
        run_sweep(load_sweep(path), console=line_console()[0])
    assert e.value.problems == [
        f"{path}: cell eps-1: optimizer: adam rejects these settings: Invalid epsilon value: -1"
    ]
    assert not (runs_dir / "grid").exists()


def test_a_completed_cell_with_a_corrupt_summary_is_broken_not_deleted(tmp_path: Path, runs_dir: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, runs_dir, {"seeds": [0]}))
    run_sweep(sweep, console=line_console()[0])
    cell = sweep.cells[0].run_dir
    (cell / "summary.json").write_text("{ not json")
    kept = {p.relative_to(cell): p.read_bytes() for p in cell.rglob("*") if p.is_file() and p.name != ".lock"}
    assert Path("checkpoints/best.pt") in kept and Path("metrics.jsonl") in kept

    console, out = line_console()
    result = run_sweep(load_sweep(write_sweep(tmp_path, runs_dir, {"seeds": [0]})), console=console)
    assert [st.state for st in result.states] == ["broken"]
    assert not result.ok
    assert "--retry-failed moves the folder aside" in result.states[0].note
    assert {p.relative_to(cell): p.read_bytes() for p in cell.rglob("*") if p.is_file() and p.name != ".lock"} == kept
    index = json.loads((runs_dir / "grid" / "sweep.json").read_text())
    assert index["cells"][0]["status"] == "broken" and index["counts"] == {"broken": 1}
    assert closing_counts(out.getvalue()) == {"broken": 1}

    result = run_sweep(load_sweep(write_sweep(tmp_path, runs_dir, {"seeds": [0]})), retry_failed=True,
                       console=line_console()[0])  # fmt: skip
    assert [st.state for st in result.states] == ["completed"]
    (aside,) = (runs_dir / "grid").glob("s0.broken-*")
    assert (aside / "checkpoints" / "best.pt").read_bytes() == kept[Path("checkpoints/best.pt")]


def test_runs_dir_that_is_a_file_is_one_line(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"seeds": [0]})
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(a_file)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"error: --runs-dir {a_file}: is a file; give a folder"]


@pytest.mark.parametrize(("sweep", "count"), [
    ({"random": {"budget": 1_000_000_000, "params": {"optimizer.lr": {"low": 0.001, "high": 0.01}}}},
     "1,000,000,000 cells (random 1,000,000,000)"),
    ({"grid": {f"model.args.k{i}": list(range(10)) for i in range(7)}}, "10,000,000 cells (grid 10,000,000)"),
])  # fmt: skip
def test_absurdly_large_sweeps_are_refused_up_front(tmp_path: Path, runs_dir: Path, sweep: dict, count: str) -> None:
    path = write_sweep(tmp_path, runs_dir, sweep)
    started = time.perf_counter()
    with pytest.raises(DlxError) as e:
        load_sweep(path)
    assert time.perf_counter() - started < 2
    assert str(e.value) == f"{path}: the sweep has {count}; at most 10,000"
