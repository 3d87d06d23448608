"""Every way a ``dlx train`` process ends leaves a true status on disk, and an interrupted run resumes exactly.

A real subprocess receives SIGINT or SIGTERM at several moments of its life (inside an epoch, during
validation, during the final test, while drawing pictures); then ``dlx train --resume`` must end with the
same metrics, test figures and weights as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dlx.config import config_from_dict
from dlx.session import resume_run, start_run
from tests.conftest import REPO, tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DATA = {"dataset": "mnist", "val_size": 100, "train_size": 400, "test_size": 100, "batch_size": 50}
TIMING_KEYS = {"seconds", "images_per_s", "eval_seconds"}


def experiment(runs_dir: Path) -> dict:
    return tiny(runs_dir, data=DATA, **{"train.epochs": 2, "model.width": 0.25, "output.gallery_size": 4})


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    runs_dir = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    summary = start_run(config_from_dict(experiment(runs_dir)), run_id="full", quiet=True)
    return summary, Path(summary["run_dir"])


@pytest.mark.parametrize("moment", ["step", "validation", "final", "pictures"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_interrupted_run_that_resumes_exactly(
    tmp_path: Path, moment: str, signum: int, reference: tuple[dict, Path]
) -> None:
    runs_dir = tmp_path / "runs"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment(runs_dir)))
    marker = tmp_path / "here"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.lifecycle_child", moment, str(marker), "train", str(path), "--run-id", "cut"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never reached the moment"
        time.sleep(0.02)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    run_dir = runs_dir / "tiny" / "cut"

    assert child.returncode == (130 if signum == signal.SIGINT else 143), err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    assert f"dlx train --resume {run_dir}" in summary["message"]
    assert f"continue with: dlx train --resume {run_dir}" in err  # on screen too, not only in the file
    assert "Traceback" not in err

    resumed = resume_run(run_dir, quiet=True)
    full, full_dir = reference
    assert resumed["status"] == "completed"
    assert rows(run_dir) == rows(full_dir)
    assert (resumed["test_loss"], resumed["test_acc"]) == (full["test_loss"], full["test_acc"])
    a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(full_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for picture in ("misclassified.png", "confusion.png", "curves.png"):
        assert (run_dir / picture).is_file(), picture


def test_an_exception_in_the_final_phase_leaves_failed_not_running(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlx.train

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk went away while drawing")

    monkeypatch.setattr(dlx.train, "write_report", broken)
    with pytest.raises(OSError):
        start_run(config_from_dict(experiment(runs_dir)), run_id="x", quiet=True)
    summary = json.loads((runs_dir / "tiny" / "x" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["message"] == "OSError: disk went away while drawing"
    assert summary["epochs_completed"] == 2


KILL_POINTS = 8


def test_kill_9_at_any_moment_resumes_bit_identical(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    """SIGKILL (no handler runs) at moments spread over a whole run: each leaves a run that --resume completes
    with the uninterrupted run's metrics and weights (or nothing, when the process died before its folder had
    a config; or a completed run, when it had finished)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    path = tmp_path / "tiny.yaml"

    def start(run_id: str) -> subprocess.Popen:
        path.write_text(yaml.safe_dump(experiment(tmp_path / "runs")))
        return subprocess.Popen([sys.executable, "-m", "dlx.cli", "train", str(path), "--run-id", run_id, "-q"],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip

    # How long a run takes here, from the moment its folder exists until its summary says completed.
    timing = start("timing")
    summary = tmp_path / "runs" / "tiny" / "timing" / "summary.json"
    while not summary.parent.exists():
        time.sleep(0.005)
    began = time.monotonic()
    while not (summary.exists() and '"completed"' in summary.read_text()):
        assert timing.poll() is None or summary.exists(), timing.communicate()
        time.sleep(0.005)
    span = time.monotonic() - began
    assert timing.wait(timeout=120) == 0

    full, full_dir = reference
    outcomes = []
    for k in range(KILL_POINTS):
        run_id = f"kill{k}"
        run_dir = tmp_path / "runs" / "tiny" / run_id
        child = start(run_id)
        while not run_dir.exists():
            assert child.poll() is None, child.communicate()
            time.sleep(0.005)
        time.sleep(span * k / KILL_POINTS)
        child.kill()
        child.wait()
        if not (run_dir / "config.yaml").exists():
            outcomes.append("before config")
            continue
        status = json.loads((run_dir / "summary.json").read_text())["status"]
        resumed = resume_run(run_dir, quiet=True) if status != "completed" else full
        assert resumed["status"] == "completed"
        assert rows(run_dir) == rows(full_dir), run_id
        assert (resumed["test_loss"], resumed["test_acc"]) == (full["test_loss"], full["test_acc"])
        a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
        b = torch.load(full_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(a[key], b[key]) for key in a), run_id
        outcomes.append(status)
    print(f"kill -9 at {KILL_POINTS} points over {span:.2f} s: {outcomes}")
    assert sum(o in ("running", "completed") for o in outcomes) >= KILL_POINTS // 2, outcomes
