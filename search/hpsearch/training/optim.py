"""Optimizer and learning-rate schedule builders by name.

Schedules run per optimizer step (epochs are converted to steps), so a cosine is smooth within epochs and
equals torch's per-epoch schedule at every epoch boundary. A warm-up (warmup_epochs > 0) is prepended: the lr
rises linearly to its peak and the main schedule starts counting when the warm-up ends. Only `plateau` decides
per epoch, from the validation metric.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from ..space.config import OptimizerConfig, SchedulerConfig, TrialConfig, maximize
from ..space.registry import OPTIMIZERS, SCHEDULERS

_WARMUP_START = 1e-3  # warm-up starts at lr * this (LinearLR needs a factor > 0): "from 0" up to rounding


# ------------------------------------------------------------------------------------------------- optimizers
def build_optimizer(cfg: OptimizerConfig, params: Iterable[Any], device: torch.device,
                    config: TrialConfig | None = None) -> Optimizer:
    """The optimizer named by cfg.name with only the fields its registry entry reads. The entry's rules are checked
    first (registry.ConfigError) against `config`, the whole trial, when given.

    SGD, Adam and AdamW are fused on CUDA and on the CPU: one kernel updates every parameter, where torch's default
    runs several per parameter (on a small net the update costs as much as the backward pass). A torch without the
    fused kernels for the device refuses them when the optimizer is made: then its default is used.
    """
    cls, kwargs = OPTIMIZERS.build(cfg.name, config or TrialConfig(optimizer=cfg), cfg)
    params = list(params)
    if (torch.device(device).type in ("cuda", "cpu") and cls in _FUSABLE
            and "fused" in inspect.signature(cls).parameters):
        try:
            return cls(params, **kwargs, fused=True)
        except RuntimeError:  # "fused=True requires all the params to be ... of supported devices"
            pass
    return cls(params, **kwargs)


@OPTIMIZERS.builder("sgd")
def _sgd(c: OptimizerConfig) -> tuple[type[Optimizer], dict[str, Any]]:
    kwargs = dict(lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay)
    return torch.optim.SGD, kwargs


@OPTIMIZERS.builder("adam")
def _adam(c: OptimizerConfig) -> tuple[type[Optimizer], dict[str, Any]]:
    return torch.optim.Adam, dict(lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)


@OPTIMIZERS.builder("adamw")
def _adamw(c: OptimizerConfig) -> tuple[type[Optimizer], dict[str, Any]]:
    return torch.optim.AdamW, dict(lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)


@OPTIMIZERS.builder("rmsprop")
def _rmsprop(c: OptimizerConfig) -> tuple[type[Optimizer], dict[str, Any]]:
    kwargs = dict(lr=c.lr, momentum=c.momentum, alpha=c.alpha, eps=c.eps, weight_decay=c.weight_decay)
    return torch.optim.RMSprop, kwargs


@OPTIMIZERS.builder("adagrad")
def _adagrad(c: OptimizerConfig) -> tuple[type[Optimizer], dict[str, Any]]:
    return torch.optim.Adagrad, dict(lr=c.lr, eps=c.eps, weight_decay=c.weight_decay)


_FUSABLE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


# -------------------------------------------------------------------------------------------------- schedules
class LRSchedule:
    """Drives the lr: step_batch() after every optimizer step; step_epoch(metrics) after each validation."""

    def __init__(
        self,
        optimizer: Optimizer,
        per_step: sched.LRScheduler | None,
        total_steps: int,
        plateau: sched.ReduceLROnPlateau | None = None,
        metric: str = "val_acc",
        warmup_steps: int = 0,
    ) -> None:
        self.optimizer = optimizer
        self.per_step = per_step
        self.total_steps = total_steps  # per_step steps at most this often (OneCycleLR raises beyond)
        self.plateau = plateau
        self.metric = metric
        self.warmup_steps = warmup_steps
        self.steps = 0

    @property
    def lr(self) -> float:
        """The lr the next optimizer step uses (of the first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step_batch(self) -> None:
        self.steps += 1
        if self.per_step is not None and self.steps <= self.total_steps:
            self.per_step.step()

    def step_epoch(self, metrics: dict[str, float]) -> None:
        if self.plateau is not None and self.steps >= self.warmup_steps:  # decays only after the warm-up
            self.plateau.step(metrics[self.metric])

    def state_dict(self) -> dict[str, Any]:
        """Where the schedule stands (plain values only), to resume a trial; the optimizer saves its own."""
        return {"steps": self.steps,
                "per_step": self.per_step.state_dict() if self.per_step is not None else None,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        if self.per_step is not None and state["per_step"] is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])


