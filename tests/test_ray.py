"""dlx sweep --executor ray on a real local Ray instance (2 CPUs): the same cells, folders and sweep.json as the
local pool; a killed task fails its cell with the reason; Ctrl-C leaves nothing running; no shared file system.

Slow (CI's second step, which installs the ``ray`` extra). The fast checks of the executor are at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from dlx.cli import app
from dlx.compare import compare
from dlx.sweep import load_sweep, run_sweep
from dlx.sweep.ray_executor import RayOptions, pack, unpack
from tests.conftest import REPO, tiny

DATA = {"dataset": "mnist", "val_size": 100, "train_size": 300, "test_size": 200, "batch_size": 50}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}


def write_sweep(tmp_path: Path, runs_dir: Path, grid: dict[str, Any], **base: Any) -> Path:
    cfg = tiny(runs_dir, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1}, data=DATA,
               **{"train.epochs": 1, "output.plots": False, **base})  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": grid}))
    return path


def quiet_console() -> tuple[Console, Any]:
    import io

    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def statuses(folder: Path) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads((folder / "sweep.json").read_text())["cells"]}


@pytest.mark.slow
def test_a_grid_through_ray_lands_where_the_local_pool_puts_it_and_a_rerun_trains_nothing(
    tmp_path: Path, runs_dir: Path
) -> None:
    path = write_sweep(tmp_path, runs_dir, {"model.width": [0.5, 1], "optimizer.lr": [0.05, 0.1]})
    console, out = quiet_console()
    result = run_sweep(load_sweep(str(path), [], None), ray=RayOptions(), console=console)
    assert result.ok, out.getvalue()
    folder = runs_dir / "grid"
    assert statuses(folder) == dict.fromkeys(["w0.5-lr0.05", "w0.5-lr0.1", "w1-lr0.05", "w1-lr0.1"], "completed")
    said = " ".join(out.getvalue().split())  # the console wraps long lines
    assert "Ray (a Ray instance on this machine: 2 CPUs, 0 GPUs), 2 cells at once, 1 CPU each" in said
    for cell in folder.iterdir():
        if cell.is_dir():
            assert {p.name for p in cell.iterdir()} >= {"config.yaml", "summary.json", "metrics.jsonl", "checkpoints"}
    assert len(compare([folder]).runs) == 4  # dlx compare reads them as any runs

    console, out = quiet_console()
    assert run_sweep(load_sweep(str(path), [], None), ray=RayOptions(), console=console).ok
    said = " ".join(out.getvalue().split())
    assert "(4 already decided, 0 to do)" in said and "trained" not in said


@pytest.mark.slow
def test_no_shared_file_system_the_driver_writes_complete_run_folders(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"model.width": [0.5, 1]})
    work = tmp_path / "task-local"
    work.mkdir()
    os.environ["DLX_RAY_WORKDIR"] = str(work)  # the tasks train here, not in the cell folders
    try:
        console, out = quiet_console()
        options = RayOptions(shared_fs=False, fetch_checkpoints=True)
        assert run_sweep(load_sweep(str(path), [], None), ray=options, console=console).ok, out.getvalue()
    finally:
        del os.environ["DLX_RAY_WORKDIR"]
    assert list(work.iterdir()) == []  # the task's temporary folders are gone
    for name in ("w0.5", "w1"):
        cell = runs_dir / "grid" / name
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["run_dir"] == str(cell.resolve())
        assert {p.name for p in cell.iterdir()} >= {"config.yaml", "metrics.jsonl", "metrics.csv", "checkpoints"}
        assert (cell / "checkpoints" / "last.pt").is_file()  # --fetch-checkpoints
        assert len((cell / "metrics.jsonl").read_text().splitlines()) == 1


def ray_task(cell: str) -> int | None:
    """The pid of the Ray worker running ``cell`` (its process title is ray::dlx:<cell>)."""
    found = subprocess.run(["pgrep", "-f", f"^ray::dlx:{cell}$"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


@pytest.mark.slow
def test_a_killed_task_fails_its_cell_and_ctrl_c_leaves_no_cell_running(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"model.width": [0.5, 1]},
                       **{"train.epochs": 1000, "data.train_size": 2000})  # fmt: skip  # w0.5 trains past the Ctrl-C
    driver = subprocess.Popen([sys.executable, "-m", "dlx", "sweep", str(path), "--executor", "ray"], cwd=tmp_path,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    folder = runs_dir / "grid"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all((folder / c / "metrics.jsonl").exists() for c in ("w0.5", "w1")) and ray_task("w1"):
            break
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.2)
    else:
        raise AssertionError("the cells did not start training")
    os.kill(ray_task("w1"), signal.SIGKILL)
    while time.monotonic() < deadline and statuses(folder).get("w1") != "failed":
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)  # Ctrl-C while w0.5 trains
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130, out
    cells = {c["name"]: c for c in json.loads((folder / "sweep.json").read_text())["cells"]}
    assert cells["w1"]["status"] == "failed"
    assert "Ray task failed: WorkerCrashedError" in cells["w1"]["message"]
    assert cells["w0.5"]["status"] == "interrupted"
    for name in ("w0.5", "w1"):  # nothing stays running, on disk either
        assert json.loads((folder / name / "summary.json").read_text())["status"] != "running"


# --- fast checks (main suite)


def test_run_files_travel_without_the_lock_and_never_outside_their_folder(tmp_path: Path) -> None:
    from dlx.errors import DlxError

    cell = tmp_path / "cell"
    (cell / "checkpoints").mkdir(parents=True)
    (cell / "summary.json").write_text("{}")
    (cell / "checkpoints" / "last.pt").write_bytes(b"x")
    (cell / ".lock").write_text("")
    (cell / "metrics.jsonl.tmp").write_text("half")
    assert set(pack(cell)) == {"summary.json", "checkpoints/last.pt"}
    assert set(pack(cell, checkpoints=False)) == {"summary.json"}
    unpack(pack(cell), tmp_path / "copy")
    assert (tmp_path / "copy" / "checkpoints" / "last.pt").read_bytes() == b"x"
    with pytest.raises(DlxError, match=r"refusing to write '\.\./x'"):
        unpack({"../x": b""}, tmp_path / "copy")


def test_ray_options_need_the_ray_executor_and_a_missing_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "x.yaml", "--no-shared-fs"])
    assert result.output.strip() == "error: --no-shared-fs: only with --executor ray"
    result = runner.invoke(app, ["sweep", "x.yaml", "--executor", "slurm"])
    assert result.output.strip() == "error: --executor 'slurm': choose local or ray"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = runner.invoke(app, ["sweep", "x.yaml", "--executor", "ray"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --executor ray needs Ray, an optional extra: pip install 'dlx[ray]'"
