"""Your own images as numpy arrays: an image folder in torchvision's layout, `<root>/<class>/*`, or split,
`<root>/train/<class>/*` and optionally `<root>/test/<class>/*`; read with torchvision's ImageFolder, every image
converted to RGB and resized once, here, to data.image_size square, whatever its size and mode.

Each mistake of the layout (neither class folders nor train/, one class folder, a test/ whose classes differ, an empty
class folder, a file that is not a readable image) is one message that says what the folder holds and the fix.
torchvision and PIL are imported only where images are read. The folder's root is its data: folder_identity (a
listing, no image opened) says which images it holds, for a study to store and compare on resume (folder_changes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..space.config import DataConfig
from ..space.registry import DATASETS
from .rawtypes import DataError, RawData

if TYPE_CHECKING:
    from PIL import Image

_LISTED = 8  # names of a folder's contents an error message shows
# The files ImageFolder reads (torchvision.datasets.folder.IMG_EXTENSIONS, compared lower-cased), here without torch.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@DATASETS.builder("imagefolder")
def _imagefolder(cfg: DataConfig) -> RawData:
    """Your own images: `<root>/<class>/*`, or `<root>/train/<class>/*` and optionally `<root>/test/<class>/*` with the
    same class folders, read by torchvision's ImageFolder (every image converted to RGB, see _rgb) and resized once,
    here, to data.image_size square (bilinear, antialiased when shrinking), so the device holds one uint8 (N, S, S, 3)
    array a split. Either way data.prepare holds data.val_size of the training images out for validation, by
    data.split_seed. No test/ (the class folders straight under root have none): the test split is empty, and what
    needs it asks rawdata.no_test_split() for the message."""
    root = Path(cfg.root).expanduser()
    names = train_classes(root)
    size = cfg.image_size
    x_train, y_train = _read_image_split(_train_folder(root), names, size)
    if (root / "train").is_dir() and (root / "test").exists():
        x_test, y_test = imagefolder_test(root, names, size)
    else:
        x_test, y_test = np.empty((0, size, size, 3), np.uint8), np.empty(0, np.int64)
    return RawData(x_train, y_train, x_test, y_test, names)


def no_test_set(root: Path) -> str | None:
    """Why the image folder at root has no test split, or None when it has one or the loader has the error to give
    (no such folder, a test/ that is not a folder of class folders); folders only, so cheap to ask before training."""
    if not root.is_dir() or (root / "test").exists():
        return None
    if (root / "train").is_dir():
        return (f"the image folder {root} has no test/ folder, so it has no test set: its train/ images are split "
                f"into training and validation only. Fix: add {root}/test/<class>/<images> with the same class "
                f"folders as train/, or pass --data-root DIR for a folder that has train/ and test/.")
    return (f"the image folder {root} holds its class folders directly ({root}/<class>/<image>), so it has no test "
            f"set: its images are split into training and validation only. Fix: move the class folders into "
            f"{root}/train/ and add {root}/test/<class>/<images> with the same class folders, or pass --data-root "
            f"DIR for a folder that has train/ and test/.")


def imagefolder_test(root: Path, names: tuple[str, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """root/test's images and labels; its class folders must be train/'s (`names`), for the labels to agree (only the
    train/ layout has a test/)."""
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
    """The class folders of the training images (root/train's, else root's own): at least two, since a classifier of
    one class learns nothing."""
    folder = _train_folder(root)
    names = _class_folders(folder, root)
    if len(names) < 2:
        where = "train/ holds" if folder != root else "it holds"
        raise DataError(f"the image folder {root}: {where} one class folder ({names[0]}); a classifier needs at "
                        f"least two. Fix: add a folder per class under {folder}.")
    return names


def folder_identity(root: Path) -> dict[str, Any]:
    """Which images the folder at root holds, from its listing alone (no image opened): its class folders and, per
    split, each class's image count, counted as ImageFolder reads them (every file of an image extension below the
    class folder, its subfolders included): {"classes": [...], "train": [n, ...], "test": [n, ...]}, with "test"
    only in the train/ layout with a test/ folder. JSON, for a study to store; a missing or empty folder is
    train_classes' DataError."""
    names = train_classes(root)
    identity: dict[str, Any] = {"classes": list(names), "train": _image_counts(_train_folder(root), names)}
    if (root / "train").is_dir() and (root / "test").is_dir():
        identity["test"] = _image_counts(root / "test", names)  # a test/ of other classes is the loader's to refuse
    return identity


