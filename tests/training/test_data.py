from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hpsearch.space.config import AugmentConfig, DataConfig, SyntheticConfig
from hpsearch.training.data import augment_batch, load_test, normalize, prepare, stratified_split
from hpsearch.training.rawdata import CIFAR10_CLASSES, CIFAR100_CLASSES, DataError, load_arrays, synthetic

CPU = torch.device("cpu")
SMALL = SyntheticConfig(size=200, test_size=50, classes=5)


def _synthetic_cfg(size: int = 200, val_size: int = 50) -> DataConfig:
    return DataConfig(dataset="synthetic", val_size=val_size,
                      synthetic=SyntheticConfig(size=size, test_size=20, classes=5))


# ---------------------------------------------------------------------------------------------- synthetic
def test_synthetic_is_cifar_shaped_balanced_and_deterministic() -> None:
    a, b = synthetic(SMALL), synthetic(SMALL)
    assert a.x_train.shape == (200, 32, 32, 3) and a.x_train.dtype == np.uint8
    assert a.x_test.shape == (50, 32, 32, 3) and a.y_test.dtype == np.int64
    assert np.bincount(a.y_train, minlength=5).min() >= 38  # balanced over train+test
    assert a.class_names == ("class_0", "class_1", "class_2", "class_3", "class_4")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    other = synthetic(SyntheticConfig(size=200, test_size=50, classes=5, seed=1))
    assert not np.array_equal(a.x_train, other.x_train)
    assert 60 < a.x_train.mean() < 200 and a.x_train.std() > 20  # uses the grey range without saturating


def test_synthetic_noise_is_a_difficulty_knob() -> None:
    """Images of one class are closer to their class mean than to other classes', less so with more noise."""

    def margin(noise: float) -> float:
        raw = synthetic(SyntheticConfig(size=500, test_size=0, classes=5, noise=noise))
        x = raw.x_train.reshape(len(raw.x_train), -1).astype(np.float64)
        means = np.stack([x[raw.y_train == c].mean(0) for c in range(5)])
        d = ((x[:, None, :] - means[None]) ** 2).sum(-1)
        return float((d.argmin(1) == raw.y_train).mean())

    assert margin(0.3) > margin(1.5) > 0.2


# ---------------------------------------------------------------------------------------------------- split
def test_stratified_split_is_balanced_disjoint_and_deterministic() -> None:
    y = np.repeat(np.arange(10), 50)  # 500 images, 50 per class
    train, val = stratified_split(y, 100, None, seed=0)
    assert len(val) == 100 and len(train) == 400
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(500))
    assert np.bincount(y[val]).tolist() == [10] * 10
    train2, val2 = stratified_split(y, 100, None, seed=0)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    assert not np.array_equal(val, stratified_split(y, 100, None, seed=1)[1])


def test_stratified_split_train_limit_and_uneven_classes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 1000)
    train, val = stratified_split(y, 137, 300, seed=3)
    assert len(val) == 137 and len(train) == 300
    assert np.intersect1d(train, val).size == 0
    share = np.bincount(y, minlength=7) / len(y)
    assert np.abs(np.bincount(y[train], minlength=7) - share * 300).max() <= 1
    assert np.abs(np.bincount(y[val], minlength=7) - share * 137).max() <= 1


@pytest.mark.parametrize(
    ("val_size", "train_limit", "message"),
    [(100, None, "data.val_size=100 does not fit the 100 training images of 10 classes: set data.val_size between "
                 "1 and 90"), (0, None, "between 1 and 90"), (91, None, "between 1 and 90"),
     (50, 51, "train_limit must be between 10 .* and 50"), (50, 5, "train_limit must be between 10")],
)
def test_stratified_split_refuses_impossible_sizes(val_size: int, train_limit: int | None, message: str) -> None:
    y = np.repeat(np.arange(10), 10)
    with pytest.raises(DataError, match=message):
        stratified_split(y, val_size, train_limit, seed=0)


def test_stratified_split_refuses_to_empty_a_small_class() -> None:
    y = np.array([0] + [1] * 99)  # class 0's share of 60 held out, 0.6, rounds up to its one image
    with pytest.raises(DataError, match=r"data.val_size=60 of the 100 training images leaves some class without "
                                        r"training images \(label 0; the smallest of the 2 classes has 1 image"):
        stratified_split(y, 60, None, seed=0)
    with pytest.raises(DataError, match="leave none to hold out for validation"):
        stratified_split(np.arange(5), 1, None, seed=0)  # one image per class


