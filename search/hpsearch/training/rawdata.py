"""The data sets as numpy arrays: CIFAR-10/100 from an .npz, torchvision's folder or its download; synthetic images.

No torch at import: the parent of `hpsearch run --workers N` checks the data with this module while its workers'
forkserver imports torch (torch and torchvision are imported where an array is made with them).
"""

from __future__ import annotations

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

# Per file-backed data set: the .npz file name, torchvision's folder, its dataset class in torchvision.datasets
# and the class names.
_SOURCES = {
    "cifar100": ("cifar100.npz", "cifar-100-python", "CIFAR100", CIFAR100_CLASSES),
    "cifar10": ("cifar10.npz", "cifar-10-batches-py", "CIFAR10", CIFAR10_CLASSES),
}
_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_DOWNLOAD_TIMEOUT_S = 30.0  # seconds; socket timeout of torchvision's download: no network fails, never hangs


class DataError(HpsearchError):
    """Bad or missing data; str() is the complete message for the user (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class RawData:
    x_train: np.ndarray  # (N, 32, 32, 3) uint8, HWC, RGB
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


@DATASETS.builder("cifar100")
@DATASETS.builder("cifar10")
def _cifar(cfg: DataConfig) -> RawData:
    """CIFAR from `<root>/<name>.npz`, else torchvision's folder, else its download."""
    npz_name, folder_name, dataset_name, class_names = _SOURCES[cfg.dataset]
    root = Path(cfg.root).expanduser()
    npz, folder = root / npz_name, root / folder_name
    tried = [f"{npz} (no such file)"]
    if npz.is_file():
        return _load_npz(npz, class_names)
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
        try:
            return _load_torchvision(dataset_name, root, download=True)
        except Exception as exc:  # no network, a proxy, a full disk: all end in the message below
            download = f"tried torchvision's download into {root}/ and it failed: {type(exc).__name__}: {exc}"
        finally:
            socket.setdefaulttimeout(old_timeout)
    else:
        download = "not tried (download: false)"
    lines = "\n".join(f"  {line}" for line in tried)
    raise DataError(
        f"{cfg.dataset} data not found. Tried:\n{lines}\nDownload: {download}.\n"
        f"Fix: pass --data-root DIR where DIR holds {npz_name} or {folder_name}/ (or set data.root in the "
        f"space), or set `download: true` in the space's data section on a machine with internet access."
    )


def _load_npz(path: Path, class_names: tuple[str, ...]) -> RawData:
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
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise DataError(f"{path}: x_{split} must be uint8 of shape (N, 32, 32, 3), got {x.dtype} "
                            f"{x.shape}; rebuild the file in the documented format")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{split} must be {len(x)} integer labels, got {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DataError(f"{path}: y_{split} holds labels outside 0..{len(class_names) - 1}")
    return RawData(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                   arrays["y_test"].astype(np.int64), class_names)


def _load_torchvision(dataset_name: str, root: Path, download: bool) -> RawData:
    import torchvision

    dataset_cls = getattr(torchvision.datasets, dataset_name)
    train = dataset_cls(str(root), train=True, download=download)
    test = dataset_cls(str(root), train=False, download=download)
    return RawData(np.asarray(train.data, dtype=np.uint8), np.asarray(train.targets, dtype=np.int64),
                   np.asarray(test.data, dtype=np.uint8), np.asarray(test.targets, dtype=np.int64),
                   tuple(train.classes))


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
