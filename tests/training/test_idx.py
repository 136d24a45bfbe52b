"""MNIST and Fashion-MNIST from their four original idx files in data.root (gzipped or not, as Debian's
dataset-fashion-mnist ships them), and what a download may write: nothing into a root that holds the data in any form
or cannot be written, and nothing left behind when it fails. Tiny generated files only; never the network, never a
system folder."""

from __future__ import annotations

import gzip
import os
import socket
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hpsearch.space.config import DataConfig
from hpsearch.training import rawfiles
from hpsearch.training.data import prepare
from hpsearch.training.rawdata import FASHION_MNIST_CLASSES, MNIST_CLASSES, DataError, check, load_arrays

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx(array: np.ndarray, magic: int | None = None) -> bytes:
    """An idx file's bytes: the big-endian magic (2051 images, 2049 labels), the sizes, the uint8 values."""
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def _write_set(root: Path, gz: bool = True, n: int = 20, side: int = 28) -> dict[str, np.ndarray]:
    """The four files of a tiny MNIST-shaped data set in root (n training images, n // 2 test images)."""
    rng = np.random.default_rng(0)
    arrays = {NAMES[0]: rng.integers(0, 256, (n, side, side)), NAMES[1]: np.arange(n) % 10,
              NAMES[2]: rng.integers(0, 256, (n // 2, side, side)), NAMES[3]: (np.arange(n // 2) + 3) % 10}
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = _idx(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


def _tree(root: Path) -> list[tuple[str, int]]:
    """Every path under root with its size: what a load must leave as it found it."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call of torchvision's downloads fails the test; the network is off too."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", refuse)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _cfg(root: Path, dataset: str = "fashion_mnist", download: bool = True) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), download=download, val_size=10)


# ------------------------------------------------------------------------------------------------- read
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
@pytest.mark.parametrize(("dataset", "names"), [("mnist", MNIST_CLASSES), ("fashion_mnist", FASHION_MNIST_CLASSES)])
def test_the_four_idx_files_in_root_are_read_without_a_write(tmp_path: Path, no_download: None, gz: bool,
                                                             dataset: str, names: tuple[str, ...]) -> None:
    root = tmp_path / "fashion-mnist"
    arrays = _write_set(root, gz=gz)
    before = _tree(root)
    raw = load_arrays(_cfg(root, dataset))
    assert raw.x_train.shape == (20, 28, 28, 1) and raw.x_train.dtype == np.uint8 and raw.x_train.flags.writeable
    assert np.array_equal(raw.x_train[..., 0], arrays[NAMES[0]]) and raw.y_train.dtype == np.int64
    assert raw.y_train.tolist() == arrays[NAMES[1]].tolist() and raw.y_test.tolist() == arrays[NAMES[3]].tolist()
    assert np.array_equal(raw.x_test[..., 0], arrays[NAMES[2]]) and raw.class_names == names
    check(_cfg(root, dataset))
    data = prepare(_cfg(root, dataset), torch.device("cpu"))
    assert data.train_x.shape == (10, 1, 28, 28) and data.val_x.shape == (10, 1, 28, 28)
    assert _tree(root) == before  # a root that holds the data is only read: nothing made beside it


def test_torchvisions_raw_folder_is_read_gzipped_too(tmp_path: Path, no_download: None) -> None:
    arrays = _write_set(tmp_path / "FashionMNIST" / "raw", gz=True)
    before = _tree(tmp_path)
    raw = load_arrays(_cfg(tmp_path))
    assert np.array_equal(raw.x_train[..., 0], arrays[NAMES[0]]) and _tree(tmp_path) == before


# ------------------------------------------------------------------------------------------------- refused
def _load_error(root: Path) -> str:
    with pytest.raises(DataError) as info:
        load_arrays(_cfg(root))
    return str(info.value)


def test_swapped_files_are_a_wrong_magic_named(tmp_path: Path, no_download: None) -> None:
    _write_set(tmp_path)
    images, labels = tmp_path / f"{NAMES[0]}.gz", tmp_path / f"{NAMES[1]}.gz"
    data = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(data)
    assert _load_error(tmp_path) == (
        f"{images} starts with the magic number 2049 (that of idx labels: are two files swapped?), not 2051: it "
        f"is not an idx images file. Fix: replace it with the data set's own {images.name} (gzipped or not).")
    (tmp_path / NAMES[0]).write_bytes(b"\x89PNG\r\n\x1a\n")  # the plain file comes before the .gz
    assert _load_error(tmp_path).startswith(f"{tmp_path / NAMES[0]} starts with the magic number 2303741511, not 2051")


def test_a_truncated_file_is_named(tmp_path: Path, no_download: None) -> None:
    _write_set(tmp_path, gz=False)
    images = tmp_path / NAMES[2]
    images.write_bytes(images.read_bytes()[:-100])
    assert _load_error(tmp_path) == (
        f"{images} is truncated: its header says 10 images of 28x28 (7,840 bytes), but 7,740 bytes follow it. Fix: "
        f"replace it with a complete copy.")
    images.write_bytes(images.read_bytes()[:10])
    assert _load_error(tmp_path).startswith(f"{images} is truncated: 10 bytes, shorter than its 16-byte header")


def test_a_truncated_gzip_file_is_named(tmp_path: Path, no_download: None) -> None:
    _write_set(tmp_path)
    labels = tmp_path / f"{NAMES[3]}.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    message = _load_error(tmp_path)
    assert message.startswith(f"{labels} is not a readable gzip file (EOFError: ")
    assert message.endswith("Fix: replace it with a good copy of the idx labels file.")


def test_label_and_image_counts_that_differ_name_both_files(tmp_path: Path, no_download: None) -> None:
    _write_set(tmp_path)
    labels = tmp_path / f"{NAMES[1]}.gz"
    labels.write_bytes(gzip.compress(_idx(np.arange(19) % 10)))
    assert _load_error(tmp_path) == (
        f"{labels} holds 19 labels but {tmp_path / NAMES[0]}.gz holds 20 images; each image needs one label. Fix: "
        f"use the labels file that belongs with those images.")


def test_images_of_another_size_and_labels_out_of_range_are_refused(tmp_path: Path, no_download: None) -> None:
    _write_set(tmp_path, side=32)
    assert _load_error(tmp_path).startswith(f"{tmp_path / NAMES[0]}.gz holds 32x32 images; this data set's are 28x28")
    _write_set(tmp_path)
    (tmp_path / f"{NAMES[3]}.gz").write_bytes(gzip.compress(_idx(np.full(10, 10))))
    assert _load_error(tmp_path).startswith(f"{tmp_path / NAMES[3]}.gz holds the label 10, outside 0..9")


def test_some_of_the_four_files_is_refused_and_nothing_is_downloaded_beside(tmp_path: Path,
                                                                            no_download: None) -> None:
    _write_set(tmp_path)
    (tmp_path / f"{NAMES[2]}.gz").unlink()
    (tmp_path / f"{NAMES[3]}.gz").unlink()
    before = _tree(tmp_path)
    assert _load_error(tmp_path) == (
        f"{tmp_path} holds {NAMES[0]}.gz, {NAMES[1]}.gz but not {NAMES[2]}, {NAMES[3]} (gzipped or not): "
        f"MNIST-style data is all four idx files. Fix: add the missing file(s) to {tmp_path}, or pass --data-root "
        f"DIR for a folder that holds all four.")
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------------------------------------- download
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


def test_a_failed_download_into_an_existing_root_leaves_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    (tmp_path / "notes.txt").write_text("mine")
    message = _load_error(tmp_path)
    assert _tree(tmp_path) == [("notes.txt", 4)]  # no FashionMNIST/raw/ left behind
    assert "tried torchvision's download into" in message and "Name or service not known" in message
    assert f"{tmp_path}/{NAMES[0]}[.gz] and the other three idx files (none there)" in message
    assert (f"Fix: pass --data-root DIR where DIR holds fashion_mnist.npz, FashionMNIST/ or the four idx files "
            f"{', '.join(name + '[.gz]' for name in NAMES)} (or set data.root in the space)") in message


@pytest.mark.parametrize(("dataset", "module"), [("fashion_mnist", "mnist"), ("cifar10", "cifar")])
def test_a_failed_download_removes_its_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str,
                                                     module: str) -> None:
    """What torchvision wrote before it failed goes, even inside a torchvision folder that was there before (whose
    own files stay)."""
    if dataset == "fashion_mnist":
        (tmp_path / "FashionMNIST").mkdir()
        (tmp_path / "FashionMNIST" / "mine.txt").write_text("kept")
    before = _tree(tmp_path)

    def partial(url: str, download_root: str, filename: str | None = None, **kwargs: object) -> None:
        Path(download_root, filename or "part").write_bytes(b"half a file")
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(getattr(torchvision.datasets, module), "download_and_extract_archive", partial)
    with pytest.raises(DataError, match="tried torchvision's download into"):
        load_arrays(_cfg(tmp_path, dataset))
    assert _tree(tmp_path) == before


def test_a_download_stopped_by_ctrl_c_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(url: str, download_root: str, filename: str, **kwargs: object) -> None:
        Path(download_root, filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", stopped)
    with pytest.raises(KeyboardInterrupt):
        load_arrays(_cfg(tmp_path / "new"))
    assert list(tmp_path.iterdir()) == [] and socket.getdefaulttimeout() is None


def test_a_read_only_root_is_never_downloaded_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   no_download: None) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == tmp_path and mode == os.W_OK
                        else real_access(path, mode, **kw))  # as root, a chmod would not stop this process
    message = _load_error(tmp_path / "fashion")
    assert f"Download: not tried ({tmp_path} is not writable, and a read-only data root is only read)." in message
    assert "set data.root to a writable folder" in message and list(tmp_path.iterdir()) == []


def test_a_root_holding_cifars_archive_is_not_downloaded_into(tmp_path: Path, no_download: None) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"an archive")
    before = _tree(tmp_path)
    with pytest.raises(DataError) as info:
        load_arrays(_cfg(tmp_path, "cifar10"))
    message = str(info.value)
    assert (f"Download: not tried ({tmp_path} holds the data as cifar-10-python.tar.gz, and a folder that holds the "
            f"data is only read).") in message
    assert f"or extract the archive there first: tar -xzf {tmp_path / 'cifar-10-python.tar.gz'} -C {tmp_path}." \
        in message
    assert _tree(tmp_path) == before


# ---------------------------------------------------------------------------------------- shared copies
def test_a_root_without_the_data_reads_hpsearch_data_then_the_systems_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: None) -> None:
    """data.root first, then $HPSEARCH_DATA, then the system's folder: each only read, nothing made anywhere."""
    system, shared, empty = tmp_path / "usr-share", tmp_path / "shared", tmp_path / "empty"
    arrays = _write_set(system)
    _write_set(shared, n=30)
    empty.mkdir()
    monkeypatch.setattr(rawfiles, "SYSTEM_ROOTS", {"fashion_mnist": str(system)})
    before = _tree(tmp_path)
    raw = load_arrays(_cfg(empty))
    assert np.array_equal(raw.x_train[..., 0], arrays[NAMES[0]])  # the system's copy
    monkeypatch.setenv("HPSEARCH_DATA", str(shared))
    assert len(load_arrays(_cfg(empty)).y_train) == 30  # $HPSEARCH_DATA before the system's copy
    assert len(load_arrays(_cfg(system)).y_train) == 20  # the space's own root before both
    assert _tree(tmp_path) == before
    assert load_arrays(_cfg(empty, "mnist")).y_train.shape == (30,)  # $HPSEARCH_DATA serves any data set


def test_nowhere_to_be_found_names_every_place_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     no_download: None) -> None:
    monkeypatch.setattr(rawfiles, "SYSTEM_ROOTS", {"fashion_mnist": str(tmp_path / "system")})
    monkeypatch.setenv("HPSEARCH_DATA", str(tmp_path / "shared"))
    message = _load_error(tmp_path / "space-root")
    for place in ("space-root", "shared", "system"):
        assert f"{tmp_path / place}/{NAMES[0]}[.gz] and the other three idx files (none there)" in message
    assert not (tmp_path / "space-root").exists()  # the download failed: nothing left behind


FASHION = os.environ.get("HPSEARCH_FASHION_MNIST")


@pytest.mark.skipif(not FASHION, reason="set HPSEARCH_FASHION_MNIST to the folder of the four Fashion-MNIST idx files "
                    "(apt-get install dataset-fashion-mnist: /usr/share/datasets/fashion-mnist) to run")
def test_the_real_fashion_mnist_files_are_read_where_they_lie() -> None:
    assert FASHION is not None
    before = _tree(Path(FASHION))
    raw = load_arrays(_cfg(Path(FASHION)))
    assert raw.x_train.shape == (60000, 28, 28, 1) and raw.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(raw.y_train).tolist() == [6000] * 10 and np.bincount(raw.y_test).tolist() == [1000] * 10
    assert raw.class_names == FASHION_MNIST_CLASSES and _tree(Path(FASHION)) == before