# ---------------------------------------------------------------------------------------- augmentation
def _images(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_flip_mirrors_about_half_of_the_images() -> None:
    x = _images()
    out = augment_batch(x, AugmentConfig(crop_padding=0, flip=True), torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 10 < int(flipped.sum()) < 54


def test_crop_shifts_images_within_their_zero_padding() -> None:
    x = _images()
    out = augment_batch(x, AugmentConfig(crop_padding=4, flip=False), torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    moved = 0
    for i in range(len(x)):  # each output is some 32x32 window of its own padded image
        windows = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])]
        assert windows, f"image {i} is not a crop of its padded self"
        moved += (4, 4) not in windows
    assert moved > 40


def test_no_augmentation_is_the_identity() -> None:
    x = _images()
    assert torch.equal(augment_batch(x, AugmentConfig(crop_padding=0, flip=False), torch.Generator()), x)


# ------------------------------------------------------------------------------------------ device data
def test_prepare_splits_and_batches() -> None:
    cfg = _synthetic_cfg(size=200, val_size=50)
    data = prepare(cfg, CPU)  # a worker prepares it once and hands it to every trial (study/test_trials.py)
    other = prepare(DataConfig(dataset="synthetic", val_size=50, synthetic=cfg.synthetic,
                               augment=AugmentConfig(crop_padding=2)), CPU)
    assert torch.equal(other.train_x, data.train_x)  # augmentation is per batch: it does not change the data
    assert data.train_x.shape == (150, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (50, 3, 32, 32) and data.num_classes == 5
    x = data.train_x.float() / 255
    assert torch.allclose(data.mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(data.std, x.std((0, 2, 3), unbiased=False), atol=1e-5)

    batches = list(data.train_batches(64, cfg.augment, torch.Generator().manual_seed(0), channels_last=True))
    assert len(batches) == data.steps_per_epoch(64) == 2  # 150 images: the partial third batch is dropped
    for bx, by in batches:
        assert bx.shape == (64, 3, 32, 32) and bx.dtype == torch.float32 and by.dtype == torch.int64
        assert bx.is_contiguous(memory_format=torch.channels_last)
    labels = torch.cat([by for _, by in batches])
    assert labels.shape == (128,)
    whole = list(data.train_batches(500, cfg.augment, torch.Generator(), channels_last=False))
    assert len(whole) == 1 and whole[0][0].shape[0] == 150  # one batch smaller than batch_size is kept

    normalised = normalize(data.val_x, data.mean, data.std)  # as evaluate sees the validation split
    assert abs(float(normalised.mean())) < 0.2 and 0.8 < float(normalised.std()) < 1.2


def test_shuffle_follows_the_generator() -> None:
    data = prepare(_synthetic_cfg(), CPU)
    aug = AugmentConfig(crop_padding=0, flip=False)

    def labels(seed: int) -> torch.Tensor:
        batches = data.train_batches(50, aug, torch.Generator().manual_seed(seed), channels_last=False)
        return torch.cat([y for _, y in batches])

    assert torch.equal(labels(0), labels(0))
    assert not torch.equal(labels(0), labels(1))


def test_load_test_gives_the_test_split() -> None:
    x, y = load_test(_synthetic_cfg(), CPU)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (20,)


# ------------------------------------------------------------------------------------------ real files
def _write_npz(path: Path, n: int = 40, classes: int = 10, drop: str = "") -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(n, dtype=np.int64) % classes,
        "x_test": rng.integers(0, 256, (n // 2, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(n // 2, dtype=np.int64) % classes,
    }
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if k != drop})  # type: ignore[arg-type]


def test_npz_is_read(tmp_path: Path) -> None:
    _write_npz(tmp_path / "cifar10.npz")
    raw = load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    assert raw.x_train.shape == (40, 32, 32, 3) and raw.y_test.shape == (20,)
    assert raw.class_names == CIFAR10_CLASSES
    assert len(CIFAR100_CLASSES) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)


