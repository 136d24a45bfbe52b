"""Image folders: torchvision's layout (<class>/<image>) and the split one (train/, test/), images of any size and
mode resized and converted to RGB, every mistake of the layout in one message, the split, a model trained on one.
Tiny generated images only."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpsearch.cli import main
from hpsearch.space.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig, TrialConfig
from hpsearch.space.registry import input_shape
from hpsearch.training import checkpoint
from hpsearch.training.data import load_test, prepare
from hpsearch.training.models import build_model
from hpsearch.training.rawdata import DataError, check, class_names, load_arrays, no_test_split
from hpsearch.training.train import train

CPU = torch.device("cpu")

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


@pytest.mark.parametrize("layout", ["missing", "file", "test_only", "no_classes", "loose"])
def test_a_root_without_class_folders_says_what_it_found(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "mine"
    if layout == "file":
        root.write_bytes(b"")
    elif layout == "test_only":  # a test set without its training images
        _tree(root, {"test": 1})
    elif layout in ("no_classes", "loose"):
        (root / "train").mkdir(parents=True)
        folder = root / "train" if layout == "no_classes" else root
        _image("cat", 0).save(folder / "loose.png")
        if layout == "loose":
            (root / "train").rmdir()
    with pytest.raises(DataError) as info:
        class_names(_folder_cfg(root))
    message = str(info.value)
    if layout in ("no_classes", "loose"):
        folder = root / "train" if layout == "no_classes" else root
        assert message == (f"the image folder {root}: {folder} has no class folders (it holds loose.png). Fix: put "
                           f"each class's images in its own folder, {folder}/<class>/<image>.")
        return
    found = {"missing": "it does not exist", "file": "it is a file, not a folder",
             "test_only": "it holds test/ but no train/: test/"}[layout]
    assert message.startswith(f"imagefolder data not found at {root} ({found}). Expected either layout:\n")
    assert f"\n  {root}/<class>/<image>        (one folder per class: .png, .jpg, ... images; no test set)\n" in message
    assert f"{root}/train/<class>/<image>" in message and f"{root}/test/<class>/<image>" in message
    fix = "add the training images as" if layout == "test_only" else "pass --data-root DIR"
    assert f"Fix: {fix}" in message
    with pytest.raises(DataError, match="imagefolder data not found"):
        check(_folder_cfg(root))


def test_torchvisions_layout_is_read_and_split_as_train_is(tmp_path: Path) -> None:
    """root/<class>/<image> (torchvision's ImageFolder layout) gives what root/train/<class>/<image> gives, with no
    test set: data.val_size of its images held out for validation by data.split_seed."""
    flat, split = _tree(tmp_path / "flat", {"": 6}), _tree(tmp_path / "split", {"train": 6})
    flat_cfg, split_cfg = _folder_cfg(flat), _folder_cfg(split)
    raw, same = load_arrays(flat_cfg), load_arrays(split_cfg)
    assert raw.class_names == class_names(flat_cfg) == ("cat", "dog", "fish")
    assert np.array_equal(raw.x_train, same.x_train) and np.array_equal(raw.y_train, same.y_train)
    assert raw.x_test.shape == (0, 16, 16, 3) and raw.y_test.shape == (0,)
    for seed in (0, 1):
        data, other = (prepare(dataclasses.replace(cfg, split_seed=seed), CPU) for cfg in (flat_cfg, split_cfg))
        assert data.val_x.shape == (6, 3, 16, 16) and data.train_x.shape == (12, 3, 16, 16)
        assert torch.equal(data.val_x, other.val_x) and torch.equal(data.val_y, other.val_y)
        assert torch.equal(data.train_y.bincount(), torch.tensor([4, 4, 4]))  # stratified
    message = no_test_split(flat_cfg)
    assert message == (f"the image folder {flat} holds its class folders directly ({flat}/<class>/<image>), so it has "
                       f"no test set: its images are split into training and validation only. Fix: move the class "
                       f"folders into {flat}/train/ and add {flat}/test/<class>/<images> with the same class folders, "
                       f"or pass --data-root DIR for a folder that has train/ and test/.")
    with pytest.raises(DataError) as info:
        load_test(flat_cfg, CPU)
    assert str(info.value) == message
    broken = flat / "dog" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=f"{broken} is not a readable image"):
        load_arrays(flat_cfg)
    _tree(tmp_path / "one", {"": 2}, classes=("cat",))
    with pytest.raises(DataError, match=r"/one: it holds one class folder \(cat\); a classifier needs at least two"):
        load_arrays(_folder_cfg(tmp_path / "one"))


def test_images_of_every_mode_and_size_become_rgb(tmp_path: Path) -> None:
    """Whatever a file's mode: palette, transparency, 1-bit, CMYK, 16- and 32-bit integer and float grayscale (PIL's
    own conversion would make the last three white)."""
    palette = Image.new("P", (5, 9), 1)
    palette.putpalette([255, 0, 255, 10, 20, 30] + [0] * 762)
    files = {  # name: (image, its RGB once loaded)
        "a_one_bit.png": (Image.new("1", (3, 40), 1), (255, 255, 255)),
        "b_grey_alpha.png": (Image.new("LA", (50, 12), (77, 30)), (77, 77, 77)),
        "c_palette.png": (palette, (10, 20, 30)),
        "d_rgba.png": (Image.new("RGBA", (16, 16), (10, 20, 30, 0)), (10, 20, 30)),
        "e_cmyk.tif": (Image.new("CMYK", (7, 7), (0, 0, 0, 0)), (255, 255, 255)),
        "f_16bit.png": (Image.fromarray(np.full((20, 30), 128 * 257, np.uint16)), (128, 128, 128)),
        "g_32bit.tif": (Image.fromarray(np.full((9, 9), 200 * 257, np.int32)), (200, 200, 200)),
        "h_float.tif": (Image.fromarray(np.full((6, 4), 0.25, np.float32)), (64, 64, 64)),
    }
    folder = _tree(tmp_path, {"train": 1}, classes=("other",)) / "train" / "modes"
    folder.mkdir()
    for name, (image, _) in files.items():
        image.save(folder / name, **({"transparency": 0} if name == "c_palette.png" else {}))
    with Image.open(folder / "f_16bit.png") as image:
        assert image.mode.startswith("I")  # what a 16-bit PNG opens as
    raw = load_arrays(_folder_cfg(tmp_path, size=8, val_size=1))
    assert raw.x_train.shape == (9, 8, 8, 3) and raw.class_names == ("modes", "other")
    for (name, (_, rgb)), image in zip(files.items(), raw.x_train, strict=False):
        assert (image.reshape(-1, 3) == rgb).all(), (name, image[0, 0])


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
