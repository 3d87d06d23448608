"""The command line, through Typer's CliRunner (and one real Ctrl-C in a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlx.cli import app
from tests.conftest import REPO, tiny

runner = CliRunner()


def write_tiny(tmp_path: Path, runs_dir: Path, **overrides) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny(runs_dir, **overrides)))
    return path


def test_help_lists_train() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.output


def test_help_does_not_import_torch() -> None:
    code = "import sys; from dlx.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_config_errors_exit_2_without_traceback_or_run(tmp_path: Path, runs_dir: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nmodel: {{widht: 2}}\noutput: {{runs_dir: {runs_dir}}}\ntrain: {{epochs: 0}}\n")
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: {path}: model.widht: unknown key; did you mean 'width'?",
        f"error: {path}: train.epochs: got 0; input should be greater than or equal to 1",
    ]
    assert "Traceback" not in result.output
    assert not runs_dir.exists()


def test_train_dry_run_prints_config_and_model_and_writes_nothing(tmp_path: Path, runs_dir: Path) -> None:
    path = write_tiny(tmp_path, runs_dir)
    result = runner.invoke(app, ["train", str(path), "--dry-run", "--set", "model.width=1"])
    assert result.exit_code == 0, result.output
    assert "width: 1.0" in result.output
    assert "parameters: 123,552" in result.output
    assert "features.7" in result.output and "32x16x16" in result.output  # the book's padding-2 conv
    assert not runs_dir.exists()


def test_train_then_resume_completed_run(tmp_path: Path, runs_dir: Path) -> None:
    path = write_tiny(tmp_path, runs_dir, **{"train.epochs": 1})
    result = runner.invoke(app, ["train", str(path), "--run-id", "one", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((runs_dir / "tiny" / "one" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["test_acc"] > 0.5
    again = runner.invoke(app, ["train", str(path), "--run-id", "one", "-q"])
    assert again.exit_code == 1
    assert "already exists; choose another --run-id, or continue it with: dlx train --resume" in again.output
    resumed = runner.invoke(app, ["train", "--resume", str(runs_dir / "tiny" / "one")])
    assert resumed.exit_code == 1
    assert "is already completed" in resumed.output


def test_wrong_resume_path_is_an_error_never_a_fresh_run(tmp_path: Path, runs_dir: Path) -> None:
    result = runner.invoke(app, ["train", "--resume", str(runs_dir / "tiny" / "nope")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: --resume {runs_dir / 'tiny' / 'nope'}: no such directory"
    assert not runs_dir.exists()


def test_run_id_ending_in_a_newline_is_refused_before_anything_runs(tmp_path: Path, runs_dir: Path) -> None:
    """``--run-id $'x\\n'`` once made a folder whose name ended in a newline (the pattern's ``$`` allows one)."""
    path = write_tiny(tmp_path, runs_dir, **{"train.epochs": 1, "data.train_size": 200, "output.plots": False})
    result = runner.invoke(app, ["train", str(path), "--run-id", "x\n", "-q"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: run id 'x\\n' is not a valid folder name: use letters, digits, '-', '_' and '.'"
    ]
    assert not runs_dir.exists()


def test_ctrl_c_leaves_a_resumable_run(tmp_path: Path, runs_dir: Path) -> None:
    """A real SIGINT to a real `dlx train` process: status interrupted, then --resume completes it."""
    path = write_tiny(tmp_path, runs_dir, **{"train.epochs": 30, "data": {
        "dataset": "mnist", "val_size": 200, "train_size": 500, "test_size": 200, "batch_size": 50}})  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlx.cli", "train", str(path), "--run-id", "cut", "-q"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    last = runs_dir / "tiny" / "cut" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert last.exists(), proc.communicate()[0].decode()
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, out
    summary = json.loads((runs_dir / "tiny" / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 1 <= summary["epochs_completed"] < 30
    result = runner.invoke(app, ["train", "--resume", str(runs_dir / "tiny" / "cut"), "-q", "--set", "x=1"])
    assert result.exit_code == 1 and "--resume --set x: only train.epochs can change on a resume" in result.output
    result = runner.invoke(app, ["train", "--resume", str(runs_dir / "tiny" / "cut"), "-q", "--run-id", "x"])
    assert result.exit_code == 1 and "--resume takes no experiment file, --dry-run or --run-id" in result.output


def test_dry_run_never_downloads_or_creates_a_data_folder(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLX_DATA_DIR", raising=False)
    import torchvision.datasets.utils as tv_utils

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("--dry-run started a download")

    monkeypatch.setattr(tv_utils, "download_url", no_download)
    path = write_tiny(tmp_path, runs_dir, data={"dataset": "fashion_mnist"})
    result = runner.invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 1, result.output
    assert "dataset 'fashion_mnist' not found in" in result.output
    assert "(--dry-run downloads nothing)" in result.output
    assert not (tmp_path / "data").exists()
    assert not runs_dir.exists()


# ---------------------------------------------------------------------------- --version, -h, completion


def test_version_names_dlx_and_torch() -> None:
    from importlib.metadata import PackageNotFoundError, version

    import dlx

    try:
        expected = version("dlx")
    except PackageNotFoundError:  # a source tree never installed
        expected = dlx.__version__
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"dlx {expected} (torch {version('torch')})\n"


@pytest.mark.parametrize(
    "args", [["-h"], ["train", "-h"], ["sweep", "-h"], ["eval", "-h"], ["schema", "-h"]], ids=" ".join
)
def test_dash_h_is_help_on_every_command(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage: dlx" in result.output and "--help" in result.output
    assert result.output == runner.invoke(app, [*args[:-1], "--help"]).output


def test_shell_completion_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    help_text = runner.invoke(app, ["--help"]).output
    assert "--install-completion" in help_text and "--show-completion" in help_text
    # Read when the app becomes a click command: --show-completion then takes the shell's name.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="dlx")
    assert result.exit_code == 0, result.output
    assert "_DLX_COMPLETE=complete_bash" in result.output and "complete " in result.output
