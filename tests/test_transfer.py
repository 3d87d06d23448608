"""Transfer learning: init_from a run, torchvision weights (offline), freezing, a head learning rate."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from dlx.build import build_model_from_config as build_from_config
from dlx.build import prepare
from dlx.cli import app
from dlx.config import config_from_dict
from dlx.errors import ConfigError, DlxError
from dlx.session import start_run
from dlx.transfer import apply, load_initial_weights
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def quick(runs_dir: Path, name: str, **model: Any) -> dict[str, Any]:
    """A short deep_cnn run with batch norm (so frozen running statistics are tested too)."""
    return tiny(
        runs_dir,
        name=name,
        model={"name": "deep_cnn", "width": 0.25, **model},
        regularization={"dropout": 0.0, "batch_norm": True},
        data={"dataset": "mnist", "val_size": 200, "train_size": 800, "test_size": 300, "batch_size": 20},
        output={"runs_dir": str(runs_dir), "plots": False},
        **{"train.epochs": 1},
    )


def test_fine_tune_a_new_head_on_a_frozen_body(runs_dir: Path) -> None:
    source = start_run(config_from_dict(quick(runs_dir, "source")), quiet=True)
    best = torch.load(Path(source["run_dir"]) / "checkpoints" / "best.pt", weights_only=True)["model"]

    # Same body, a narrower hidden layer: the head's first layer and its output weights change shape.
    cfg = config_from_dict(
        quick(runs_dir, "target", args={"hidden": 32}, init_from=source["run_dir"], freeze=["features.*"])
    )
    before = {k: v.clone() for k, v in prepare(cfg).model.state_dict().items()}
    summary = start_run(cfg, quiet=True)
    assert summary["status"] == "completed"

    features = [k for k in best if k.startswith("features.")]
    assert len(features) == 6 * 6  # six convs (weight; no bias with batch norm), six norms (2 params, 3 buffers)
    # hidden 50 -> 32 at width 0.25: 12 -> 8 units. The output bias (10 values) still fits and is loaded.
    report = summary["init_from"]
    assert report == {
        "path": str(Path(source["run_dir"]) / "checkpoints" / "best.pt"),
        "loaded": len(features) + 1,
        "skipped": ["classifier.1.weight", "classifier.1.bias", "classifier.4.weight"],
        "missing": [],
        "unused": [],
    }
    assert summary["frozen"] == {"patterns": ["features.*"], "tensors": 18, "parameters": sum(
        v.numel() for k, v in best.items() if k.startswith("features.") and not k.endswith(
            ("running_mean", "running_var", "num_batches_tracked"))
    )}  # fmt: skip
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["init_from"] == report

    after = torch.load(Path(summary["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    # The frozen body, batch-norm running statistics included, is bitwise the source's after training...
    for key in features:
        assert torch.equal(after[key], best[key]), key
        assert torch.equal(before[key], best[key]), key
    # ... and the head trained: the loaded output bias and the freshly initialized layers all moved.
    for key in ("classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias"):
        assert not torch.equal(after[key], before[key]), key
    assert torch.equal(before["classifier.4.bias"], best["classifier.4.bias"])
    # A new 8-unit head on the frozen features of a 40-step source learns: above chance (10%; on 300 test
    # images chance scores 10 +- 1.7 points). Its level depends on how good the source got in 40 steps.
    assert summary["test_acc"] > 0.15, summary


def test_head_learning_rate_makes_two_parameter_groups(runs_dir: Path) -> None:
    raw = quick(runs_dir, "t", freeze=["features.0"], head=["classifier.*"])
    raw["optimizer"] = {"name": "momentum", "lr": 0.01, "head_lr": 0.1}
    cfg = config_from_dict(raw)
    model = build_from_config(cfg.model, in_channels=1, num_classes=10, image_size=28, batch_norm=True)
    transfer = apply(model, cfg)
    assert transfer.frozen == ["features.0.weight"]  # "features.0" matches the module's parameters
    assert transfer.frozen_norms == []  # features.1 (the norm after it) still trains
    body, head = transfer.parameters(model, cfg.optimizer.head_lr)
    assert head["lr"] == 0.1 and "lr" not in body
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in head["params"]] == [
        "classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias"
    ]  # fmt: skip
    assert len(body["params"]) == sum(1 for _ in model.parameters()) - 4 - 1
    optimizer = torch.optim.SGD(transfer.parameters(model, 0.1), lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.1]


def test_transfer_config_errors() -> None:
    def problems(model: dict[str, Any], **extra: Any) -> list[str]:
        with pytest.raises(ConfigError) as e:
            config_from_dict({"name": "t", "model": model, **extra}, "x.yaml")
        return e.value.problems

    assert problems({"name": "deep_cnn", "weights": "DEFAULT"}) == [
        "x.yaml: model.weights: torchvision has pretrained weights for alexnet, densenet121, googlenet, resnet18, "
        "resnet34, resnet50, vgg11, vgg13, vgg16, vgg19; not for 'deep_cnn'"
    ]
    assert problems({"name": "resnet18", "weights": "IMAGENET"}) == [
        "x.yaml: model.weights: got 'IMAGENET'; resnet18 has: DEFAULT, ResNet18_Weights.IMAGENET1K_V1"
    ]
    assert problems({"name": "deep_cnn", "head": ["classifier.*"]}) == [
        "x.yaml: model.head: set optimizer.head_lr, the head's learning rate"
    ]
    assert problems({"name": "deep_cnn"}, optimizer={"head_lr": 0.1}) == [
        "x.yaml: optimizer.head_lr: name the head's parameters in model.head, e.g. ['classifier.*']"
    ]
    assert problems({"name": "resnet18", "weights": "DEFAULT", "init_from": "runs/x/y"}) == [
        "x.yaml: model.weights: choose weights or init_from, not both"
    ]
    # VGG with batch norm takes torchvision's vgg11_bn weights.
    cfg = config_from_dict(
        {"name": "t", "model": {"name": "vgg11", "weights": "VGG11_BN_Weights.IMAGENET1K_V1"},
         "regularization": {"batch_norm": True}}
    )  # fmt: skip
    assert cfg.model.weights == "VGG11_BN_Weights.IMAGENET1K_V1"


def test_freeze_and_init_from_errors(tmp_path: Path) -> None:
    cfg = config_from_dict({"name": "t", "model": {"name": "deep_cnn", "freeze": ["featurs.*"]}})
    model = build_from_config(cfg.model, in_channels=1, num_classes=10, image_size=28)
    with pytest.raises(DlxError, match=r"^model.freeze: 'featurs.\*' matches no parameter; names look like "
                                       r"'features.0.weight' \(top-level modules: classifier, features\)$"):  # fmt: skip
        apply(model, cfg)
    cfg = config_from_dict({"name": "t", "model": {"name": "deep_cnn", "freeze": ["*"]}})
    with pytest.raises(DlxError, match="freeze every parameter; nothing would train"):
        apply(model, cfg)
    cfg = config_from_dict({"name": "t", "model": {"name": "deep_cnn", "init_from": str(tmp_path / "nowhere")}})
    with pytest.raises(DlxError, match="no such run directory or checkpoint file"):
        apply(model, cfg)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cfg = config_from_dict({"name": "t", "model": {"name": "deep_cnn", "init_from": str(tmp_path / "junk.pt")}})
    with pytest.raises(DlxError, match=r"junk.pt cannot be read"):
        apply(model, cfg)


def test_init_from_that_loads_nothing_is_an_error(tmp_path: Path) -> None:
    """Not one tensor fits: an error naming the file and the first mismatches, not a run from scratch."""
    source = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.randn(8, 1, 3, 3), "x.weight": torch.randn(3)}, source)
    cfg = config_from_dict({"name": "t", "model": {"name": "resnet20", "init_from": str(source)}})
    model = build_from_config(cfg.model, in_channels=1, num_classes=10, image_size=28)
    with pytest.raises(DlxError) as e:
        apply(model, cfg)
    assert str(e.value) == (
        f"model.init_from: {source}: no tensor matches this model (first mismatches: conv1.weight 8x1x3x3 -> "
        "16x1x3x3; names like 'x.weight' not in the model (its look like 'conv1.weight'))"
    )
    torch.save({}, source)
    with pytest.raises(DlxError, match=r"no tensor matches this model \(the file holds no tensors\)$"):
        apply(model, cfg)
    # One fitting tensor is enough: the report lists the rest.
    torch.save({"conv1.weight": torch.randn(16, 1, 3, 3), "x.weight": torch.randn(3)}, source)
    report = apply(model, cfg).report
    assert report is not None and report.loaded == ["conv1.weight"] and report.unused == ["x.weight"]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and no network: a download attempt fails at once, as offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "hub"


def test_pretrained_weights_offline_is_one_line_naming_the_file(hub: Path, tmp_path: Path) -> None:
    folder = hub / "checkpoints"
    expected = (
        f"error: model.weights: resnet18-f37072fd.pth is not in {folder} and cannot be downloaded "
        f"(<urlopen error [Errno -3] Temporary failure in name resolution>); put "
        f"https://download.pytorch.org/models/resnet18-f37072fd.pth at {folder / 'resnet18-f37072fd.pth'}"
    )
    path = tmp_path / "pre.yaml"
    path.write_text("name: pre\nmodel: {name: resnet18, weights: DEFAULT, width: 0.25}\ntrain: {device: cpu}\n")
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == expected
    assert not (tmp_path / "runs").exists()


def test_pretrained_weights_from_the_hub_cache_skip_what_does_not_fit(hub: Path) -> None:
    # A stand-in for torchvision's file with three of its tensors: the 7x7 RGB stem, a block conv, the 1000-class fc.
    source = {
        "conv1.weight": torch.randn(64, 3, 7, 7),
        "layer1.0.conv1.weight": torch.randn(64, 64, 3, 3),
        "fc.weight": torch.randn(1000, 512),
    }
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(source, hub / "checkpoints" / "resnet18-f37072fd.pth")
    cfg = config_from_dict({"name": "t", "model": {"name": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}})
    model = build_from_config(cfg.model, in_channels=1, num_classes=10, image_size=28)
    report = load_initial_weights(model, cfg)
    assert report is not None
    assert report.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert report.loaded == ["layer1.0.conv1.weight"]
    # Small images: a 3x3 stem on one channel; ten classes.
    assert report.skipped == {"conv1.weight": "64x3x7x7 -> 64x1x3x3", "fc.weight": "1000x512 -> 10x512"}
    assert "fc.bias" in report.missing and report.unused == []
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
