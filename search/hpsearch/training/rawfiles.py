"""CIFAR-10/100, MNIST and Fashion-MNIST as numpy arrays: from `<root>/<name>.npz`, else (MNIST, Fashion-MNIST) their
four idx files (rawidx), else torchvision's folder, else torchvision's download (where data.download allows it, the
root holds the data in no form and can be written); when all fail, one message says every place tried and the fix. A
failed download removes everything it created.

Each data set's class names in label order are here too, as torchvision names them, so that an .npz and torchvision's
folder give the same. torchvision is imported only where it reads or downloads.
"""

from __future__ import annotations

import os
import shutil
import socket
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..space.config import DataConfig
from ..space.registry import DATASETS
from .rawidx import IDX_NAMES, find_idx, load_idx
from .rawtypes import DataError, RawData

# The fine label names in label order (alphabetical), as torchvision's CIFAR100.classes gives them.
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
    "worm".split()
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The digits 0..9 as torchvision's MNIST.classes names them, so an .npz and torchvision's folder agree.
MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
                 "8 - eight", "9 - nine")
# torchvision's FashionMNIST.classes, in label order.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")

# Per file-backed data set: the .npz file name, torchvision's folder, its dataset class in torchvision.datasets
# and the class names.
SOURCES = {
    "cifar100": ("cifar100.npz", "cifar-100-python", "CIFAR100", CIFAR100_CLASSES),
    "cifar10": ("cifar10.npz", "cifar-10-batches-py", "CIFAR10", CIFAR10_CLASSES),
    "mnist": ("mnist.npz", "MNIST", "MNIST", MNIST_CLASSES),
    "fashion_mnist": ("fashion_mnist.npz", "FashionMNIST", "FashionMNIST", FASHION_MNIST_CLASSES),
}
_IDX_DATASETS = ("mnist", "fashion_mnist")  # also read from their four original idx files (rawidx)
# The system's own copy of a data set, read when data.root and $HPSEARCH_DATA hold none (shared_roots)
SYSTEM_ROOTS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
# torchvision's archive of a CIFAR: a root that holds one holds the data, so it is never downloaded into
_ARCHIVES = {"cifar100": "cifar-100-python.tar.gz", "cifar10": "cifar-10-python.tar.gz"}
_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_DOWNLOAD_TIMEOUT_S = 30.0  # seconds; socket timeout of torchvision's download: no network fails, never hangs


