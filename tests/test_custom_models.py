"""User models: a class of one's own (model.class_path) and a layer list in YAML (name: sequential)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from torch import nn
from typer.testing import CliRunner

from dlx.build import build_model_from_config as build_from_config
from dlx.cli import app
from dlx.config import config_from_dict, load_config
from dlx.errors import ConfigError, DlxError
from dlx.modelinfo import count_parameters
from dlx.session import start_run
from tests.conftest import tiny

LAYERS = [
    {"conv": {"out": 16, "kernel": 3, "padding": 1}},
    {"bn": {}},
    {"act": "relu"},
    {"pool": {"kind": "max", "kernel": 2}},
    {"dropout": 0.25},
    "flatten",
    {"linear": {"out": 10}},
]


pytestmark = pytest.mark.usefixtures("one_thread")


def quick(runs_dir: Path, model: dict[str, Any]) -> dict[str, Any]:
    """The tiny experiment cut to one short epoch: 800 training images, no pictures."""
    return tiny(
        runs_dir,
        model=model,
        regularization={},  # these models have no dropout option of their own
        data={"dataset": "mnist", "val_size": 200, "train_size": 800, "test_size": 300, "batch_size": 20},
        output={"runs_dir": str(runs_dir), "plots": False},
        **{"train.epochs": 1},
    )


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, "x.yaml")
    return e.value.problems


def build(model: dict[str, Any]) -> nn.Module:
    cfg = config_from_dict({"name": "t", "model": model})
    return build_from_config(cfg.model, in_channels=1, num_classes=10, image_size=28)


# ---------------------------------------------------------------------------- class_path


def test_class_path_model_trains_with_dlx_geometry(runs_dir: Path) -> None:
    model = {"class_path": "tests.custom_net:TinyNet", "init_args": {"hidden": 48}}
    cfg = config_from_dict(quick(runs_dir, model))
    assert cfg.model.name == "custom"
    summary = start_run(cfg, quiet=True)
    assert summary["status"] == "completed"
    assert summary["test_acc"] > 0.5, summary  # 10 classes: chance is 10%; this run reaches ~73%
    # in_channels=1, num_classes=10, image_size=28 came from the dataset; hidden from init_args.
    conv = 8 * 1 * 9 + 8
    head = (8 * 7 * 7) * 48 + 48 + 48 * 10 + 10
    assert summary["parameters"] == conv + head
    # The run's config names the class, so the run can be resumed or re-read.
    saved = load_config(Path(summary["run_dir"]) / "config.yaml")
    assert (saved.model.class_path, saved.model.init_args) == ("tests.custom_net:TinyNet", {"hidden": 48})


def test_class_path_errors_are_one_line_each() -> None:
    assert problems({"name": "t", "model": {"class_path": "foo.bar:Baz"}}) == [
        "x.yaml: model.class_path: cannot import 'foo.bar:Baz' (No module named 'foo')"
    ]
    assert problems({"name": "t", "model": {"class_path": "tests.custom_net:TinyNt"}}) == [
        "x.yaml: model.class_path: cannot import 'tests.custom_net:TinyNt' "
        "('tests.custom_net' has no 'TinyNt'; did you mean 'TinyNet'?)"
    ]
    assert problems({"name": "t", "model": {"class_path": "tests.custom_net.TinyNet"}}) == [
        "x.yaml: model.class_path: got 'tests.custom_net.TinyNet'; expected 'package.module:ClassName'"
    ]
    assert problems({"name": "t", "model": {"class_path": "tests.custom_net:TinyNet", "init_args": {"hiden": 3}}}) == [
        "x.yaml: model.init_args.hiden: unknown argument for tests.custom_net:TinyNet; did you mean 'hidden'? "
        "allowed: channels, hidden"
    ]
    assert problems({"name": "t", "model": {"class_path": "tests.custom_net:NeedsDepth"}}) == [
        "x.yaml: model.init_args: tests.custom_net:NeedsDepth needs 'blocks'; add to init_args"
    ]
    assert problems({"name": "t", "model": {"name": "deep_cnn", "class_path": "tests.custom_net:TinyNet"}}) == [
        "x.yaml: model.class_path: replaces name ('deep_cnn'); remove name or set it to 'custom'"
    ]
    # The class has no dropout keyword: the regularization override is refused like for registered models.
    assert problems(
        {"name": "t", "model": {"class_path": "tests.custom_net:TinyNet"}, "regularization": {"dropout": 0.1}}
    ) == ["x.yaml: regularization.dropout: model 'custom' has no dropout option; remove the key"]


def test_class_path_with_wrong_output_is_refused_before_training() -> None:
    with pytest.raises(DlxError, match=r"tests.custom_net:WrongOutput returns \(1, 4, 26, 26\) for one image; "
                                       r"expected \(1, 10\) scores"):  # fmt: skip
        build({"class_path": "tests.custom_net:WrongOutput"})


def test_class_path_names_only_an_nn_module_class() -> None:
    def refused(class_path: str) -> list[str]:
        return problems({"name": "t", "model": {"class_path": class_path}})

    assert refused("subprocess:run") == [
        "x.yaml: model.class_path: 'subprocess:run' is a function, not an nn.Module class"
    ]
    assert refused("os:system") == ["x.yaml: model.class_path: 'os:system' is a function, not an nn.Module class"]
    assert refused("os:path") == ["x.yaml: model.class_path: 'os:path' is a module, not an nn.Module class"]
    assert refused("math:pi") == ["x.yaml: model.class_path: 'math:pi' is a float, not an nn.Module class"]
    assert refused("pathlib:Path") == [
        "x.yaml: model.class_path: 'pathlib:Path' is a class but not a subclass of torch.nn.Module"
    ]


def _run_folder_naming(tmp_path: Path, model: dict[str, Any]) -> Path:
    """A run folder made by hand (config.yaml + an interrupted summary), as --resume finds one."""
    run = tmp_path / "runs" / "x" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "x", "model": model}))
    (run / "summary.json").write_text('{"status": "interrupted"}')
    return run


@pytest.mark.parametrize("command", ["train --dry-run", "inspect", "sweep --dry-run", "train --resume"])
def test_class_path_never_calls_a_function_it_names(tmp_path: Path, command: str) -> None:
    """``subprocess:run`` with init_args {args: [touch, X]} once created X before dlx saw it was no model."""
    marker = tmp_path / "X"
    model = {"class_path": "subprocess:run", "init_args": {"args": ["touch", str(marker)]}}
    experiment = tmp_path / "x.yaml"
    experiment.write_text(yaml.safe_dump({"name": "x", "model": model, "output": {"runs_dir": str(tmp_path / "out")}}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": "x.yaml", "grid": {"seed": [0, 1]}}))
    args = {
        "train --dry-run": ["train", str(experiment), "--dry-run"],
        "inspect": ["inspect", str(experiment)],
        "sweep --dry-run": ["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"],
        "train --resume": ["train", "--resume", str(_run_folder_naming(tmp_path, model))],
    }[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "'subprocess:run' is a function, not an nn.Module class" in lines[0]
    assert not marker.exists()


# ---------------------------------------------------------------------------- sequential


def test_sequential_from_yaml_builds_counts_and_trains(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "seq.yaml"
    path.write_text(
        "name: seq\n"
        "model:\n"
        "  name: sequential\n"
        "  layers: [{conv: {out: 16, kernel: 3, padding: 1}}, {bn: {}}, {act: relu}, {pool: {kind: max, kernel: 2}},\n"
        "           {dropout: 0.25}, flatten, {linear: {out: 10}}]\n"
    )
    cfg = load_config(path)
    net = build_from_config(cfg.model, in_channels=1, num_classes=10, image_size=28)
    names = [n for n, _ in net.named_children()]
    assert names == ["conv0", "bn1", "act2", "pool3", "dropout4", "flatten5", "linear6"]
    # conv 1->16 3x3 + bias, batch norm scale and shift, linear 16*14*14 -> 10 + bias.
    assert count_parameters(net) == (16 * 9 + 16) + 2 * 16 + (16 * 14 * 14 * 10 + 10) == 31_562
    assert net.linear6.in_features == 16 * 14 * 14  # inferred, not lazy

    summary = start_run(config_from_dict(quick(runs_dir, cfg.to_dict()["model"])), quiet=True)
    assert summary["status"] == "completed"
    assert summary["parameters"] == 31_562
    assert summary["test_acc"] > 0.5, summary


def test_sequential_width_scales_all_but_the_output_layer() -> None:
    layers = [{"conv": 8}, {"act": "relu"}, {"pool": "avg"}, "flatten", {"linear": 20}, {"act": "tanh"}, "linear"]
    net = build({"name": "sequential", "layers": layers, "width": 2.0})
    assert net.conv0.out_channels == 16
    assert net.linear4.out_features == 40
    assert net.linear6.out_features == 10  # the last linear: num_classes, never scaled
    assert isinstance(net.pool2, nn.AvgPool2d)


def test_sequential_pool_kinds_include_stochastic() -> None:
    from dlx.models.layers import StochasticPool2d

    net = build({"name": "sequential", "layers": [{"conv": 4}, {"pool": {"kind": "stochastic"}}, "flatten", "linear"]})
    assert isinstance(net.pool1, StochasticPool2d)


def test_sequential_layer_errors_name_the_index() -> None:
    bad = [{"conv": {"out": 16}}, {"act": "relu"}, {"pool": {"kind": "max"}}, {"cnv": {"out": 3}}, "flatten", "linear"]
    assert problems({"name": "t", "model": {"name": "sequential", "layers": bad}}) == [
        "x.yaml: model.layers.3: unknown layer 'cnv'; did you mean 'conv'?"
    ]
    bad = [
        {"conv": {"out": 4, "kernal": 3}},
        {"act": "rellu"},
        {"dropout": 1.5},
        {"pool": {"kind": "median"}},
        "linear",
    ]
    assert problems({"name": "t", "model": {"name": "sequential", "layers": bad}}) == [
        "x.yaml: model.layers.0.conv.kernal: unknown option; did you mean 'kernel'?",
        "x.yaml: model.layers.1.act: unknown activation 'rellu'; did you mean 'relu'?",
        "x.yaml: model.layers.2.dropout.p: got 1.5; input should be less than 1",
        "x.yaml: model.layers.3.pool.kind: got 'median'; input should be 'max', 'avg' or 'stochastic'",
    ]
    assert problems({"name": "t", "model": {"name": "sequential", "layers": [{"linear": {}}, "linear"]}}) == [
        "x.yaml: model.layers.0.linear.out: required (only the last conv/linear layer defaults to num_classes)"
    ]
    assert problems({"name": "t", "model": {"name": "sequential"}}) == [
        "x.yaml: model.layers: required for name: sequential, e.g. [{conv: {out: 16}}, {act: relu}, flatten, linear]"
    ]
    assert problems({"name": "t", "model": {"name": "deep_cnn", "layers": ["flatten", "linear"]}}) == [
        "x.yaml: model.layers: only for name: sequential (model 'deep_cnn' has its own layers)"
    ]


def test_sequential_shape_errors_name_the_layer() -> None:
    with pytest.raises(DlxError, match=r"model 'sequential' cannot be built .*: layers.1 \(linear\): linear needs a "
                                       r"flat input, got 4x26x26; put flatten before it"):  # fmt: skip
        build({"name": "sequential", "layers": [{"conv": 4}, "linear"]})
    with pytest.raises(DlxError, match=r"the last layer's output is 4x24x24; it must be 10 class scores"):
        build({"name": "sequential", "layers": [{"conv": 4}, {"act": "relu"}, {"conv": 4}]})
