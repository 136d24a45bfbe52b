"""Synthetic images: a learnable, not trivial, CIFAR-shaped data set made from a seed, bit-identical for equal
settings, for the tests and quick runs that must need no download. torch is imported only where the patterns are
upsampled.
"""

from __future__ import annotations

import numpy as np

from ..space.config import DataConfig, SyntheticConfig
from ..space.registry import DATASETS
from .rawtypes import DataError, RawData

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
    check_synthetic(cfg)
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


def check_synthetic(cfg: SyntheticConfig) -> None:
    if cfg.classes < 2 or cfg.size < cfg.classes or cfg.test_size < 0:
        raise DataError(f"synthetic data needs classes >= 2 and size >= classes, got {cfg}")


def _smooth_patterns(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3, 40, 40) float32 smooth random patterns of unit scale (bilinear upsampling on the CPU)."""
    import torch
    import torch.nn.functional as F

    low = torch.from_numpy(rng.standard_normal((count, 3, _PROTO_GRID, _PROTO_GRID), np.float32))
    size = 32 + _SHIFT
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).numpy()
