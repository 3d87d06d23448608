"""dlx export: each format is written, reloaded and agrees with the run's model within 1e-4 in its logits."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlx.cli import app
from dlx.config import config_from_dict
from dlx.export import export_run
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("export") / "runs"
    cfg = tiny(runs, model={"name": "lenet5"}, data={"dataset": "mnist", "val_size": 100, "train_size": 300,
                                                     "test_size": 100, "batch_size": 50},
               **{"train.epochs": 1, "output.plots": False})  # fmt: skip
    return start_run(config_from_dict(cfg), quiet=True)


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_an_export_reloads_and_matches_the_runs_logits(trained: dict, fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"m.{fmt}"
    r = export_run(trained["run_dir"], fmt=fmt, output=out)
    assert out.is_file() and r["max_abs_logit_diff"] <= 1e-4 and r["checked_images"] == 8
    info = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert info["input"] == [1, 28, 28] and info["classes"] == [str(i) for i in range(10)]
    assert info["normalize"] == {"mean": [0.1307], "std": [0.3081]}
    if fmt == "torchscript":  # what a user does with the file: load it and classify a batch of any size
        model = torch.jit.load(str(out))
        assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.slow  # CI's second step installs the onnx extra; there it must run (CI is set), not skip
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None and not os.environ.get("CI"),
                    reason="the onnx extra is not installed")  # fmt: skip
def test_an_onnx_export_runs_in_onnxruntime_with_any_batch(trained: dict, tmp_path: Path) -> None:
    import onnxruntime

    r = export_run(trained["run_dir"], fmt="onnx", output=tmp_path / "m.onnx")
    assert r["max_abs_logit_diff"] <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": torch.zeros(5, 1, 28, 28).numpy()})
    assert out.shape == (5, 10)


def test_export_errors_are_one_line(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    runner = CliRunner()
    result = runner.invoke(app, ["export", trained["run_dir"], "--format", "pickle"])
    assert result.output.strip() == "error: --format 'pickle': choose torchscript, onnx, safetensors"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    result = runner.invoke(app, ["export", trained["run_dir"], "--format", "onnx"])
    assert result.output.strip() == ("error: --format onnx needs onnx, onnxscript and onnxruntime, an optional "
                                     "extra: pip install 'dlx[onnx]'")  # fmt: skip
