"""dlx augment: training images before and after the experiment's own augmentation, as a pixel-exact PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from dlx.augment_view import augment_samples, layout, tile_of
from dlx.cli import app
from dlx.config import config_from_dict
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path / "runs")))
    return path


def _picture(path: Path, n: int) -> tuple[np.ndarray, list[bool]]:
    """The PNG's pixels and, per image, whether its after tile differs from its before tile."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    lay = layout(n, 28)
    changed = [bool((tile_of(pixels, lay, 0, i) != tile_of(pixels, lay, 1, i)).any()) for i in range(n)]
    return pixels, changed


def test_rotation_changes_the_after_images_in_a_picture_of_the_right_size(experiment: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["augment", str(experiment), "--n", "8", "--set", "augment.rotate=30"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "runs" / "tiny" / "augment.png"
    assert f"wrote {png} (8 images, 478x182 pixels)" in result.output
    assert "no augmentation" not in result.output
    # 8 MNIST images enlarged x2 (56 px) in one row of 8 with 2-px gaps and 8-px margins; two halves with labels.
    assert Image.open(png).size == (8 + 8 * 56 + 7 * 2 + 8, 8 + 2 * (22 + 56) + 10 + 8)
    pixels, changed = _picture(png, 8)
    assert all(changed)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # the margin
    # Before is the training images themselves, each MNIST pixel drawn as 2 x 2.
    cfg = config_from_dict(tiny(tmp_path / "runs", augment={"rotate": 30}))
    samples = augment_samples(cfg, 8)
    first = (samples.before[0, 0] * 255).round().to(torch.uint8).numpy()
    assert (tile_of(pixels, layout(8, 28), 0, 0)[::2, ::2, 0] == first).all()
    assert not torch.equal(samples.before, samples.after)


def test_without_augmentation_after_equals_before(experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "pictures" / "plain.png"
    result = runner.invoke(app, ["augment", str(experiment), "--n", "20", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "no augmentation configured" in result.output and f"wrote {out} (20 images" in result.output
    lay = layout(20, 28)
    assert (lay.columns, lay.rows) == (16, 2)
    assert (
        Image.open(out).size
        == (lay.width, lay.height)
        == (8 + 16 * 56 + 15 * 2 + 8, 8 + 2 * (22 + 2 * 56 + 2) + 10 + 8)
    )
    assert not any(_picture(out, 20)[1])
    samples = augment_samples(config_from_dict(tiny(tmp_path / "runs", **{"data.normalize": True})), 20)
    assert samples.augmentation is None and torch.equal(samples.before, samples.after)


def test_augment_mistakes_are_one_line(experiment: Path, tmp_path: Path) -> None:
    folder = tmp_path / "here"
    folder.mkdir()
    cases = [
        (["--output", str(folder)], f"error: --output {folder}: is a folder; give a file name"),
        (
            ["--output", str(experiment / "x.png")],
            f"error: --output {experiment / 'x.png'}: {experiment} is not a folder",
        ),
        (["--set", "augment.rotate=500"], None),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["augment", str(experiment), *args])
        assert result.exit_code in (1, 2), result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        if expected:
            assert lines[0] == expected
    assert not (tmp_path / "runs").exists()
