"""Data: CIFAR-10/100, MNIST, Fashion-MNIST (an .npz or torchvision's folder), an image folder of your own or synthetic
images, held on the training device.

The whole split lives on the device as uint8 NCHW tensors; each batch is shuffled, augmented (augment.py: random
crop with zero padding, horizontal flip, and the optional rotation, translation and colour jitter) and normalised
there: no DataLoader, no PIL, no host sync per batch.
The arrays come from rawdata.py. `prepare` makes a DeviceData; a worker makes it once and hands it to every trial
(study/worker.py), so nothing here caches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..space.config import AugmentConfig, DataConfig, TrialConfig
from ..space.registry import DATASETS
from .augment import augment_batch  # also imported from here (tests, callers of the batch path)
from .rawdata import DataError, load_arrays, load_test_arrays


# ------------------------------------------------------------------------------------------------------ split
def stratified_split(
    y: np.ndarray, val_size: int, train_limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): sorted, disjoint, class-balanced; a pure function of the arguments.

    val_size images are held out in proportion to the classes; train_limit (None: all) takes a stratified
    subset of the rest.
    """
    n = len(y)
    labels, per_class = np.unique(y, return_counts=True)
    most = n - len(labels)  # every class keeps at least one training image
    if most < 1:
        raise DataError(f"the {n} training images of {len(labels)} classes leave none to hold out for validation "
                        "(each class needs at least one training image); give every class at least two images")
    if not 1 <= val_size <= most:
        raise DataError(f"data.val_size={val_size} does not fit the {n} training images of {len(labels)} classes: "
                        f"set data.val_size between 1 and {most} (each class keeps at least one training image)")
    rng = np.random.default_rng(seed)
    val_idx, rest = _take_stratified(y, np.arange(n), val_size, rng)
    classes = np.unique(y[rest])
    if len(classes) < len(labels):  # uneven classes: a small class's share can round up to all of its images
        emptied = sorted(set(labels.tolist()) - set(classes.tolist()))
        raise DataError(f"data.val_size={val_size} of the {n} training images leaves some class without training "
                        f"images (label {', '.join(map(str, emptied[:5]))}{', ...' if len(emptied) > 5 else ''}; "
                        f"the smallest of the {len(labels)} classes has {per_class.min()} image(s)); lower "
                        "data.val_size, or add images to the smallest classes")
    if train_limit is not None:
        if not len(classes) <= train_limit <= len(rest):
            raise DataError(f"data.train_limit must be between {len(classes)} (one image per class) and "
                            f"{len(rest)} (the images left after val_size={val_size}), got {train_limit}; set "
                            "it in that range, or remove it to train on them all")
        rest, _ = _take_stratified(y, rest, train_limit, rng)
    return np.sort(rest), np.sort(val_idx)


