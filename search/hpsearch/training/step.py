"""What one training step is made of, shared by every trial: the optimizer step (Step), the seeding of a trial,
its random streams as a saved state and back (rng_state, restore), and its FLOP count. No Optuna here.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from ..space.config import ModelConfig, TrialConfig
from ..space.registry import MODELS
from .device import autocast, autocast_dtype, repeatable_cublas
from .optim import LRSchedule


class ResumeError(ValueError):
    """A saved training state that does not fit this configuration's model, optimizer or schedule."""


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
                 config: TrialConfig, device: torch.device, precision: str | None = None) -> None:
        """`precision`: what config's train.precision resolved to (training/precision.py); None: config's own."""
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.device, self.grad_clip = device, config.train.grad_clip
        self.dtype = autocast_dtype(precision or config.train.precision, device)
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
            scaler: torch.amp.GradScaler) -> None:
    """Load a saved running state into freshly built training objects; ResumeError when it does not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        epochs, best = len(state["history"]), int(state["best_epoch"])
        if int(state["epoch"]) != epochs or not 0 <= best <= epochs or (best > 0) != bool(state["best_state"]):
            raise ValueError(f"epoch {state['epoch']}, best epoch {best}, {epochs} epochs of history")
        if not isinstance(state["train_seconds"], (int, float)) or not isinstance(state["train_images"], int):
            raise TypeError("train_seconds and train_images must be numbers")
        if not {"generator", "torch"} <= set(state["rng"]):
            raise KeyError("rng")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ResumeError(f"the saved training state does not fit: {type(exc).__name__}: {exc}") from None


def restore_rng(rng: dict[str, Tensor], generator: torch.Generator) -> None:
    """Put back the random streams of rng_state; ResumeError when they do not fit this generator."""
    try:
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and generator.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], generator.device)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ResumeError(f"the saved training state does not fit: {type(exc).__name__}: {exc}") from None


def train_flops_per_image(model_config: ModelConfig, num_classes: int,
                          shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Forward + backward FLOPs of one training image of `shape` (C, H, W), counted once per architecture on the
    CPU.

    Dropout adds no FLOPs, and a search samples it as a float: the count is keyed on the model without it, or
    every trial would count again.
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
