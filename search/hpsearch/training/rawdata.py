"""The data sets as numpy arrays: CIFAR-10/100, MNIST and Fashion-MNIST from an .npz, torchvision's folder or its
download; your own images from an image folder (train/<class>/*, test/<class>/*); synthetic images.

No torch at import: the parent of `hpsearch run --workers N` checks the data with this module while its workers'
forkserver imports torch (torch and torchvision are imported where an array is made with them).
"""

from __future__ import annotations

import os
import socket
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HpsearchError
from ..space.config import DataConfig, SyntheticConfig
from ..space.registry import DATASETS

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
_SOURCES = {
    "cifar100": ("cifar100.npz", "cifar-100-python", "CIFAR100", CIFAR100_CLASSES),
    "cifar10": ("cifar10.npz", "cifar-10-batches-py", "CIFAR10", CIFAR10_CLASSES),
    "mnist": ("mnist.npz", "MNIST", "MNIST", MNIST_CLASSES),
    "fashion_mnist": ("fashion_mnist.npz", "FashionMNIST", "FashionMNIST", FASHION_MNIST_CLASSES),
}
_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_DOWNLOAD_TIMEOUT_S = 30.0  # seconds; socket timeout of torchvision's download: no network fails, never hangs


class DataError(HpsearchError):
    """Bad or missing data; str() is the complete message for the user (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class RawData:
    x_train: np.ndarray  # (N, H, W, C) uint8, HWC: C=3 RGB (CIFAR, an image folder), C=1 grayscale (MNIST)
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------- loading
def check(cfg: DataConfig) -> None:
    """DataError unless the data set can be loaded: real data is loaded (or downloaded) once, here; synthetic data
    needs only valid sizes. The parent of several workers calls this before it touches the study."""
    if cfg.dataset == "synthetic":
        _check_synthetic(cfg.synthetic)
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
    classes, or an image folder's train/ subfolders (sorted, as torchvision's ImageFolder labels them). For what
    needs a class count before any data is loaded (`hpsearch sample` builds models of an image folder's space)."""
    if cfg.dataset == "imagefolder":
        return _train_classes(Path(cfg.root).expanduser())
    if cfg.dataset == "synthetic":
        return tuple(f"class_{i}" for i in range(cfg.synthetic.classes))
    if cfg.dataset not in _SOURCES:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    return _SOURCES[cfg.dataset][3]