def _take_stratified(
    y: np.ndarray, idx: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split idx into k taken and the rest: classes in proportion (largest remainder), random within one."""
    idx = idx[rng.permutation(len(idx))]
    idx = idx[np.argsort(y[idx], kind="stable")]  # grouped by class, random order within a class
    classes, starts, counts = np.unique(y[idx], return_index=True, return_counts=True)
    exact = counts * k / len(idx)
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((classes, -(exact - quota)))  # largest remainders first, ties by class
    quota[order[: k - quota.sum()]] += 1
    taken = np.zeros(len(idx), bool)
    for start, q in zip(starts, quota, strict=True):
        taken[start : start + q] = True
    return idx[taken], idx[~taken]


# ----------------------------------------------------------------------------------------------------- device
@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class DeviceData:
    train_x: Tensor  # (N, C, H, W) uint8 on the training device: C=3 RGB or C=1 grayscale
    train_y: Tensor  # (N,) int64
    val_x: Tensor
    val_y: Tensor
    mean: Tensor  # (C,) float32 per-channel mean of the training split, on the 0..1 scale
    std: Tensor  # (C,) float32
    num_classes: int
    class_names: tuple[str, ...]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches of one train_batches() epoch: a last partial batch is dropped unless it is the only one."""
        return max(1, len(self.train_y) // batch_size)

    def train_batches(self, batch_size: int, augment: AugmentConfig, generator: torch.Generator,
                      channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled, augmented, normalised (x float, y) batches, made on the device."""
        n = len(self.train_y)
        order = torch.randperm(n, device=self.train_y.device, generator=generator)
        size = min(batch_size, n)
        for i in range(self.steps_per_epoch(batch_size)):
            idx = order[i * size : (i + 1) * size]
            x = augment_batch(self.train_x[idx], augment, generator)
            yield normalize(x, self.mean, self.std, channels_last), self.train_y[idx]


def normalize(x: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 NCHW (0..255) or float NCHW (0..1) -> float32 (x - mean) / std per channel, optionally channels_last.

    The one normalisation of the package: training, validation, the test set, a loaded checkpoint and an exported
    model (through standardize) all compute exactly this.
    """
    out = standardize(x.float() / 255.0 if x.dtype == torch.uint8 else x.float(), mean, std)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def standardize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Float NCHW images in 0..1 -> (x - mean) / std with the (C,) per-channel mean and std (C: the images'
    channels, 3 or 1); never writes into x."""
    return (x - mean[:, None, None]) / std[:, None, None]


def prepare(cfg: DataConfig, device: torch.device | str, include_val: bool = False) -> DeviceData:
    """Load, split and move to the device (augmentation is per batch, so cfg.augment plays no part).

    include_val: the final fit after a search (hpsearch retrain) trains on train+validation; the validation images
    stay as `val_x` for monitoring only, since they are now seen in training.
    """
    device = torch.device(device)
    problems = DATASETS.problems(TrialConfig(data=cfg))  # the split's rules, as validate applies them
    if problems:
        raise DataError("; ".join(problems))
    raw = load_arrays(cfg)
    try:  # an image folder's split is checked only here: the registry cannot know its image count ahead
        train_idx, val_idx = stratified_split(raw.y_train, cfg.val_size, cfg.train_limit, cfg.split_seed)
    except DataError as exc:
        raise DataError(f"{cfg.dataset} data under {cfg.root}: {exc}") from None
    if include_val:
        train_idx = np.sort(np.concatenate([train_idx, val_idx]))
    x_train = raw.x_train[train_idx]
    # data.mean and data.std fix the normalisation (course notes' Normalize((0.5,), (0.5,))); else the split's own.
    mean, std = (list(cfg.mean), list(cfg.std)) if cfg.mean is not None and cfg.std is not None else \
        _channel_stats(x_train)
    return DeviceData(
        train_x=_to_nchw(x_train, device),
        train_y=torch.from_numpy(raw.y_train[train_idx]).to(device),
        val_x=_to_nchw(raw.x_train[val_idx], device),
        val_y=torch.from_numpy(raw.y_train[val_idx]).to(device),
        mean=torch.tensor(mean, dtype=torch.float32, device=device),
        std=torch.tensor(std, dtype=torch.float32, device=device),
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
    )


def load_test(cfg: DataConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """The test split as (uint8 NCHW, int64 labels) on the device; normalise with the training mean/std. DataError
    when the data set has none (an image folder without test/)."""
    x, y = load_test_arrays(cfg)
    return _to_nchw(x, device), torch.from_numpy(y).to(device)


def _to_nchw(x: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, H, W, C) numpy images -> a (N, C, H, W) tensor on the device, for any C."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def _channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images on the 0..1 scale, one value a channel whatever their number
    (float64 sums in chunks)."""
    channels = x.shape[3]
    total, total_sq = np.zeros(channels), np.zeros(channels)
    for start in range(0, len(x), 8192):
        chunk = x[start : start + 8192].reshape(-1, channels).astype(np.float64)
        total += chunk.sum(0)
        total_sq += (chunk**2).sum(0)
    count = len(x) * x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return (mean / 255).tolist(), (std / 255).tolist()
