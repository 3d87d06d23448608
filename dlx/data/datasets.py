"""Datasets as whole uint8 tensors: ``load_dataset("cifar10")`` -> ImageData.

MNIST ships with dlx (four gzip IDX files in ``dlx/data/mnist``), so the default experiment runs
offline. The others come through torchvision, rooted at ``data.data_dir`` / ``$DLX_DATA_DIR`` /
``./data``; when their files are missing and cannot be downloaded, the error says which files
are expected where, in one line.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import re
import struct
import zlib
from collections.abc import Callable
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar
from urllib.error import URLError

import numpy as np
import torch

import dlx.data.own_images  # noqa: F401  (registers folder and csv)
from dlx.data.base import DATASETS, ImageData, default_data_dir
from dlx.download import socket_timeout
from dlx.errors import DlxError

T = TypeVar("T")

# Per socket operation, not per download: a dead network fails fast, a slow big download still works.
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# The files torchvision reads, relative to the data folder; named in the "not found" error.
EXPECTED_FILES: dict[str, tuple[str, ...]] = {
    "fashion_mnist": tuple(f"FashionMNIST/raw/{f}" for f in _IDX_FILES),
    "kmnist": tuple(f"KMNIST/raw/{f}" for f in _IDX_FILES),
    "cifar10": tuple(
        f"cifar-10-batches-py/{f}" for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    ),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
}


def load_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True, options: Any = None
) -> ImageData:
    """Load a registered dataset; ``data_dir`` defaults to :func:`default_data_dir`; ``options``: the experiment's
    data section (what folder and csv read: path, image_size, ...)."""
    loader = DATASETS.get(name)  # unknown names: DlxError listing the valid ones
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return loader(root.absolute(), download, options)


# The data keys that change which images load_data returns (batching and normalization do not).
LOADING_KEYS = ("dataset", "data_dir", "path", "image_size", "channels", "resize", "on_bad_image", "test_fraction",
                "split_seed")  # fmt: skip


def data_identity(options: Any) -> str:
    """Two data sections with equal identities load the same images: a sweep loads them once."""
    return repr(tuple(getattr(options, k) for k in LOADING_KEYS))


def load_data(options: Any, download: bool | None = None) -> ImageData:
    """The dataset an experiment's ``data:`` section describes; ``download`` overrides data.download."""
    return load_dataset(options.dataset, options.data_dir, options.download if download is None else download, options)


# --- MNIST, shipped with the package -------------------------------------------------------------


def _read_idx(resource: Traversable, ndim: int) -> np.ndarray:
    """A gzip IDX file of unsigned bytes (magic 0x0000080N) as an array shaped by its header."""
    try:
        raw = gzip.decompress(resource.read_bytes())
    except FileNotFoundError:
        raise DlxError(f"packaged MNIST file {resource} is missing; reinstall dlx") from None
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DlxError(f"packaged MNIST file {resource} is corrupt: {e}") from None
    header = 4 + 4 * ndim
    expected_magic = 0x0800 + ndim
    magic = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if magic != expected_magic:
        got = "a truncated header" if magic is None else f"magic {magic:#010x}"
        raise DlxError(f"packaged MNIST file {resource} is corrupt: {got}, expected magic {expected_magic:#010x}")
    if len(raw) < header:
        raise DlxError(f"packaged MNIST file {resource} is corrupt: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise DlxError(
            f"packaged MNIST file {resource} is corrupt: header says {dims} = {int(np.prod(dims))} bytes, "
            f"file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_split(folder: Traversable, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_file, labels_file = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    images, labels = _read_idx(images_file, 3), _read_idx(labels_file, 1)
    if images.shape[1:] != (28, 28):
        raise DlxError(f"packaged MNIST file {images_file} is corrupt: images are {images.shape[1:]}, expected 28x28")
    if len(labels) != len(images):
        raise DlxError(f"packaged MNIST file {labels_file} is corrupt: {len(labels)} labels for {len(images)} images")
    if len(labels) and labels.max() > 9:
        raise DlxError(f"packaged MNIST file {labels_file} is corrupt: label {labels.max()} outside 0..9")
    # Copies: frombuffer views of immutable bytes are read-only, torch wants writable memory.
    return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))


