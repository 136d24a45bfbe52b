"""CIFAR-10/100, MNIST and Fashion-MNIST as numpy arrays: from `<root>/<name>.npz`, else torchvision's folder, else
torchvision's download (where data.download allows it); when all fail, one message says every place tried and the fix.

Each data set's class names in label order are here too, as torchvision names them, so that an .npz and torchvision's
folder give the same. torchvision is imported only where it reads or downloads.
"""

from __future__ import annotations

import socket
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..space.config import DataConfig
from ..space.registry import DATASETS
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
_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_DOWNLOAD_TIMEOUT_S = 30.0  # seconds; socket timeout of torchvision's download: no network fails, never hangs


@DATASETS.builder("fashion_mnist")
@DATASETS.builder("mnist")
@DATASETS.builder("cifar100")
@DATASETS.builder("cifar10")
def _from_files(cfg: DataConfig) -> RawData:
    """CIFAR, MNIST or Fashion-MNIST from `<root>/<name>.npz`, else torchvision's folder, else its download."""
    npz_name, folder_name, dataset_name, names = SOURCES[cfg.dataset]
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