@DATASETS.builder("fashion_mnist")
@DATASETS.builder("mnist")
@DATASETS.builder("cifar100")
@DATASETS.builder("cifar10")
def _from_files(cfg: DataConfig) -> RawData:
    """CIFAR, MNIST or Fashion-MNIST from `<root>/<name>.npz`, else (MNIST, Fashion-MNIST) the four idx files in root
    or in torchvision's `<Folder>/raw/`, else torchvision's folder; where data.root holds none, the same from
    shared_roots ($HPSEARCH_DATA, the system's copy); else torchvision's download into data.root. A root that holds
    the data in any of these forms is only read; one that holds idx files or torchvision's archive, or cannot be
    written, is never downloaded into."""
    npz_name, folder_name, dataset_name, _ = SOURCES[cfg.dataset]
    info = DATASETS[cfg.dataset].info
    shape = (int(info["image_size"]), int(info["image_size"]), int(info["channels"]))  # (H, W, C) of an image
    root = Path(cfg.root).expanduser()
    if root.is_file():
        raise DataError(f"{cfg.dataset} data: data.root {root} is a file; it must be the folder that holds "
                        f"{npz_name} or {folder_name}/. Fix: pass --data-root {root.parent}"
                        + (" (this file's folder)" if root.name == npz_name else ""))
    folder = root / folder_name
    tried: list[str] = []
    raw = _read(cfg.dataset, root, shape, tried)
    for other in () if raw is not None else shared_roots(cfg.dataset):
        if other.resolve() != root.resolve():
            raw = _read(cfg.dataset, other, shape, tried)
            if raw is not None:
                break
    if raw is not None:
        return raw
    holds = f"{npz_name} or {folder_name}/"
    if cfg.dataset in _IDX_DATASETS:
        holds = f"{npz_name}, {folder_name}/ or the four idx files {', '.join(f'{n}[.gz]' for n in IDX_NAMES)}"
    archive = root / _ARCHIVES[cfg.dataset] if cfg.dataset in _ARCHIVES else None
    locked = next(p for p in (root, *root.parents) if p.exists())  # what a download would write into first
    if not cfg.download:
        download = "not tried (download: false)"
        online = "or set `download: true` in the space's data section on a machine with internet access"
    elif archive is not None and archive.is_file():
        download = f"not tried ({root} holds the data as {archive.name}, and a folder that holds the data is only read)"
        online = f"or extract the archive there first: tar -xzf {archive} -C {root}"
    elif not os.access(locked, os.W_OK):
        download = f"not tried ({locked} is not writable, and a read-only data root is only read)"
        online = ("or set data.root to a writable folder on a machine with internet access (download: true "
                  "fetches it there)")
    else:
        fetched = _download(dataset_name, root, (folder, *([archive] if archive is not None else [])))
        if isinstance(fetched, RawData):
            return fetched
        download = fetched
        online = f"or run it on a machine with internet access (download: true fetches it into {root}/)"
    lines = "\n".join(f"  {line}" for line in tried)
    raise DataError(
        f"{cfg.dataset} data not found. Tried:\n{lines}\nDownload: {download}.\n"
        f"Fix: pass --data-root DIR where DIR holds {holds} (or set data.root in the space), {online}."
    )


def shared_roots(dataset: str) -> list[Path]:
    """Where a data set may already sit outside the space's data.root, read only and in this order: the folder
    $HPSEARCH_DATA names, then the system's copy (Debian's dataset-fashion-mnist installs the four idx files in
    /usr/share/datasets/fashion-mnist)."""
    roots = [Path(os.environ["HPSEARCH_DATA"]).expanduser()] if os.environ.get("HPSEARCH_DATA") else []
    return roots + ([Path(SYSTEM_ROOTS[dataset])] if dataset in SYSTEM_ROOTS else [])


def _read(dataset: str, root: Path, shape: tuple[int, int, int], tried: list[str]) -> RawData | None:
    """The data set from `root` in any form it may have there (.npz, the idx files, torchvision's folder), only
    read; None, with each place looked at added to `tried`, when root holds it in none. Files that are there but
    wrong (a bad magic, a truncated file) raise DataError naming them."""
    npz_name, folder_name, dataset_name, names = SOURCES[dataset]
    npz, folder = root / npz_name, root / folder_name
    if npz.is_file():
        return _load_npz(npz, names, shape)
    tried.append(f"{npz} (no such file)")
    if dataset in _IDX_DATASETS:
        found = find_idx(root)
        if found:  # one or all four: read, or refused with what is wrong; never downloaded beside
            return load_idx(root, found, names, shape[0])
        found = find_idx(folder / "raw")
        if len(found) == len(IDX_NAMES):  # torchvision's own files, gzipped or not (fewer: its download completes)
            return load_idx(folder / "raw", found, names, shape[0])
        tried.append(f"{root}/{IDX_NAMES[0]}[.gz] and the other three idx files (none there)")
    if folder.is_dir():
        try:
            return _load_torchvision(dataset_name, root, download=False)
        except Exception as exc:  # torchvision: RuntimeError "not found or corrupted", or an unpickling error
            tried.append(f"{folder}/ (unreadable: {exc})")
    else:
        tried.append(f"{folder}/ (no such folder)")
    return None


