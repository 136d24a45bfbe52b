"""What fusing K trials buys: fused K = 1, 2, 4, 8 against the same K trials one after another and against K workers.

    python -m hpsearch.bench.fusion [--repeats 3] [--ks 1,2,4,8] [--searches] [--device auto]

Two measures, each side by side with its baseline in one process, alternating, medians of the repeats:

- train images/s, all members together: train_group() of K members, in each of its modes (grouped: one fused
  model; sequential: member after member on the shared batch), against train() of the same K configurations one
  after another, on synthetic CIFAR-shaped images, for the smoke-sized CNN (spaces/smoke.yaml's larger model) and
  the seed's 6-layer CNN (spaces/seeds/cifar100_vgg.yaml's cnn6 row). The members differ in learning rate, so
  every optimizer step is its own; the figure counts training only (validation excluded).
- trials/h of whole searches (`--searches`, in the device's default mode): `hpsearch run
  spaces/bench/fuse-smoke.yaml --trials 8` alone, with `--fuse K` and with `--workers K`, each a fresh process and
  study. That space fixes everything structural and searches only free fields (lr, label smoothing, dropout) with
  no pruning, so every trial is the same work and the runs differ only in how they train it; trials/h is 8 trials
  over the command's wall time (start-up included) and over the search alone (first trial's start to last end).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ..space.config import DataConfig, OptimizerConfig, SyntheticConfig, TrainConfig, TrialConfig
from ..space.load import shipped_space
from ..training.data import DeviceData, prepare
from ..training.device import resolve_device
from ..training.fused import MODES, default_mode
from ..training.train import Member, train, train_group
from .bench import MODELS

NETS = {net: MODELS[net] for net in ("smoke", "cnn6")}
SPACE = "bench/fuse-smoke.yaml"  # a shipped space (space.load.shipped_space)
TRIALS = 8  # per search: a multiple of every K


def configs(net: str, k: int, images: int, epochs: int, batch: int, device: torch.device) -> list[TrialConfig]:
    """K configurations of one structure, learning rates apart (the same K for the fused and the separate run)."""
    data = DataConfig(dataset="synthetic", val_size=max(100, images // 10), augment=DataConfig().augment,
                      synthetic=SyntheticConfig(size=images + max(100, images // 10), test_size=10, classes=100))
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch, device=str(device))
    return [TrialConfig(data=data, model=NETS[net], train=train_cfg,
                        optimizer=OptimizerConfig(name="sgd", lr=0.01 * (1 + i), momentum=0.9, nesterov=True))
            for i in range(k)]


def images_per_sec(net: str, ks: list[int], images: int, epochs: int, batch: int, repeats: int,
                   device: torch.device, modes: tuple[str, ...] = MODES) -> dict[int, dict[str, float]]:
    """{K: {"separate": img/s, "grouped": img/s, "sequential": img/s}}: training images of all K members over
    training seconds, the group in each of train_group's `modes`."""
    data = prepare(configs(net, 1, images, epochs, batch, device)[0].data, device)
    runs: dict[int, dict[str, list[float]]] = {k: {name: [] for name in ("separate", *modes)} for k in ks}
    for _ in range(repeats):
        for k in ks:
            group = configs(net, k, images, epochs, batch, device)
            runs[k]["separate"].append(_separate(group, data))
            for mode in modes:
                runs[k][mode].append(_fused(group, data, mode))
    return {k: {mode: statistics.median(values) for mode, values in r.items()} for k, r in runs.items()}


def _separate(group: list[TrialConfig], data: DeviceData) -> float:
    """The K configurations trained one after another: their images over their summed training seconds."""
    rates = [train(config, data).train_images_per_sec for config in group]
    return len(rates) / sum(1 / r for r in rates)  # every trial trains the same images


def _fused(group: list[TrialConfig], data: DeviceData, mode: str) -> float:
    members = [Member(c) for c in group]
    train_group(members, data, mode=mode)
    results = [m.result for m in members]
    if any(r is None for r in results):
        errors = [repr(m.error) for m in members if m.error is not None]
        raise RuntimeError(f"a fused member failed: {errors}")
    first = results[0]
    assert first is not None
    # Every member trained every image; the group's images/s is K times a member's.
    return len(members) * first.train_images_per_sec


def searches(ks: list[int], repeats: int, workers: list[int] | None = None, space: str | None = None,
             trials: int = TRIALS) -> dict[str, dict[str, float]]:
    """{"separate" | "fuse K" | "K workers": {"trials_per_h", "trials_per_h_in_search", "wall_s"}} (medians);
    `workers`: the worker counts to run (default: the same Ks); `space`: default the shipped SPACE."""
    from .bench import run_search

    space = space or str(shipped_space(SPACE))
    counts = ks if workers is None else workers
    modes = ([("separate", 1, 1)] + [(f"fuse {k}", 1, k) for k in ks if k > 1]
             + [(f"{k} workers", k, 1) for k in counts if k > 1])
    runs: dict[str, list[Any]] = {name: [] for name, _, _ in modes}
    for draw in range(repeats):
        for name, n_workers, fuse in modes:
            runs[name].append(run_search(space, trials, n_workers, draw, fuse=fuse, replay=False))
    return {name: {"trials_per_h": statistics.median(r.trials_per_hour for r in results),
                   "trials_per_h_in_search": statistics.median(r.search_trials_per_hour for r in results),
                   "wall_s": statistics.median(r.wall_s for r in results)}
            for name, results in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpsearch.bench.fusion", description=__doc__.split("\n")[0])
    p.add_argument("--ks", default="1,2,4,8", help="group sizes, e.g. 1,2,4,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=1024, help="synthetic training images of the images/s runs")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--nets", default="smoke,cnn6")
    p.add_argument("--searches", action="store_true", help="also the whole-search trials/h (CPU: minutes)")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"fused trials on {where} (torch {torch.__version__}), median of {args.repeats}\n")
    print(f"train images/s, all members together: {args.images} images x {args.epochs} epochs, batch {args.batch}\n")
    print(f"(this device's default mode: {default_mode(device, 2)} for K > 1)\n")
    print("| net | K | separate img/s | grouped img/s | sequential img/s | grouped / separate | sequential / separate "
          "|\n|---|---|---|---|---|---|---|")
    for net in filter(None, args.nets.split(",")):
        started = time.perf_counter()
        rows = images_per_sec(net, ks, args.images, args.epochs, args.batch, args.repeats, device)
        for k, r in rows.items():
            print(f"| {net} | {k} | {r['separate']:,.0f} | {r['grouped']:,.0f} | {r['sequential']:,.0f} | "
                  f"{r['grouped'] / r['separate']:.2f} | {r['sequential'] / r['separate']:.2f} |")
        print(f"<!-- {net}: {time.perf_counter() - started:.0f} s -->")
    if args.searches:
        print(f"\nwhole searches: {Path(SPACE).name}, {TRIALS} identical-work trials a run\n")
        print("| run | trials/h | trials/h in search | wall s | vs separate |\n|---|---|---|---|---|")
        found = searches(ks, args.repeats)
        base = found["separate"]["trials_per_h"]
        for name, r in found.items():
            print(f"| {name} | {r['trials_per_h']:,.0f} | {r['trials_per_h_in_search']:,.0f} | {r['wall_s']:.1f} | "
                  f"{r['trials_per_h'] / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
