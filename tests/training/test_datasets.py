"""MNIST and Fashion-MNIST: their loaders, their non-RGB / non-32x32 path to the device, a model trained on them, their
checkpoints, and their rules in a space file (image folders: test_imagefolder.py; idx files: test_idx.py). Tiny
generated files only; never the network."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import hpsearch
from hpsearch.cli import main
from hpsearch.space.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
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
    assert f"{tmp_path}/train-images-idx3-ubyte[.gz] and the other three idx files (none there)" in message
    assert f"Fix: pass --data-root DIR where DIR holds {npz}, {folder}/ or the four idx files train-images-" in message
    assert "download: true" in message


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