def folder_changes(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two folder_identity results, a line each: 'classes: [cat, dog] -> [cat, dog, fox]',
    'train images: 300 -> 420', 'test images: none (no test/) -> 40', 'train images by class: cat 30 -> 31, ...'
    (the same classes and total, images moved between them)."""
    out = []
    old_names, new_names = list(was.get("classes") or []), list(now.get("classes") or [])
    if old_names != new_names:
        out.append(f"classes: {_names_changed(old_names, new_names)}")
    for split in ("train", "test"):
        old, new = was.get(split), now.get(split)
        if old == new:
            continue
        if old is None or new is None or sum(old) != sum(new):
            out.append(f"{split} images: {_total(old)} -> {_total(new)}")
        elif old_names == new_names:
            moved = [f"{c} {a} -> {b}" for c, a, b in zip(new_names, old, new, strict=False) if a != b]
            out.append(f"{split} images by class: {', '.join(moved[:_LISTED])}"
                       + (f", ... ({len(moved)} classes)" if len(moved) > _LISTED else ""))
    return out


def _names_changed(old: list[str], new: list[str]) -> str:
    """'[cat, dog] -> [cat, dog, fox]'; for long lists, the counts and the names added and removed."""
    if len(old) + len(new) <= 2 * _LISTED:
        return f"[{', '.join(old)}] -> [{', '.join(new)}]"
    added, removed = [n for n in new if n not in old], [n for n in old if n not in new]
    parts = [f"{word}: {', '.join(names[:_LISTED])}" + (f", ... ({len(names)})" if len(names) > _LISTED else "")
             for word, names in (("added", added), ("removed", removed)) if names]
    return f"{len(old)} -> {len(new)} ({'; '.join(parts)})"


def _total(counts: list[int] | None) -> str:
    return "none (no test/)" if counts is None else str(sum(counts))


def _image_counts(split: Path, names: tuple[str, ...]) -> list[int]:
    """Each class folder's image files under split (a missing one: 0), as ImageFolder lists them: below the class
    folder at any depth, following links, by extension."""
    counts = []
    for name in names:
        counts.append(sum(1 for _, _, files in os.walk(split / name, followlinks=True)
                          for file in files if file.lower().endswith(IMAGE_EXTENSIONS)))
    return counts


def _train_folder(root: Path) -> Path:
    """root/train, else root itself (torchvision's layout: its subfolders are the classes), or a DataError that says
    what root holds instead and the layouts expected."""
    train = root / "train"
    if train.is_dir():
        return train
    if root.is_dir() and not (root / "test").exists():
        return root  # a root without class folders is _class_folders' error to give, with what it holds
    if not root.is_dir():
        found = "it does not exist" if not root.exists() else "it is a file, not a folder"
        fix = "pass --data-root DIR (or set data.root in the space) where DIR holds the class folders or train/"
    else:
        found = f"it holds test/ but no train/: {_listing(root)}"
        fix = (f"add the training images as {root}/train/<class>/<image> beside test/, or pass --data-root DIR "
               f"(or set data.root in the space) for another folder")
    raise DataError(
        f"imagefolder data not found at {root} ({found}). Expected either layout:\n"
        f"  {root}/<class>/<image>        (one folder per class: .png, .jpg, ... images; no test set)\n"
        f"  {root}/train/<class>/<image>  (the same under train/, and optionally\n"
        f"  {root}/test/<class>/<image>   the same class folders under test/: the test set)\n"
        f"Fix: {fix}."
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
        dataset = torchvision.datasets.ImageFolder(str(folder), loader=_rgb, transform=resize)
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


def _rgb(path: str) -> Image.Image:
    """The image at path as RGB, whatever its mode: 16- and 32-bit integer grayscale taken as 0..65535 and float
    grayscale as 0..1, each scaled to 0..255 (PIL's own conversion would clip them to white); a palette with
    transparency through RGBA; alpha dropped; every other mode by PIL's conversion."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
            grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) * scale), 0, 255).astype(np.uint8)
            return Image.fromarray(grey).convert("RGB")
        if image.mode in ("P", "PA") and "transparency" in image.info:
            return image.convert("RGBA").convert("RGB")
        return image.convert("RGB")
