"""The data sets as numpy arrays: CIFAR-10/100, MNIST and Fashion-MNIST from an .npz, (MNIST, Fashion-MNIST) their
four idx files, torchvision's folder or its download; your own images from an image folder (<class>/*, or
train/<class>/* and test/<class>/*); synthetic images.

What the rest of the package asks of the data, whichever the data set: check it, load its arrays, its class names,
its test split alone, and (where its root is its data: an image folder) which data it is. Each family's reader is a
module of its own, attached to registry.DATASETS when it is imported here: rawfiles (CIFAR, MNIST, Fashion-MNIST;
rawidx reads the idx files for it), rawfolder (an image folder) and rawsynthetic; RawData and DataError, what they
all return and raise, are rawtypes'. Import these names from here.

No torch at import: the parent of `hpsearch run --workers N` checks the data with this module while its workers'
forkserver imports torch (torch and torchvision are imported where an array is made with them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..space.config import DataConfig
from ..space.registry import DATASETS
from .rawfiles import CIFAR10_CLASSES, CIFAR100_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, SOURCES
from .rawfolder import folder_changes, folder_identity, imagefolder_test, no_test_set, train_classes
from .rawsynthetic import check_synthetic, synthetic
from .rawtypes import DataError, RawData

__all__ = ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "FASHION_MNIST_CLASSES", "MNIST_CLASSES", "DataError", "RawData",
           "check", "class_names", "data_changes", "data_identity", "load_arrays", "load_test_arrays", "no_test_split",
           "synthetic"]


def check(cfg: DataConfig) -> None:
    """DataError unless the data set can be loaded: real data is loaded (or downloaded) once, here; synthetic data
    needs only valid sizes. The parent of several workers calls this before it touches the study."""
    if cfg.dataset == "synthetic":
        check_synthetic(cfg.synthetic)
    else:
        load_arrays(cfg)


def load_arrays(cfg: DataConfig) -> RawData:
    """The data set as numpy arrays, by the registry's builder of cfg.dataset."""
    if cfg.dataset not in DATASETS:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    # Its rules are the split's: data.prepare applies them, since the raw arrays need no split.
    return DATASETS.build(cfg.dataset, None, cfg)  # type: ignore[no-any-return]


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    """The class names of cfg's data set in label order, without loading an image: the known lists, the synthetic
    classes, or an image folder's class folders, train/'s or root's own (sorted, as torchvision's ImageFolder labels
    them). For what
    needs a class count before any data is loaded (`hpsearch sample` builds models of an image folder's space)."""
    if cfg.dataset == "imagefolder":
        return train_classes(Path(cfg.root).expanduser())
    if cfg.dataset == "synthetic":
        return tuple(f"class_{i}" for i in range(cfg.synthetic.classes))
    if cfg.dataset not in SOURCES:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    return SOURCES[cfg.dataset][3]


def data_identity(cfg: DataConfig) -> dict[str, Any] | None:
    """Which data cfg's data set is, where its root is the data: an image folder's class folders and image counts
    per split, from a listing (rawfolder.folder_identity; no image read, no torch), for a study to store and compare
    when it resumes. None where the root is only where the data sits: CIFAR, MNIST and Fashion-MNIST are the same
    known files wherever they are, synthetic images come from their seed (moving them changes nothing)."""
    if cfg.dataset == "imagefolder":
        return folder_identity(Path(cfg.root).expanduser())
    return None


def data_changes(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two data_identity results, a line each ('classes: [cat, dog] -> [cat, dog, fox]')."""
    return folder_changes(was, now)


def load_test_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The test split alone as (uint8 NHWC images, int64 labels); DataError with no_test_split's message when the
    data set has none. An image folder reads only test/ (its labels from train/'s folder names, not its images)."""
    if cfg.dataset == "imagefolder":
        root = Path(cfg.root).expanduser()
        names = train_classes(root)  # a wrong root is said as such first
        problem = no_test_split(cfg)
        if problem:
            raise DataError(problem)
        return imagefolder_test(root, names, cfg.image_size)
    raw = load_arrays(cfg)
    return raw.x_test, raw.y_test


def no_test_split(cfg: DataConfig) -> str | None:
    """Why cfg's data set has no test split, as the message for whatever needs one, or None when it has one. Only an
    image folder without test/ lacks one; this looks at folders only, so it is cheap to ask before training."""
    if cfg.dataset != "imagefolder":
        return None
    return no_test_set(Path(cfg.root).expanduser())
