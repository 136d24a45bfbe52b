"""MNIST, Fashion-MNIST and image folders: their loaders, their non-RGB / non-32x32 path to the device, a model
trained on them, their checkpoints, and their rules in a space file. Tiny generated files only; never the network."""

from __future__ import annotations

import dataclasses
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hpsearch
from hpsearch.cli import main
from hpsearch.space.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig, TrialConfig
from hpsearch.space.registry import input_shape
from hpsearch.training import checkpoint
from hpsearch.training.data import load_test, prepare
from hpsearch.training.models import build_model
from hpsearch.training.rawdata import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    DataError,
    check,
    class_names,
    load_arrays,
    no_test_split,
)
from hpsearch.training.train import train

CPU = torch.device("cpu")


def _write_mnist_npz(path: Path, n: int = 60, channel_axis: bool = False, side: int = 28) -> None:
    rng = np.random.default_rng(0)
    shape = (side, side, 1) if channel_axis else (side, side)
    np.savez(path, x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=np.arange(n) % 10,
             x_test=rng.integers(0, 256, (n // 2, *shape), dtype=np.uint8), y_test=np.arange(n // 2) % 10)


def _mnist_cfg(root: Path, dataset: str = "mnist", val_size: int = 20) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), download=False, val_size=val_size)


# ---------------------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize(("dataset", "names"), [("mnist", MNIST_CLASSES), ("fashion_mnist", FASHION_MNIST_CLASSES)])
@pytest.mark.parametrize("channel_axis", [False, True])
def test_mnist_npz_loads_as_one_channel_images(tmp_path: Path, dataset: str, names: tuple[str, ...],
                                               channel_axis: bool) -> None:
    _write_mnist_npz(tmp_path / f"{dataset}.npz", channel_axis=channel_axis)
    cfg = _mnist_cfg(tmp_path, dataset)
    raw = load_arrays(cfg)
    assert raw.x_train.shape == (60, 28, 28, 1) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (30, 28, 28, 1) and raw.y_test.dtype == np.int64
    assert raw.class_names == names == class_names(cfg) and len(names) == 10
    check(cfg)  # what the parent of several workers asks before it starts them


def test_class_names_agree_with_torchvision() -> None:
    import torchvision

    assert list(MNIST_CLASSES) == torchvision.datasets.MNIST.classes
    assert list(FASHION_MNIST_CLASSES) == torchvision.datasets.FashionMNIST.classes


def test_mnist_npz_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    _write_mnist_npz(tmp_path / "mnist.npz", side=32)
    with pytest.raises(DataError, match=r"x_train must be uint8 of shape \(N, 28, 28, 1\) or \(N, 28, 28\), got "
                                        r"uint8 \(60, 32, 32\)"):
        load_arrays(_mnist_cfg(tmp_path))


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of MNIST's raw files: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian sizes, the bytes."""
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(("dataset", "folder", "names"), [("mnist", "MNIST", MNIST_CLASSES),
                                                          ("fashion_mnist", "FashionMNIST", FASHION_MNIST_CLASSES)])
def test_torchvision_mnist_folder_is_read(tmp_path: Path, dataset: str, folder: str, names: tuple[str, ...]) -> None:
    raw_folder = tmp_path / folder / "raw"
    raw_folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    for prefix, n in (("train", 8), ("t10k", 4)):
        _write_idx(raw_folder / f"{prefix}-images-idx3-ubyte", images[:n])
        _write_idx(raw_folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    raw = load_arrays(_mnist_cfg(tmp_path, dataset))
    assert raw.x_train.shape == (8, 28, 28, 1) and np.array_equal(raw.x_train[..., 0], images)
    assert raw.y_train.tolist() == list(range(8)) and raw.y_train.dtype == np.int64
    assert raw.x_test.shape == (4, 28, 28, 1) and raw.class_names == names


@pytest.mark.parametrize(("dataset", "npz", "folder"), [("mnist", "mnist.npz", "MNIST"),
                                                        ("fashion_mnist", "fashion_mnist.npz", "FashionMNIST")])
def test_missing_mnist_lists_what_was_tried_and_the_fix(tmp_path: Path, dataset: str, npz: str, folder: str) -> None:
    with pytest.raises(DataError) as info:
        load_arrays(_mnist_cfg(tmp_path, dataset))
    message = str(info.value)
    assert message.startswith(f"{dataset} data not found. Tried:")
    assert f"{tmp_path / npz} (no such file)" in message
    assert f"{tmp_path / folder}/ (no such folder)" in message
    assert "not tried (download: false)" in message
    assert f"Fix: pass --data-root DIR where DIR holds {npz} or {folder}/" in message and "download: true" in message


def test_mnist_prepares_one_channel_28x28_device_data(tmp_path: Path) -> None:
    _write_mnist_npz(tmp_path / "mnist.npz")
    data = prepare(_mnist_cfg(tmp_path), CPU)
    assert data.train_x.shape == (40, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (20, 1, 28, 28) and data.num_classes == 10
    assert data.mean.shape == (1,) and data.std.shape == (1,)
    x = data.train_x.float() / 255
    assert torch.allclose(data.mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(data.std, x.std((0, 2, 3), unbiased=False), atol=1e-5)
    test_x, test_y = load_test(_mnist_cfg(tmp_path), CPU)
    assert test_x.shape == (30, 1, 28, 28) and test_y.shape == (30,)


@pytest.mark.parametrize("model", [ModelConfig(widths=(4,), blocks_per_stage=1), ModelConfig(name="mlp", hidden=(16,))],
                         ids=["cnn", "mlp"])
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_a_model_trains_on_mnist(tmp_path: Path, dataset: str, model: ModelConfig) -> None:
    _write_mnist_npz(tmp_path / f"{dataset}.npz")
    config = TrialConfig(data=_mnist_cfg(tmp_path, dataset), model=model,
                         train=TrainConfig(epochs=1, batch_size=16, device="cpu", eval_batch_size=64))
    assert input_shape(config) == (1, 28, 28)
    result = train(config)
    assert result.epochs_run == 1 and len(result.history) == 1
    assert 0 <= result.history[0]["val_acc"] <= 1 and np.isfinite(result.history[0]["val_loss"])
    assert result.class_names == (MNIST_CLASSES if dataset == "mnist" else FASHION_MNIST_CLASSES)


# ---------------------------------------------------------------------------------------------- image folder
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fish": (30, 30, 200)}  # a flat colour per class
SIZES = [(40, 30), (30, 40), (16, 16), (64, 48), (8, 12), (33, 17)]


def _image(name: str, i: int) -> Image.Image:
    """Image i of a class: its flat colour at one of several sizes; every third one grayscale ("L": the mean)."""
    colour = COLOURS.get(name, (90, 90, 90))
    if i % 3 == 2:
        return Image.new("L", SIZES[i % len(SIZES)], sum(colour) // 3)
    return Image.new("RGB", SIZES[i % len(SIZES)], colour)


def _expected(name: str, i: int) -> tuple[int, int, int]:
    grey = sum(COLOURS[name]) // 3
    return (grey, grey, grey) if i % 3 == 2 else COLOURS[name]


def _tree(root: Path, splits: dict[str, int], classes: tuple[str, ...] = tuple(COLOURS)) -> Path:
    for split, per_class in splits.items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                _image(name, i).save(folder / f"{i:02d}.png")
    return root


def _folder_cfg(root: Path, size: int = 16, val_size: int = 6) -> DataConfig:
    return DataConfig(dataset="imagefolder", root=str(root), image_size=size, download=False, val_size=val_size)


def test_imagefolder_loads_resized_rgb_with_the_folder_names(tmp_path: Path) -> None:
    cfg = _folder_cfg(_tree(tmp_path, {"train": 6, "test": 2}))
    raw = load_arrays(cfg)
    assert raw.x_train.shape == (18, 16, 16, 3) and raw.x_train.dtype == np.uint8
    assert raw.class_names == ("cat", "dog", "fish") == class_names(cfg)
    assert raw.y_train.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # ImageFolder's order: class, then file name
    for j, (name, i) in enumerate((n, i) for n in COLOURS for i in range(6)):
        assert (raw.x_train[j].reshape(-1, 3) == _expected(name, i)).all(), (name, i)  # RGB, resized, unchanged
    assert raw.x_test.shape == (6, 16, 16, 3) and raw.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    assert no_test_split(cfg) is None
    x, y = load_test(cfg, CPU)
    assert x.shape == (6, 3, 16, 16) and torch.equal(y, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert input_shape(TrialConfig(data=cfg)) == (3, 16, 16)


def test_imagefolder_resizes_to_image_size(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train": 2})
    big = load_arrays(_folder_cfg(root, size=24))
    assert big.x_train.shape == (6, 24, 24, 3)
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # 64x64: a left-to-right ramp
    Image.fromarray(gradient).save(root / "train" / "cat" / "ramp.png")
    raw = load_arrays(_folder_cfg(root, size=8))
    ramp = raw.x_train[2, :, :, 0]  # cat's third file, after 00.png and 01.png
    assert ramp.shape == (8, 8) and (np.diff(ramp.astype(int), axis=1) > 0).all()  # smooth, still increasing
    assert abs(int(ramp[0, 0]) - 14) <= 4 and abs(int(ramp[0, -1]) - 238) <= 4  # averages of 8 source columns


def test_imagefolder_without_test_has_an_empty_test_split_and_says_so(tmp_path: Path) -> None:
    cfg = _folder_cfg(_tree(tmp_path, {"train": 6}))
    raw = load_arrays(cfg)
    assert raw.x_test.shape == (0, 16, 16, 3) and raw.y_test.shape == (0,)
    message = no_test_split(cfg)
    assert message is not None and f"{tmp_path} has no test/ folder" in message
    with pytest.raises(DataError, match="has no test/ folder, so it has no test set") as info:
        load_test(cfg, CPU)
    assert f"Fix: add {tmp_path}/test/<class>/<images>" in str(info.value)


def test_evaluate_of_an_imagefolder_checkpoint_without_test_is_one_message(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _folder_cfg(_tree(tmp_path / "images", {"train": 6}))
    config = TrialConfig(data=cfg, model=ModelConfig(widths=(4,), blocks_per_stage=1))
    model = build_model(config.model, 3, config)
    payload = checkpoint.make_payload(model.state_dict(), config, "val_acc", 0.5, 0, ["cat", "dog", "fish"],
                                      mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    path = checkpoint.save(payload, tmp_path / "folder.pt")
    assert main(["evaluate", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has no test/ folder" in err and "Traceback" not in err


def test_imagefolder_test_classes_must_be_the_train_classes(tmp_path: Path) -> None:
    _tree(tmp_path, {"train": 2})
    _tree(tmp_path, {"test": 1}, classes=("cat", "dog", "shark"))
    with pytest.raises(DataError, match=r"test/ must hold the same class folders as train/ \(only in train/: fish; "
                                        r"only in test/: shark\)"):
        load_arrays(_folder_cfg(tmp_path))


def test_a_broken_image_is_named(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train": 3})
    broken = root / "train" / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a png")
    with pytest.raises(DataError, match=f"{broken} is not a readable image") as info:
        load_arrays(_folder_cfg(root))
    assert "Fix: replace the file" in str(info.value)
    good = (root / "train" / "cat" / "00.png").read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # a truncated file: its header reads, its pixels do not
    with pytest.raises(DataError, match=f"{broken} is not a readable image"):
        load_arrays(_folder_cfg(root))


@pytest.mark.parametrize("layout", ["missing", "flat", "no_classes"])
def test_a_root_without_train_classes_says_what_it_found(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "mine"
    if layout == "flat":  # class folders straight under root: the commonest mistake
        _tree(tmp_path, {"mine": 1})
    elif layout == "no_classes":
        (root / "train").mkdir(parents=True)
        _image("cat", 0).save(root / "train" / "loose.png")
    with pytest.raises(DataError) as info:
        class_names(_folder_cfg(root))
    message = str(info.value)
    if layout == "no_classes":
        assert f"{root / 'train'} has no class folders (it holds loose.png)" in message
        return
    found = "it does not exist" if layout == "missing" else "it holds cat/, dog/, fish/"
    assert f"imagefolder data not found: {root} has no train/ folder ({found})" in message
    assert f"{root}/train/<class>/<image>" in message and f"{root}/test/<class>/<image>" in message
    assert "Fix: pass --data-root DIR" in message
    with pytest.raises(DataError, match="has no train/ folder"):
        check(_folder_cfg(root))


def test_an_empty_class_folder_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train": 2})
    (root / "train" / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra.*put at least one image in every class folder"):
        load_arrays(_folder_cfg(root))


def test_one_class_folder_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train": 2}, classes=("cat",))
    with pytest.raises(DataError, match=r"train/ holds one class folder \(cat\); a classifier needs at least two"):
        load_arrays(_folder_cfg(root))


def test_imagefolder_split_too_big_for_its_images_says_the_numbers(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train": 6})
    with pytest.raises(DataError) as info:
        prepare(_folder_cfg(root, val_size=5000), CPU)
    assert str(info.value) == (f"imagefolder data under {root}: data.val_size=5000 does not fit the 18 training images "
                               "of 3 classes: set data.val_size between 1 and 15 (each class keeps at least one "
                               "training image)")
    cfg = dataclasses.replace(_folder_cfg(root, val_size=6), train_limit=100)
    with pytest.raises(DataError, match="data.train_limit must be between 3 .one image per class. and 12"):
        prepare(cfg, CPU)


def test_a_model_trains_on_an_image_folder(tmp_path: Path) -> None:
    cfg = dataclasses.replace(_folder_cfg(_tree(tmp_path, {"train": 6, "test": 2})),
                              augment=AugmentConfig(crop_padding=2, flip=True))
    data = prepare(cfg, CPU)
    assert data.train_x.shape == (12, 3, 16, 16) and data.mean.shape == (3,) and data.class_names == tuple(COLOURS)
    config = TrialConfig(data=cfg, model=ModelConfig(widths=(4, 8), blocks_per_stage=1),
                         train=TrainConfig(epochs=1, batch_size=4, device="cpu"))
    result = train(config, data)
    assert result.epochs_run == 1 and result.class_names == ("cat", "dog", "fish")


def test_sample_counts_an_image_folders_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "images", {"train": 2})
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(f"""
        study: {{name: folder, sampler: {{name: random, seed: 0}}}}
        data: {{dataset: imagefolder, root: {str(root)!r}, image_size: 16, val_size: 3}}
        model: {{name: mlp, hidden: [8], dropout: {{type: float, low: 0.0, high: 0.5}}}}
    """))
    assert main(["sample", str(space), "-n", "1"]) == 0
    params = (3 * 16 * 16 * 8 + 8) + (8 * 3 + 3)  # a 3-way classifier: the three class folders
    assert f"# sample 1: {params:,} parameters" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- checkpoints
def _mnist_checkpoint(tmp_path: Path, model: ModelConfig) -> tuple[TrialConfig, Path]:
    config = TrialConfig(data=_mnist_cfg(tmp_path), model=model)
    net = build_model(config.model, 10, config)
    payload = checkpoint.make_payload(net.state_dict(), config, "val_acc", 0.25, 1, MNIST_CLASSES, "s", 1,
                                      mean=[0.13], std=[0.31])
    return config, checkpoint.save(payload, tmp_path / "mnist.pt")


@pytest.mark.parametrize("model", [ModelConfig(widths=(4,), blocks_per_stage=1), ModelConfig(name="mlp", hidden=(16,))],
                         ids=["cnn", "mlp"])
def test_a_one_channel_checkpoint_round_trips(tmp_path: Path, model: ModelConfig) -> None:
    config, path = _mnist_checkpoint(tmp_path, model)
    ckpt = hpsearch.load_checkpoint(path)
    assert ckpt.config == config and ckpt.class_names == MNIST_CLASSES
    assert ckpt.mean.shape == (1,) and ckpt.std.shape == (1,)
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert ckpt.model(ckpt.preprocess(x)).shape == (3, 10)
    assert ckpt.preprocess(x).shape == (3, 1, 28, 28)  # one channel stays one (no broadcast to three)


def test_a_checkpoint_with_stats_of_another_channel_count_is_refused(tmp_path: Path) -> None:
    _, path = _mnist_checkpoint(tmp_path, ModelConfig(name="mlp", hidden=(8,)))
    payload = checkpoint.load_payload(path)
    payload["mean"] = [0.5, 0.5, 0.5]  # an RGB data set's, under a grayscale config
    checkpoint.save(payload, tmp_path / "bad.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"its input mean must be one finite number \(the "
                                                         r"grayscale images' one channel\), got \[0.5, 0.5, 0.5\]"):
        hpsearch.load_checkpoint(tmp_path / "bad.pt")


# ---------------------------------------------------------------------------------------------- space files
def _space(tmp_path: Path, data: str, model: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"study: {{name: s}}\ndata: {data}\nmodel: {model}\n")
    return path


def test_an_mnist_mlp_space_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _space(tmp_path, "{dataset: mnist}", "{name: mlp, hidden: [512, 128]}")
    space = hpsearch.load_space(path)
    assert space is not None
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_an_image_size_for_a_fixed_size_data_set_is_refused(tmp_path: Path) -> None:
    path = _space(tmp_path, "{dataset: cifar10, image_size: 64}", "{name: cnn}")
    with pytest.raises(hpsearch.SpaceError, match=r"data.image_size.*only an image folder is resized; cifar10's "
                                                  r"images are 32x32"):
        hpsearch.load_space(path)
