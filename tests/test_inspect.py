"""dlx models / inspect / profile, and receptive fields checked against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dlx.cli import app
from dlx.modelinfo import receptive_fields
from dlx.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def spatial_fields(model: nn.Module, shape: tuple[int, int, int]) -> list[tuple[str, int, int]]:
    """(layer, RF, jump) of every conv and pooling layer, in order (square kernels: one number per axis)."""
    result = receptive_fields(model, shape)
    modules = dict(model.named_modules())
    rows = []
    for name, field in result.layers:
        if isinstance(modules[name], nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d) and field is not None:
            assert field.rf[0] == field.rf[1] and field.jump[0] == field.jump[1]
            rows.append((type(modules[name]).__name__, field.rf[0], field.jump[0]))
    return rows


def test_receptive_fields_of_the_book_cnn() -> None:
    # 3x3 convs add 2 * jump, 2x2 pools add 1 * jump and double it; padding moves the field, never its size.
    expected = [
        ("Conv2d", 3, 1), ("Conv2d", 5, 1), ("MaxPool2d", 6, 2),
        ("Conv2d", 10, 2), ("Conv2d", 14, 2), ("MaxPool2d", 16, 4),
        ("Conv2d", 24, 4), ("Conv2d", 32, 4), ("MaxPool2d", 36, 8),
    ]  # fmt: skip
    model = build_model("deep_cnn", in_channels=1, num_classes=10, image_size=28)
    assert spatial_fields(model, (1, 28, 28)) == expected
    result = receptive_fields(model, (1, 28, 28))
    assert not result.branching
    fields = dict(result.layers)
    assert fields["features.1"] == fields["features.0"]  # a ReLU passes its input's field on
    assert fields["classifier.1"] is None  # after flatten there is no spatial map
    # The book pads the fourth conv by 2: its first unit is centred 2 pixels left of the third conv's.
    assert fields["features.5"].start == (1.0, 1.0) and fields["features.7"].start == (-1.0, -1.0)


def test_receptive_fields_of_vgg11() -> None:
    # Configuration A: 1, 1, 2, 2, 2 convs per stage, each stage ended by a 2x2 max pool (32 px: five pools).
    expected = [
        ("Conv2d", 3, 1), ("MaxPool2d", 4, 2),
        ("Conv2d", 8, 2), ("MaxPool2d", 10, 4),
        ("Conv2d", 18, 4), ("Conv2d", 26, 4), ("MaxPool2d", 30, 8),
        ("Conv2d", 46, 8), ("Conv2d", 62, 8), ("MaxPool2d", 70, 16),
        ("Conv2d", 102, 16), ("Conv2d", 134, 16), ("MaxPool2d", 150, 32),
    ]  # fmt: skip
    model = build_model("vgg11", in_channels=3, num_classes=10, image_size=32, width=0.125)
    assert spatial_fields(model, (3, 32, 32)) == expected


def test_receptive_fields_through_stride_dilation_and_branches() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3, dilation=2), nn.MaxPool2d(3, stride=1))
    # 3; then a dilated 3x3 (spans 5) at jump 2: 3 + 4*2 = 11; then a 3x3 pool at jump 2: 11 + 2*2 = 15.
    assert [f.rf[0] for _, f in receptive_fields(net, (1, 32, 32)).layers] == [3, 11, 15]

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.b(self.a(x)) + x)

    class Inception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.one, self.five = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 5, padding=2)
            self.after = nn.Conv2d(2, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.after(torch.cat([self.one(x), self.five(x)], 1))

    result = receptive_fields(Residual(), (1, 16, 16))
    assert result.branching and [f.rf[0] for _, f in result.layers] == [3, 5]
    # After the cat the widest branch (5x5) counts: 5 + 2 = 7.
    result = receptive_fields(Inception(), (1, 16, 16))
    assert result.branching and dict(result.layers)["after"].rf == (7, 7)


def test_models_command_lists_parameters_and_flops() -> None:
    result = CliRunner().invoke(app, ["models", "deep_*"])
    assert result.exit_code == 0, result.output
    assert "deep_cnn" in result.output and "123,552" in result.output and "17.5" in result.output
    result = CliRunner().invoke(app, ["models", "lenet5", "--input", "3x32x32", "--classes", "100"])
    assert result.exit_code == 0, result.output
    # LeNet-5 on 3x32x32: conv 3->6 5x5, conv 6->16 5x5, FC 400-120-84-100.
    assert f"{456 + 2416 + 48120 + 10164 + 8500:,}" in result.output
    result = CliRunner().invoke(app, ["models", "seq*"])
    assert "needs model.layers" in result.output
    result = CliRunner().invoke(app, ["models", "--input", "1x28"])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "error: --input: got '1x28'; expected CHANNELSxHEIGHTxWIDTH, e.g. 1x28x28 or 3x32x32"
    )


def test_inspect_a_model_name_and_an_experiment(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", "deep_cnn"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "features.14" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["features.14", "MaxPool2d", "64x4x4", "0", "0", "36", "8", "2"]  # layer ... RF, jump, start
    assert "branching" not in result.output
    result = CliRunner().invoke(app, ["inspect", "resnet20"])
    assert result.exit_code == 0, result.output
    assert "branching network" in result.output

    path = tmp_path / "seq.yaml"
    path.write_text(
        "name: seq\nmodel: {name: sequential, layers: [{conv: 8}, {act: relu}, {pool: max}, flatten, linear]}\n"
    )
    result = CliRunner().invoke(app, ["inspect", str(path), "--set", "model.width=2"])
    assert result.exit_code == 0, result.output
    assert "seq: sequential on mnist" in result.output
    assert "16x13x13" in result.output  # conv 3x3 without padding, 16 channels at width 2, then a 2x2 pool
    result = CliRunner().invoke(app, ["inspect", "deep_cnm"])
    assert result.exit_code == 1 and "did you mean 'deep_cnn'?" in result.output


def test_profile_writes_a_chart_and_shares_add_up(tmp_path: Path) -> None:
    path = tmp_path / "prof.yaml"
    path.write_text(
        "name: prof\n"
        "data: {val_size: 100, train_size: 200, test_size: 100, batch_size: 20}\n"
        "model: {name: deep_cnn, width: 0.25}\n"
        "regularization: {batch_norm: true}\n"
        "train: {device: cpu}\n"
        f"output: {{runs_dir: {tmp_path / 'runs'}}}\n"
    )
    result = CliRunner().invoke(app, ["profile", str(path), "--batches", "2"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "prof" / "profile"
    assert (folder / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((folder / "profile.json").read_text())
    rows = {r["kind"]: r for r in data["rows"]}
    assert sum(r["share"] for r in data["rows"]) == pytest.approx(100.0, abs=0.01)
    assert set(rows) >= {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Linear", "(other)"}
    assert rows["Conv2d"]["modules"] == 6 and rows["Conv2d"]["forward_ms"] > 0 and rows["Conv2d"]["backward_ms"] > 0
    assert "Conv2d" in result.output and f"wrote {folder / 'profile.png'}" in result.output


def test_profile_output_that_is_a_file_is_one_line_before_profiling(tmp_path: Path) -> None:
    path = tmp_path / "prof.yaml"
    path.write_text(f"name: prof\ntrain: {{device: cpu}}\noutput: {{runs_dir: {tmp_path / 'runs'}}}\n")
    file = tmp_path / "taken"
    file.write_text("mine")
    prof = tmp_path / "runs" / "prof"  # the default folder is runs/prof/profile
    prof.parent.mkdir()
    prof.write_text("mine")
    for args, message in (
        (["--output", str(file)], f"--output {file}: is a file; give a folder"),
        (["--output", str(file / "sub")], f"--output {file / 'sub'}: {file} is a file; give a folder"),
        ([], f"{prof / 'profile'}: {prof} is a file; give a folder with --output"),
    ):
        result = CliRunner().invoke(app, ["profile", str(path), *args])
        assert result.exit_code == 1 and result.output == f"error: {message}\n"  # one line, nothing profiled
    assert file.read_text() == prof.read_text() == "mine"
