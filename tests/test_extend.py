"""dlx train --resume RUN --set train.epochs=N: a finished run trains on, its schedule spanning the new length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlx.cli import app
from dlx.config import config_from_dict
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def test_a_finished_run_is_extended_and_its_schedule_spans_the_new_length(runs_dir: Path) -> None:
    overrides = {"model": {"name": "mlp"}, "optimizer": {"name": "sgd", "lr": 0.1},
                 "schedule": {"name": "cosine"}, "train.epochs": 2}  # fmt: skip
    two = Path(start_run(config_from_dict(tiny(runs_dir, **overrides)), run_id="two", quiet=True)["run_dir"])
    three = Path(start_run(config_from_dict(tiny(runs_dir, **{**overrides, "train.epochs": 3})), run_id="three",
                           quiet=True)["run_dir"])  # fmt: skip
    before = rows(two)
    result = CliRunner().invoke(app, ["train", "--resume", str(two), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    assert "extending the run from 2 to 3 epochs: the cosine schedule now spans 3 epochs" in result.output
    after = rows(two)
    assert len(after) == 3 and after[:2] == before
    # The third epoch trains at the rates a 3-epoch run has there.
    assert after[2]["lr"] == pytest.approx(rows(three)[2]["lr"], rel=1e-9)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3 and summary["epochs"] == 3
    assert summary["resumed"][-1]["epochs"] == {"from": 2, "to": 3}
    steps_per_epoch = rows(three, "metrics_steps.jsonl")[-1]["step"] // 3
    assert (
        summary["resumed"][-1]["schedule"]
        == f"cosine recomputed over 3 epochs, continued at step {2 * steps_per_epoch}"
    )
    assert yaml.safe_load((two / "config.yaml").read_text())["train"]["epochs"] == 3
    steps = [r["step"] for r in rows(two, "metrics_steps.jsonl")]
    assert steps == [r["step"] for r in rows(three, "metrics_steps.jsonl")]  # the same steps, none doubled


def test_what_a_resume_may_change_is_said_in_one_line(runs_dir: Path) -> None:
    cfg = tiny(runs_dir, model={"name": "mlp"}, **{"train.epochs": 1})
    run = Path(start_run(config_from_dict(cfg), quiet=True)["run_dir"])
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "optimizer.lr=0.5"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --resume --set optimizer.lr: only train.epochs can change on a resume (the rest is what the run's "
        "checkpoint trained with); start a new run for other settings"
    )
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=1"])
    assert result.output.strip() == (
        f"error: --set train.epochs=1: {run} has trained 1 epochs already; give more to extend it"
    )
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert "nothing to resume (train it longer with: --set train.epochs=N)" in result.output


def test_an_extension_stopped_before_its_first_checkpoint_continues_with_a_plain_resume(runs_dir: Path) -> None:
    from dlx.config import load_run_config
    from dlx.runs import Run
    from dlx.session import extend, resume_run

    cfg = tiny(runs_dir, model={"name": "mlp"}, **{"train.epochs": 1})
    run = Path(start_run(config_from_dict(cfg), quiet=True)["run_dir"])
    r = Run(run)
    extend(r, load_run_config(r.config_path), r.read_summary(), ["train.epochs=2"])  # then the process died
    summary = resume_run(run, quiet=True)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
