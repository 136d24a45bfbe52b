"""train(config, data, on_epoch) -> TrainResult: one trial's training, top to bottom. No Optuna here.

Its hook is `on_epoch(epoch, metrics)`, called after each epoch's validation; whatever it raises
(Optuna's TrialPruned, for one) propagates. The host syncs once per epoch: losses and counts are summed on the
device. For crash safety, `on_state(get)` is called after each epoch with a function that returns the whole
training state (plain values and tensors), and `resume=` such a state continues training after its epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from ..space.config import ModelConfig, TrialConfig, maximize
from ..space.registry import MODELS
from .data import DeviceData, prepare
from .device import autocast, autocast_dtype, repeatable_cublas, resolve_device
from .device import channels_last as use_channels_last
from .evaluate import evaluate
from .models import build_model, count_parameters
from .optim import LRSchedule, build_optimizer, build_scheduler


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite: the trial diverged."""


class ResumeError(ValueError):
    """A saved training state that does not fit this configuration's model, optimizer or schedule."""


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int  # 1-based epoch with the best config.metric
    best_metrics: dict[str, float]  # that epoch's metrics
    history: list[dict[str, float]]  # metrics of every epoch, in order
    seconds: float  # wall time of the whole call
    train_images_per_sec: float  # training images / training seconds (evaluation excluded)
    num_params: int
    flops_per_image: int  # forward + backward FLOPs of one training image (torch's FLOP counter)
    best_state: dict[str, Tensor] = field(repr=False)  # state dict of the best epoch, cloned to the CPU
    class_names: tuple[str, ...] = ()
    final_state: dict[str, Tensor] = field(default_factory=dict, repr=False)  # after the last epoch (retrain)


