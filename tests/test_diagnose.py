"""Over/underfitting verdicts from hand-made histories."""

from __future__ import annotations

from typing import Any

from dlx.diagnose import _evaluated, diagnose, overfit_streak


def rows(train_loss: list[float], val_loss: list[float], train_acc: list[float], val_acc: list[float]) -> list[dict]:
    return [
        {"epoch": i + 1, "train_loss": tl, "val_loss": vl, "train_acc": ta, "val_acc": va}
        for i, (tl, vl, ta, va) in enumerate(zip(train_loss, val_loss, train_acc, val_acc, strict=True))
    ]


def test_rising_validation_loss_while_training_loss_falls_overfits() -> None:
    h = rows([1.0, 0.5, 0.3, 0.2, 0.1], [0.6, 0.5, 0.55, 0.6, 0.7], [0.9, 0.95, 0.96, 0.97, 0.975],
             [0.94, 0.95, 0.95, 0.95, 0.95])  # fmt: skip
    d = diagnose(h, patience=3)
    assert d["verdict"] == "overfits"
    assert d["overfit_epochs"] == 3
    assert "from epoch 2" in d["reason"]
    assert diagnose(h, patience=4)["verdict"] == "ok"  # a streak of 3 is below patience 4, gap is 2.5 points


def test_final_gap_above_threshold_overfits() -> None:
    h = rows([0.5, 0.1], [0.4, 0.35], [0.9, 0.99], [0.9, 0.92])
    d = diagnose(h, gap_threshold=0.05)
    assert d["verdict"] == "overfits" and abs(d["gap"] - 0.07) < 1e-9
    assert diagnose(h, gap_threshold=0.1)["verdict"] == "ok"


def test_low_and_rising_is_undertrained_low_and_flat_underfits() -> None:
    rising = rows([2.0, 1.5], [1.9, 1.4], [0.4, 0.6], [0.45, 0.62])
    assert diagnose(rising)["verdict"] == "undertrained"
    flat = rows([1.0, 0.99, 0.99], [1.0, 1.0, 1.0], [0.7, 0.7, 0.701], [0.7, 0.7, 0.7])
    assert diagnose(flat)["verdict"] == "underfits"
    one_epoch = rows([2.0], [1.9], [0.3], [0.35])
    assert diagnose(one_epoch)["verdict"] == "undertrained"


def test_no_validation_or_broken_values_never_raise() -> None:
    history: list[dict[str, Any]] = [
        {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": None, "val_acc": None}
    ]
    assert diagnose(history)["verdict"] == "unknown"
    assert diagnose([])["verdict"] == "unknown"
    nan = [{"epoch": 1, "train_loss": float("nan"), "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}]
    assert diagnose(nan)["verdict"] == "unknown"
    # Epochs without evaluation (eval_every > 1) are skipped, not read as zeros.
    sparse = rows([1.0, 0.5], [0.5, 0.4], [0.97, 0.98], [0.97, 0.975])
    sparse.insert(1, {"epoch": 1.5, "train_loss": 0.7, "train_acc": 0.97, "val_loss": None, "val_acc": None})
    assert diagnose(sparse)["verdict"] == "ok"


def test_overfit_streak_takes_the_longest_run() -> None:
    h = rows([5, 4, 3, 2, 1, 0.5, 0.4], [1, 2, 1, 2, 3, 4, 3], [0.5] * 7, [0.5] * 7)
    assert overfit_streak(_evaluated(h)) == (3, 3)


def test_validation_at_chance_is_underfitting_whatever_the_gap() -> None:
    # Training accuracy climbs, validation stays at chance (10 classes): nothing was learnt that generalizes.
    at_chance = rows([2.3, 1.0, 0.5], [2.30, 2.31, 2.30], [0.5, 0.9, 0.97], [0.10, 0.10, 0.10])
    d = diagnose(at_chance)
    assert d["verdict"] == "underfits" and "chance" in d["reason"]
    assert abs(d["gap"] - 0.87) < 1e-9  # the gap is still reported
    rising = rows([2.3, 1.0, 0.5], [2.30, 2.31, 2.30], [0.5, 0.9, 0.97], [0.09, 0.10, 0.11])
    assert diagnose(rising)["verdict"] == "undertrained"
    # With 100 classes (chance 1%), 10% validation accuracy is not chance: the gap makes it overfit.
    assert diagnose(at_chance, num_classes=100)["verdict"] == "overfits"


def test_low_accuracies_are_underfitting_before_a_gap_is_overfitting() -> None:
    # Neither accuracy reaches the low bound: first fit the training data, then worry about the gap.
    low = rows([1.5, 1.2, 1.0], [1.4, 1.3, 1.3], [0.6, 0.7, 0.8], [0.55, 0.6, 0.6])
    d = diagnose(low)
    assert d["verdict"] == "underfits" and "low" in d["reason"]
