"""The cost of train.deterministic: the same trial trained with it off and on, alternately, on one device.

    python -m hpsearch.bench.determinism [--repeats 3] [--images 4000] [--epochs 2] [--model cnn6]

Each run is a whole `train()` of the seed's 6-layer CNN (or ResNet-18) on synthetic CIFAR-shaped images; the
figure is its training images per second (evaluation excluded), the median of the repeats, and the ratio of
deterministic to not. Off and on alternate, so a drift of a loaded machine falls on both. On the CPU the flag
changes little (cuDNN is not used); on a GPU it turns off cuDNN's benchmarked kernel choice and picks
deterministic kernels, which is where its cost shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from ..space.config import DataConfig, OptimizerConfig, SyntheticConfig, TrainConfig, TrialConfig
from ..training.data import prepare
from ..training.device import resolve_device
from ..training.train import train
from .bench import MODELS


def measure(model: str, images: int, epochs: int, repeats: int, device: torch.device) -> dict[bool, list[float]]:
    """Training images/s of each run, by the deterministic flag."""
    data_cfg = DataConfig(dataset="synthetic", val_size=max(100, images // 10),
                          synthetic=SyntheticConfig(size=images, test_size=10, classes=100))
    data = prepare(data_cfg, device)
    base = TrialConfig(data=data_cfg, model=MODELS[model], optimizer=OptimizerConfig(lr=0.05),
                       train=TrainConfig(epochs=epochs, batch_size=200, device=str(device)))
    out: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(repeats):
            for flag in (False, True):
                config = dataclasses.replace(base, train=dataclasses.replace(base.train, deterministic=flag))
                out[flag].append(train(config, data).train_images_per_sec)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpsearch.bench.determinism", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="cnn6")
    p.add_argument("--images", type=int, default=4000, help="synthetic training images")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    runs = measure(args.model, args.images, args.epochs, args.repeats, device)
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    print(f"train.deterministic on {device.type} ({torch.__version__}), {args.model}, batch 200, "
          f"{args.images} images x {args.epochs} epochs, median of {args.repeats}:\n")
    print("| train.deterministic | train images/s | ratio |\n|---|---|---|")
    print(f"| false | {off:,.0f} | 1.00 |\n| true | {on:,.0f} | {on / off:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
