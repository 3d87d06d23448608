"""One run on two processes (DDP, gloo on CPU, one thread each): real ``dlx train --devices 2`` and torchrun.

With one permutation per epoch shared by the ranks, rank r of 2 with batch B/2 takes ``perm[r::2]``: the
ranks' i-th batches together are the single process's i-th batch of B images, and DDP averages the two
gradients. A model without dropout or batch norm therefore trains the same steps as one process, up to float
rounding: the figures below are compared at that strength.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dlx.build import make_batches, prepare
from dlx.checkpoint import load_checkpoint
from dlx.config import load_run_config
from dlx.train import evaluate
from tests.conftest import REPO, tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def experiment(tmp_path: Path, name: str = "ddp", **overrides: object) -> Path:
    cfg = tiny(
        tmp_path / "runs",
        name=name,
        model={"name": "mlp"},
        optimizer={"name": "sgd", "lr": 0.1},
        data={"dataset": "mnist", "val_size": 500, "train_size": 2000, "test_size": 1000, "batch_size": 50},
        **{"train.epochs": 2, "output.plots": False},
    )
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        cfg.setdefault(section, {})[field] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def dlx(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlx", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_two_processes_train_the_single_process_run_and_report_a_test_it_reproduces(tmp_path: Path) -> None:
    path = experiment(tmp_path)
    two = dlx("train", str(path), "--devices", "2", "--run-id", "two", "-q", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    one = dlx("train", str(path), "--set", "data.batch_size=100", "--run-id", "one", "-q", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "ddp").iterdir()) == ["one", "two"]  # one folder per run
    a, b = summary(tmp_path / "runs/ddp/two"), summary(tmp_path / "runs/ddp/one")
    assert (a["status"], a["world_size"], a["global_batch"]) == ("completed", 2, 100)
    assert (b["world_size"], b["global_batch"]) == (1, 100)
    assert a["test_acc"] > 0.5  # it learned (chance: 10%)
    assert abs(a["test_acc"] - b["test_acc"]) <= 0.005  # the bound; in practice equal
    assert abs(a["test_loss"] - b["test_loss"]) < 1e-3

    # The reported test accuracy is what one process measures with best.pt; the weights carry no "module.".
    best = load_checkpoint(tmp_path / "runs/ddp/two/checkpoints/best.pt")["model"]
    assert not [k for k in best if k.startswith("module.")]
    setup = prepare(load_run_config(tmp_path / "runs/ddp/two/config.yaml"))
    setup.model.load_state_dict(best)
    loss, acc, _ = evaluate(setup.model, make_batches(setup, setup.test), None, setup.device)
    assert acc == a["test_acc"]
    assert loss == pytest.approx(a["test_loss"], rel=1e-5)

    # The same under the user's own launcher: torchrun starts the processes, dlx joins them.
    torchrun = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dlx",
         "train", str(path), "--run-id", "torchrun", "-q"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert torchrun.returncode == 0, torchrun.stderr
    t = summary(tmp_path / "runs/ddp/torchrun")
    assert (t["status"], t["world_size"], t["global_batch"]) == ("completed", 2, 100)
    assert t["test_acc"] == a["test_acc"]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def start(tmp_path: Path, path: Path, run_id: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlx", "train", str(path), "--devices", "2", "--run-id", run_id,
                             "-q"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def wait_for_epochs(run_dir: Path, epochs: int, child: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= epochs:
            return
        assert child.poll() is None, child.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} did not reach epoch {epochs} in {limit} s")


def test_killing_one_rank_fails_the_run_within_seconds_and_leaves_no_process(tmp_path: Path) -> None:
    path = experiment(tmp_path, **{"train.epochs": 30})
    child = start(tmp_path, path, "killed")
    run_dir = tmp_path / "runs/ddp/killed"
    wait_for_epochs(run_dir, 1, child)
    workers = descendants(child.pid)
    rank1 = [p for p in workers if rank_of(p) == 1]
    assert len(rank1) == 1, workers
    os.kill(rank1[0], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = child.communicate(timeout=60)
    took = time.monotonic() - killed_at
    assert took < 30, took
    assert child.returncode == 1, err
    s = summary(run_dir)
    assert (s["status"], s["failed_rank"], s["message"]) == (
        "failed",
        1,
        "rank 1 was killed by SIGKILL (e.g. out of memory)",
    )
    assert f"error: rank 1 was killed by SIGKILL (e.g. out of memory) (run: {run_dir})" in err
    assert "Traceback" not in err  # rank 0's broken connection is a consequence: one line, not a traceback
    assert 1 <= s["epochs_completed"] < 30
    alive = [p for p in workers if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text()]
    assert alive == []


def test_a_two_process_run_interrupted_after_epoch_1_resumes_on_one_process_and_on_two(tmp_path: Path) -> None:
    path = experiment(tmp_path, **{"train.epochs": 3, "data.train_size": 8000})
    child = start(tmp_path, path, "cut")
    run_dir = tmp_path / "runs/ddp/cut"
    wait_for_epochs(run_dir, 1, child)
    os.killpg(child.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the launcher and its processes
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    s = summary(run_dir)
    assert s["status"] == "interrupted", s
    done = s["epochs_completed"]
    assert 1 <= done < 3
    shutil.copytree(run_dir, tmp_path / "runs/ddp/cut2")

    one = dlx("train", "--resume", str(run_dir), "--devices", "1", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert "resuming a run trained on 2 process(es) with 1: global batch 100 -> 50" in one.stderr
    two = dlx("train", "--resume", str(tmp_path / "runs/ddp/cut2"), "-q", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    for folder, world in ((run_dir, 1), (tmp_path / "runs/ddp/cut2", 2)):
        s = summary(folder)
        assert (s["status"], s["epochs_completed"], s["world_size"]) == ("completed", 3, world)
        assert s["resumed"][-1]["from_epoch"] == done and s["resumed"][-1]["world_size"] == world
        assert s["test_acc"] > 0.8
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    assert summary(run_dir)["resumed"][-1]["previous_world_size"] == 2
    assert "previous_world_size" not in summary(tmp_path / "runs/ddp/cut2")["resumed"][-1]
