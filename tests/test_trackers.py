"""Per-step metrics and the trackers (output.loggers): TensorBoard event files, an MLflow run in a temp SQLite
store, a missing package named with its extra, a failing tracker that does not fail the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dlx.cli import app
from dlx.config import config_from_dict
from dlx.session import start_run
from tests.conftest import REPO, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def small(runs_dir: Path, **more: Any) -> dict[str, Any]:
    return tiny(runs_dir, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1},
                data={"dataset": "mnist", "val_size": 200, "train_size": 1000, "test_size": 300, "batch_size": 50},
                **{"train.epochs": 2, "train.log_every": 7, **more})  # fmt: skip


def test_step_metrics_every_log_every_steps(runs_dir: Path) -> None:
    run = Path(start_run(config_from_dict(small(runs_dir)), quiet=True)["run_dir"])
    rows = [json.loads(line) for line in (run / "metrics_steps.jsonl").read_text().splitlines()]
    # 20 steps an epoch, a row every 7 and at the epoch's end: 7, 14, 20 | 27, 34, 40.
    assert [r["step"] for r in rows] == [7, 14, 20, 27, 34, 40]
    assert [r["epoch"] for r in rows] == [0.35, 0.7, 1.0, 1.35, 1.7, 2.0]
    assert set(rows[0]) == {"step", "epoch", "loss", "acc", "lr", "images_per_s"}
    assert rows[-1]["loss"] < rows[0]["loss"] and all(r["lr"] == 0.1 for r in rows)
    assert all(0 <= r["acc"] <= 1 and r["images_per_s"] > 0 for r in rows)


def test_a_missing_tracker_package_names_its_extra(runs_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    experiment = tmp_path / "x.yaml"
    experiment.write_text(json.dumps(small(runs_dir, **{"output.loggers": ["mlflow"]})))
    result = CliRunner().invoke(app, ["train", str(experiment)])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {experiment}: output.loggers: mlflow needs the mlflow package: pip install 'dlx[mlflow]'"
    )
    assert not runs_dir.exists()  # refused before a run folder exists
    result = CliRunner().invoke(app, ["train", str(experiment), "--set", "output.loggers=[neptune]"])
    assert (
        result.exit_code == 2 and "output.loggers.0: got 'neptune'; allowed: 'tensorboard', 'mlflow'" in result.output
    )


def test_a_failing_tracker_is_dropped_and_the_run_completes(runs_dir: Path, monkeypatch: Any) -> None:
    import dlx.record
    from dlx.trackers import Trackers

    class Broken:
        name = "broken"

        def start(self, *args: Any) -> dict[str, Any]:
            return {}

        def log(self, *args: Any) -> None:
            raise RuntimeError("server gone")

        def finish(self, *args: Any) -> None:
            raise AssertionError("dropped trackers are not called again")

    notes: list[str] = []
    monkeypatch.setattr(dlx.record, "open_trackers", lambda names, note: Trackers([Broken()], notes.append))
    summary = start_run(config_from_dict(small(runs_dir)), quiet=True)
    assert summary["status"] == "completed"
    assert notes == ["broken: logging failed (RuntimeError: server gone); no more broken logging for this run"]


@pytest.mark.slow
def test_tensorboard_events_hold_steps_epochs_hparams_and_the_gallery(runs_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = start_run(config_from_dict(small(runs_dir, **{"output.loggers": ["tensorboard"]})), quiet=True)
    run = Path(summary["run_dir"])
    assert summary["loggers"] == {"tensorboard": {"log_dir": str(run / "tb")}}

    def read(folder: Path) -> EventAccumulator:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        return events

    events = read(run / "tb")
    tags = events.Tags()
    assert {"step/loss", "step/acc", "step/lr", "step/images_per_s", "epoch/train_loss", "epoch/val_acc",
            "epoch/lr", "final/test_acc", "final/best_val_acc"} <= set(tags["scalars"])  # fmt: skip
    assert [e.step for e in events.Scalars("step/loss")] == [7, 14, 20, 27, 34, 40]
    assert [e.step for e in events.Scalars("epoch/val_acc")] == [1, 2]
    assert events.Scalars("final/test_acc")[0].value == pytest.approx(summary["test_acc"])
    assert "misclassified" in tags["images"]
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
    assert b"optimizer.name" in hparams["_hparams_/session_start_info"]
    # dlx compare --tensorboard: one event folder per run, the same tags.
    result = CliRunner().invoke(app, ["compare", str(runs_dir), "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    replay = read(tmp_path / "tb" / "tiny" / run.name)
    assert [e.value for e in replay.Scalars("epoch/val_acc")] == [e.value for e in events.Scalars("epoch/val_acc")]
    assert [e.step for e in replay.Scalars("step/loss")] == [7, 14, 20, 27, 34, 40]


@pytest.mark.slow
def test_mlflow_run_has_params_metrics_status_and_artifacts(runs_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    summary = start_run(config_from_dict(small(runs_dir, **{"output.loggers": ["mlflow"]})), quiet=True)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["loggers"]["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == summary["run_id"]
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    assert run.data.params["optimizer.name"] == "sgd" and run.data.params["train.epochs"] == "2"
    assert run.data.metrics["test_acc"] == pytest.approx(summary["test_acc"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "step_loss")] == [7, 14, 20, 27, 34, 40]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_val_acc")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "config.yaml", "misclassified.png"} <= artifacts


def test_startup_seconds_and_auto_precision_are_in_the_summary(runs_dir: Path, monkeypatch: Any) -> None:
    import torch

    import dlx.devices
    from dlx.devices import resolve_precision

    summary = start_run(config_from_dict(small(runs_dir, **{"train.precision": "auto", "train.epochs": 1})), quiet=True)
    assert summary["startup_seconds"] > 0
    native = dlx.devices.native_cpu_bf16()
    assert summary["precision"] == ("bf16" if native else "fp32")
    assert summary["precision_auto"].startswith("auto: bf16" if native else "auto: fp32, this CPU has no native bf16")
    cfg = config_from_dict(small(runs_dir, **{"train.precision": "auto"}))
    for has_bf16, chosen in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(dlx.devices, "native_cpu_bf16", lambda has_bf16=has_bf16: has_bf16)
        assert resolve_precision(cfg, torch.device("cpu")).train.precision == chosen
    assert resolve_precision(config_from_dict(small(runs_dir)), torch.device("cpu")).train.precision == "fp32"


def test_channels_last_auto_is_on_for_a_conv_model_and_off_for_an_mlp(runs_dir: Path) -> None:
    import torch
    import yaml

    from dlx.build import prepare

    summary = start_run(config_from_dict(tiny(runs_dir, **{"train.epochs": 1})), quiet=True)
    assert summary["channels_last"] is True  # the default, auto, for the deep CNN's convolutions
    recorded = yaml.safe_load((Path(summary["run_dir"]) / "config.yaml").read_text())
    assert recorded["train"]["channels_last"] is True  # what it trained with, as train.precision: auto
    conv = prepare(config_from_dict(tiny(runs_dir)))
    assert conv.config.train.channels_last is True
    assert conv.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    mlp = prepare(config_from_dict(tiny(runs_dir, **{"model": {"name": "mlp"}})))
    assert mlp.config.train.channels_last is False
    for given in (True, False):  # as given, whatever the model
        assert prepare(config_from_dict(tiny(runs_dir, **{"model": {"name": "mlp"}, "train.channels_last": given}))
                       ).config.train.channels_last is given  # fmt: skip


def test_a_run_records_torchvisions_own_version_without_importing_it() -> None:
    program = ("import sys; from dlx.provenance import versions; v = versions()['torchvision']; "
               "assert 'torchvision' not in sys.modules; import torchvision; print(v == torchvision.__version__)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
