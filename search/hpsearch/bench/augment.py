"""Augmentation cost: seconds per training epoch of the data path (shuffle, augment, normalise) for each setting.

`python -m hpsearch.bench.augment` runs `DeviceData.train_batches` over random CIFAR-shaped uint8 images (3x32x32)
held on the device, with no model, for six AugmentConfig settings: none, crop+flip (the default), crop+flip with
rotation 10 and translate 0.1, crop+flip with colour jitter 0.2 on all four, everything together, and the set of
spaces/seeds/cifar10_resnet.yaml (everything but the crop). The settings alternate (one epoch of each, then again)
so that a noisy machine slows them alike, after one untimed epoch of each.
Each figure is the median over the repeats, scaled from `--images` to an epoch of 45,000 images (175 full batches
of 256, as train_batches drops a last partial batch), and printed as a markdown table with the ratio to crop+flip.
Imports only torch and the training part, so it measures what a trial runs. docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import torch

from ..space.config import AugmentConfig
from ..training.data import DeviceData
from ..training.device import channels_last, resolve_device

EPOCH_IMAGES = 45_000  # CIFAR's 50,000 training images less the 5,000 of the default validation split
SETTINGS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(crop_padding=0, flip=False),
    "crop+flip": AugmentConfig(),
    "crop+flip+rotation 10+translate 0.1": AugmentConfig(rotation=10, translate=0.1),
    "crop+flip+colour jitter 0.2 x4": AugmentConfig(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2),
    "all of them": AugmentConfig(rotation=10, translate=0.1, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2),
    "seeds/cifar10_resnet.yaml (all but the crop)": AugmentConfig(crop_padding=0, rotation=10, translate=0.1,
                                                                   brightness=0.2, contrast=0.2, saturation=0.2,
                                                                   hue=0.2),
}
BASELINE = "crop+flip"


@dataclass(frozen=True)
class Row:
    setting: str
    epoch_seconds: float  # median, scaled to an epoch of EPOCH_IMAGES images
    batch_ms: float  # median milliseconds per batch
    ratio: float  # epoch_seconds over crop+flip's


def random_data(images: int, device: torch.device, seed: int = 0) -> DeviceData:
    """`images` random uint8 3x32x32 images on the device, as prepare() would hold them (the values do not change the
    work: every op here is data-independent)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    y = torch.arange(images) % 10
    return DeviceData(train_x=x, train_y=y.to(device), val_x=x[:1], val_y=y[:1].to(device),
                      mean=torch.full((3,), 0.5, device=device), std=torch.full((3,), 0.25, device=device),
                      num_classes=10, class_names=tuple(str(i) for i in range(10)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _epoch(data: DeviceData, batch_size: int, augment: AugmentConfig, generator: torch.Generator,
           device: torch.device) -> float:
    """Seconds for one train_batches epoch, every batch made and the device finished."""
    _sync(device)
    start = time.perf_counter()
    for _x, _y in data.train_batches(batch_size, augment, generator, channels_last=channels_last(device)):
        pass
    _sync(device)
    return time.perf_counter() - start


def measure(images: int, batch_size: int, repeats: int, device: torch.device,
            settings: dict[str, AugmentConfig] = SETTINGS) -> list[Row]:
    """The median epoch of each setting over `repeats` alternating rounds, after one untimed round."""
    data = random_data(images, device)
    generator = torch.Generator(device=device).manual_seed(0)
    steps = data.steps_per_epoch(batch_size)
    scale = (EPOCH_IMAGES // batch_size) / steps
    times: dict[str, list[float]] = {name: [] for name in settings}
    for round_ in range(repeats + 1):
        for name, augment in settings.items():
            seconds = _epoch(data, batch_size, augment, generator, device)
            if round_ > 0:
                times[name].append(seconds)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians.get(BASELINE, next(iter(medians.values())))
    return [Row(name, m * scale, 1000 * m / steps, m / base) for name, m in medians.items()]


def markdown(rows: Sequence[Row], batch_size: int) -> str:
    lines = [f"| augmentation | s per {EPOCH_IMAGES:,}-image epoch | ms per batch of {batch_size} | vs {BASELINE} |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r.setting} | {r.epoch_seconds:.3f} | {r.batch_ms:.2f} | {r.ratio:.2f}x |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m hpsearch.bench.augment",
                                     description="Seconds per training epoch of the data path, per augmentation.")
    parser.add_argument("--images", type=int, default=12_800,
                        help="images per timed epoch (default 12,800: 50 batches); figures are scaled to 45,000")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; each figure is their median")
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda, cuda:N, mps")
    args = parser.parse_args(argv)
    if args.images < args.batch_size or args.repeats < 1:
        parser.error("--images must hold at least one batch and --repeats must be at least 1")
    device = resolve_device(args.device)
    threads = f"{torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}, {threads}"
    out(f"# {datetime.now():%Y-%m-%d %H:%M}  torch {torch.__version__}  {name}  {args.images:,} images a timed "
        f"epoch, scaled to {EPOCH_IMAGES:,}  batch {args.batch_size}  median of {args.repeats}")
    rows = measure(args.images, args.batch_size, args.repeats, device)
    out(markdown(rows, args.batch_size))
    return rows


if __name__ == "__main__":
    main()