def test_torchvision_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder in torchvision's cifar-100-python layout (its md5 check patched out: these are not the real files)."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    for name, n in (("train", 6), ("test", 2)):
        entry = {"data": nchw[:n].reshape(n, 3072), "fine_labels": [i % 3 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": list(CIFAR100_CLASSES)}))
    raw = load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path), download=False))
    assert raw.x_train.shape == (6, 32, 32, 3) and raw.x_train.dtype == np.uint8
    assert np.array_equal(raw.x_train, nchw.transpose(0, 2, 3, 1))  # HWC, as from the .npz
    assert raw.y_train.tolist() == [0, 1, 2, 0, 1, 2] and raw.y_train.dtype == np.int64
    assert raw.x_test.shape == (2, 32, 32, 3) and raw.class_names == CIFAR100_CLASSES


def test_missing_data_lists_every_path_tried(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path), download=False))
    message = str(info.value)
    assert f"{tmp_path / 'cifar100.npz'} (no such file)" in message
    assert f"{tmp_path / 'cifar-100-python'}/ (no such folder)" in message
    assert "not tried (download: false)" in message
    assert "--data-root DIR" in message and "download: true" in message


def test_failed_download_ends_in_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # no network, even on a machine that has one
    with pytest.raises(DataError) as info:
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path / "new" / "data"), download=True))
    message = str(info.value)
    assert "tried torchvision's download" in message and "Name or service not known" in message
    assert "cifar10.npz (no such file)" in message
    assert "run it on a machine with internet access (download: true fetches it into" in message
    assert "set `download: true`" not in message  # it is set already
    assert socket.getdefaulttimeout() is None  # restored
    assert list(tmp_path.iterdir()) == []  # the folders made for the download are gone with it


def test_a_data_root_that_is_the_npz_itself_names_its_folder(tmp_path: Path) -> None:
    (tmp_path / "cifar100.npz").write_bytes(b"x")
    with pytest.raises(DataError) as info:
        load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path / "cifar100.npz"), download=True))
    assert str(info.value) == (f"cifar100 data: data.root {tmp_path / 'cifar100.npz'} is a file; it must be the "
                               f"folder that holds cifar100.npz or cifar-100-python/. Fix: pass --data-root "
                               f"{tmp_path} (this file's folder)")


def test_corrupt_torchvision_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"cifar-100-python/ \(unreadable: Dataset not found or corrupted"):
        load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path), download=False))


def test_corrupt_npz_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "cifar100.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"cifar100.npz is not a readable .npz archive"):
        load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path), download=False))


@pytest.mark.parametrize("damage", ["truncate", "scramble"])
def test_damaged_npz_names_the_file(tmp_path: Path, damage: str) -> None:
    _write_npz(tmp_path / "good.npz")
    blob = bytearray((tmp_path / "good.npz").read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:  # the zip directory survives, the compressed data does not
        blob[1000:3000] = bytes(2000)
    (tmp_path / "cifar10.npz").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="cifar10.npz is not a readable .npz archive"):
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))


def test_npz_missing_arrays_and_bad_labels(tmp_path: Path) -> None:
    _write_npz(tmp_path / "cifar10.npz", drop="x_test")
    with pytest.raises(DataError, match="lacks the array.s. x_test; it holds x_train, y_train, y_test"):
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    _write_npz(tmp_path / "cifar10.npz", classes=11)
    with pytest.raises(DataError, match="labels outside 0..9"):
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'svhn'; known: cifar100, cifar10, mnist, fashion_mnist, "
                                        "imagefolder, synthetic"):
        load_arrays(DataConfig(dataset="svhn"))


CIFAR100 = os.environ.get("HPSEARCH_CIFAR100")


@pytest.mark.skipif(not CIFAR100, reason="set HPSEARCH_CIFAR100 to the path of cifar100.npz to run")
def test_real_cifar100_npz(tmp_path: Path) -> None:
    (tmp_path / "cifar100.npz").symlink_to(Path(str(CIFAR100)).resolve())
    raw = load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path), download=False))
    assert raw.x_train.shape == (50000, 32, 32, 3) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (10000, 32, 32, 3) and raw.y_test.shape == (10000,)
    assert np.bincount(raw.y_train).tolist() == [500] * 100 and np.bincount(raw.y_test).tolist() == [100] * 100
    assert raw.x_train[:10, 0, 0, 0].tolist() == [255, 255, 250, 124, 43, 190, 50, 178, 122, 255]
    assert raw.class_names[:3] == ("apple", "aquarium_fish", "baby") and len(raw.class_names) == 100
