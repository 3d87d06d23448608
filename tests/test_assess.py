"""dlx eval: a finished run measured again reproduces its recorded figures, on any split and checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlx.assess import evaluate_run
from dlx.cli import app
from dlx.config import config_from_dict
from dlx.errors import DlxError
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("assess") / "runs"
    cfg = tiny(runs, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1},
               data={"dataset": "mnist", "val_size": 300, "train_size": 1500, "test_size": 700, "batch_size": 50,
                     "eval_batch_size": 128}, **{"train.epochs": 2})  # fmt: skip
    return start_run(config_from_dict(cfg), quiet=True)


def test_eval_reproduces_the_recorded_test_and_validation_figures(trained: dict) -> None:
    run = Path(trained["run_dir"])
    test = evaluate_run(run)
    assert test["acc"] == trained["test_acc"] and test["images"] == 700
    assert test["loss"] == pytest.approx(trained["test_loss"], rel=1e-6)
    assert test["acc"] <= test["top5_acc"] <= 1.0
    folder = run / "eval" / "test-best-fp32"
    assert json.loads((folder / "eval.json").read_text())["acc"] == trained["test_acc"]
    assert (folder / "misclassified.png").is_file() and (folder / "confusion.png").is_file()
    per_class = test["per_class"]
    assert sum(v["images"] for v in per_class.values()) == 700
    assert all(c["true"] != c["predicted"] for c in test["most_confused"])

    val = evaluate_run(run, split="val", pictures=False)
    assert val["acc"] == trained["best_val_acc"] and val["images"] == 300
    last = evaluate_run(run / "checkpoints" / "last.pt", pictures=False)  # a checkpoint file works too
    assert last["checkpoint"].endswith("last.pt")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_eval_in_16_bits_measures_the_same_weights_on_any_cpu(trained: dict, precision: str) -> None:
    """Training refuses 16 bits a CPU only emulates (slow); a measurement of the same weights is allowed."""
    r = evaluate_run(trained["run_dir"], precision=precision, pictures=False)
    assert r["precision"] == precision and r["folder"].endswith(f"test-best-{precision}")
    assert abs(r["acc"] - trained["test_acc"]) <= 0.02


def test_eval_says_what_is_wrong_in_one_line(trained: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path}: not a run folder (no config.yaml) nor a checkpoint file"
    result = runner.invoke(app, ["eval", trained["run_dir"], "--split", "train"])
    assert result.output.strip() == "error: --split 'train': choose test or val"
    with pytest.raises(DlxError, match="--checkpoint 'first': choose best or last"):
        evaluate_run(trained["run_dir"], checkpoint="first")
    result = runner.invoke(app, ["eval", trained["run_dir"]])
    assert result.exit_code == 0, result.output
    assert f"top-1 {100 * trained['test_acc']:.2f}%" in result.output


def test_class_names_travel_with_the_run(trained: dict) -> None:
    from dlx.checkpoint import load_checkpoint

    names = [str(i) for i in range(10)]
    assert trained["classes"] == names
    run = Path(trained["run_dir"])
    assert load_checkpoint(run / "checkpoints" / "best.pt")["classes"] == names
    assert load_checkpoint(run / "checkpoints" / "last.pt")["classes"] == names


def test_explicit_mean_and_std_normalize_the_images(runs_dir: Path) -> None:
    from dlx.build import make_batches, prepare
    from dlx.errors import ConfigError

    setup = prepare(config_from_dict(tiny(runs_dir, data={"dataset": "mnist", "train_size": 100, "val_size": 50,
                                                           "test_size": 50, "mean": [0.5], "std": [0.25]})))  # fmt: skip
    x, _ = next(iter(make_batches(setup, setup.test)))
    expected = (setup.test.images[: x.shape[0]].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-6)
    with pytest.raises(ConfigError) as e:
        config_from_dict(tiny(runs_dir, data={"dataset": "mnist", "mean": [0.5]}))
    assert "mean and std: give both or neither" in str(e.value)
    with pytest.raises(ConfigError) as e:
        prepare(config_from_dict(tiny(runs_dir, data={"dataset": "mnist", "train_size": 100, "val_size": 50,
                                                      "mean": [0.5, 0.5, 0.5], "std": [1, 1, 1]})))  # fmt: skip
    assert e.value.problems == ["tiny: data.mean: got 3 value(s); mnist images have 1 channel(s): one mean and one "
                                "std per channel"]  # fmt: skip


def test_a_config_written_before_a_key_existed_still_equals_itself(runs_dir: Path) -> None:
    from dlx.config import config_differences

    now = config_from_dict(tiny(runs_dir)).to_dict()
    earlier = {**now, "train": {k: v for k, v in now["train"].items() if k not in ("devices", "grad_accum")}}
    earlier["data"] = {k: v for k, v in now["data"].items() if k not in ("mean", "std")}
    assert config_differences(earlier, now) == []
    assert config_differences({**earlier, "seed": 5}, now) == ["seed: 5 -> 0"]


def test_test_time_augmentation_averages_shifted_views_and_no_flips_for_digits(trained: dict) -> None:
    from dlx.assess import tta_views, view

    assert tta_views(hflip=False) == ["identity", "left", "right", "up", "down"]
    assert tta_views(hflip=True)[-1] == "hflip"
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert view(x, "right")[0, 0].tolist() == [[0, 0, 1], [3, 3, 4], [6, 6, 7]]  # the edge column repeats
    assert view(x, "up")[0, 0].tolist() == [[3, 4, 5], [6, 7, 8], [6, 7, 8]]
    r = evaluate_run(trained["run_dir"], tta=True, pictures=False)
    assert r["tta"] == tta_views(False) and r["folder"].endswith("test-best-fp32-tta")
    assert abs(r["acc"] - trained["test_acc"]) <= 0.05  # the same weights, averaged over near-identical views


def test_a_stored_config_matches_the_auto_it_was_resolved_from(runs_dir: Path) -> None:
    """A sweep cell trained with precision/channels_last auto stores what auto became; re-running it is no change."""
    from dlx.config import config_differences

    auto = config_from_dict(tiny(runs_dir, **{"train.precision": "auto"})).to_dict()
    assert auto["train"]["channels_last"] == "auto"  # the default
    stored = {**auto, "train": {**auto["train"], "precision": "fp32", "channels_last": True}}
    assert config_differences(stored, auto) == []
    fixed = {**auto, "train": {**auto["train"], "precision": "bf16", "channels_last": False}}
    assert config_differences(stored, fixed) == [
        "train.channels_last: True -> False",
        "train.precision: 'fp32' -> 'bf16'",
    ]
