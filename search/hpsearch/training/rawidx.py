"""MNIST and Fashion-MNIST from their four original idx files in one folder, gzipped or not, as their publishers and
Debian's dataset-fashion-mnist ship them: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte (each with or without .gz).

Only read: nothing is written beside them, so a read-only folder such as /usr/share/datasets/fashion-mnist works as
data.root. The format: a big-endian header (images: magic 2051, count, rows, columns, 16 bytes; labels: magic 2049,
count, 8 bytes), then one uint8 a pixel or a label. Each mistake (a wrong magic number, a truncated or overlong file,
images of another size, labels that do not match the images in count or range, some of the four files missing) is one
message naming the file and the fix.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .rawtypes import DataError, RawData

# (split, images file, labels file), each without its optional .gz
IDX_FILES = (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
IDX_NAMES = tuple(name for _, images, labels in IDX_FILES for name in (images, labels))
_MAGIC = {2051: "images", 2049: "labels"}  # 0x00000803: uint8, 3 dimensions; 0x00000801: uint8, 1 dimension


def find_idx(folder: Path) -> dict[str, Path]:
    """The idx files of IDX_NAMES that folder holds, by name: the plain file where both it and its .gz are there."""
    found = {}
    for name in IDX_NAMES:
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                found[name] = path
                break
    return found


def load_idx(folder: Path, found: dict[str, Path], class_names: tuple[str, ...], side: int) -> RawData:
    """The data set of the four idx files find_idx found in folder, as (N, side, side, 1) uint8 images and int64
    labels; DataError when one is missing or wrong."""
    missing = [name for name in IDX_NAMES if name not in found]
    if missing:
        raise DataError(
            f"{folder} holds {_names(found[name].name for name in IDX_NAMES if name in found)} but not "
            f"{_names(missing)} (gzipped or not): MNIST-style data is all four idx files. Fix: add the missing "
            f"file(s) to {folder}, or pass --data-root DIR for a folder that holds all four."
        )
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, images_name, labels_name in IDX_FILES:
        images_path, labels_path = found[images_name], found[labels_name]
        x = _read(images_path, 2051, 3)
        y = _read(labels_path, 2049, 1)
        if x.shape[1:] != (side, side):
            raise DataError(f"{images_path} holds {x.shape[1]}x{x.shape[2]} images; this data set's are "
                            f"{side}x{side}. Fix: replace it with the data set's own file.")
        if len(y) != len(x):
            raise DataError(f"{labels_path} holds {len(y):,} labels but {images_path} holds {len(x):,} images; "
                            f"each image needs one label. Fix: use the labels file that belongs with those images.")
        if len(y) and int(y.max()) >= len(class_names):
            raise DataError(f"{labels_path} holds the label {int(y.max())}, outside 0..{len(class_names) - 1} "
                            f"(this data set's {len(class_names)} classes). Fix: replace it with the data set's "
                            f"own file.")
        arrays[split] = x[..., None], y.astype(np.int64)
    return RawData(*arrays["train"], *arrays["test"], class_names)


def _read(path: Path, magic: int, ndim: int) -> np.ndarray:
    """One idx file's array (a writable copy), checked against its header."""
    kind = _MAGIC[magic]
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as stream:
                data = stream.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a cut .gz ends in EOFError
        what = "a readable gzip file" if path.suffix == ".gz" else "readable"
        raise DataError(f"{path} is not {what} ({type(exc).__name__}: {exc}). Fix: replace it with a good copy "
                        f"of the idx {kind} file.") from None
    header = 4 + 4 * ndim
    found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if found != magic:
        other = f" (that of idx {_MAGIC[found]}: are two files swapped?)" if found in _MAGIC else ""
        said = f"starts with the magic number {found}{other}" if found is not None else "is shorter than its header"
        raise DataError(f"{path} {said}, not {magic}: it is not an idx {kind} file. Fix: replace it with the data "
                        f"set's own {path.name} (gzipped or not).")
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte header. Fix: "
                        f"replace it with a complete copy.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        said = "is truncated" if len(data) - header < expected else "is longer than its header says"
        dims = "x".join(map(str, shape[1:]))
        raise DataError(f"{path} {said}: its header says {shape[0]:,} {kind}{' of ' + dims if dims else ''} "
                        f"({expected:,} bytes), but {len(data) - header:,} bytes follow it. Fix: replace it with a "
                        f"complete copy.")
    return np.frombuffer(data, np.uint8, expected, header).reshape(shape).copy()


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)
