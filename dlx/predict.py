"""``dlx predict``: a trained run classifies image files with the run's own preprocessing.

Each image is read with PIL, converted to the run's channels (grayscale or RGB), resized so its shorter side
is the run's image size and center-cropped to a square (an image of that size already is untouched), then
goes through the run's normalization, as its training data did. Output: the top-k classes with softmax
probabilities per image, as a table, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from dlx.errors import DlxError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def image_files(paths: list[Path]) -> list[Path]:
    """The image files named, and those inside folders named (sorted); an empty result is an error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise DlxError(f"{path}: no such file or folder")
    if not found:
        raise DlxError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def load_image(path: Path, channels: int, size: int) -> torch.Tensor:
    """uint8 [channels, size, size]: shorter side resized to ``size``, center crop; an unreadable file is a DlxError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            if (w, h) != (size, size):
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DlxError(f"{path}: not a readable image ({first_line(e)})") from None
    return data.view(size, size, channels).permute(2, 0, 1).contiguous()


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
    images = torch.stack([load_image(f, data.in_channels, data.image_size) for f in files]).to(setup.device)
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