def train(config: TrialConfig, data: DeviceData | None = None,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None, *,
          on_state: Callable[[Callable[[], dict[str, Any]]], None] | None = None,
          resume: dict[str, Any] | None = None,
          also_evaluate: dict[str, tuple[Tensor, Tensor]] | None = None) -> TrainResult:
    """Train config's model on config's data; return the best epoch's metrics and weights, and the history.

    `also_evaluate`: more (uint8 images, labels) sets on the device, measured after every epoch like the validation
    split; their `<name>_loss` and `<name>_acc` join each epoch's metrics (retrain's --test-every-epoch). They never
    choose the best epoch.

    `resume`: a state from on_state of an earlier run of the same config; training goes on after its epoch, with
    the same weights, optimizer, schedule and random streams, so the result equals that of an uninterrupted run.
    """
    start = time.perf_counter()
    tc = config.train

    # ------------------------------------------------------------------------------ seed and device
    # The data's device when data is given (a worker's: study/worker.py), so a trial has one device, its worker's.
    device = data.train_y.device if data is not None else resolve_device(tc.device)
    seed_everything(tc.seed, tc.deterministic)  # weight init, dropout
    generator = torch.Generator(device=device)
    generator.manual_seed(tc.seed)  # shuffling and augmentation, drawn on the device
    channels_last = use_channels_last(device)

    # ------------------------------------------------------------------------------ data
    data = data if data is not None else prepare(config.data, device)
    steps_per_epoch = data.steps_per_epoch(tc.batch_size)

    # ------------------------------------------------------------------------------ model, optimizer, schedule
    model = build_model(config.model, data.num_classes, config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    num_params = count_parameters(model)
    flops = train_flops_per_image(config.model, data.num_classes, tuple(data.train_x.shape[1:]))
    optimizer = build_optimizer(config.optimizer, model.parameters(), device, config)
    schedule = build_scheduler(config.scheduler, optimizer, tc.epochs, steps_per_epoch, config.metric)
    step = Step(model, optimizer, schedule, config, device)

    # ------------------------------------------------------------------------------ epochs (or where a run stopped)
    history: list[dict[str, float]] = []
    best_epoch, best_state = 0, {}
    train_seconds, train_images = 0.0, 0
    if resume is not None:  # a retried trial: go on after its last finished epoch
        restore(resume, model, optimizer, schedule, step.scaler, generator)
        history = [dict(m) for m in resume["history"]]
        best_epoch, best_state = int(resume["best_epoch"]), dict(resume["best_state"])
        train_seconds, train_images = float(resume["train_seconds"]), int(resume["train_images"])

    def state() -> dict[str, Any]:
        """Everything needed to go on after the last finished epoch: resume= takes it back."""
        return {"epoch": len(history), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "scaler": step.scaler.state_dict(), "rng": rng_state(generator),
                "history": [dict(m) for m in history], "best_epoch": best_epoch, "best_state": best_state,
                "train_seconds": train_seconds, "train_images": train_images}

    higher_is_better = maximize(config.metric)
    for epoch in range(len(history) + 1, tc.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen, lr = 0, schedule.lr
        for x, y in data.train_batches(tc.batch_size, config.data.augment, generator, channels_last):
            lr = schedule.lr  # the lr this step uses (a Python float: no sync)
            loss, n_correct = step(x, y)
            loss_sum += loss * len(y)
            correct += n_correct
            seen += len(y)
        train_loss, train_correct = torch.stack([loss_sum, correct.float()]).tolist()  # the epoch's one sync
        train_seconds += time.perf_counter() - epoch_start
        train_images += seen
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(
                f"training loss is {train_loss} in epoch {epoch}: the run diverged; try a lower "
                f"optimizer.lr (now {config.optimizer.lr:g}) or set train.grad_clip (e.g. 1.0)"
            )

        # -------------------------------------------------------------------------- validation
        val = evaluate(model, data.val_x, data.val_y, data.mean, data.std, tc.eval_batch_size, device,
                       tc.precision, channels_last)
        metrics = {"epoch": float(epoch), "train_loss": train_loss / seen, "train_acc": train_correct / seen,
                   "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr}
        for name, (x_more, y_more) in (also_evaluate or {}).items():
            more = evaluate(model, x_more, y_more, data.mean, data.std, tc.eval_batch_size, device, tc.precision,
                            channels_last)
            metrics[f"{name}_loss"], metrics[f"{name}_acc"] = more["loss"], more["acc"]
        metrics["seconds"] = time.perf_counter() - epoch_start
        history.append(metrics)
        schedule.step_epoch(metrics)
        value, best = metrics[config.metric], (history[best_epoch - 1][config.metric] if best_epoch else None)
        if best is None or (value > best if higher_is_better else value < best):
            best_epoch = epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, metrics)  # may raise (pruning): it propagates
        if on_state is not None:
            on_state(state)

    return TrainResult(
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_metrics=dict(history[best_epoch - 1]) if best_epoch else {},
        history=history,
        seconds=time.perf_counter() - start,
        train_images_per_sec=train_images / train_seconds if train_seconds > 0 else 0.0,
        num_params=num_params,
        flops_per_image=flops,
        best_state=best_state,
        class_names=data.class_names,
        final_state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
    )


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed torch (every device); with `deterministic` (train.deterministic) also Python's and NumPy's global
    generators, and make the kernels repeatable: cuDNN deterministic with its benchmark mode off, and torch's
    deterministic algorithms wherever they exist (warn_only: an operation without one warns instead of failing).

    Both settings are process-wide, so every trial sets them afresh: a deterministic trial does not leave a later
    one of the same worker slow, nor a fast one leave the next deterministic trial unrepeatable. Without it, cuDNN
    benchmarks its kernels per input shape (the shapes are fixed: it picks the fastest once).
    """
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and torch.cuda.is_available()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        repeatable_cublas()  # in time only when no CUDA context exists yet (the worker and retrain call it earlier)
        random.seed(seed)
        np.random.seed(seed % 2**32)


class Step:
    """One optimizer step on a batch: autocast, backward, optional clipping, update, lr schedule.

    Returns the detached loss and the number of correct predictions as device tensors: no host sync. The
    benchmark times exactly this, so what it measures is what a trial runs.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                 config: TrialConfig, device: torch.device) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.device, self.grad_clip = device, config.train.grad_clip
        self.dtype = autocast_dtype(config.train.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)  # bf16 needs none
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        # torch.compile: the graph is cached per architecture in this process, so later trials reuse it.
        self.forward = torch.compile(model) if config.train.compile else model

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with autocast(self.dtype, self.device):
            logits = self.forward(x)
            loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step_batch()
        return loss.detach().float(), (logits.detach().argmax(1) == y).sum()


def rng_state(generator: torch.Generator) -> dict[str, Tensor]:
    """Every random stream training draws from, as uint8 tensors: the data generator, torch's (and CUDA's)."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if generator.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    return state


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
            scaler: torch.amp.GradScaler, generator: torch.Generator) -> None:
    """Load a state from on_state into freshly built training objects; ResumeError when it does not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and generator.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], generator.device)
        epochs, best = len(state["history"]), int(state["best_epoch"])
        if int(state["epoch"]) != epochs or not 0 <= best <= epochs or (best > 0) != bool(state["best_state"]):
            raise ValueError(f"epoch {state['epoch']}, best epoch {best}, {epochs} epochs of history")
        if not isinstance(state["train_seconds"], (int, float)) or not isinstance(state["train_images"], int):
            raise TypeError("train_seconds and train_images must be numbers")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ResumeError(f"the saved training state does not fit: {type(exc).__name__}: {exc}") from None


def train_flops_per_image(model_config: ModelConfig, num_classes: int,
                          shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Forward + backward FLOPs of one training image of `shape` (C, H, W), counted once per architecture on the
    CPU.

    Dropout adds no FLOPs, and a search samples it as a float: the count is keyed on the model without it, or
    every trial would count again (9 ms a trial on smoke.yaml, 0.7% of its trials' time).
    """
    channels, h, w = shape
    return _count_flops(dataclasses.replace(model_config, dropout=0.0, spatial_dropout=0.0), num_classes,
                        (channels, h, w))


@functools.lru_cache(maxsize=64)
def _count_flops(model_config: ModelConfig, num_classes: int, shape: tuple[int, int, int]) -> int:
    """Its throwaway model draws its weights from a forked RNG: the trial's own random stream (dropout) must not
    depend on whether this architecture was counted before in the process, or runs would not repeat."""
    with torch.random.fork_rng(devices=[]):
        model = MODELS.build(model_config.name, None, model_config, num_classes, shape)
        x = torch.zeros(2, *shape)
        with FlopCounterMode(display=False) as counter:
            model(x).sum().backward()
    return int(counter.get_total_flops() // 2)
