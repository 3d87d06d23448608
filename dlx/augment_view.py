"""``dlx augment``: training images before and after the experiment's augmentation, the book's figure 8-4.

The images come from the experiment's own training split (``dlx.build.split_data``) and go through the batches a
run trains on (``dlx.build.batches_for``): "before" through the evaluation batches (no augmentation), "after"
through the training batches (``Batches.prepare``: scale, augment, normalize), both normalized alike and mapped
back to pixels. Nothing about augmentation is done here. The picture is pixel-exact: each image is enlarged by a
whole factor (nearest neighbour) and placed on a canvas drawn 1:1 (``Figure.figimage``), so its size in pixels
is ``layout(n, image_size)``'s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlx.build import batches_for, split_data
from dlx.config import ExperimentConfig
from dlx.data.augment import Augment
from dlx.data.datasets import load_data
from dlx.data.loader import Batches, Split
from dlx.errors import ConfigError, DlxError, first_line
from dlx.runs import write_png_atomic

DPI = 100
MIN_TILE = 56  # pixels: small images (MNIST's 28) are enlarged to at least this
MAX_ROW = 1024  # pixels of tiles per row, about: large images get fewer columns
MAX_COLUMNS = 16
GAP = 2  # pixels between tiles
MARGIN = 8  # pixels around the picture
LABEL = 22  # pixels of the band above each half that says what it shows
SPACER = 10  # pixels between the halves
MIN_WIDTH = 360  # pixels: room for the labels above few images
NO_AUGMENTATION = "no augmentation configured"


@dataclass(frozen=True)
class Layout:
    columns: int
    rows: int  # per half
    zoom: int  # each image pixel becomes zoom x zoom
    tile: int  # pixels of an enlarged image's side
    width: int  # pixels of the whole picture (tiles from the left)
    height: int


def layout(n: int, image_size: int) -> Layout:
    """Where ``n`` images of ``image_size`` pixels go: columns, rows per half, enlargement and picture size."""
    zoom = max(1, math.ceil(MIN_TILE / image_size))
    tile = image_size * zoom
    columns = max(1, min(n, MAX_COLUMNS, MAX_ROW // (tile + GAP)))
    rows = math.ceil(n / columns)
    block = rows * tile + (rows - 1) * GAP
    width = max(MIN_WIDTH, 2 * MARGIN + columns * tile + (columns - 1) * GAP)
    height = 2 * MARGIN + 2 * (LABEL + block) + SPACER
    return Layout(columns, rows, zoom, tile, width, height)


@dataclass
class Samples:
    """The same training images before and after augmentation, float [N, C, H, W] in [0, 1]."""

    before: torch.Tensor
    after: torch.Tensor
    augmentation: str | None  # what is configured (``rotate=15, hflip``), None when nothing is


def describe(augment: Augment | None) -> str | None:
    """The settings that differ from no augmentation, ``rotate=15, scale=(0.9, 1.1)``; None when none do."""
    if augment is None or not augment.enabled:
        return None
    plain = Augment()
    parts = []
    for f in dataclasses.fields(Augment):
        value = getattr(augment, f.name)
        if value != getattr(plain, f.name):
            parts.append(f.name if value is True else f"{f.name}={value:g}" if isinstance(value, float) else
                         f"{f.name}={value}")  # fmt: skip
    return ", ".join(parts)


def _pixels(batches: Batches, images: torch.Tensor) -> torch.Tensor:
    """uint8 images through ``batches`` (its augmentation, its normalization), back in [0, 1]."""
    x = batches.prepare(images).float()
    if batches.mean is not None and batches.inv_std is not None:
        x = x / batches.inv_std + batches.mean
    return x.clamp(0.0, 1.0).contiguous()


def augment_samples(cfg: ExperimentConfig, n: int) -> Samples:
    """``n`` training images of the experiment (a sample seeded by ``seed``), before and after its augmentation."""
    data = load_data(cfg.data)
    train, _, _ = split_data(data, cfg)
    label = cfg.source_file or cfg.name
    if cfg.augment.crop_padding > data.image_size:
        raise ConfigError([f"{label}: augment.crop_padding: got {cfg.augment.crop_padding}; at most the image size "
                           f"({data.image_size} pixels for {data.name})"])  # fmt: skip
    n = min(n, len(train))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:n].sort().values
    split = Split(train.images[pick].cpu(), train.labels[pick].cpu())
    try:
        plain = batches_for(cfg, data, split, train=False)
        augmenting = batches_for(cfg, data, split, train=True)
        before = _pixels(plain, split.images)
        torch.manual_seed(cfg.seed)  # the same picture every time
        after = _pixels(augmenting, split.images)
    except (ValueError, RuntimeError) as e:
        raise ConfigError([f"{label}: augment: {first_line(e)}"]) from None
    return Samples(before, after, describe(augmenting.augment))


def canvas(samples: Samples) -> tuple[np.ndarray, Layout]:
    """The picture's pixels (uint8 [H, W, 3], white background): before on top, after below; and its layout."""
    n, c, size, _ = samples.before.shape
    lay = layout(n, size)
    tile = lay.tile
    out = np.full((lay.height, lay.width, 3), 255, dtype=np.uint8)
    block = lay.rows * tile + (lay.rows - 1) * GAP
    for half, images in enumerate((samples.before, samples.after)):
        top = MARGIN + LABEL + half * (block + LABEL + SPACER)
        big = images.repeat_interleave(lay.zoom, dim=2).repeat_interleave(lay.zoom, dim=3)
        big = big.expand(-1, 3, -1, -1) if c == 1 else big[:, :3]
        tiles = (big * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(n):
            r, col = divmod(i, lay.columns)
            y, x = top + r * (tile + GAP), MARGIN + col * (tile + GAP)
            out[y : y + tile, x : x + tile] = tiles[i]
    return out, lay


def tile_of(picture: np.ndarray, lay: Layout, half: int, index: int) -> np.ndarray:
    """Image ``index`` of ``half`` (0: before, 1: after) cut out of a picture drawn by ``canvas``."""
    block = lay.rows * lay.tile + (lay.rows - 1) * GAP
    r, col = divmod(index, lay.columns)
    y = MARGIN + LABEL + half * (block + LABEL + SPACER) + r * (lay.tile + GAP)
    x = MARGIN + col * (lay.tile + GAP)
    return picture[y : y + lay.tile, x : x + lay.tile]


def figure(samples: Samples, title: str) -> Any:
    """A matplotlib Figure of exactly the canvas' pixels, with a label above each half."""
    from matplotlib.figure import Figure

    pixels, lay = canvas(samples)
    fig = Figure(figsize=(lay.width / DPI, lay.height / DPI), dpi=DPI)
    fig.figimage(pixels, xo=0, yo=0, origin="upper")
    block = lay.rows * lay.tile + (lay.rows - 1) * GAP
    after = f"after: {samples.augmentation}" if samples.augmentation else f"after: the same ({NO_AUGMENTATION})"
    for half, text in enumerate((f"before: {title}", after)):
        y = MARGIN + half * (block + LABEL + SPACER) + LABEL / 2
        fig.text(MARGIN / lay.width, 1 - y / lay.height, text, ha="left", va="center", fontsize=9, clip_on=True)
    return fig


def write_augment_picture(cfg: ExperimentConfig, n: int, output: Path) -> dict[str, Any]:
    """Draw ``n`` training images before and after augmentation into ``output`` (PNG, atomic)."""
    if n < 1:
        raise DlxError(f"--n {n}: give at least 1 image")
    samples = augment_samples(cfg, n)
    shown = samples.before.shape[0]
    title = f"{shown} {cfg.data.dataset} training images of {cfg.name}"
    write_png_atomic(figure(samples, title), output, DPI)
    lay = layout(shown, samples.before.shape[-1])
    return {"path": str(output), "images": shown, "width": lay.width, "height": lay.height,
            "augmentation": samples.augmentation}  # fmt: skip
