"""``dlx predict``: a trained run classifies image files with the run's own preprocessing.

Each image goes through what the run's training images went through (dlx.data.images: PIL, the run's
channels, its image size by center crop or stretch as data.resize says, then the run's normalization).
Output: the top-k classes with softmax probabilities per image, as a table, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from dlx.data.images import image_files, load_image
from dlx.errors import DlxError


def predict(target: str | Path, paths: list[Path], *, top: int = 3, checkpoint: str = "best") -> list[dict[str, Any]]:
    """Top-``top`` classes and probabilities for every image file, by the run's best (or last) weights."""
    from dlx.assess import load_trained
    from dlx.build import AMP_DTYPES, batches_for
    from dlx.data.loader import Split

    if top < 1:
        raise DlxError(f"--top {top}: give 1 or more")
    files = image_files(paths)
    _, setup = load_trained(target, checkpoint)
    cfg = setup.config
    data = setup.data
    images = torch.stack([load_image(f, data.in_channels, data.image_size, cfg.data.resize) for f in files]).to(
        setup.device
    )
    split = Split(images, torch.zeros(len(files), dtype=torch.long, device=setup.device))
    batches = batches_for(cfg, data, split)  # the run's normalization, evaluation batches
    amp = AMP_DTYPES[cfg.train.precision]
    model = setup.model.eval()
    probs = []
    with torch.inference_mode():
        for x, _ in batches:
            with torch.autocast(setup.device.type, dtype=amp, enabled=amp is not None):
                probs.append(torch.softmax(model(x).float(), dim=1).cpu())
    p = torch.cat(probs)
    k = min(top, p.shape[1])
    values, indices = p.topk(k, dim=1)
    return [{"file": str(f), "top": [{"class": data.classes[i], "probability": v}
                                     for i, v in zip(ids.tolist(), vals.tolist(), strict=True)]}
            for f, ids, vals in zip(files, indices, values, strict=True)]  # fmt: skip


def render(results: list[dict[str, Any]], fmt: str) -> str:
    """CSV (one row per image and rank) or JSON of ``predict``'s results."""
    if fmt == "json":
        return json.dumps(results, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "rank", "class", "probability"])
    for r in results:
        for rank, t in enumerate(r["top"], 1):
            writer.writerow([r["file"], rank, t["class"], f"{t['probability']:.6f}"])
    return out.getvalue()


def print_table(results: list[dict[str, Any]], title: str, console: Any) -> None:
    """One row per image: its top classes with probabilities."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("file")
    for rank in range(len(results[0]["top"])):
        table.add_column(f"#{rank + 1}")
    for r in results:
        table.add_row(r["file"], *(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"]))
    console.print(table)
