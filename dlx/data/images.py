"""One image file -> the uint8 tensor dlx trains on: the one preprocessing shared by image folders and ``dlx predict``.

A file is decoded with PIL (JPEGs through its DCT-domain ``draft`` shrink when much larger than needed), converted
to grayscale or RGB, and brought to a square side ``size``:

- ``crop`` (default): the largest centered square of the image's aspect is resized to ``size`` (PIL's
  ``ImageOps.fit``: the shorter side becomes ``size``, the longer one is center-cropped), as torchvision's
  ``Resize(size) + CenterCrop(size)`` does;
- ``stretch``: both sides are resized to ``size``, the aspect ratio is not kept.

Resizing is bilinear with PIL's antialiasing. An image already ``size`` x ``size`` is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlx.errors import DlxError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
RESIZE_MODES = ("crop", "stretch")
# PIL modes without colour: a folder whose images are all of these is read as one channel (data.channels: null).
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_name(name: str) -> bool:
    """An image file name by its suffix (case-insensitive), not hidden (``._x.png`` of macOS, ``.DS_Store``)."""
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def image_files(paths: list[Path]) -> list[Path]:
    """The image files named, and those inside folders named (sorted); an empty result is an error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
        elif path.is_file():
            found.append(path)
        else:
            raise DlxError(f"{path}: no such file or folder")
    if not found:
        raise DlxError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


class BadImage(Exception):
    """A file that is not a readable image (missing, truncated, not an image, too large): the reason in one line."""


@dataclass
class Decoded:
    pixels: torch.Tensor  # uint8 [channels, size, size]
    gray: bool  # the file itself has no colour


def decode_array(
    path: Path, size: int, *, channels: int | None = None, resize: str = "crop"
) -> tuple[np.ndarray, bool]:
    """The file as a uint8 array [size, size] (channels 1) or [size, size, 3] (3, or None: RGB with gray images
    replicated), and whether the file itself is gray. Raises BadImage with the reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if resize not in RESIZE_MODES:
        raise ValueError(f"resize {resize!r}: choose {' or '.join(RESIZE_MODES)}")
    try:
        with Image.open(path) as im:
            gray = im.mode in GRAY_MODES
            mode = "L" if channels == 1 else "RGB"
            if im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft(mode, (size, size))  # decode at 1/2, 1/4 or 1/8 scale, still >= size on both sides
            im = im.convert(mode)  # decodes the whole file: a truncated one fails here
            if im.size != (size, size):
                if resize == "crop":
                    im = ImageOps.fit(im, (size, size), method=Image.BILINEAR)
                else:
                    im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im), gray
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImage(first_line(e) or type(e).__name__) from None


def decode_image(path: Path, size: int, *, channels: int | None = None, resize: str = "crop") -> Decoded:
    """:func:`decode_array` as a CHW tensor."""
    pixels, gray = decode_array(path, size, channels=channels, resize=resize)
    t = torch.from_numpy(pixels.copy())
    return Decoded(t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous(), gray)


def load_image(path: Path, channels: int, size: int, resize: str = "crop") -> torch.Tensor:
    """uint8 [channels, size, size] as training saw it; an unreadable file is a DlxError naming it."""
    try:
        return decode_image(path, size, channels=channels, resize=resize).pixels
    except BadImage as e:
        raise DlxError(f"{path}: not a readable image ({e})") from None
