from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from dlx.data import datasets
from dlx.data.datasets import DATASETS, EXPECTED_FILES, ImageData, default_data_dir, load_dataset
from dlx.errors import DlxError


def _exists_only(fpath: str | Path, md5: str | None = None) -> bool:
    return os.path.isfile(fpath)


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake files cannot match torchvision's checksums; the product keeps the check, the test skips it."""
    monkeypatch.setattr(tvd.cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(tvd.svhn, "check_integrity", _exists_only)


def _idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_idx_dataset(root: Path, folder: str, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        _idx(root / folder / "raw" / name, array)
    return arrays


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)


# --- mnist (shipped) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    return load_dataset("mnist")


def test_mnist_is_shipped_and_complete(mnist: ImageData) -> None:
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    for images in (mnist.train_images, mnist.test_images):
        assert images.dtype == torch.uint8 and images.is_contiguous() and images.device.type == "cpu"
        assert int(images.max()) == 255
    for labels in (mnist.train_labels, mnist.test_labels):
        assert labels.dtype == torch.int64
        assert labels.unique().tolist() == list(range(10))
    assert int((mnist.test_labels == 0).sum()) == 980
    assert int((mnist.train_labels == 1).sum()) == 6742
    assert mnist.classes == [str(i) for i in range(10)]
    assert (mnist.in_channels, mnist.image_size, mnist.num_classes) == (1, 28, 10)
    assert mnist.mean == (0.1307,) and mnist.std == (0.3081,)


def test_mnist_ignores_data_dir(tmp_path: Path) -> None:
    data = load_dataset("mnist", tmp_path / "nowhere", download=False)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert not (tmp_path / "nowhere").exists()


def test_corrupt_idx_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(struct.pack(">IIII", 0x0801, 1, 28, 28) + bytes(784)))
    with pytest.raises(DlxError, match=r"train-images-idx3-ubyte\.gz is corrupt: magic 0x00000801"):
        datasets._read_idx(bad, 3)
    bad.write_bytes(gzip.compress(struct.pack(">IIII", 0x0803, 2, 28, 28) + bytes(784)))
    with pytest.raises(DlxError, match=r"train-images-idx3-ubyte\.gz is corrupt: header says"):
        datasets._read_idx(bad, 3)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DlxError, match=r"train-images-idx3-ubyte\.gz is corrupt"):
        datasets._read_idx(bad, 3)


# --- torchvision datasets from fake files ----------------------------------------------------------


