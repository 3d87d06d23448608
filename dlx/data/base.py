"""What every dataset loader returns (ImageData) and the registry the loaders join; no loader lives here."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlx.registry import Registry


@dataclass
class ImageData:
    """Both splits of a dataset, CPU tensors: images uint8 [N, C, H, W] (contiguous), labels int64 [N]."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    # A dataset that brings its own validation split (an image folder's val/); None: held out of train (val_size).
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    source: dict[str, Any] | None = None  # what the run records of where the images came from (summary.json: data)
    notes: list[str] = field(default_factory=list)  # lines the run prints when it starts (skipped files, held out)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        # Models take one side length; every registered dataset has square images.
        return int(self.train_images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# A loader: (the data folder, whether it may download, the experiment's data section) -> ImageData.
DATASETS: Registry[Callable[[Path, bool, Any], ImageData]] = Registry("dataset")


def default_data_dir() -> Path:
    """``$DLX_DATA_DIR`` when set, else ``./data`` (relative to the working directory)."""
    env = os.environ.get("DLX_DATA_DIR")
    return Path(env).expanduser() if env else Path("data")
