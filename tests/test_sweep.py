"""dlx sweep: the sweep file, cell names, checks before running, and real sweeps in subprocesses."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from dlx.cli import app
from dlx.compare import compare
from dlx.compare.plots import heatmaps
from dlx.errors import ConfigError
from dlx.runs import Run
from dlx.sweep import SweepSpec, cell_name, expand, load_sweep, run_sweep
from dlx.sweep.executors import LocalPool
from dlx.sweep.pool import Plan, cpu_count, plan_workers
from dlx.sweep.runner import SweepRunner, record_worker_death
from dlx.sweep.worker import run_cell
from tests.conftest import REPO, tiny

runner = CliRunner()
# Tiny cells: 200 training images in 2 batches; a cell trains in a second or two.
DATA = {"dataset": "mnist", "val_size": 100, "train_size": 200, "test_size": 100, "batch_size": 100}


def write_sweep(tmp_path: Path, runs_dir: Path, sweep: dict[str, Any], name: str = "grid", **base: Any) -> Path:
    cfg = tiny(runs_dir, **{"data": DATA, "train.epochs": 1, "output.plots": False, "model.width": 0.25, **base})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **sweep}, sort_keys=False))
    return path


def summaries(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))}


def trained_lines(output: str) -> list[str]:
    """Cells this sweep process trained itself (its one line per finished cell says so)."""
    return re.findall(r"^\[\d+/\d+\] (\S+): \w+.* - (?:trained|resumed)", output, flags=re.M)


# ---------------------------------------------------------------------------- the sweep file


def test_grid_cells_are_named_readably_in_a_stable_order() -> None:
    spec = SweepSpec(base="b.yaml", grid={"model.width": [0.5, 1, 2], "model.depth": [1, 3]}, seeds=[0, 1])
    cells = expand(spec)
    assert len(cells) == 12
    assert [n for n, _ in cells[:3]] == ["w0.5-d1-s0", "w0.5-d1-s1", "w0.5-d3-s0"]
    assert cells[-1] == ("w2-d3-s1", {"model.width": 2, "model.depth": 3, "seed": 1})
    assert cell_name(["l2_0.01", "a b/c"]) == "l2_0.01-a_b_c"


def test_variants_and_random_samples() -> None:
    spec = SweepSpec(
        base="b.yaml",
        grid={"model.width": [1, 2]},
        variants=[{"name": "adam", "optimizer.name": "adam"}, {"optimizer.name": "sgd", "optimizer.lr": 0.1}],
        random={"budget": 3, "seed": 7, "params": {"regularization.l2": {"low": 1e-5, "high": 1e-2, "log": True},
                                                   "data.batch_size": {"choices": [32, 64]}}},
    )  # fmt: skip
    cells = expand(spec)
    assert len(cells) == 2 * 2 * 3
    names = [n for n, _ in cells]
    assert names[0].startswith("w1-adam-r0-l2_") and "-bs" in names[0]
    assert names[3].startswith("w1-sgd-lr0.1-r0-")
    assert cells == expand(spec)  # the same seed samples the same points
    for _, values in cells:
        assert 1e-5 <= values["regularization.l2"] <= 1e-2 and values["data.batch_size"] in (32, 64)
    assert len({n for n in names}) == len(names)


def test_sweep_file_errors_are_one_line_each(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"gird": {"model.width": [1]}, "seeds": [0],
                                            "random": {"budget": 0, "params": {"optimizer.lr": {"low": 1}}}})  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert f"{path}: gird: unknown key; did you mean 'grid'?" in e.value.problems
    assert f"{path}: random.budget: got 0; input should be greater than or equal to 1" in e.value.problems
    assert any("random.params.optimizer.lr" in p and "give low and high" in p for p in e.value.problems)
    bad = write_sweep(tmp_path, runs_dir, {"grid": {"model.widht": [1, 2], "seed": [1]}, "seeds": [0]})
    with pytest.raises(ConfigError) as e:
        load_sweep(bad)
    assert e.value.problems == [f"{bad}: grid: seed: also given as seeds; keep one"]
    newline = write_sweep(tmp_path, runs_dir, {"variants": [{"name": "a\n", "seed": 1}]})
    with pytest.raises(ConfigError) as e:
        load_sweep(newline)
    assert e.value.problems == [
        f"{newline}: variants: name: got 'a\\n' in variant 1; use letters, digits, '-', '_', '.'"
    ]


def test_dry_run_lists_cells_with_parameters_and_flops_and_writes_nothing(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"grid": {"model.width": [0.5, 1], "model.depth": [1]}})
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "w0.5-d1" in result.output and "w1-d1" in result.output
    assert "123,552" in result.output and "31,125" in result.output  # parameters at width 1 and 0.5
    assert not runs_dir.exists()


def test_invalid_cells_are_reported_before_anything_runs(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"grid": {"model.width": [0, 1], "model.args": [{}, {"hidden": 0}]}})
    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 2, result.output
    assert f"error: {path}: cells w0-args, w0-argshidden0: model.width: got 0; input should be greater than 0" in (
        result.output
    )
    impossible = write_sweep(tmp_path, runs_dir, {"grid": {"model.args": [{}, {"activation_name": "nope"}]}})
    result = runner.invoke(app, ["sweep", str(impossible)])
    assert result.exit_code == 2, result.output
    assert "cell argsactivation_namenope: model 'deep_cnn' cannot be built" in result.output
    assert not runs_dir.exists()


def test_run_cell_resumes_an_interrupted_cell_from_its_checkpoint(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"seeds": [3]})
    cell = load_sweep(path).cells[0]
    assert run_cell(cell.run_dir, cell.config.to_dict())["status"] == "completed"
    # As a process killed after epoch 1 of 2 leaves it: last.pt at epoch 1, the summary not completed.
    run = Run(cell.run_dir)
    run.write_summary({**run.read_summary(), "status": "interrupted"})
    two_epochs = cell.config.model_copy(update={"train": cell.config.train.model_copy(update={"epochs": 2})})
    result = run_cell(cell.run_dir, two_epochs.to_dict())
    assert result["outcome"] == "resumed" and result["from_epoch"] == 1 and result["status"] == "completed"
    summary = run.read_summary()
    assert summary["epochs_completed"] == 2 and summary["resumed"][0]["from_epoch"] == 1
    assert [row["epoch"] for row in run.read_metrics()] == [1, 2]
    assert run_cell(cell.run_dir, two_epochs.to_dict())["outcome"] == "skipped"


def test_run_cell_decides_by_the_cells_state(tmp_path: Path, runs_dir: Path) -> None:
    """Completed cells are skipped; a diverged cell is retried only when asked; a held cell is busy."""
    path = write_sweep(tmp_path, runs_dir, {"grid": {"optimizer.lr": [1.0e30]}})
    cell = load_sweep(path).cells[0]
    first = run_cell(cell.run_dir, cell.config.to_dict())
    assert first["outcome"] == "trained" and first["status"] == "diverged"
    again = run_cell(cell.run_dir, cell.config.to_dict())
    assert again == {"outcome": "skipped", "status": "diverged", "message": first["message"]}
    retried = run_cell(cell.run_dir, cell.config.to_dict(), retry_failed=True)
    assert retried["outcome"] == "trained" and retried["status"] == "diverged"
    holder = Run(cell.run_dir)
    holder.acquire()
    try:
        assert run_cell(cell.run_dir, cell.config.to_dict(), retry_failed=True)["outcome"] == "busy"
    finally:
        holder.release()


# ---------------------------------------------------------------------------- real sweeps


def start_sweep(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dlx.cli", "sweep", str(path), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_grid_killed_midway_resumes_without_redoing_finished_cells(tmp_path: Path, runs_dir: Path) -> None:
    """A 2x2 grid on CPU: SIGKILL the sweep after one cell, re-run, everything completes once; compare agrees."""
    path = write_sweep(tmp_path, runs_dir, {"grid": {"model.width": [0.25, 0.5], "model.depth": [0.5, 1]}})
    folder = runs_dir / "grid"
    proc = start_sweep(path)
    deadline = time.monotonic() + 120
    done: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        done = {k: s for k, s in summaries(folder).items() if s["status"] == "completed"}
        if done:
            break
        time.sleep(0.1)
    assert done, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if len(done) == 4:
        pytest.skip("the sweep finished before it could be killed")  # only on a very fast machine
    mtimes = {k: (folder / k / "summary.json").stat().st_mtime_ns for k in done}

    # The orphaned worker saves its cell as interrupted; the re-run waits for it if needed, then resumes.
    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    final = summaries(folder)
    assert sorted(final) == ["w0.25-d0.5", "w0.25-d1", "w0.5-d0.5", "w0.5-d1"]
    assert all(s["status"] == "completed" and s["epochs_completed"] == 1 for s in final.values())
    for k, s in done.items():
        assert (folder / k / "summary.json").stat().st_mtime_ns == mtimes[k]
        assert final[k]["started_at"] == s["started_at"]
    assert f"({len(done)} already decided, {4 - len(done)} to do)" in result.output
    assert not set(trained_lines(result.output)) & set(done)
    assert final["w0.5-d1"]["diagnosis"]["verdict"] in ("ok", "overfits", "underfits", "undertrained")

    index = json.loads((folder / "sweep.json").read_text())
    assert index["grid"] == {"model.width": [0.25, 0.5], "model.depth": [0.5, 1]}
    assert index["counts"] == {"completed": 4}
    assert [c["name"] for c in index["cells"]] == ["w0.25-d0.5", "w0.25-d1", "w0.5-d0.5", "w0.5-d1"]

    # Idempotent: a third run trains nothing.
    again = runner.invoke(app, ["sweep", str(path)])
    assert again.exit_code == 0 and not trained_lines(again.output)

    # compare on the sweep folder: the figures are the summaries', the heat map has the grid's shape.
    (folder / "junk").mkdir()
    (folder / "junk" / "summary.json").write_text("{")
    result = compare([folder], group=False)
    by_run = {r.values["run"]: r for r in result.rows}
    assert sorted(by_run) == sorted(final)
    for k, s in final.items():
        row = by_run[k]
        assert row.values["test_acc"] == s["test_acc"] and row.values["val_acc"] == s["best_val_acc"]
        assert row.values["params"] == s["parameters"] and row.values["wall"] == s["wall_seconds"]
        assert row.values["fit"] == s["diagnosis"]["verdict"]
    assert [(s.path.name, s.reason.split(" (")[0]) for s in result.skipped] == [
        ("junk", "summary.json is not valid JSON")
    ]
    maps = heatmaps(result.runs, tmp_path / "pics")
    assert maps[tmp_path / "pics" / "heatmap_test_acc.png"].shape == (2, 2)


@pytest.mark.slow
def test_two_sweep_processes_run_each_cell_exactly_once(tmp_path: Path, runs_dir: Path) -> None:
    """Started together on one sweep; one cell diverges and the others still complete."""
    path = write_sweep(tmp_path, runs_dir, {"grid": {"model.width": [0.25, 0.5], "optimizer.lr": [0.003, 1.0e30]}})
    first, second = start_sweep(path), start_sweep(path)
    outputs = [p.communicate(timeout=240)[0] for p in (first, second)]
    assert first.returncode == second.returncode == 1, outputs  # a diverged cell is not a success
    trained = trained_lines(outputs[0]) + trained_lines(outputs[1])
    assert sorted(trained) == ["w0.25-lr0.003", "w0.25-lr1e_30", "w0.5-lr0.003", "w0.5-lr1e_30"], outputs
    final = summaries(runs_dir / "grid")
    assert {k: s["status"] for k, s in final.items()} == {
        "w0.25-lr0.003": "completed", "w0.25-lr1e_30": "diverged", "w0.5-lr0.003": "completed",
        "w0.5-lr1e_30": "diverged",
    }  # fmt: skip
    assert not any("resumed" in s for s in final.values())


def test_workers_share_the_cores_and_each_sees_one_gpu(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, {"grid": {"model.width": [0.25, 0.5, 1]}})
    sweep = load_sweep(path)
    plan = plan_workers(sweep, 2)
    assert plan.gpus == [] and plan.workers == 2 and plan.threads == max(1, cpu_count() // 2)
    env = plan.env(1)
    assert env["OMP_NUM_THREADS"] == env["DLX_SWEEP_THREADS"] == str(plan.threads)
    assert plan_workers(sweep, 10).workers == 3  # never more workers than cells
    gpu = Plan(workers=3, threads=5, gpus=["4", "7"])
    assert [gpu.env(i)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["4", "7", "4"]


# ---------------------------------------------------------------------------- a worker killed by the OS


def line_console() -> tuple[Console, io.StringIO]:
    """A console that is not a terminal: the sweep prints one line per cell into the returned buffer."""
    out = io.StringIO()
    return Console(file=out, width=200, highlight=False), out


def closing_counts(output: str) -> dict[str, int]:
    """``sweep grid: 1 completed, 1 failed; index ...`` -> ``{"completed": 1, "failed": 1}``."""
    found = re.findall(r"^sweep \S+: ((?:\d+ \w+(?:, )?)+); index ", output, flags=re.M)
    assert len(found) == 1, output
    return {state: int(n) for n, state in (part.split() for part in found[0].split(", "))}


def worker_pids() -> list[int]:
    """The sweep worker processes this process started (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"dlx.sweep.worker" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker through /proc")
def test_a_worker_killed_by_the_os_leaves_its_cell_failed_on_disk(tmp_path: Path, runs_dir: Path) -> None:
    """SIGKILL the worker while its cell trains: summary.json, sweep.json and the closing line all say failed."""
    path = write_sweep(tmp_path, runs_dir, {"grid": {"train.epochs": [1, 200]}})  # ep200 is killed in epoch 1
    folder = runs_dir / "grid"
    killed: list[int] = []

    def kill_the_worker_of_ep200() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if json.loads((folder / "ep200" / "summary.json").read_text())["status"] == "running":
                    pids = worker_pids()
                    assert len(pids) == 1
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker_of_ep200, daemon=True)
    killer.start()
    console, out = line_console()
    result = run_sweep(load_sweep(path), console=console)
    killer.join()
    output = out.getvalue()
    assert killed, output
    assert not result.ok and [st.state for st in result.states] == ["completed", "failed"]

    summary = json.loads((folder / "ep200" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "killed by signal 9" in summary["message"] and "exit code -9" in summary["message"]
    assert summary["epochs"] == 200 and summary["started_at"] <= summary["ended_at"]  # fit's fields are kept
    index = json.loads((folder / "sweep.json").read_text())
    assert [(c["name"], c["status"]) for c in index["cells"]] == [("ep1", "completed"), ("ep200", "failed")]
    assert index["counts"] == {"completed": 1, "failed": 1} == closing_counts(output)
    assert re.search(r"^\[2/2\] ep200: failed in \S+ - trained; worker process killed by signal 9", output, re.M)

    # A re-run takes the cell as failed: not retried without --retry-failed, and no worker is started.
    console, out = line_console()
    again = run_sweep(load_sweep(path), console=console)
    assert "(2 already decided, 0 to do)" in out.getvalue() and not trained_lines(out.getvalue())
    assert [st.state for st in again.states] == ["completed", "failed"]
    assert closing_counts(out.getvalue()) == {"completed": 1, "failed": 1}


def test_recording_a_dead_worker_touches_only_a_free_cell_left_running(tmp_path: Path) -> None:
    cell = tmp_path / "cell"
    assert record_worker_death(cell, "worker process killed by signal 9") is None  # never started: no folder
    run = Run(cell)
    running = {"status": "running", "name": "grid", "started_at": "2024-01-01T00:00:00+00:00", "epochs": 3}
    run.write_summary(running)
    run.acquire()  # another process holds the cell (e.g. took it over): hands off
    try:
        assert record_worker_death(cell, "worker process killed by signal 9") == "running"
    finally:
        run.release()
    assert run.read_summary() == running
    assert record_worker_death(cell, "worker process killed by signal 9") == "failed"
    summary = run.read_summary()
    assert summary == {**running, "status": "failed", "message": "worker process killed by signal 9",
                       "ended_at": summary["ended_at"]}  # fmt: skip
    run.write_summary({**running, "status": "completed"})  # the worker finished, then died before replying
    assert record_worker_death(cell, "worker process killed by signal 9") == "completed"
    assert run.read_summary()["status"] == "completed"


def test_progress_numbers_count_from_cells_decided_earlier(tmp_path: Path, runs_dir: Path) -> None:
    """A re-run where s0 failed earlier: the cells it trains are [2/3] and [3/3]."""
    sweep = load_sweep(write_sweep(tmp_path, runs_dir, {"seeds": [0, 1, 2]}))
    Run(sweep.cells[0].run_dir).write_summary({"status": "failed", "message": "broken earlier"})
    console, out = line_console()
    result = run_sweep(sweep, console=console)
    output = out.getvalue()
    assert [st.state for st in result.states] == ["failed", "completed", "completed"], output
    assert "(1 already decided, 2 to do)" in output
    assert re.findall(r"^\[(\d+)/3\] (\S+): (\w+)", output, flags=re.M) == [
        ("2", "s1", "completed"), ("3", "s2", "completed")
    ], output  # fmt: skip
    assert closing_counts(output) == {"completed": 2, "failed": 1}


def test_cells_ending_together_never_print_the_same_progress_number(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers end cells at once while sweep.json is slow to write: [2/3] and [3/3], never [3/3] twice."""
    sweep = load_sweep(write_sweep(tmp_path, runs_dir, {"seeds": [0, 1, 2]}))
    console, out = line_console()
    pool = LocalPool(Plan(workers=2, threads=1, gpus=[]), tmp_path / "logs")
    sweep_runner = SweepRunner(sweep, pool, retry_failed=False, console=console)
    first, second, third = sweep_runner.states
    first.state = "failed"  # decided earlier, as run() finds it on disk
    write_index = sweep_runner.write_index

    def slow_write_index() -> dict[str, Any]:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(1.0)  # the first cell's worker is still writing sweep.json when the second cell ends
        return write_index()

    monkeypatch.setattr(sweep_runner, "write_index", slow_write_index)
    done = {"outcome": "trained", "status": "completed", "message": "", "from_epoch": 0}
    ending = threading.Thread(target=sweep_runner._finish, args=(second, done))
    ending.start()
    deadline = time.monotonic() + 10
    while second.state != "completed" and time.monotonic() < deadline:
        time.sleep(0.01)
    sweep_runner._finish(third, done)
    ending.join()
    numbers = re.findall(r"^\[(\d+)/3\] (\S+):", out.getvalue(), flags=re.M)
    assert numbers == [("2", "s1"), ("3", "s2")], out.getvalue()


def test_cells_record_the_sweeps_base_experiment_as_their_provenance(tmp_path: Path, runs_dir: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, runs_dir, {"seeds": [0]}))
    run_sweep(sweep, console=line_console()[0])
    summary = Run(sweep.cells[0].run_dir).read_summary()
    assert summary["status"] == "completed"
    assert summary["experiment_file"] == str(tmp_path / "base.yaml")