@DATASETS.register("mnist")
def mnist(root: Path, download: bool, options: Any = None) -> ImageData:
    """MNIST handwritten digits, 28x28 grayscale, 10 classes (shipped with dlx, no download)."""
    folder = files("dlx.data") / "mnist"  # works from a source checkout and from an installed wheel
    train_images, train_labels = _mnist_split(folder, "train")
    test_images, test_labels = _mnist_split(folder, "t10k")
    return ImageData(
        "mnist", train_images, train_labels, test_images, test_labels,
        classes=[str(i) for i in range(10)], mean=(0.1307,), std=(0.3081,),
    )  # fmt: skip


# --- torchvision datasets ------------------------------------------------------------------------


def _compact(names: list[str]) -> list[str]:
    """``data_batch_1 .. data_batch_5`` -> ``data_batch_1..5``: keeps the error line short."""
    out: list[str] = []
    i = 0
    while i < len(names):
        m = re.fullmatch(r"(.*?)(\d+)", names[i])
        j = i + 1
        if m:
            prefix, start = m.group(1), int(m.group(2))
            while j < len(names) and names[j] == f"{prefix}{start + j - i}":
                j += 1
        if j - i >= 3:
            out.append(f"{names[i]}..{start + j - i - 1}")
        else:
            out.extend(names[i:j])
        i = j
    return out


def describe_files(paths: tuple[str, ...] | list[str]) -> str:
    """``('a/x', 'a/y', 'b')`` -> ``a/{x, y}, b``: relative paths grouped by folder."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        folder, _, leaf = p.rpartition("/")
        groups.setdefault(folder, []).append(leaf)
    parts = []
    for folder, leaves in groups.items():
        names = _compact(leaves)
        listed = names[0] if len(names) == 1 else ", ".join(names)
        if folder:
            parts.append(f"{folder}/{listed}" if len(names) == 1 else f"{folder}/{{{listed}}}")
        else:
            parts.append(listed)
    return ", ".join(parts)


def _short(error: BaseException) -> str:
    """One line, at most ~160 characters: the reason, not torchvision's multi-line report."""
    if isinstance(error, URLError):
        text = str(error.reason)
    else:
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


class DatasetUnavailable(DlxError):
    """A torchvision dataset's files are not in its folder (and were not, or could not be, downloaded)."""


def _unavailable(name: str, root: Path, reason: str) -> DlxError:
    expected = EXPECTED_FILES[name]
    missing = [p for p in expected if not (root / p).is_file()]
    if not missing:
        lead = f"dataset {name!r} in {root} is corrupt or incomplete (checksum mismatch)"
    elif len(missing) < len(expected):
        lead = f"dataset {name!r} incomplete in {root}: missing {describe_files(missing)}"
    else:
        lead = f"dataset {name!r} not found in {root}"
    return DatasetUnavailable(
        f"{lead}: expected {describe_files(expected)} "
        f"({reason}; set data.data_dir or DLX_DATA_DIR to a folder holding them)"
    )


