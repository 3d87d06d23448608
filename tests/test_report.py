from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from dlx import report

DIGITS = [str(i) for i in range(10)]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a complete, decodable PNG (no temp files left next to it)."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes every byte: a truncated file fails here
        size = img.size
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert size[0] > 0 and size[1] > 0
    return size


def fake_predictions(n: int = 200, wrong_every: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    preds = labels.clone()
    preds[::wrong_every] = (labels[::wrong_every] + 3) % 10
    return images, labels, preds


def test_misclassified_indices_are_the_first_wrong_ones() -> None:
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    preds = torch.tensor([0, 2, 2, 0, 4, 1, 6, 0])
    assert report.misclassified_indices(labels, preds, 20).tolist() == [1, 3, 5, 7]
    assert report.misclassified_indices(labels, preds, 2).tolist() == [1, 3]
    assert report.misclassified_indices(labels, preds, 0).tolist() == []
    assert report.misclassified_indices(labels, labels, 5).tolist() == []
    with pytest.raises(ValueError, match="differ in shape"):
        report.misclassified_indices(labels, preds[:3], 5)


def test_save_misclassified_draws_a_gallery(tmp_path: Path) -> None:
    images, labels, preds = fake_predictions(60)
    wrong = int((labels != preds).sum())
    assert wrong == 9
    path = tmp_path / "misclassified.png"
    assert report.save_misclassified(images, labels, preds, DIGITS, path, max_images=4) == 4
    png_size(path)
    # Fewer errors than max_images (default 20): all of them; a class index missing from the names still draws.
    assert report.save_misclassified(images, labels, preds, DIGITS[:5], path) == wrong
    png_size(path)


def test_save_misclassified_rgb(tmp_path: Path) -> None:
    images, labels, preds = fake_predictions(30, wrong_every=2)
    rgb = images.expand(-1, 3, -1, -1).contiguous()
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert report.save_misclassified(rgb, labels, preds, classes, tmp_path / "m.png", max_images=3) == 3
    png_size(tmp_path / "m.png")


def test_save_misclassified_without_errors_still_writes_a_png(tmp_path: Path) -> None:
    images, labels, _ = fake_predictions(20)
    path = tmp_path / "sub" / "misclassified.png"  # the folder is created as needed
    assert report.save_misclassified(images, labels, labels.clone(), DIGITS, path) == 0
    png_size(path)


def test_save_misclassified_rejects_bad_images(tmp_path: Path) -> None:
    _, labels, preds = fake_predictions(10)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        report.save_misclassified(
            torch.zeros(10, 2, 8, 8, dtype=torch.uint8), labels, preds, DIGITS, tmp_path / "x.png"
        )


def test_confusion_matrix_by_hand() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 2, 0, 2, 2])
    expected = torch.tensor([[1, 1, 0], [0, 2, 1], [1, 0, 3]])
    cm = report.confusion_matrix(labels, preds, 3)
    assert cm.dtype == torch.int64
    assert torch.equal(cm, expected)
    # A class that never occurs still gets its (empty) row and column.
    assert torch.equal(report.confusion_matrix(labels, preds, 4)[:3, :3], expected)
    assert report.confusion_matrix(labels, preds, 4)[3].sum() == 0
    with pytest.raises(ValueError, match=r"preds must lie in \[0, 2\)"):
        report.confusion_matrix(labels.clamp(max=1), preds, 2)


def test_save_confusion(tmp_path: Path) -> None:
    _, labels, preds = fake_predictions()
    cm = report.save_confusion(labels, preds, DIGITS, tmp_path / "confusion.png")
    png_size(tmp_path / "confusion.png")
    assert torch.equal(cm, report.confusion_matrix(labels, preds, 10))
    assert int(cm.sum()) == 200 and int(cm.trace()) == int((labels == preds).sum())


def test_save_confusion_many_classes_skips_numbers(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 100, (500,), generator=g)
    preds = torch.randint(0, 100, (500,), generator=g)
    cm = report.save_confusion(labels, preds, [f"c{i}" for i in range(100)], tmp_path / "c100.png")
    assert cm.shape == (100, 100)
    png_size(tmp_path / "c100.png")


def history(epochs: int, eval_every: int = 1) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        evaluated = e % eval_every == 0 or e == epochs
        rows.append(
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "train_acc": 1 - 0.1 / e,
                "val_loss": 1.2 / e if evaluated else None,
                "val_acc": 1 - 0.12 / e if evaluated else None,
                "lr": 0.1 * 0.1 ** (e // 3),
            }
        )
    return rows


def test_save_curves_with_sparse_validation(tmp_path: Path) -> None:
    report.save_curves(history(7, eval_every=3), tmp_path / "curves.png")
    png_size(tmp_path / "curves.png")


def test_save_curves_single_epoch_and_missing_keys(tmp_path: Path) -> None:
    report.save_curves(history(1), tmp_path / "one.png")
    png_size(tmp_path / "one.png")
    # No validation split at all and no lr column: keys absent, not just None.
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5} for e in (1, 2)]
    report.save_curves(rows, tmp_path / "train_only.png")
    png_size(tmp_path / "train_only.png")
    report.save_curves([], tmp_path / "empty.png")
    png_size(tmp_path / "empty.png")


def test_report_does_not_touch_pyplot(tmp_path: Path) -> None:
    # Figures are built without pyplot's global state: thread-safe, no GUI backend chosen behind the caller's back.
    if "matplotlib.pyplot" in sys.modules:
        pytest.skip("another test imported pyplot already")
    report.save_curves(history(2), tmp_path / "c.png")
    report.save_misclassified(*fake_predictions(10, wrong_every=2), DIGITS, tmp_path / "m.png", max_images=2)
    assert "matplotlib.pyplot" not in sys.modules
