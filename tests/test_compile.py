"""torch.compile: the compile time is measured on its own, before the first epoch, not inside its images/s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlx.config import config_from_dict
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_compile_time_is_reported_apart_from_the_first_epoch(runs_dir: Path) -> None:
    cfg = tiny(runs_dir, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1},
               data={"dataset": "mnist", "val_size": 200, "train_size": 1000, "test_size": 500, "batch_size": 50},
               **{"train.epochs": 1, "train.compile": True, "output.plots": False})  # fmt: skip
    plain = start_run(config_from_dict({**cfg, "train": {**cfg["train"], "compile": False}}), run_id="plain",
                      quiet=True)  # fmt: skip
    s = start_run(config_from_dict(cfg), run_id="compiled", quiet=True)
    assert s["status"] == "completed" and "compile_seconds" not in plain
    row = json.loads((Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
    # Compiling takes seconds; the epoch's 20 steps of a tiny MLP take a fraction of one. Folded in, the
    # epoch would take longer than the compile.
    assert s["compile_seconds"] > row["seconds"]
    assert s["test_acc"] == pytest.approx(plain["test_acc"], abs=0.01)  # the warm-up changed no weight