def _open(name: str, root: Path, download: bool, make: Callable[[bool], T]) -> T:
    """``make(download)`` builds the torchvision objects; local files first, then one download attempt."""
    try:
        return make(False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        pass
    except (AssertionError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as e:
        # Present but unreadable (truncated IDX, broken pickle): downloading again would not fix it.
        raise DlxError(
            f"dataset {name!r} in {root} is unreadable ({type(e).__name__}: {_short(e)}); "
            f"delete {describe_files(EXPECTED_FILES[name])} and download again"
        ) from None
    if not download:
        raise _unavailable(name, root, "download disabled") from None
    try:
        with socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            return make(True)
    except (RuntimeError, OSError) as e:  # URLError and socket timeouts are OSErrors
        raise _unavailable(name, root, f"download failed: {_short(e)}") from None


def _targets(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64).contiguous()


def _train_test(name: str, cls: type, root: Path, download: bool) -> tuple[Any, Any]:
    """Both splits of a torchvision dataset with a ``train=`` flag (MNIST and CIFAR families)."""
    return _open(
        name,
        root,
        download,
        lambda d: (cls(str(root), train=True, download=d), cls(str(root), train=False, download=d)),
    )


def _mnist_family(name: str, class_name: str, root: Path, download: bool, mean: float, std: float) -> ImageData:
    import torchvision.datasets as tvd

    train, test = _train_test(name, getattr(tvd, class_name), root, download)
    # .data is uint8 [N, H, W]: add the channel axis.
    return ImageData(
        name,
        train.data.unsqueeze(1).contiguous(), _targets(train.targets),
        test.data.unsqueeze(1).contiguous(), _targets(test.targets),
        classes=list(train.classes), mean=(mean,), std=(std,),
    )  # fmt: skip


def _cifar(
    name: str, class_name: str, root: Path, download: bool, mean: tuple[float, ...], std: tuple[float, ...]
) -> ImageData:
    import torchvision.datasets as tvd

    train, test = _train_test(name, getattr(tvd, class_name), root, download)

    def nchw(data: np.ndarray) -> torch.Tensor:
        # torchvision holds [N, H, W, C] (a transposed view of the pickled [N, 3, 32, 32]); back to NCHW.
        return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))

    return ImageData(
        name, nchw(train.data), _targets(train.targets), nchw(test.data), _targets(test.targets),
        classes=list(train.classes), mean=mean, std=std,
    )  # fmt: skip


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: Path, download: bool, options: Any = None) -> ImageData:
    """Fashion-MNIST clothing, 28x28 grayscale, 10 classes (torchvision)."""
    return _mnist_family("fashion_mnist", "FashionMNIST", root, download, mean=0.2860, std=0.3530)


@DATASETS.register("kmnist")
def kmnist(root: Path, download: bool, options: Any = None) -> ImageData:
    """Kuzushiji-MNIST cursive Japanese, 28x28 grayscale, 10 classes (torchvision)."""
    return _mnist_family("kmnist", "KMNIST", root, download, mean=0.1918, std=0.3483)


@DATASETS.register("cifar10")
def cifar10(root: Path, download: bool, options: Any = None) -> ImageData:
    """CIFAR-10 objects, 32x32 colour, 10 classes (torchvision)."""
    return _cifar("cifar10", "CIFAR10", root, download, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@DATASETS.register("cifar100")
def cifar100(root: Path, download: bool, options: Any = None) -> ImageData:
    """CIFAR-100 objects, 32x32 colour, 100 fine classes (torchvision)."""
    return _cifar("cifar100", "CIFAR100", root, download, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


def _has_scipy() -> bool:
    return importlib.util.find_spec("scipy") is not None


@DATASETS.register("svhn")
def svhn(root: Path, download: bool, options: Any = None) -> ImageData:
    """SVHN street-view house numbers, 32x32 colour, 10 classes (torchvision; needs scipy)."""
    if not _has_scipy():  # torchvision reads the .mat files with scipy.io
        raise DlxError("SVHN needs scipy: pip install scipy")
    import torchvision.datasets as tvd

    train, test = _open(
        "svhn",
        root,
        download,
        lambda d: (tvd.SVHN(str(root), split="train", download=d), tvd.SVHN(str(root), split="test", download=d)),
    )
    # torchvision already transposed the .mat's [H, W, C, N] to an [N, C, H, W] view; labels 10 -> 0 done too.
    return ImageData(
        "svhn",
        torch.from_numpy(np.ascontiguousarray(train.data)), _targets(train.labels),
        torch.from_numpy(np.ascontiguousarray(test.data)), _targets(test.labels),
        classes=[str(i) for i in range(10)], mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    )  # fmt: skip
