"""Accuracy of the same trials in fp32 and in bf16 autocast on the CPU: does `precision: auto` cost accuracy?

    python -m hpsearch.bench.parity [--seeds 0,1,2] [--cifar100 DIR] [--fashion DIR]

Each row is one configuration trained with each seed, once in fp32 and once in bf16, everything else equal (data,
split, initial weights, batch order, augmentation). It prints each run's best validation accuracy and the test
accuracy of its final weights, then per configuration and precision the mean and the spread across seeds: the
noise against which the two precisions compare. The configurations are the CPU's: the Fashion-MNIST CNN and MLP of
the benchmark and a small CNN on CIFAR-100, each on a 10,000-image training subset for 5 epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from ..space.config import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
    TrialConfig,
)
from ..training.data import load_test, prepare
from ..training.evaluate import evaluate
from ..training.models import build_model
from ..training.train import train


def configs(fashion: str, cifar100: str | None) -> dict[str, TrialConfig]:
    """The configurations compared, by name."""
    sgd = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fashion_data = DataConfig(dataset="fashion_mnist", root=fashion, download=False, val_size=5000,
                              train_limit=10_000, augment=AugmentConfig(crop_padding=2, flip=True))
    out = {
        "fashion cnn (4 conv, 32-64)": TrialConfig(
            data=fashion_data, model=ModelConfig(name="cnn", stages=2, blocks_per_stage=2, widths=(32, 64)),
            optimizer=sgd, scheduler=SchedulerConfig(name="onecycle"), train=TrainConfig(epochs=5, batch_size=128)),
        "fashion mlp (784-512-128)": TrialConfig(
            data=dataclasses.replace(fashion_data, augment=AugmentConfig(crop_padding=0, flip=False)),
            model=ModelConfig(name="mlp", hidden=(512, 128), dropout=0.2), optimizer=sgd,
            scheduler=SchedulerConfig(name="onecycle"), train=TrainConfig(epochs=5, batch_size=128)),
    }
    if cifar100:
        out["cifar-100 cnn (3 stages, 32-64-128)"] = TrialConfig(
            data=DataConfig(dataset="cifar100", root=cifar100, download=False, val_size=2000, train_limit=10_000),
            model=ModelConfig(name="cnn", stages=3, blocks_per_stage=1, widths=(32, 64, 128)), optimizer=sgd,
            scheduler=SchedulerConfig(name="onecycle"), train=TrainConfig(epochs=5, batch_size=128))
    return out


def run(config: TrialConfig, precision: str, seed: int) -> tuple[float, float]:
    """(best validation accuracy, test accuracy of the final weights) of one training run."""
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision, seed=seed,
                                                                   device="cpu"))
    data = prepare(config.data, "cpu")
    result = train(config, data)
    model = build_model(config.model, data.num_classes, config)
    model.load_state_dict(result.final_state)
    x, y = load_test(config.data, torch.device("cpu"))
    test = evaluate(model, x, y, data.mean, data.std, 1024, torch.device("cpu"), result.precision, True)
    return float(result.best_metrics["val_acc"]), float(test["acc"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpsearch.bench.parity", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--cifar100", help="folder of cifar100.npz (the CIFAR-100 row runs only with it)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| configuration | precision | seed | best val_acc | test_acc |\n|---|---|---:|---:|---:|", flush=True)
    summary = []
    for name, config in configs(args.fashion, args.cifar100).items():
        found: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
        for seed in seeds:
            for precision in found:
                val, test = run(config, precision, seed)
                found[precision].append((val, test))
                print(f"| {name} | {precision} | {seed} | {val:.4f} | {test:.4f} |", flush=True)
        for precision, rows in found.items():
            tests = [t for _, t in rows]
            spread = max(tests) - min(tests)
            summary.append(f"| {name} | {precision} | {statistics.mean(tests):.4f} | {spread:.4f} |")
    print("\n| configuration | precision | mean test_acc | spread across seeds (max - min) |\n|---|---|---:|---:|")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
