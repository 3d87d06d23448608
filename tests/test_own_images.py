"""data.dataset: folder | csv — a user's own images, on folders the tests write (with a corrupt file and an empty
class among them): listing, decoding, the cache, held-out splits, bad data, and training far above chance."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlx.cli import app
from dlx.config import config_from_dict
from dlx.data import own_images
from dlx.data.datasets import load_data
from dlx.data.listing import list_dataset
from dlx.errors import ConfigError, DlxError
from tests.conftest import tiny

CLASSES = ("bars", "columns", "dots")


def pattern(c: int, rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """A noisy image of class ``c``: horizontal bars, vertical bars or a dot grid, 20..39 pixels a side."""
    h, w = (int(v) for v in rng.integers(20, 40, size=2))
    a = rng.integers(0, 60, size=(h, w)).astype(np.uint8)
    if c == 0:
        a[::4] += 150
    elif c == 1:
        a[:, ::4] += 150
    else:
        a[::4, ::4] += 190
    return a if gray else np.stack([a, a // 2, a], axis=-1)


def make_folder(root: Path, per_class: int = 40, test: int = 10, gray: bool = False, seed: int = 0) -> Path:
    """train/<class>/ and test/<class>/ of PNGs and JPEGs, a truncated PNG, an empty class and a text file."""
    rng = np.random.default_rng(seed)
    for split, n in [("train", per_class), ("test", test)]:
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(pattern(c, rng, gray)).save(folder / f"{i:03d}.{'jpg' if i % 3 == 0 else 'png'}")
    good = (root / "train" / "bars" / "001.png").read_bytes()
    (root / "train" / "bars" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "empty").mkdir()
    (root / "train" / "README.txt").write_text("not an image")
    return root


def data_section(path: Path, **more: Any) -> dict[str, Any]:
    return {"dataset": "folder", "path": str(path), "image_size": 16, "val_size": 0.1, "batch_size": 20,
            "eval_batch_size": 50, **more}  # fmt: skip


def options(path: Path, **more: Any) -> Any:
    return config_from_dict({"name": "t", "data": data_section(path, **more)}).data


def test_a_folder_lists_train_and_test_leaves_out_empty_classes_and_other_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=4, test=2)
    listing = list_dataset("folder", root)
    assert listing.classes == list(CLASSES)
    assert listing.empty == ["train/empty"]
    assert listing.count(0) == 3 * 4 + 1 and listing.count(2) == 3 * 2 and not listing.has(1)
    assert "train/bars/truncated.png" in listing.files and not any(f.endswith(".txt") for f in listing.files)
    # Class folders directly in the folder (no train/): all training data.
    flat = list_dataset("folder", root / "train")
    assert flat.classes == list(CLASSES) and flat.count(0) == 13 and not flat.has(2)


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda r: None, "data.path: {root}: no such folder"),
        (lambda r: (r / "train" / "cats").mkdir(parents=True), "data.path: {root}: no images (.png, .jpg, .jpeg"),
        (lambda r: [(r / "train" / "a").mkdir(parents=True), Image.new("L", (8, 8)).save(r / "train/a/x.png")],
         "data.path: {root}: 1 class with training images (a); a classifier needs at least 2"),
        (lambda r: (r / "test").mkdir(parents=True), "data.path: {root}: has test/ but no train/"),
    ],
)  # fmt: skip
def test_folder_layout_problems_are_one_line_errors(tmp_path: Path, arrange: Any, message: str) -> None:
    root = tmp_path / "data"
    arrange(root)
    with pytest.raises(DlxError) as e:
        list_dataset("folder", root)
    assert str(e.value).startswith(message.format(root=root))


def test_a_class_in_val_or_test_that_train_lacks_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=2, test=1)
    (root / "val" / "wolves").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(root / "val" / "wolves" / "w.png")
    with pytest.raises(DlxError) as e:
        list_dataset("folder", root)
    assert str(e.value) == (
        f"data.path: {root}: val/wolves has images but train/ has no class 'wolves' (train classes: bars, columns, dots)"
    )


def test_decoding_skips_bad_images_with_a_count_detects_gray_and_records_the_source(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "gray", per_class=6, test=2, gray=True)
    data = load_data(options(root))
    assert data.train_images.shape == (18, 1, 16, 16) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (6, 1, 16, 16)
    assert data.train_labels.bincount().tolist() == [6, 6, 6] and data.classes == list(CLASSES)
    assert data.source is not None and data.source["skipped"] == [
        {"file": "train/bars/truncated.png", "reason": "image file is truncated"}
    ]
    assert any(n.startswith("data: skipped 1 unreadable image of 25: train/bars/truncated.png (") for n in data.notes)
    assert "data: class folders without images, left out: train/empty" in data.notes
    # Mean and std are measured over the training split, in [0, 1] units.
    x = data.train_images.double() / 255
    assert data.mean == pytest.approx((x.mean().item(),), abs=1e-5)
    assert data.std == pytest.approx((x.std(unbiased=False).item(),), abs=1e-5)
    rgb = load_data(options(root, channels=3, resize="stretch"))
    assert rgb.train_images.shape == (18, 3, 16, 16)
    assert torch.equal(rgb.train_images[:, 0], rgb.train_images[:, 2])


def test_on_bad_image_error_refuses_with_the_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=3, test=1)
    with pytest.raises(DlxError) as e:
        load_data(options(root, on_bad_image="error"))
    assert str(e.value) == "data.path: class folders without images: train/empty (data.on_bad_image: error)"
    (root / "train" / "empty").rmdir()
    with pytest.raises(DlxError) as e:
        load_data(options(root, on_bad_image="error"))
    assert str(e.value).startswith("data.path: unreadable images: train/bars/truncated.png (image file is truncated)")


def test_the_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path: Path, monkeypatch: Any) -> None:
    root = make_folder(tmp_path / "shapes", per_class=5, test=2)
    first = load_data(options(root))
    assert "cached in" in first.notes[0]
    cache = root / ".dlx-cache" / "folder-16px-crop-auto.pt"
    assert cache.is_file()

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(own_images, "decode_array", no_decoding)
    second = load_data(options(root))
    assert "read from cache" in second.notes[0]
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.test_labels, second.test_labels)
    assert first.mean == second.mean and first.notes[1:] == second.notes[1:]  # the skipped file is still reported
    monkeypatch.undo()
    # One file rewritten (new size and mtime): everything decodes again, with the new pixels.
    changed = root / "train" / "dots" / "001.png"
    Image.new("RGB", (16, 16), (255, 255, 255)).save(changed)
    os.utime(changed, ns=(1, 1))
    third = load_data(options(root))
    assert "cached in" in third.notes[0]
    assert not torch.equal(first.train_images, third.train_images)
    assert (third.train_images == 255).all(dim=(1, 2, 3)).sum() == 1


def test_without_a_test_folder_each_class_holds_out_its_share_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=20, test=1)
    train_only = root / "train"
    a = load_data(options(train_only, test_fraction=0.25))
    b = load_data(options(train_only, test_fraction=0.25))
    assert a.test_labels.bincount().tolist() == [5, 5, 5] and a.train_labels.bincount().tolist() == [15, 15, 15]
    assert torch.equal(a.test_images, b.test_images)
    c = load_data(options(train_only, test_fraction=0.25, split_seed=1))
    assert not torch.equal(a.test_images, c.test_images)
    assert "held out 0.25 of each class (data.split_seed 0)" in a.notes[0]


def test_a_dataset_larger_than_memory_is_refused_before_decoding(tmp_path: Path, monkeypatch: Any) -> None:
    root = make_folder(tmp_path / "shapes", per_class=2, test=1)
    monkeypatch.setattr(own_images, "available_memory", lambda: 10_000)
    with pytest.raises(DlxError) as e:
        load_data(options(root, image_size=64))
    assert str(e.value) == (
        "data.image_size: 10 images of 3x64x64 need 0.0 GiB in memory (uint8, twice while splitting), 0.0 GiB is "
        "available; lower data.image_size (at most 11 fits)"
    )
    assert not (root / ".dlx-cache" / "folder-64px-crop-auto.pt").exists()


def test_a_csv_lists_paths_labels_and_splits(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=4, test=2)
    rows = ["path,label,split"]
    for split in ("train", "test"):
        for c in CLASSES:
            rows += [f"{split}/{c}/{f.name},{c},{split}" for f in sorted((root / split / c).glob("*.png"))]
    csv = root / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    data = load_data(config_from_dict({"name": "t", "data": {**data_section(csv), "dataset": "csv"}}).data)
    assert data.classes == list(CLASSES)
    assert data.train_labels.bincount().tolist() == [2, 2, 2]  # bars' truncated.png is listed too: skipped
    assert len(data.test_labels) == 3
    csv.write_text("path,label,split\ntrain/bars/001.png,bars,train\ntest/dots/001.png,dots,test\n")
    with pytest.raises(DlxError) as e:
        load_data(config_from_dict({"name": "t", "data": {**data_section(csv), "dataset": "csv"}}).data)
    assert str(e.value) == (
        f"data.path: {csv}: label 'dots' of test/dots/001.png (test) has no training images (train labels: bars)"
    )
    csv.write_text("file,class\nx.png,a\n")
    with pytest.raises(DlxError) as e:
        load_data(config_from_dict({"name": "t", "data": {**data_section(csv), "dataset": "csv"}}).data)
    assert str(e.value) == (
        f"data.path: {csv}: no path or label column in the header ['file', 'class']; expected path,label[,split]"
    )


def test_the_config_asks_for_path_and_image_size_and_keeps_them_to_own_images() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"name": "x", "data": {"dataset": "folder"}}, "x.yaml")
    assert str(e.value).splitlines() == [
        "x.yaml: data.path: required for dataset folder (e.g. some/folder)",
        "x.yaml: data.image_size: required for dataset folder (e.g. 32)",
    ]
    with pytest.raises(ConfigError) as e:
        config_from_dict({"name": "x", "data": {"dataset": "mnist", "image_size": 32}}, "x.yaml")
    assert str(e.value) == "x.yaml: data.image_size: only for dataset folder or csv (your own images), not mnist"
    with pytest.raises(ConfigError) as e:
        config_from_dict({"name": "x", "data": {"val_size": 1.5}}, "x.yaml")
    assert "data.val_size: got 1.5; a count of images (an integer) or a fraction between 0 and 1" in str(e.value)


@pytest.mark.usefixtures("one_thread")
def test_training_on_a_folder_beats_chance_and_eval_predict_use_its_classes(runs_dir: Path, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=40, test=10)
    cfg = tiny(runs_dir, data=data_section(root), model={"name": "lenet5"}, **{"train.epochs": 4})
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["train", str(experiment)])
    assert result.exit_code == 0, result.output
    assert "data: skipped 1 unreadable image of 151: train/bars/truncated.png" in result.output
    (run,) = (runs_dir / "tiny").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES) and summary["test_images"] == 30
    assert summary["train_images"] == 108 and summary["val_images"] == 12  # 120 readable, 0.1 held out
    assert summary["test_acc"] >= 0.9  # chance is 1/3
    assert summary["data"]["skipped"][0]["file"] == "train/bars/truncated.png"
    ev = CliRunner().invoke(app, ["eval", str(run)])
    assert ev.exit_code == 0, ev.output
    measured = json.loads((run / "eval" / "test-best-fp32" / "eval.json").read_text())
    assert measured["acc"] == summary["test_acc"]
    pr = CliRunner().invoke(app, ["predict", str(run), str(root / "test" / "columns" / "002.png"), "--format", "json"])
    assert pr.exit_code == 0, pr.output
    assert json.loads(pr.output)[0]["top"][0]["class"] == "columns"
    # Another folder of the same classes through --data; one of other classes is refused.
    other = make_folder(tmp_path / "other", per_class=3, test=10, seed=5)
    spec = tmp_path / "other.yaml"
    spec.write_text(json.dumps({"data": data_section(other)}))
    ev = CliRunner().invoke(app, ["eval", str(run), "--data", str(spec)])
    assert ev.exit_code == 0, ev.output
    assert json.loads((run / "eval" / "test-best-fp32-other" / "eval.json").read_text())["acc"] >= 0.9
    ev = CliRunner().invoke(app, ["eval", str(run), "--data", "experiments/mnist_mlp.yaml"])
    assert ev.exit_code == 1
    assert ev.output.startswith("error: experiments/mnist_mlp.yaml: classes [0, 1, 2, 3, 4, 5, ... 10 in all] are not")


def test_a_val_folder_is_the_validation_split_whatever_val_size(tmp_path: Path) -> None:
    from dlx.build import split_data

    root = make_folder(tmp_path / "shapes", per_class=4, test=2)
    rng = np.random.default_rng(9)
    for c, name in enumerate(CLASSES):
        (root / "val" / name).mkdir(parents=True)
        Image.fromarray(pattern(c, rng)).save(root / "val" / name / "v.png")
    cfg = config_from_dict({"name": "t", "data": data_section(root, val_size=5000)})
    data = load_data(cfg.data)
    train, val, test = split_data(data, cfg)
    assert (len(train), len(val) if val else 0, len(test)) == (12, 3, 6)
    assert val is not None and val.labels.tolist() == [0, 1, 2]
    assert "3 val (val/)" in data.notes[0]
