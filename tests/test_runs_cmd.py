"""dlx runs: listing (stale runs told from live ones by the run lock), rm, clean-checkpoints; on real run folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dlx.cli import app
from dlx.config import config_from_dict
from dlx.manage import format_age, format_bytes, parse_duration
from dlx.runs import Run
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real completed run (best.pt and last.pt), copied into each test's runs folder."""
    runs = tmp_path_factory.mktemp("runs_cmd") / "runs"
    cfg = tiny(runs, **{"train.epochs": 1, "data.train_size": 500, "data.test_size": 200, "data.val_size": 200})
    summary = start_run(config_from_dict(cfg), quiet=True)
    assert summary["status"] == "completed"
    return Path(summary["run_dir"])


def _copy(trained: Path, dest: Path, **changes: Any) -> Path:
    """A copy of the real run at ``dest`` with its summary changed (status, started_at, ...)."""
    shutil.copytree(trained, dest)
    run = Run(dest)
    summary = {**run.read_summary(), "run_id": dest.name, "run_dir": str(dest), **changes}
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


def _days_ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="seconds")


@pytest.fixture
def zoo(trained: Path, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """completed, failed, stale (running, nobody holds it), live (running, held here), interrupted, a sweep cell,
    plus a folder that is no run and a run whose summary is broken."""
    root = tmp_path / "runs"
    paths = {
        "completed": _copy(trained, root / "tiny" / "done"),
        "failed": _copy(trained, root / "tiny" / "bad", status="failed", test_acc=None),
        "stale": _copy(trained, root / "tiny" / "dead", status="running", test_acc=None, epochs_completed=0),
        "live": _copy(trained, root / "tiny" / "live", status="running", test_acc=None, started_at=_days_ago(30)),
        "interrupted": _copy(trained, root / "tiny" / "paused", status="interrupted", started_at=_days_ago(10)),
        "cell": _copy(trained, root / "grid" / "w1-d1-s0", name="grid"),
    }
    (root / "tiny" / "profile").mkdir()
    (root / "tiny" / "profile" / "profile.png").write_bytes(b"png")
    broken = root / "tiny" / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    live = Run(paths["live"])
    live.acquire()  # a training process holds its run folder's lock
    try:
        yield {"root": root, **paths}
    finally:
        live.release()


def _listed(root: Path, *args: str) -> dict[str, str]:
    result = runner.invoke(app, ["runs", str(root), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return {row["run_id"]: row["status"] for row in json.loads(result.stdout)}


def test_ls_tells_completed_failed_stale_and_live_runs_apart(zoo: dict[str, Path]) -> None:
    root = zoo["root"]
    assert _listed(root) == {"done": "completed", "bad": "failed", "dead": "stale", "live": "running",
                             "paused": "interrupted", "w1-d1-s0": "completed"}  # fmt: skip
    result = runner.invoke(app, ["runs", str(root)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if " dead " in x)
    assert "stale" in line and "0/1" in line and str(zoo["stale"]) in line
    line = next(x for x in result.stdout.splitlines() if " done " in x)
    assert "completed" in line and "%" in line and "1/1" in line
    assert "10d" in next(x for x in result.stdout.splitlines() if " paused " in x)
    assert "skipped 2 folder(s) that are not readable runs" in result.stderr
    # The listing only peeks at the locks: the live run is still held.
    assert not Run(zoo["live"]).try_acquire()


def test_ls_filters_by_status_and_writes_csv(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root = zoo["root"]
    assert _listed(root, "--status", "stale") == {"dead": "stale"}
    assert _listed(root, "--status", "failed", "--status", "running") == {"bad": "failed", "live": "running"}
    assert _listed(root, "--status", "completed,interrupted").keys() == {"done", "paused", "w1-d1-s0"}
    result = runner.invoke(app, ["runs", "ls", str(root / "grid"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("name,run_id,kind,status,best_val_acc,test_acc") and len(lines) == 2
    result = runner.invoke(app, ["runs", str(root), "--status", "done"])
    assert result.exit_code == 1 and result.output.strip().startswith("error: --status 'done': choose from")
    monkeypatch.chdir(root.parent)  # bare `dlx runs` lists runs/
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and "6 run(s) below runs" in result.stdout, result.output


def test_rm_yes_deletes_exactly_the_failed_and_stale_runs(zoo: dict[str, Path]) -> None:
    result = runner.invoke(app, ["runs", "rm", "--failed", "--path", str(zoo["root"]), "--yes"])
    assert result.exit_code == 0, result.output
    assert not zoo["failed"].exists() and not zoo["stale"].exists()
    assert all(zoo[k].is_dir() for k in ("completed", "live", "interrupted", "cell"))
    assert "deleted 2 run folder(s), freed " in result.output


def test_rm_named_runs_and_older_than(zoo: dict[str, Path]) -> None:
    result = runner.invoke(app, ["runs", "rm", str(zoo["completed"]), str(zoo["cell"]), "--yes"])
    assert result.exit_code == 0, result.output
    assert not zoo["completed"].exists() and not zoo["cell"].exists() and zoo["failed"].is_dir()
    # Older than a week: the interrupted run (10 days) goes; the live one (30 days) is held and stays.
    result = runner.invoke(app, ["runs", "rm", "--older-than", "7d", "--path", str(zoo["root"]), "--yes"])
    assert result.exit_code == 0, result.output
    assert not zoo["interrupted"].exists()
    assert zoo["live"].is_dir() and zoo["failed"].is_dir() and zoo["stale"].is_dir()
    assert f"skipped {zoo['live']}: in use by a running dlx process" in result.output


def test_rm_refuses_without_yes_when_nobody_can_answer(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["runs", "rm", str(zoo["failed"])])  # CliRunner's stdin is not a terminal
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: refusing to delete without --yes: stdin is not a terminal (nothing deleted)"
    assert zoo["failed"].is_dir()
    monkeypatch.setattr("dlx.cli_runs._interactive", lambda: True)
    result = runner.invoke(app, ["runs", "rm", str(zoo["failed"])], input="n\n")
    assert result.exit_code == 1 and zoo["failed"].is_dir() and "nothing deleted" in result.output
    result = runner.invoke(app, ["runs", "rm", str(zoo["failed"])], input="y\n")
    assert result.exit_code == 0 and not zoo["failed"].exists(), result.output


def test_rm_never_deletes_a_held_run_nor_anything_when_a_path_is_no_run(zoo: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["runs", "rm", str(zoo["live"]), "--yes"])
    assert result.exit_code == 1 and zoo["live"].is_dir()
    assert f"skipped {zoo['live']}: in use by a running dlx process" in result.output
    other = tmp_path / "notes"
    other.mkdir()
    for target in (other, tmp_path / "missing", zoo["root"] / "tiny"):
        result = runner.invoke(app, ["runs", "rm", str(zoo["failed"]), str(target), "--yes"])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith(f"error: {target}: ")
        assert zoo["failed"].is_dir()


def test_older_than_reads_durations_and_rejects_others(zoo: dict[str, Path]) -> None:
    assert [parse_duration(t) for t in ("30m", "12h", "7d", "2w", "45s")] == [1800, 43200, 604800, 1209600, 45]
    assert [format_age(s) for s in (5, 125, 3 * 3600 + 9, 2 * 86400 + 7)] == ["5s", "2m", "3h", "2d"]
    for bad in ("7x", "7", "d", "-1d", "1.5h"):
        result = runner.invoke(app, ["runs", "rm", "--older-than", bad, "--path", str(zoo["root"]), "--yes"])
        assert result.exit_code == 1
        assert (
            result.output.strip() == f"error: --older-than '{bad}': give a number and a unit, e.g. 30m, 12h, 7d or 2w"
        )
    assert all(p.is_dir() for k, p in zoo.items() if k != "root")
    result = runner.invoke(app, ["runs", "rm", "--yes"])
    assert (
        result.exit_code == 1 and result.output.strip() == "error: give run folders to delete, --failed or --older-than"
    )


def test_clean_checkpoints_removes_last_pt_of_completed_runs_only(zoo: dict[str, Path]) -> None:
    no_best = zoo["cell"]
    (no_best / "checkpoints" / "best.pt").unlink()
    last_size = (zoo["completed"] / "checkpoints" / "last.pt").stat().st_size
    result = runner.invoke(app, ["runs", "clean-checkpoints", str(zoo["root"])])
    assert result.exit_code == 1 and "refusing to delete without --yes" in result.output
    assert (zoo["completed"] / "checkpoints" / "last.pt").is_file()
    result = runner.invoke(app, ["runs", "clean-checkpoints", str(zoo["root"]), "--yes"])
    assert result.exit_code == 0, result.output
    assert not (zoo["completed"] / "checkpoints" / "last.pt").exists()
    assert (zoo["completed"] / "checkpoints" / "best.pt").is_file()
    for key in ("failed", "stale", "live", "interrupted", "cell"):  # incomplete runs resume from last.pt
        assert (zoo[key] / "checkpoints" / "last.pt").is_file(), key
    assert f"freed {format_bytes(last_size)} ({last_size:,} bytes)" in result.output
    assert "kept last.pt of 4 incomplete run(s): they need it to resume" in result.output
    assert "kept last.pt of 1 completed run(s) without best.pt" in result.output
    result = runner.invoke(app, ["runs", "clean-checkpoints", str(zoo["root"]), "--yes"])
    assert result.exit_code == 0 and "nothing to delete" in result.output