def build_scheduler(
    cfg: SchedulerConfig, optimizer: Optimizer, epochs: int, steps_per_epoch: int, metric: str
) -> LRSchedule:
    """The lr schedule named by cfg.name over epochs * steps_per_epoch optimizer steps (its entry's rules first)."""
    spe = max(1, steps_per_epoch)
    total = max(1, epochs * spe)
    warm = 0 if cfg.name == "onecycle" else min(round(cfg.warmup_epochs * spe), total)  # onecycle has its own
    lr = float(optimizer.param_groups[0]["lr"])
    main = SCHEDULERS.build(cfg.name, TrialConfig(scheduler=cfg), cfg, optimizer, lr, spe, max(1, total - warm))
    if cfg.name == "plateau":  # its main schedule is constant; ReduceLROnPlateau follows the metric per epoch
        mode: Literal["min", "max"] = "max" if maximize(metric) else "min"
        plateau = sched.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=lr * cfg.min_lr_factor
        )
        return LRSchedule(optimizer, _warmup(optimizer, warm) if warm else None, warm, plateau, metric, warm)
    per_step = main
    if warm:
        per_step = _warmup(optimizer, warm)
        if main is not None:
            per_step = sched.SequentialLR(optimizer, [per_step, main], milestones=[warm])
    return LRSchedule(optimizer, per_step, total)


def _warmup(optimizer: Optimizer, steps: int) -> sched.LRScheduler:
    return sched.LinearLR(optimizer, start_factor=_WARMUP_START, end_factor=1.0, total_iters=steps)


# Each name's builder is its main schedule, from (cfg, optimizer, peak lr, steps per epoch, steps after the
# warm-up); None keeps the lr constant.


@SCHEDULERS.builder("step")
def _step(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> sched.LRScheduler:
    return sched.StepLR(o, step_size=max(1, c.step_size * spe), gamma=c.gamma)


@SCHEDULERS.builder("multistep")
def _multistep(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> sched.LRScheduler:
    return sched.MultiStepLR(o, milestones=[m * spe for m in c.milestones], gamma=c.gamma)


@SCHEDULERS.builder("exponential")
def _exponential(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> sched.LRScheduler:
    return sched.ExponentialLR(o, gamma=c.gamma ** (1.0 / spe))  # gamma per epoch


@SCHEDULERS.builder("cosine")
def _cosine(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> sched.LRScheduler:
    return sched.CosineAnnealingLR(o, T_max=n, eta_min=lr * c.min_lr_factor)


@SCHEDULERS.builder("linear")
def _linear(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> sched.LRScheduler:
    return sched.LinearLR(o, start_factor=1.0, end_factor=c.end_factor, total_iters=n)


@SCHEDULERS.builder("onecycle")
def _onecycle(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> sched.LRScheduler:
    # cycle_momentum off: the optimizer keeps its configured momentum/betas (and adagrad, with neither, works)
    return sched.OneCycleLR(
        o, max_lr=lr, total_steps=n, pct_start=c.pct_start, div_factor=c.div_factor,
        final_div_factor=c.final_div_factor, cycle_momentum=False,
    )  # fmt: skip


@SCHEDULERS.builder("none")
def _constant(c: SchedulerConfig, o: Optimizer, lr: float, spe: int, n: int) -> None:
    return None


SCHEDULERS.builder("plateau")(_constant)  # its ReduceLROnPlateau is built in build_scheduler
