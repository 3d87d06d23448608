"""Nothing runs that shouldn't, nothing is lost: resume integrity, divergence, build-time checks, full disks,
bad checkpoints. Each test names the defect it guards."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

import dlx.checkpoint
import dlx.runs
from dlx.cli import app
from dlx.config import config_from_dict
from dlx.errors import ConfigError, DlxError
from dlx.runs import DiskFull, Run
from dlx.session import resume_run, start_run
from tests.conftest import tiny

runner = CliRunner()
DATA = {"dataset": "mnist", "val_size": 100, "train_size": 400, "test_size": 100, "batch_size": 50}


def small(runs_dir: Path, **overrides: Any) -> dict[str, Any]:
    return tiny(runs_dir, **{"data": DATA, "model.width": 0.25, "output.plots": False, **overrides})


def interrupted_run(runs_dir: Path, **overrides: Any) -> Path:
    """A 1-epoch run made to look interrupted after its first epoch of 2 (its last.pt holds epoch 1)."""
    summary = start_run(config_from_dict(small(runs_dir, **{"train.epochs": 1, **overrides})), run_id="r", quiet=True)
    run = Run(summary["run_dir"])
    config = yaml.safe_load(run.config_path.read_text())
    config["train"]["epochs"] = 2
    last = torch.load(run.last_checkpoint, weights_only=True)
    last["config"]["train"]["epochs"] = 2
    torch.save(last, run.last_checkpoint)
    run.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run.write_summary({**summary, "status": "interrupted"})
    return run.path


# --- 4. resume compares config.yaml with the config stored in last.pt


def test_an_interrupted_run_resumes_to_completion(runs_dir: Path) -> None:
    path = interrupted_run(runs_dir)
    assert resume_run(path, quiet=True)["epochs_completed"] == 2


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("seed", 7, "seed: 0 -> 7"),
    ("optimizer.lr", 0.1, "optimizer.lr: 0.003 -> 0.1"),
    ("train.epochs", 5, "train.epochs: 2 -> 5"),
    ("model.width", 1.0, "model.width: 0.25 -> 1.0"),
])  # fmt: skip
def test_resume_refuses_a_config_edited_since_the_checkpoint(runs_dir: Path, key: str, value: Any, shown: str) -> None:
    path = interrupted_run(runs_dir)
    config = yaml.safe_load((path / "config.yaml").read_text())
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(DlxError) as e:
        resume_run(path, quiet=True)
    assert str(e.value) == (
        f"--resume {path}: config.yaml differs from the config the run was trained with ({shown}); "
        f"put it back, or start a new run"
    )
    assert json.loads((path / "summary.json").read_text())["status"] == "interrupted"  # untouched


# --- 5. divergence is more than NaN


def test_an_exploding_loss_is_diverged_not_completed(runs_dir: Path) -> None:
    cfg = config_from_dict(small(runs_dir, optimizer={"name": "adam", "lr": 1e6}, **{"train.epochs": 1}))
    with pytest.raises(DlxError, match=r"loss (exploded to|became)"):
        start_run(cfg, run_id="boom", quiet=True)
    summary = json.loads((runs_dir / "tiny" / "boom" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "try a lower optimizer.lr or set train.grad_clip" in summary["message"]
    assert "precision fp32" not in summary["message"]  # the run is fp32 already


# --- 6. settings only building the optimizer / schedule / augmentation reveals: before any folder exists


BUILD_PROBLEMS = [
    ({"optimizer": {"name": "adam", "lr": 0.001, "args": {"betas": [2, 3]}}},
     "optimizer: adam rejects these settings: Invalid beta parameter at index 0: 2"),
    ({"optimizer": {"name": "adam", "lr": 0.001, "args": {"eps": -1}}},
     "optimizer: adam rejects these settings: Invalid epsilon value: -1"),
    ({"schedule": {"name": "step", "args": {"step_size": 0}}},
     "schedule: step cannot run 2 epochs of 8 steps: division by zero (integer division or modulo by zero)"),
    ({"schedule": {"name": "onecycle", "args": {"pct_start": 5}}},
     "schedule: onecycle cannot run 2 epochs of 8 steps: Expected float between 0 and 1 pct_start, but got 5"),
    ({"schedule": {"name": "onecycle", "args": {"pct_start": 0.25}}, "data": {**DATA, "train_size": 200},
      "train.epochs": 1},
     "schedule: onecycle cannot run 1 epochs of 4 steps: division by zero (float division by zero)"),
    ({"schedule": {"name": "exponential", "args": {"gamma": 1e300}}},
     "schedule: exponential cannot run 2 epochs of 8 steps: the learning rate overflows"),
    ({"augment": {"crop_padding": 1000}}, "augment.crop_padding: got 1000; at most the image size (28 pixels for mnist)"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "problem"), BUILD_PROBLEMS, ids=lambda x: "" if isinstance(x, str) else None)
def test_build_problems_are_config_errors_before_any_folder(
    tmp_path: Path, runs_dir: Path, overrides: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "x.yaml"
    cfg = small(runs_dir, **overrides)
    path.write_text(yaml.safe_dump(cfg))
    for args in (["train", str(path), "--dry-run"], ["train", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.splitlines() == [f"error: {path}: {problem}"]
    assert not runs_dir.exists()
    with pytest.raises(ConfigError):
        start_run(config_from_dict(cfg), quiet=True)
    assert not runs_dir.exists()


# --- 8. a full disk


def fill_disk_at(monkeypatch: pytest.MonkeyPatch, name: str, nth: int = 1) -> None:
    """Make the ``nth`` atomic write of a file called ``name`` fail with ENOSPC, as a full disk does."""
    real = dlx.runs.os.fsync
    calls = {"n": 0}

    def write(path: Any, data: bytes) -> None:
        if Path(path).name == name:
            calls["n"] += 1
            if calls["n"] == nth:

                def full(fd: int) -> None:
                    raise OSError(errno.ENOSPC, "No space left on device")

                monkeypatch.setattr(dlx.runs.os, "fsync", full)
        try:
            real_write(path, data)
        finally:
            monkeypatch.setattr(dlx.runs.os, "fsync", real)

    real_write = dlx.runs.write_bytes_atomic
    monkeypatch.setattr(dlx.runs, "write_bytes_atomic", write)
    monkeypatch.setattr(dlx.checkpoint, "write_bytes_atomic", write)


def test_disk_full_at_a_checkpoint_keeps_the_last_one_and_leaves_a_resumable_run(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk_at(monkeypatch, "last.pt", nth=2)
    cfg = config_from_dict(small(runs_dir))
    with pytest.raises(DiskFull) as e:
        start_run(cfg, run_id="full", quiet=True)
    path = runs_dir / "tiny" / "full"
    assert str(e.value).startswith(f"no space left writing {path / 'checkpoints' / 'last.pt'}: needs ")
    assert "MiB free" in str(e.value)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["epochs_completed"] == 1  # epoch 2's checkpoint never reached the disk
    assert f"free space, then continue with: dlx train --resume {path}" in summary["message"]
    assert torch.load(path / "checkpoints" / "last.pt", weights_only=True)["state"]["epoch"] == 1
    assert not list(path.rglob("*.tmp"))
    monkeypatch.undo()
    assert resume_run(path, quiet=True)["status"] == "completed"


def test_disk_full_at_the_first_write_leaves_no_half_run(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_disk_at(monkeypatch, "config.yaml")
    with pytest.raises(DiskFull):
        start_run(config_from_dict(small(runs_dir)), run_id="x", quiet=True)
    assert not (runs_dir / "tiny" / "x").exists()


def test_leftover_temp_files_are_removed_when_a_run_is_opened(runs_dir: Path) -> None:
    path = interrupted_run(runs_dir)
    leftovers = [path / ".summary.json.x1.tmp", path / "checkpoints" / ".last.pt.x2.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    resume_run(path, quiet=True)
    assert not any(p.exists() for p in leftovers)


# --- 9. bad checkpoints


def test_a_truncated_checkpoint_is_named_as_such(runs_dir: Path) -> None:
    path = interrupted_run(runs_dir)
    last = path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(DlxError) as e:
        resume_run(path, quiet=True)
    assert str(e.value).startswith(f"checkpoint {last} cannot be read: truncated or not a dlx checkpoint (")
    assert "\n" not in str(e.value)


def test_a_checkpoint_of_another_model_names_the_first_mismatches(runs_dir: Path) -> None:
    path = interrupted_run(runs_dir)
    last = path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["model"]["features.0.weight"] = torch.zeros(3, 1, 3, 3)
    del state["model"]["classifier.4.bias"]
    torch.save(state, last)
    with pytest.raises(DlxError) as e:
        resume_run(path, quiet=True)
    assert str(e.value).startswith(f"checkpoint {last} does not fit this run's model: features.0.weight (3, 1, 3, 3) ")
    assert "classifier.4.bias missing" in str(e.value)
