"""Your own images as numpy arrays: an image folder, `<root>/train/<class>/*` and optionally `<root>/test/<class>/*`,
read by torchvision's ImageFolder and resized once, here, to data.image_size square.

Each mistake of the layout (no train/, one class folder, a test/ whose classes differ, an empty class folder, a file
that is not an image) is one message that says what the folder holds and the fix. torchvision and PIL are imported
only where images are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..space.config import DataConfig
from ..space.registry import DATASETS
from .rawtypes import DataError, RawData

_LISTED = 8  # names of a folder's contents an error message shows


@DATASETS.builder("imagefolder")
def _imagefolder(cfg: DataConfig) -> RawData:
    """Your own images: `<root>/train/<class>/*` and optionally `<root>/test/<class>/*` with the same class folders,
    read by torchvision's ImageFolder (every image converted to RGB) and resized once, here, to data.image_size
    square (bilinear, antialiased when shrinking), so the device holds one uint8 (N, S, S, 3) array a split. No
    test/: the test split is empty, and what needs it asks rawdata.no_test_split() for the message."""
    root = Path(cfg.root).expanduser()
    names = train_classes(root)
    size = cfg.image_size
    x_train, y_train = _read_image_split(root / "train", names, size)
    if (root / "test").exists():
        x_test, y_test = imagefolder_test(root, names, size)
    else:
        x_test, y_test = np.empty((0, size, size, 3), np.uint8), np.empty(0, np.int64)
    return RawData(x_train, y_train, x_test, y_test, names)


def imagefolder_test(root: Path, names: tuple[str, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """root/test's images and labels; its class folders must be train/'s (`names`), for the labels to agree."""
    test = root / "test"
    if not test.is_dir():
        raise DataError(f"{test} is not a folder; an image folder's test split is test/<class>/<images>. "
                        "Fix: make it a folder of class folders, or remove it (no test set).")
    test_names = _class_folders(test, root)
    if test_names != names:
        only_train = sorted(set(names) - set(test_names))
        only_test = sorted(set(test_names) - set(names))
        diff = "; ".join(part for part in (
            f"only in train/: {', '.join(only_train)}" if only_train else "",
            f"only in test/: {', '.join(only_test)}" if only_test else "") if part)
        raise DataError(f"the image folder {root}: test/ must hold the same class folders as train/ ({diff}). "
                        f"Fix: rename, add or remove class folders under {test} so they match train/'s.")
    return _read_image_split(test, names, size)


def train_classes(root: Path) -> tuple[str, ...]:
    """The class folders of root/train: at least two, since a classifier of one class learns nothing."""
    names = _class_folders(_imagefolder_train(root), root)
    if len(names) < 2:
        raise DataError(f"the image folder {root}: train/ holds one class folder ({names[0]}); a classifier needs "
                        f"at least two. Fix: add a folder per class under {root / 'train'}.")
    return names


def _imagefolder_train(root: Path) -> Path:
    """root/train, or a DataError that says what root holds instead and the layout expected."""
    train = root / "train"
    if train.is_dir():
        return train
    if not root.is_dir():
        found = "it does not exist" if not root.exists() else "it is a file, not a folder"
    else:
        found = f"it holds {_listing(root)}"
    raise DataError(
        f"imagefolder data not found: {root} has no train/ folder ({found}). Expected layout:\n"
        f"  {root}/train/<class>/<image>  (one folder per class: .png, .jpg, ... images)\n"
        f"  {root}/test/<class>/<image>   (optional: the same class folders; the test set)\n"
        f"Fix: pass --data-root DIR (or set data.root in the space) where DIR holds train/, or move your class "
        f"folders into {root}/train/."
    )


def _class_folders(folder: Path, root: Path) -> tuple[str, ...]:
    """The sorted subfolder names of a split folder (torchvision's ImageFolder: class index = sorted position)."""
    try:
        names = tuple(sorted(entry.name for entry in os.scandir(folder) if entry.is_dir()))
    except OSError as exc:
        raise DataError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    if not names:
        raise DataError(f"the image folder {root}: {folder} has no class folders (it holds {_listing(folder)}). "
                        f"Fix: put each class's images in its own folder, {folder}/<class>/<image>.")
    return names


def _listing(folder: Path) -> str:
    """A folder's first few entry names for a message ('nothing' when empty)."""
    try:
        entries = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(folder))
    except OSError as exc:
        return f"nothing readable ({exc.strerror or exc})"
    if not entries:
        return "nothing"
    more = f", ... ({len(entries)} entries)" if len(entries) > _LISTED else ""
    return ", ".join(entries[:_LISTED]) + more


def _read_image_split(folder: Path, names: tuple[str, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of one split as uint8 (N, size, size, 3) and its int64 labels; DataError naming an empty class
    folder or the first file that is not a readable image."""
    import torchvision
    from PIL import Image

    def resize(image: Image.Image) -> Image.Image:  # PIL's bilinear filter widens its support when it shrinks
        return image.resize((size, size), Image.Resampling.BILINEAR)

    try:
        dataset = torchvision.datasets.ImageFolder(str(folder), transform=resize)
    except FileNotFoundError as exc:  # torchvision: a class folder without a file of an image extension
        raise DataError(f"{folder}: {str(exc).rstrip('.')}. Fix: put at least one image in every class folder, or "
                        "remove the empty folder.") from None
    if tuple(dataset.classes) != names:  # a folder made or removed between the two listings
        raise DataError(f"the class folders of {folder} changed while it was read; run again")
    x = np.empty((len(dataset), size, size, 3), np.uint8)
    y = np.empty(len(dataset), np.int64)
    for i, (path, _) in enumerate(dataset.samples):
        try:
            image, label = dataset[i]
        except Exception as exc:  # PIL: UnidentifiedImageError, OSError (truncated), SyntaxError (broken PNG), ...
            raise DataError(f"{path} is not a readable image ({type(exc).__name__}: {exc}). Fix: replace the file "
                            "with a good copy or remove it.") from None
        x[i], y[i] = np.asarray(image, dtype=np.uint8), label
    return x, y

