"""Which files a user's dataset holds: an image folder (torchvision's ImageFolder layout) or a CSV of path,label.

Folder: ``train/<class>/**/*.png|jpg|...`` with optional ``val/<class>/`` and ``test/<class>/`` beside it; a folder
holding class folders directly (no ``train/``) is all training data. Class names are the folder names, sorted as
torchvision sorts them (plain string order), so indices match ``torchvision.datasets.ImageFolder``.

CSV: a header row with ``path`` and ``label`` columns and an optional ``split`` column (train, val or test); paths
are relative to the CSV's folder. Classes are the labels in numeric order when every label is an integer, else in
string order.

Only names are read here (no image is opened); every problem with the layout is a one-line DlxError naming
``data.path``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from dlx.data.images import IMAGE_SUFFIXES, is_image_name
from dlx.errors import DlxError

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = range(3)


@dataclass
class Listing:
    """Every file of the dataset with its class and split; paths relative to ``root``."""

    kind: str  # folder | csv
    source: Path  # data.path, absolute
    root: Path  # what the relative paths start from
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)  # TRAIN, VAL or TEST
    classes: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # class folders without images, left out

    def has(self, split: int) -> bool:
        return split in self.splits

    def count(self, split: int) -> int:
        return sum(1 for s in self.splits if s == split)


def _problem(source: Path, text: str) -> DlxError:
    return DlxError(f"data.path: {source}: {text}")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images_below(folder: Path, root: Path) -> list[str]:
    """Image files below ``folder`` (recursively, following links as ImageFolder does), relative to ``root``,
    sorted. Plain strings: a folder of 100,000 files is listed in a fraction of a second."""
    found = []
    cut = len(str(root)) + 1
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f)[cut:] for f in filenames if is_image_name(f)]
    return sorted(found)


def list_folder(source: Path) -> Listing:
    """An ImageFolder tree: ``train/`` (or the folder itself), optional ``val/`` and ``test/``."""
    source = source.absolute()
    if not source.exists():
        raise _problem(source, "no such folder")
    if not source.is_dir():
        raise _problem(source, "not a folder (dataset folder wants a folder of class folders; a CSV is dataset csv)")
    layout = {name: source / name for name in SPLITS if (source / name).is_dir()}
    if "train" not in layout:
        if layout:
            raise _problem(source, f"has {' and '.join(f'{n}/' for n in layout)} but no train/")
        layout = {"train": source}
    listing = Listing("folder", source, source)
    found: dict[str, dict[str, list[str]]] = {}
    for split, folder in layout.items():
        found[split] = {d.name: _images_below(d, source) for d in _class_dirs(folder)}
    listing.classes = [c for c, files in found["train"].items() if files]
    listing.empty = [_rel(source, layout["train"] / c) for c, files in found["train"].items() if not files]
    index = {c: i for i, c in enumerate(listing.classes)}
    for split, classes in found.items():
        for name, files in classes.items():
            if not files:
                if split != "train":
                    listing.empty.append(_rel(source, layout[split] / name))
                continue
            if name not in index:
                raise _problem(
                    source,
                    f"{_rel(source, layout[split] / name)} has images but train/ has no class {name!r} "
                    f"(train classes: {_names(listing.classes)})",
                )
            listing.files += files
            listing.labels += [index[name]] * len(files)
            listing.splits += [SPLITS.index(split)] * len(files)
    if not listing.files:
        where = layout["train"]
        raise _problem(source, f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders of {where}")
    return listing


def list_csv(source: Path) -> Listing:
    """A CSV with a header: ``path,label[,split]``; paths relative to the CSV's folder."""
    source = source.absolute()
    if not source.is_file():
        raise _problem(source, "no such file" if not source.exists() else "not a file (dataset csv wants a CSV file)")
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _problem(source, f"cannot be read as CSV ({e})") from None
    if not rows:
        raise _problem(source, "is empty; expected a header row path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise _problem(source, f"no {' or '.join(missing)} column in the header {rows[0]}; expected path,label[,split]")
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    entries: list[tuple[str, str, int]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) < len(header):
            raise _problem(source, f"line {line}: {len(row)} fields, the header has {len(header)}")
        path, label = row[col["path"]].strip(), row[col["label"]].strip()
        split = row[col["split"]].strip().lower() if "split" in col else "train"
        if not path or not label:
            raise _problem(source, f"line {line}: empty {'path' if not path else 'label'}")
        if split not in SPLITS:
            raise _problem(source, f"line {line}: split {split!r}; allowed: {', '.join(SPLITS)}")
        entries.append((path, label, SPLITS.index(split)))
    train_labels = {label for _, label, s in entries if s == TRAIN}
    for path, label, s in entries:
        if label not in train_labels:
            raise _problem(
                source, f"label {label!r} of {path} ({SPLITS[s]}) has no training images (train labels: "
                f"{_names(sorted(train_labels))})"
            )  # fmt: skip
    listing = Listing("csv", source, source.parent)
    listing.classes = _label_order(train_labels)
    index = {c: i for i, c in enumerate(listing.classes)}
    for path, label, s in entries:
        listing.files.append(path)
        listing.labels.append(index[label])
        listing.splits.append(s)
    if not listing.files:
        raise _problem(source, "lists no images below its header")
    return listing


def _label_order(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path != root else "."


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


def list_dataset(kind: str, source: Path) -> Listing:
    """The listing of ``data.dataset: folder`` or ``csv`` at ``data.path``; fewer than 2 classes is an error."""
    listing = list_folder(source) if kind == "folder" else list_csv(source)
    if len(listing.classes) < 2:
        raise _problem(
            listing.source,
            f"{len(listing.classes)} class{'es' if len(listing.classes) != 1 else ''} with training images "
            f"({_names(listing.classes)}); a classifier needs at least 2",
        )
    return listing
