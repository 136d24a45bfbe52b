"""`train.precision` resolved to what a trial trains in: bf16, fp16 or fp32.

`auto` is bf16 autocast on CUDA. On a CPU it is bf16 only where the processor computes bf16 natively (AMX-BF16 or
AVX512-BF16, read from its feature flags) and the architecture trains faster in it: the gain depends on the model
(large for convolutions, little or none for small matrices, where the casts cost what the arithmetic saves), so
the first trial of each architecture in a process times a few steps of a throw-away copy in fp32 and in bf16, on
its own batch, and the faster wins, by a margin (fp32 is kept on a tie). The choice is cached per architecture,
input shape, class count and batch size, for the process. The timing runs under a forked random state, so a trial
draws the same numbers whether the choice was measured for it or cached. Autocast keeps the weights, optimizer
state, loss and BatchNorm statistics in fp32.

A measured choice can differ between runs on a loaded machine, so `auto` does not measure where a run must repeat
exactly (train.deterministic: fp32), and a resumed trial keeps the precision it started in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import HpsearchError
from ..space.config import TrialConfig
from ..space.space import Space
from .data import DeviceData, normalize
from .device import DeviceError, autocast, autocast_dtype, resolve_device
from .models import build_model

# CPU feature flags (Linux /proc/cpuinfo) of native bf16 arithmetic, the fastest first.
NATIVE_BF16 = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))
MARGIN = 1.05  # bf16 must train at least this much faster than fp32 to be picked
ROUNDS, BUDGET_S = 3, 2.0  # timed steps of each precision, alternating; fewer once the budget is spent

_CHOICES: dict[tuple[object, ...], Choice] = {}


@dataclass(frozen=True)
class Choice:
    precision: str  # bf16 | fp16 | fp32
    why: str  # one line: how it was chosen
    seconds: float = 0.0  # spent measuring it, once per process (0: not measured)


@functools.cache
def cpu_info() -> tuple[str, str | None]:
    """(the processor's model name, its native bf16 instructions: 'AMX-BF16', 'AVX512-BF16' or None)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, so no native bf16 is assumed
        return platform.processor() or platform.machine() or "unknown CPU", None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    native = next((name for flag, name in NATIVE_BF16 if flag in flags), None)
    return fields.get("model name") or platform.processor() or "unknown CPU", native


class PrecisionError(HpsearchError, ValueError):
    """A precision this device cannot train in; str() says which and the fix."""


def device_problem(precision: str, device: torch.device) -> str | None:
    """Why `precision` cannot train on `device`, or None: fp16 is for GPUs (the CPU has no fast fp16 kernels)."""
    if precision == "fp16" and device.type == "cpu":
        return ("train.precision: fp16 needs a GPU: torch's CPU kernels have no fast fp16 training, and this trial "
                "trains on the CPU\nfix: train.precision: auto (bf16 where the CPU computes it natively, else fp32), "
                "bf16 or fp32")
    return None


def space_problem(space: Space) -> str | None:
    """device_problem for the precisions `space` trains in (fixed or searched) on the device its trials get here;
    None when they fit or that device does not exist here (resolve_device says so where it is used)."""
    try:
        device = resolve_device(space.fixed_train_device())
    except DeviceError:
        return None
    return next((p for p in (device_problem(a, device) for a in space.precisions()) if p), None)


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def describe_auto(device: torch.device, deterministic: bool = False) -> str:
    """What `precision: auto` does on this device, in one line (a run prints it once)."""
    if device.type == "cuda":
        return "precision auto: bf16 autocast on CUDA"
    if device.type != "cpu":
        return f"precision auto: fp32 on {device.type}"
    name, native = cpu_info()
    if native is None:
        return f"precision auto: fp32 ({name} has no native bf16: neither AMX-BF16 nor AVX512-BF16)"
    if deterministic:
        return (f"precision auto: fp32 under train.deterministic, though {name} has {native} (a measured choice "
                "may differ between runs; precision: bf16 trains in it)")
    return (f"precision auto: bf16 autocast for each architecture that trains at least {MARGIN:.2f}x faster in it on "
            f"this CPU ({name}, {native}; measured once per architecture), else fp32; each trial records its choice")


def resolve(config: TrialConfig, data: DeviceData, device: torch.device, given: str | None = None) -> Choice:
    """The precision `config` trains in on `device` with `data`; `given`: the one its trial trained in (a resumed
    trial's saved state, a retrain's trial), kept as it is."""
    asked = config.train.precision
    if given:
        return Choice(given, f"{given}: the precision its trial trained in")
    problem = device_problem(asked, device)
    if problem:
        raise PrecisionError(problem)
    if asked == "bf16" and device.type == "cpu" and cpu_info()[1] is None:
        _warn_once(f"hpsearch: warning: train.precision bf16 on {cpu_info()[0]}, which has no native bf16: torch "
                   "emulates it, slower than fp32; precision: auto picks the fastest this CPU has")
    if asked != "auto":
        return Choice(asked, f"{asked}: train.precision")
    if device.type == "cuda":
        return Choice("bf16", "auto: bf16 autocast on CUDA")
    if device.type != "cpu":
        return Choice("fp32", f"auto: fp32 on {device.type}")
    name, native = cpu_info()
    if native is None:
        return Choice("fp32", f"auto: fp32, {name} has no native bf16")
    if config.train.deterministic:
        return Choice("fp32", "auto: fp32 under train.deterministic (a measured choice may differ between runs)")
    # the architecture as it computes (its initialisation aside: a fused group may differ in it), the images, the
    # classes and the batch: what the speed of a step depends on
    model = dataclasses.replace(config.model, init=TrialConfig().model.init)
    key = (model, tuple(data.train_x.shape[1:]), data.num_classes, config.train.batch_size, str(device))
    if key not in _CHOICES:
        _CHOICES[key] = measure(config, data, device, native)
    return _CHOICES[key]


def measure(config: TrialConfig, data: DeviceData, device: torch.device, native: str) -> Choice:
    """Time training steps of a throw-away copy of config's model in fp32 and in bf16 (a warm-up step each, then
    up to ROUNDS alternating rounds, the fastest step of each counting); bf16 when it is MARGIN times faster."""
    started = time.perf_counter()
    size = min(config.train.batch_size, len(data.train_y))
    with torch.random.fork_rng(devices=[]):
        model = build_model(config.model, data.num_classes, config).to(device).to(memory_format=torch.channels_last)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        x = normalize(data.train_x[:size], data.mean, data.std, channels_last=True)
        y = data.train_y[:size]
        criterion = nn.CrossEntropyLoss()

        def step(dtype: torch.dtype | None) -> float:
            began = time.perf_counter()
            with autocast(dtype, device):
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - began

        dtypes = (autocast_dtype("fp32", device), autocast_dtype("bf16", device))
        fastest = [math.inf, math.inf]
        for dtype in dtypes:
            step(dtype)  # warm-up: oneDNN picks and caches its kernels for these shapes
        for _ in range(ROUNDS):
            for i, dtype in enumerate(dtypes):
                fastest[i] = min(fastest[i], step(dtype))
            if time.perf_counter() - started > BUDGET_S:
                break
    speedup = fastest[0] / fastest[1]
    seconds = time.perf_counter() - started
    if speedup >= MARGIN:
        return Choice("bf16", f"auto: bf16, {speedup:.2f}x fp32's speed on this CPU ({native})", seconds)
    return Choice("fp32", f"auto: fp32, bf16 measured {speedup:.2f}x fp32's speed on this CPU ({native})", seconds)