def load_test_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The test split alone as (uint8 NHWC images, int64 labels); DataError with no_test_split's message when the
    data set has none. An image folder reads only test/ (its labels from train/'s folder names, not its images)."""
    if cfg.dataset == "imagefolder":
        root = Path(cfg.root).expanduser()
        names = _train_classes(root)  # a wrong root is said as such first
        problem = no_test_split(cfg)
        if problem:
            raise DataError(problem)
        return _imagefolder_test(root, names, cfg.image_size)
    raw = load_arrays(cfg)
    return raw.x_test, raw.y_test


def no_test_split(cfg: DataConfig) -> str | None:
    """Why cfg's data set has no test split, as the message for whatever needs one, or None when it has one. Only an
    image folder without test/ lacks one; this looks at folders only, so it is cheap to ask before training."""
    if cfg.dataset != "imagefolder":
        return None
    root = Path(cfg.root).expanduser()
    if (root / "test").exists():
        return None  # a test/ that is not a folder of class folders is the loader's error to give
    return (f"the image folder {root} has no test/ folder, so it has no test set: its train/ images are split "
            f"into training and validation only. Fix: add {root}/test/<class>/<images> with the same class folders "
            f"as train/, or pass --data-root DIR for a folder that has train/ and test/.")


@DATASETS.builder("fashion_mnist")
@DATASETS.builder("mnist")
@DATASETS.builder("cifar100")
@DATASETS.builder("cifar10")
def _from_files(cfg: DataConfig) -> RawData:
    """CIFAR, MNIST or Fashion-MNIST from `<root>/<name>.npz`, else torchvision's folder, else its download."""
    npz_name, folder_name, dataset_name, names = _SOURCES[cfg.dataset]
    info = DATASETS[cfg.dataset].info
    shape = (int(info["image_size"]), int(info["image_size"]), int(info["channels"]))  # (H, W, C) of an image
    root = Path(cfg.root).expanduser()
    if root.is_file():
        raise DataError(f"{cfg.dataset} data: data.root {root} is a file; it must be the folder that holds "
                        f"{npz_name} or {folder_name}/. Fix: pass --data-root {root.parent}"
                        + (" (this file's folder)" if root.name == npz_name else ""))
    npz, folder = root / npz_name, root / folder_name
    tried = [f"{npz} (no such file)"]
    if npz.is_file():
        return _load_npz(npz, names, shape)
    if folder.is_dir():
        try:
            return _load_torchvision(dataset_name, root, download=False)
        except Exception as exc:  # torchvision: RuntimeError "not found or corrupted", or an unpickling error
            tried.append(f"{folder}/ (unreadable: {exc})")
    else:
        tried.append(f"{folder}/ (no such folder)")
    if cfg.download:
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        made = [p for p in (root, *root.parents) if not p.exists()]  # the folders the download would create
        try:
            return _load_torchvision(dataset_name, root, download=True)
        except Exception as exc:  # no network, a proxy, a full disk: all end in the message below
            download = f"tried torchvision's download into {root}/ and it failed: {type(exc).__name__}: {exc}"
            _remove_if_empty(made)
        finally:
            socket.setdefaulttimeout(old_timeout)
        online = f"or run it on a machine with internet access (download: true fetches it into {root}/)"
    else:
        download = "not tried (download: false)"
        online = "or set `download: true` in the space's data section on a machine with internet access"
    lines = "\n".join(f"  {line}" for line in tried)
    raise DataError(
        f"{cfg.dataset} data not found. Tried:\n{lines}\nDownload: {download}.\n"
        f"Fix: pass --data-root DIR where DIR holds {npz_name} or {folder_name}/ (or set data.root in the "
        f"space), {online}."
    )


def _remove_if_empty(folders: list[Path]) -> None:
    """Undo a failed download's folders, innermost first, as long as they are empty (a partial file stays)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


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


# ------------------------------------------------------------------------------------------------ image folder
_LISTED = 8  # names of a folder's contents an error message shows


@DATASETS.builder("imagefolder")
def _imagefolder(cfg: DataConfig) -> RawData:
    """Your own images: `<root>/train/<class>/*` and optionally `<root>/test/<class>/*` with the same class folders,
    read by torchvision's ImageFolder (every image converted to RGB) and resized once, here, to data.image_size
    square (bilinear, antialiased when shrinking), so the device holds one uint8 (N, S, S, 3) array a split. No
    test/: the test split is empty, and what needs it asks no_test_split() for the message."""
    root = Path(cfg.root).expanduser()
    names = _train_classes(root)
    size = cfg.image_size
    x_train, y_train = _read_image_split(root / "train", names, size)
    if (root / "test").exists():
        x_test, y_test = _imagefolder_test(root, names, size)
    else:
        x_test, y_test = np.empty((0, size, size, 3), np.uint8), np.empty(0, np.int64)
    return RawData(x_train, y_train, x_test, y_test, names)


def _imagefolder_test(root: Path, names: tuple[str, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
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


def _train_classes(root: Path) -> tuple[str, ...]:
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


# -------------------------------------------------------------------------------------------------- synthetic
_PROTO_GRID = 5  # prototypes are random 5x5 patterns upsampled to 40x40: smooth blobs of ~8 pixels
_SHIFT = 8  # images are 32x32 windows at a random offset 0..8 of the 40x40 pattern
_DISTRACTOR = 1.6  # x noise: a per-image random smooth pattern, like a prototype, hides the class pattern
_SCALE = 40.0  # grey levels per unit of contrast, around mid-grey 128


@DATASETS.builder("synthetic")
def _synthetic(cfg: DataConfig) -> RawData:
    return synthetic(cfg.synthetic)


def synthetic(cfg: SyntheticConfig) -> RawData:
    """A learnable, not trivial, CIFAR-shaped data set; bit-identical for equal cfg.

    Each class is a smooth random colour pattern; an image is a randomly shifted 32x32 window of it plus
    a random smooth pattern and per-pixel Gaussian noise, both scaled by cfg.noise. At noise 0.6 a width-8
    cnn on 2000 images climbs from ~35% to ~85% validation accuracy over 5 epochs.
    """
    _check_synthetic(cfg)
    rng = np.random.default_rng(cfg.seed)
    n = cfg.size + cfg.test_size
    prototypes = _smooth_patterns(rng, cfg.classes) + rng.normal(0.0, 0.5, (cfg.classes, 3, 1, 1))
    labels = rng.permutation(np.arange(n) % cfg.classes)
    offsets = rng.integers(0, _SHIFT + 1, (n, 2))
    images = np.empty((n, 32, 32, 3), np.uint8)
    ar = np.arange(32)
    for start in range(0, n, 4096):  # chunks bound the float32 memory
        sl = slice(start, min(start + 4096, n))
        rows = (offsets[sl, 0, None] + ar)[:, None, :, None]
        cols = (offsets[sl, 1, None] + ar)[:, None, None, :]
        signal = prototypes[labels[sl, None, None, None], np.arange(3)[None, :, None, None], rows, cols]
        distractor = _smooth_patterns(rng, len(labels[sl]))[:, :, :32, :32]
        pixel_noise = rng.standard_normal(signal.shape, np.float32)
        pixels = signal + cfg.noise * (_DISTRACTOR * distractor + pixel_noise)
        images[sl] = np.clip(np.rint(128.0 + _SCALE * pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    labels = labels.astype(np.int64)
    names = tuple(f"class_{i}" for i in range(cfg.classes))
    return RawData(images[: cfg.size], labels[: cfg.size], images[cfg.size :], labels[cfg.size :], names)


def _check_synthetic(cfg: SyntheticConfig) -> None:
    if cfg.classes < 2 or cfg.size < cfg.classes or cfg.test_size < 0:
        raise DataError(f"synthetic data needs classes >= 2 and size >= classes, got {cfg}")


def _smooth_patterns(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3, 40, 40) float32 smooth random patterns of unit scale (bilinear upsampling on the CPU)."""
    import torch
    import torch.nn.functional as F

    low = torch.from_numpy(rng.standard_normal((count, 3, _PROTO_GRID, _PROTO_GRID), np.float32))
    size = 32 + _SHIFT
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).numpy()
