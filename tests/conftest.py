from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests are CPU-only and must be reproducible; keep the two cores for torch's own threads.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]


def tiny(runs_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A real MNIST experiment small enough for a test: 2,000 training images, a few seconds."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {"dataset": "mnist", "val_size": 500, "train_size": 2000, "test_size": 1000, "batch_size": 25},
        "model": {"name": "deep_cnn", "width": 0.5},
        # The book's dropout on the scores slows the first hundred steps down; tests need fast learning.
        "regularization": {"dropout": 0.0},
        "init": {"name": "he_normal"},
        "optimizer": {"name": "adam", "lr": 0.003},
        "train": {"epochs": 2, "device": "cpu", "log_every": 5},
        "output": {"runs_dir": str(runs_dir), "gallery_size": 12},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: small nets gain nothing from two, and on a busy machine two OpenMP threads
    spin-wait for each other (a one-epoch run measured 62 s with two threads, 1.5 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def dlx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """dlx's cache (``dlx models`` figures) in a folder of this test session, never the user's ~/.cache/dlx."""
    folder = tmp_path_factory.mktemp("dlx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLX_CACHE_DIR", str(folder))
        yield folder
