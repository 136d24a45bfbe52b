"""The memory layout of training: the same loop with NCHW and with channels_last (NHWC), alternately, on one device.

    python -m hpsearch.bench.layout [--models smoke,cnn6,resnet18] [--repeats 3] [--steps 10] [--device auto]

Each run is train()'s Step over its device-side batches (bench.hpsearch_loop) for `steps` steps after 2 warm-up
ones, at batch 128 on synthetic CIFAR-shaped images; the figure is training images per second, the median of the
repeats, and the ratio of channels_last to NCHW. The two layouts alternate, so a drift of a loaded machine falls on
both. device.channels_last picks the layout every trial trains in.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ..training.device import resolve_device
from .bench import data_config, hpsearch_loop


def measure(model: str, steps: int, repeats: int, device: torch.device, batch: int = 128) -> dict[bool, float]:
    """Median train images/s by layout (True: channels_last)."""
    data_cfg = data_config(None, synthetic_size=batch * (steps + 2) + 1000)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for layout in (False, True):
            runs[layout].append(hpsearch_loop(model, data_cfg, batch, steps, 2, device,
                                              channels_last=layout).images_per_sec)
    return {layout: statistics.median(values) for layout, values in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpsearch.bench.layout", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="smoke,cnn6,resnet18")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"layout on {where} (torch {torch.__version__}), batch 128, {args.steps} steps, median of "
          f"{args.repeats}:\n")
    print("| model | NCHW img/s | channels_last img/s | ratio |\n|---|---|---|---|")
    for model in args.models.split(","):
        m = measure(model, args.steps, args.repeats, device)
        print(f"| {model} | {m[False]:,.0f} | {m[True]:,.0f} | {m[True] / m[False]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
