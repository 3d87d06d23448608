"""``data.dataset: folder | csv``: a user's own images, decoded once into the uint8 tensors training reads.

The files (dlx.data.listing) are decoded, large ones in parallel threads (dlx.data.images: PIL, resized to data.image_size by
center crop or stretch) with a progress bar on a terminal, and cached as one file,
``<folder>/.dlx-cache/<kind>-<size>px-<resize>-<channels>.pt``, keyed by the content: every file's path, size and
modification time, its class and split, and the decoding settings. The next run with the same files reads the
cache (memory-mapped) instead of decoding; a changed, added or removed file decodes everything again. Two
processes starting together (a sweep's workers, DDP ranks) decode once: the second waits on the cache's lock.

Without a test split (no ``test/`` folder, no ``test`` rows) ``data.test_fraction`` of each class is held out as
the test set, seeded by ``data.split_seed`` (stratified: every class keeps its share). Mean and std are measured
over the training images (the validation images held out of them later included, the test set never), as
MNIST's 0.1307/0.3081 are.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from dlx.data.base import DATASETS, ImageData
from dlx.data.images import BadImage, decode_array
from dlx.data.listing import SPLITS, TEST, TRAIN, Listing, list_dataset
from dlx.errors import DlxError, first_line

CACHE_FORMAT = 1
CACHE_DIR = ".dlx-cache"
MEMORY_SHARE = 0.8  # of the memory available now: what the decoded images (twice, while split) may take
SHOWN_BAD = 10
DECODE_CHUNK = 256  # files a thread decodes per task
LARGE_FILE = (
    256 * 1024
)  # bytes: files this large on average are decoded by several threads  # unreadable files named in the printed note; all of them are in summary.json


@DATASETS.register("folder")
def folder(root: Path, download: bool, options: Any = None) -> ImageData:
    """Your own image folder: train/<class>/*.png|jpg (optional val/ and test/), data.path and data.image_size."""
    return load_own_images("folder", options)


@DATASETS.register("csv")
def csv_file(root: Path, download: bool, options: Any = None) -> ImageData:
    """Your own images listed in a CSV of path,label[,split]: data.path and data.image_size."""
    return load_own_images("csv", options)


def load_own_images(kind: str, options: Any) -> ImageData:
    """List, decode (or read the cache), hold out the test set, measure mean/std: ImageData with notes and source."""
    if options is None or options.path is None or options.image_size is None:
        raise DlxError(f"dataset {kind} needs data.path and data.image_size")
    listing = list_dataset(kind, Path(options.path).expanduser())
    if listing.empty and options.on_bad_image == "error":
        raise DlxError(
            f"data.path: class folders without images: {', '.join(listing.empty)} (data.on_bad_image: error)"
        )
    settings = {"image_size": options.image_size, "channels": options.channels, "resize": options.resize}
    check_memory(len(listing.files), options.channels or 3, options.image_size)
    cache = cache_path(listing, settings)
    key = content_key(listing, settings)
    started = time.perf_counter()
    stored, cache_note = read_or_decode(listing, settings, cache, key)
    seconds = time.perf_counter() - started
    if stored["bad"] and options.on_bad_image == "error":
        raise DlxError(f"data.path: unreadable images: {_bad_text(stored['bad'])} (data.on_bad_image: error)")
    return assemble(listing, options, stored, cache_note, seconds)


# --- memory ----------------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(n: int, channels: int, size: int) -> None:
    """Refuse before decoding when the images cannot fit: the figure, and an image_size that would."""
    need = 2 * n * channels * size * size  # decoded, then copied into the splits
    have = available_memory()
    if have is None or need <= MEMORY_SHARE * have:
        return
    fits = int((MEMORY_SHARE * have / (2 * n * channels)) ** 0.5)
    raise DlxError(
        f"data.image_size: {n:,} images of {channels}x{size}x{size} need {need / 2**30:,.1f} GiB in memory "
        f"(uint8, twice while splitting), {have / 2**30:,.1f} GiB is available; lower data.image_size "
        f"(at most {fits} fits)"
    )


# --- cache -----------------------------------------------------------------------------------------


def cache_path(listing: Listing, settings: dict[str, Any]) -> Path:
    folder = listing.source if listing.kind == "folder" else listing.source.parent
    stem = listing.kind if listing.kind == "folder" else f"csv-{listing.source.stem}"
    channels = settings["channels"] or "auto"
    return folder / CACHE_DIR / f"{stem}-{settings['image_size']}px-{settings['resize']}-{channels}.pt"


def content_key(listing: Listing, settings: dict[str, Any]) -> str:
    """SHA-256 of the decoding settings and every file's path, size, mtime, class and split."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **settings, "classes": listing.classes}).encode())
    for rel, label, split in zip(listing.files, listing.labels, listing.splits, strict=True):
        try:
            st = os.stat(listing.root / rel)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{rel}\0{label}\0{split}\0{stamp}\n".encode())
    return h.hexdigest()


def read_or_decode(listing: Listing, settings: dict[str, Any], cache: Path, key: str) -> tuple[dict[str, Any], str]:
    """The decoded images from the cache when its key matches, else decoded now and cached; a note says which."""
    from filelock import FileLock, Timeout

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock: Any = FileLock(str(cache) + ".lock")
        lock.acquire()
    except (OSError, Timeout) as e:  # a read-only folder: decode every time
        stored = decode_all(listing, settings)
        return stored, f"not cached ({first_line(e)})"
    try:
        stored = read_cache(cache, key)
        if stored is not None:
            return stored, f"read from cache {cache}"
        stored = decode_all(listing, settings)
        try:
            write_cache(cache, key, stored)
            return stored, f"cached in {cache}"
        except OSError as e:
            return stored, f"not cached ({first_line(e)})"
    finally:
        lock.release()


def read_cache(cache: Path, key: str) -> dict[str, Any] | None:
    if not cache.is_file():
        return None
    try:
        stored = torch.load(cache, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # truncated or foreign: decode again and overwrite it
        return None
    if not isinstance(stored, dict) or stored.get("format") != CACHE_FORMAT or stored.get("key") != key:
        return None
    return stored


def write_cache(cache: Path, key: str, stored: dict[str, Any]) -> None:
    import io

    from dlx.runs import write_bytes_atomic

    buf = io.BytesIO()
    torch.save({"format": CACHE_FORMAT, "key": key, **stored}, buf)
    write_bytes_atomic(cache, buf.getvalue())


# --- decoding --------------------------------------------------------------------------------------


def decode_threads(listing: Listing) -> int:
    """Threads for decoding: one for small files, where PIL's per-file Python work holds the GIL and threads only
    contend (10,000 28x28 PNGs on 2 cores: 1.8 s with 1 thread, 2.7 s with 2, 3.7 s with 4; 3,000 256x256 JPEGs:
    1.6 / 1.7 / 2.0 s); up to one per core for large files, whose decoding releases the GIL for longer."""
    sample = listing.files[:: max(1, len(listing.files) // 100)]
    sizes = []
    for rel in sample:
        try:
            sizes.append(os.stat(listing.root / rel).st_size)
        except OSError:
            continue
    if not sizes or sum(sizes) / len(sizes) < LARGE_FILE:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return min(8, cores)


def decode_all(listing: Listing, settings: dict[str, Any]) -> dict[str, Any]:
    """Every file decoded, in listing order; the unreadable ones left out and named with the reason.

    Chunks of files are decoded straight into one array (a future per file costs more than decoding a small
    PNG), by as many threads as ``decode_threads`` finds worth it.
    """
    import numpy as np

    size, channels, resize = settings["image_size"], settings["channels"], settings["resize"]
    n = len(listing.files)
    out = np.empty((n, size, size, channels or 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    gray = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def chunk(start: int) -> int:
        stop = min(start + DECODE_CHUNK, n)
        for i in range(start, stop):
            try:
                pixels, gray[i] = decode_array(listing.root / listing.files[i], size, channels=channels, resize=resize)
            except BadImage as e:
                reasons[i] = str(e)
                continue
            out[i] = pixels[..., None] if pixels.ndim == 2 else pixels
            ok[i] = True
        return stop - start

    with _progress(n) as advance, ThreadPoolExecutor(decode_threads(listing)) as pool:
        for done in pool.map(chunk, range(0, n, DECODE_CHUNK)):
            advance(done)
    kept = np.flatnonzero(ok)
    images = torch.from_numpy(out if len(kept) == n else out[kept]).permute(0, 3, 1, 2)
    if channels is None and gray[kept].all():
        images = images[:, :1]  # every file was gray: one channel, as the files hold it
    return {"images": images.contiguous(), "kept": torch.from_numpy(kept).long(),
            "bad": [[listing.files[i], reasons[i]] for i in sorted(reasons)]}  # fmt: skip


class _progress:
    """A rich progress bar on a terminal (stderr); nothing elsewhere. ``with _progress(n) as advance: advance(k)``."""

    def __init__(self, total: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.console.is_terminal:
            return lambda done=1: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress("decoding images", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=self.console, transient=True)  # fmt: skip
        self.bar.start()
        task = self.bar.add_task("decode", total=self.total)
        return lambda done=1: self.bar.advance(task, done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- splits ----------------------------------------------------------------------------------------


def assemble(listing: Listing, options: Any, stored: dict[str, Any], cache_note: str, seconds: float) -> ImageData:
    images: torch.Tensor = stored["images"]
    kept: torch.Tensor = stored["kept"]
    labels = torch.tensor(listing.labels, dtype=torch.long)[kept]
    splits = torch.tensor(listing.splits, dtype=torch.long)[kept]
    held_out = not listing.has(TEST)
    if held_out:
        splits = hold_out_test(labels, splits, options.test_fraction, options.split_seed)
    parts = {}
    for code, name in enumerate(SPLITS):
        idx = (splits == code).nonzero().flatten()
        parts[name] = (images[idx].contiguous(), labels[idx].contiguous()) if len(idx) else None
    source = listing.source
    if parts["train"] is None:
        raise DlxError(f"data.path: {source}: no readable training images")
    if parts["test"] is None:
        raise DlxError(
            f"data.test_fraction: {options.test_fraction} of each class of {source} leaves no test image; "
            "add a test/ folder or raise data.test_fraction"
        )
    mean, std = mean_std(parts["train"][0])
    counts = {name: len(p[1]) if p else 0 for name, p in parts.items()}
    test_from = (f"held out {options.test_fraction:g} of each class (data.split_seed {options.split_seed})"
                 if held_out else ("test/" if listing.kind == "folder" else "the CSV's test rows"))  # fmt: skip
    bad = stored["bad"]
    shape = "x".join(map(str, images.shape[1:]))
    timing = f" ({seconds:.1f} s)" if cache_note.startswith(("cached", "not cached")) else ""
    val_from = (f"{counts['val']:,} val ({'val/' if listing.kind == 'folder' else 'the CSV val rows'}), "
                if counts["val"] else "")  # fmt: skip
    held = "" if counts["val"] else " (data.val_size is held out of these)"
    notes = [f"data: {source}: {len(listing.classes)} classes, {shape}; {counts['train']:,} train{held}, "
             f"{val_from}{counts['test']:,} test ({test_from}); {cache_note}{timing}"]  # fmt: skip
    if bad:
        notes.append(f"data: skipped {len(bad)} unreadable image{'s' if len(bad) > 1 else ''} of "
                     f"{len(listing.files):,}: {_bad_text(bad)}")  # fmt: skip
    if listing.empty:
        notes.append(f"data: class folders without images, left out: {', '.join(listing.empty)}")
    record = {"kind": listing.kind, "path": str(source), "image_size": options.image_size,
              "channels": int(images.shape[1]), "resize": options.resize, "images": counts, "test": test_from,
              "skipped": [{"file": f, "reason": r} for f, r in bad], "empty_classes": listing.empty,
              "mean": list(mean), "std": list(std), "load_seconds": round(seconds, 3), "cache": cache_note}  # fmt: skip
    val = parts["val"]
    return ImageData(
        listing.kind, *parts["train"], *parts["test"], classes=list(listing.classes), mean=mean, std=std,
        val_images=val[0] if val else None, val_labels=val[1] if val else None, source=record, notes=notes,
    )  # fmt: skip


def hold_out_test(labels: torch.Tensor, splits: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``splits`` with ``fraction`` of each class's training images (round half to even, seeded) moved to TEST."""
    splits = splits.clone()
    g = torch.Generator().manual_seed(seed)
    for c in labels.unique().tolist():
        members = ((labels == c) & (splits == TRAIN)).nonzero().flatten()
        k = round(fraction * len(members))
        splits[members[torch.randperm(len(members), generator=g)[:k]]] = TEST
    return splits


def mean_std(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of [0, 1] pixels, in float64 over chunks (no float copy of the whole set)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
        total += x.sum(1)
        squares += (x * x).sum(1)
    n = images.numel() / c
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)  # a constant channel must not divide by 0
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def _bad_text(bad: list[list[str]]) -> str:
    shown = "; ".join(f"{f} ({r})" for f, r in bad[:SHOWN_BAD])
    return shown + (f"; ... {len(bad) - SHOWN_BAD} more in summary.json" if len(bad) > SHOWN_BAD else "")