@pytest.mark.parametrize(("name", "folder"), [("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_idx_datasets(tmp_path: Path, name: str, folder: str) -> None:
    arrays = _fake_idx_dataset(tmp_path, folder)
    data = load_dataset(name, tmp_path, download=False)
    assert data.name == name
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_images.shape == (5, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_images.is_contiguous()
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(data.test_images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test_labels.tolist() == [0, 3, 6, 9, 2]
    assert data.classes == list(getattr(tvd, folder).classes)
    assert (data.in_channels, data.image_size, data.num_classes) == (1, 28, 10)


def test_cifar10(tmp_path: Path, no_md5: None) -> None:
    base = tmp_path / "cifar-10-batches-py"
    batches = [_cifar_rows(4, seed) for seed in range(5)]
    for i, rows in enumerate(batches, start=1):
        _pickle(base / f"data_batch_{i}", {"data": rows, "labels": [(i + j) % 10 for j in range(4)]})
    test_rows = _cifar_rows(3, 99)
    # A known pixel: image 1, green channel, row 5, column 7 (rows are C-major, then H, then W).
    test_rows[1, 1 * 1024 + 5 * 32 + 7] = 201
    _pickle(base / "test_batch", {"data": test_rows, "labels": [7, 8, 9]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(base / "batches.meta", {"label_names": names})

    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_images.is_contiguous()
    assert data.test_images.is_contiguous()
    assert int(data.test_images[1, 1, 5, 7]) == 201
    assert torch.equal(data.train_images.reshape(20, -1), torch.from_numpy(np.vstack(batches)))
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels[:4].tolist() == [1, 2, 3, 4] and data.test_labels.tolist() == [7, 8, 9]
    assert data.classes == names
    assert (data.in_channels, data.image_size, data.num_classes) == (3, 32, 10)
    assert len(data.mean) == len(data.std) == 3


def test_cifar100(tmp_path: Path, no_md5: None) -> None:
    base = tmp_path / "cifar-100-python"
    train_rows = _cifar_rows(6, 1)
    train_rows[2, 2 * 1024 + 31 * 32 + 0] = 77  # image 2, blue, last row, first column
    _pickle(base / "train", {"data": train_rows, "fine_labels": [0, 50, 99, 1, 2, 3], "coarse_labels": [0] * 6})
    _pickle(base / "test", {"data": _cifar_rows(2, 2), "fine_labels": [98, 4], "coarse_labels": [0, 0]})
    _pickle(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"] * 20})

    data = load_dataset("cifar100", tmp_path, download=False)
    assert data.train_images.shape == (6, 3, 32, 32) and data.test_images.shape == (2, 3, 32, 32)
    assert int(data.train_images[2, 2, 31, 0]) == 77
    assert data.train_labels.tolist() == [0, 50, 99, 1, 2, 3] and data.test_labels.tolist() == [98, 4]
    assert data.num_classes == 100 and data.classes[99] == "c99"


def test_svhn(tmp_path: Path, no_md5: None) -> None:
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)  # the .mat layout: [H, W, C, N]
    x_train[1, 2, 0, 3] = 200  # image 3, red, row 1, column 2
    sio.savemat(tmp_path / "train_32x32.mat", {"X": x_train, "y": np.array([[10], [1], [2], [9], [10]], np.uint8)})
    sio.savemat(tmp_path / "test_32x32.mat", {"X": x_train[..., :2], "y": np.array([[5], [10]], np.uint8)})

    data = load_dataset("svhn", tmp_path, download=False)
    assert data.train_images.shape == (5, 3, 32, 32) and data.test_images.shape == (2, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_images.is_contiguous()
    assert int(data.train_images[3, 0, 1, 2]) == 200
    assert torch.equal(data.train_images, torch.from_numpy(x_train.transpose(3, 2, 0, 1).copy()))
    assert data.train_labels.tolist() == [0, 1, 2, 9, 0] and data.test_labels.tolist() == [5, 0]
    assert data.train_labels.dtype == torch.int64
    assert data.classes == [str(i) for i in range(10)]


def test_svhn_without_scipy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_has_scipy", lambda: False)
    with pytest.raises(DlxError, match=r"^SVHN needs scipy: pip install scipy$"):
        load_dataset("svhn", tmp_path, download=False)


# --- missing, offline, unknown ---------------------------------------------------------------------


def test_expected_files_match_torchvision() -> None:
    # The files named in errors are the ones torchvision actually reads.
    for name, cls in [("fashion_mnist", tvd.FashionMNIST), ("kmnist", tvd.KMNIST)]:
        raw = tuple(f"{cls.__name__}/raw/{Path(url).stem}" for url, _ in cls.resources)
        assert set(EXPECTED_FILES[name]) == set(raw)
    for name, cls in [("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)]:
        listed = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        assert set(EXPECTED_FILES[name]) == {f"{cls.base_folder}/{f}" for f in listed}
    assert set(EXPECTED_FILES["svhn"]) == {tvd.SVHN.split_list[s][1] for s in ("train", "test")}
    assert set(EXPECTED_FILES) | {"mnist", "folder", "csv"} == set(DATASETS.names())


def test_missing_dataset_without_download(tmp_path: Path) -> None:
    with pytest.raises(DlxError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        f"dataset 'cifar10' not found in {tmp_path}: expected cifar-10-batches-py/{{data_batch_1..5, test_batch, "
        "batches.meta} (download disabled; set data.data_dir or DLX_DATA_DIR to a folder holding them)"
    )
    with pytest.raises(DlxError) as err:
        load_dataset("kmnist", tmp_path, download=False)
    assert "\n" not in str(err.value)
    assert f"dataset 'kmnist' not found in {tmp_path}: expected KMNIST/raw/{{train-images-idx3-ubyte, " in str(
        err.value
    )


def test_partial_dataset_names_missing_files(tmp_path: Path, no_md5: None) -> None:
    _pickle(tmp_path / "cifar-100-python" / "train", {"data": _cifar_rows(1, 0), "fine_labels": [0]})
    with pytest.raises(DlxError, match=r"incomplete in .*: missing cifar-100-python/\{test, meta\}: expected"):
        load_dataset("cifar100", tmp_path, download=False)


def test_relative_data_dir_is_reported_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DlxError, match=f"not found in {tmp_path / 'rel'}: expected train_32x32.mat, test_32x32.mat"):
        load_dataset("svhn", "rel", download=False)


def test_offline_download_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(self: object) -> None:
        calls.append(type(self).__name__)
        raise URLError("no network here")

    monkeypatch.setattr(tvd.CIFAR10, "download", offline)
    with pytest.raises(DlxError) as err:
        load_dataset("cifar10", tmp_path, download=True)
    msg = str(err.value)
    assert calls == ["CIFAR10"]
    assert "\n" not in msg
    assert msg.startswith(f"dataset 'cifar10' not found in {tmp_path}: expected cifar-10-batches-py/{{")
    assert "(download failed: no network here; set data.data_dir or DLX_DATA_DIR" in msg


def test_download_multiline_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: object) -> None:
        # torchvision's MNIST download reports every mirror on its own line.
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://x/, got:\nno route\n")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(DlxError) as err:
        load_dataset("fashion_mnist", tmp_path, download=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "download failed: Error downloading train-images-idx3-ubyte.gz: Tried http://x/, got: no route;" in msg


def test_unreadable_files_are_a_one_line_error(tmp_path: Path) -> None:
    _fake_idx_dataset(tmp_path, "KMNIST")
    (tmp_path / "KMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DlxError, match=r"^dataset 'kmnist' in .* is unreadable") as err:
        load_dataset("kmnist", tmp_path, download=True)  # no download attempted: the files exist
    assert "\n" not in str(err.value)


def test_unknown_dataset_suggests_closest() -> None:
    with pytest.raises(DlxError, match="did you mean 'mnist'") as err:
        load_dataset("mnst")
    assert "valid: cifar10, cifar100, csv, fashion_mnist, folder, kmnist, mnist, svhn" in str(err.value)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DLX_DATA_DIR", raising=False)
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("DLX_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    with pytest.raises(DlxError, match=f"not found in {tmp_path / 'elsewhere'}:"):
        load_dataset("cifar100", download=False)