def _download(dataset_name: str, root: Path, own: tuple[Path, ...]) -> RawData | str:
    """torchvision's download into root, or why it failed, once everything it created is removed again: the folders
    up to root, or what is new of torchvision's own paths in root (its folder and archive) and inside its folder,
    partial files included; nothing else in root is touched."""
    made = [p for p in (root, *root.parents) if not p.exists()]  # the folders the download would create
    before = _entries(own)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        return _load_torchvision(dataset_name, root, download=True)
    except BaseException as exc:  # no network, a proxy, a full disk, Ctrl-C: nothing of it stays
        left = _remove_new([made[-1]] if made else sorted(_entries(own) - before))
        if not isinstance(exc, Exception):
            raise
        kept = f"; it could not remove {', '.join(left)}: remove them by hand" if left else ""
        return f"tried torchvision's download into {root}/ and it failed: {type(exc).__name__}: {exc}{kept}"
    finally:
        socket.setdefaulttimeout(old_timeout)


def _entries(own: tuple[Path, ...]) -> set[Path]:
    """Those of torchvision's own paths that exist, and everything under them: what a download may add to."""
    paths = {path for path in own if os.path.lexists(path)}
    for path in own:
        for dirpath, dirnames, filenames in os.walk(path):
            paths.update(Path(dirpath, name) for name in (*dirnames, *filenames))
    return paths


def _remove_new(paths: list[Path]) -> list[str]:
    """Remove what a failed download created, outermost first; the paths that would not go."""
    left = []
    for path in sorted(paths, key=lambda p: len(p.parts)):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                path.unlink()
        except OSError:
            left.append(str(path))
    return left


def _load_npz(path: Path, class_names: tuple[str, ...], shape: tuple[int, int, int]) -> RawData:
    """The four arrays of an .npz, checked against the data set's (H, W, C); grayscale images may come without their
    channel axis, (N, H, W), and get it: (N, H, W, 1)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in _NPZ_ARRAYS if name not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks the array(s) {', '.join(missing)}; it holds "
                    f"{', '.join(archive.files) or 'none'}. Expected x_train, y_train, x_test, y_test "
                    f"(uint8 NHWC images and integer labels)."
                )
            arrays = {name: archive[name] for name in _NPZ_ARRAYS}
            odd = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
            if odd:  # np.load hands members that are not .npy files back as bytes
                raise DataError(f"{path}: the member(s) {', '.join(odd)} are not numpy arrays (.npy inside the "
                                "archive); rebuild the file with numpy.savez(x_train=..., y_train=..., ...)")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc}); "
                        f"replace it with a good copy or remove it.") from exc
    h, w, c = shape
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        stored = x.shape
        if c == 1 and x.ndim == 3:
            x = arrays[f"x_{split}"] = x[..., None]  # (N, H, W) grayscale: the channel axis made explicit
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != shape:
            allowed = f"(N, {h}, {w}, {c})" + (f" or (N, {h}, {w})" if c == 1 else "")
            raise DataError(f"{path}: x_{split} must be uint8 of shape {allowed}, got {x.dtype} "
                            f"{stored}; rebuild the file in the documented format")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{split} must be {len(x)} integer labels, got {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DataError(f"{path}: y_{split} holds labels outside 0..{len(class_names) - 1}")
    return RawData(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                   arrays["y_test"].astype(np.int64), class_names)


def _load_torchvision(dataset_name: str, root: Path, download: bool) -> RawData:
    """torchvision's data set class by name: its `.data` (CIFAR: numpy NHWC; MNIST: a (N, 28, 28) uint8 tensor, given
    its channel axis here), `.targets` and `.classes`."""
    import torchvision

    dataset_cls = getattr(torchvision.datasets, dataset_name)
    train = dataset_cls(str(root), train=True, download=download)
    test = dataset_cls(str(root), train=False, download=download)
    return RawData(_nhwc(train.data), np.asarray(train.targets, dtype=np.int64),
                   _nhwc(test.data), np.asarray(test.targets, dtype=np.int64), tuple(train.classes))


def _nhwc(images: object) -> np.ndarray:
    x = np.asarray(images, dtype=np.uint8)
    return x[..., None] if x.ndim == 3 else x

