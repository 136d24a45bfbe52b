"""Where a training step of a small net goes on the CPU: one table per model, each part timed alone.

    python -m hpsearch.bench.breakdown [--models fashion_cnn,mlp] [--batch-size 256] [--repeats 50] [--compile]

Parts, each the median of `--repeats` timed calls after warm-up, on a batch of the real Fashion-MNIST images
(/usr/share/datasets/fashion-mnist): the batch (index, crop, flip, normalise: DeviceData.train_batches' work, with
the crop as a gather of each window from the flattened planes and as the 4-D advanced index it replaced); the
forward and backward pass in fp32 and in bf16 autocast; the optimizer update, fused and torch's default; the
whole Step as a trial runs it with 1 and 2 intra-op threads; with --compile, the Step of a torch.compile'd model
and the seconds its first call takes. Evaluation of the 5,000 validation images is timed once per precision.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..space.config import AugmentConfig, DataConfig, OptimizerConfig, SchedulerConfig, TrainConfig, TrialConfig
from ..training.augment import augment_batch
from ..training.data import normalize, prepare
from ..training.evaluate import evaluate
from ..training.models import build_model
from ..training.optim import build_scheduler
from ..training.step import Step
from .bench import FASHION_ROOT, MODELS

CPU = torch.device("cpu")


def timed(call: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def indexed_crop(x: torch.Tensor, p: int, generator: torch.Generator) -> torch.Tensor:
    """The crop as it was: one 4-D advanced index of the padded batch (the same draws and pixels as augment.py's)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, None, :, None]
    cols = (dx + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def profile(model_name: str, batch_size: int, repeats: int, compile_too: bool) -> list[tuple[str, float]]:
    data_cfg = DataConfig(dataset="fashion_mnist", root=FASHION_ROOT, download=False, val_size=5000)
    config = TrialConfig(data=data_cfg, model=MODELS[model_name], scheduler=SchedulerConfig(name="onecycle"),
                         optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True),
                         train=TrainConfig(batch_size=batch_size, device="cpu"))
    data = prepare(data_cfg, CPU)
    generator = torch.Generator().manual_seed(0)
    augment = AugmentConfig(crop_padding=2, flip=True)
    index = torch.randperm(len(data.train_y), generator=generator)[:batch_size]
    raw, y = data.train_x[index], data.train_y[index]
    rows: list[tuple[str, float]] = [
        ("batch: index the uint8 images", timed(lambda: data.train_x[index], repeats)),
        ("batch: crop (gather), flip", timed(lambda: augment_batch(raw, augment, generator), repeats)),
        ("batch: crop as a 4-D index (before)", timed(lambda: indexed_crop(raw, 2, generator), repeats)),
        ("batch: normalise, channels_last", timed(lambda: normalize(raw, data.mean, data.std, True), repeats)),
    ]
    x = normalize(augment_batch(raw, augment, generator), data.mean, data.std, True)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return build_model(config.model, data.num_classes, config).to(memory_format=torch.channels_last).train()

    net = model()
    criterion = nn.CrossEntropyLoss()
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def forward_backward(dtype: torch.dtype | None = dtype) -> None:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = criterion(net(x), y)
            loss.backward()
        rows.append((f"forward + backward, {name}", timed(forward_backward, repeats)))
    for fused in (True, None):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                    fused=fused)
        rows.append((f"optimizer update, {'fused' if fused else 'default (foreach)'}", timed(optimizer.step, repeats)))
    threads = torch.get_num_threads()
    for precision in ("fp32", "bf16"):
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            net = model()
            optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True)
            step = Step(net, optimizer, build_scheduler(config.scheduler, optimizer, 1000, 1000, "val_acc"),
                        config, CPU, precision)
            rows.append((f"whole Step, {precision}, {n} thread{'s' if n > 1 else ''}",
                         timed(functools.partial(step, x, y), repeats)))
        torch.set_num_threads(threads)
        evaluated = model()
        rows.append((f"evaluate 5,000 validation images, {precision}",
                     timed(functools.partial(evaluate, evaluated, data.val_x, data.val_y, data.mean, data.std,
                                             1024, CPU, precision, True), 3, 1)))
    if compile_too:
        compiled = dataclasses.replace(config, train=dataclasses.replace(config.train, compile=True))
        net = model()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True)
        step = Step(net, optimizer, build_scheduler(config.scheduler, optimizer, 1000, 1000, "val_acc"),
                    compiled, CPU, "bf16")
        started = time.perf_counter()
        step(x, y)
        rows.append(("torch.compile: the first Step (compiling)", 1000 * (time.perf_counter() - started)))
        rows.append(("whole Step, bf16, compiled", timed(lambda: step(x, y), repeats)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpsearch.bench.breakdown", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="fashion_cnn,mlp")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd Step (minutes)")
    args = p.parse_args(argv)
    for model_name in args.models.split(","):
        print(f"\n{model_name}, batch {args.batch_size}, median of {args.repeats}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads\n\n| part | ms |\n|---|---:|")
        for name, ms in profile(model_name, args.batch_size, args.repeats, args.compile):
            print(f"| {name} | {ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
