"""The one epoch loop: train_group(members, data) trains a group of K >= 1 trials of one structure on shared
batches, and train(config, data) is the group of one. No Optuna here.

A member is one trial: its configuration, its hooks and, when it was cut short before, the running state it goes
on from. `on_start(member)` is called once its model is built and the group's precision resolved
(training/precision.py: `member.precision`); `on_epoch(epoch, metrics)` after each epoch's validation (whatever it
raises, Optuna's TrialPruned for one, ends that member); `on_state(get)` after that, with a function returning the
whole training state (plain values and tensors), which `resume=` takes back so that training goes on after that
epoch with the same weights, optimizer, schedule, random streams and precision. The host syncs once per epoch:
losses and counts are summed on the device.

The members share the structure (space/fusion.py: the architecture, data, augmentation, batch size, epochs,
precision, seed) and may differ in everything the optimizer step, the loss or a dropout mask reads. Each member's
model is built by its builder exactly as it would be alone (the same seed, so the same initial weights). How the
group computes each step is its mode: `sequential`, each member's own forward and backward on the shared batch
(Step), or `grouped`, one fused model for all of them (training/fused.py: a GPU's mode for K > 1). A member leaves
the group the moment its hook raises, it diverges or its optimizer or schedule cannot be built; the rest go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..space.config import TrialConfig, maximize
from ..space.fusion import structure
from .data import DeviceData, prepare
from .device import autocast_dtype, resolve_device
from .device import channels_last as use_channels_last
from .evaluate import evaluate, evaluate_members
from .fused import MODES, GroupStep, default_mode, fuse
from .models import build_model, count_parameters
from .optim import LRSchedule, build_optimizer, build_scheduler
from .precision import resolve as resolve_precision
from .step import Step, restore, restore_rng, rng_state, seed_everything, train_flops_per_image


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite: the trial diverged."""


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int  # 1-based epoch with the best config.metric
    best_metrics: dict[str, float]  # that epoch's metrics
    history: list[dict[str, float]]  # metrics of every epoch, in order
    seconds: float  # wall time from the start until this trial left training
    train_images_per_sec: float  # training images / training seconds (evaluation excluded)
    num_params: int
    flops_per_image: int  # forward + backward FLOPs of one training image (torch's FLOP counter)
    best_state: dict[str, Tensor] = field(repr=False)  # state dict of the best epoch, cloned to the CPU
    class_names: tuple[str, ...] = ()
    final_state: dict[str, Tensor] = field(default_factory=dict, repr=False)  # after the last epoch (retrain)
    precision: str = "fp32"  # what it trained and was evaluated in: train.precision resolved


Hook = Callable[[int, dict[str, float]], None]
StateHook = Callable[[Callable[[], dict[str, Any]]], None]


@dataclass
class Member:
    """One trial of a group: its configuration, hooks and running state in; its result or its error out.

    `on_start(member)` is called once it is built, with `precision` set; `on_leave(member)` the moment it leaves,
    with its result or error set (what either raises propagates). `resume`: a running state from on_state of an
    earlier run of the same configuration.
    """

    config: TrialConfig
    on_epoch: Hook | None = None
    on_state: StateHook | None = None
    on_leave: Callable[[Member], None] | None = None
    resume: dict[str, Any] | None = None
    on_start: Callable[[Member], None] | None = None
    precision: str = ""  # train.precision resolved for the group (training/precision.py), set before on_start;
    # given (bf16, fp16, fp32), it is kept: a retrain repeats the arithmetic its trial trained with
    result: TrainResult | None = None
    error: Exception | None = None
    epochs: int = 0  # epochs finished so far (while it trains: the last one its hooks saw)
    seconds: float = 0.0  # from the group's start until this member left it

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


@dataclass
class _Run:
    """A member's training objects and record while it trains."""

    member: Member
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    step: Step  # the member's own step (the sequential mode); its scaler serves the grouped mode too
    num_params: int
    flops: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Tensor] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_images: int = 0


def train(config: TrialConfig, data: DeviceData | None = None, on_epoch: Hook | None = None, *,
          on_state: StateHook | None = None, resume: dict[str, Any] | None = None,
          also_evaluate: dict[str, tuple[Tensor, Tensor]] | None = None, precision: str = "") -> TrainResult:
    """Train config's model on config's data (loaded here when not given): the group of one. Returns the best
    epoch's metrics and weights and the history; whatever ended it early (a hook's exception, NonFiniteLoss,
    ResumeError, a component's rule) is raised."""
    data = data if data is not None else prepare(config.data, resolve_device(config.train.device))
    member = Member(config, on_epoch, on_state, resume=resume, precision=precision)
    train_group([member], data, propagate=(Exception,), also_evaluate=also_evaluate)
    assert member.result is not None
    return member.result


def train_group(members: Sequence[Member], data: DeviceData, *, propagate: tuple[type[BaseException], ...] = (),
                mode: str | None = None, also_evaluate: dict[str, tuple[Tensor, Tensor]] | None = None,
                check: Callable[[], None] | None = None) -> None:
    """Train every member on `data`, all on each batch before the next; each ends with its `result` or `error`.

    `propagate`: exceptions of a member's hooks or build that end the whole call instead of that member (a lost
    storage). `also_evaluate`: more (uint8 images, labels) sets, measured after every epoch like the validation
    split; their `<name>_loss` and `<name>_acc` join each epoch's metrics and never choose the best epoch.
    `check()` is called after every step, a safe point: what it raises (a stop the caller was asked for) ends the
    call there, with every member's last finished epoch recorded by its hooks. Members
    that resume must all resume after the same epoch. An exception of the computation itself (out of memory)
    ends the call with every member still training left as it was: the caller decides their fate.
    """
    if not members:
        return
    shape = structure(members[0].config)
    if any(structure(m.config) != shape for m in members):
        raise ValueError("train_group: the members differ in more than their free fields (space/fusion.py)")
    resumed = {len(m.resume["history"]) if m.resume else 0 for m in members}
    if len(resumed) > 1:
        raise ValueError("train_group: members that resume must resume after the same epoch")
    start = time.perf_counter()
    config, device = members[0].config, data.train_y.device  # a trial trains on its data's device
    tc = config.train
    mode = mode or default_mode(device, len(members))
    if mode not in MODES:
        raise ValueError(f"train_group: mode {mode!r}; known: {', '.join(MODES)}")
    seed_everything(tc.seed, tc.deterministic)  # weight init, dropout
    generator = torch.Generator(device=device)
    generator.manual_seed(tc.seed)  # shuffling and augmentation, drawn on the device
    channels_last = use_channels_last(device)
    steps_per_epoch = data.steps_per_epoch(tc.batch_size)
    given = next((m.precision for m in members if m.precision), None)  # a retrain's: what its trial trained in
    given = given or next((str(m.resume.get("precision") or "") for m in members if m.resume), None)
    precision = ""  # resolved with the first member's build: what it raises (fp16 on a CPU) fails each member

    def leave(member: Member, result: TrainResult | None = None, error: Exception | None = None) -> None:
        member.result, member.error, member.seconds = result, error, time.perf_counter() - start
        if member.on_leave is not None:
            member.on_leave(member)

    runs: list[_Run] = []
    for member in members:
        try:
            precision = precision or resolve_precision(config, data, device, given).precision
            member.precision = precision
            runs.append(_build(member, data, device, channels_last, steps_per_epoch, precision, seeded=not runs))
            if member.on_start is not None:
                member.on_start(member)
        except propagate:
            raise
        except Exception as exc:  # noqa: BLE001 - a rule of this member's optimizer or schedule: it alone fails
            leave(member, error=exc)
    rng = next((m.resume["rng"] for m in members if m.resume), None)
    if rng is not None:
        restore_rng(rng, generator)

    higher_is_better = maximize(config.metric)
    for epoch in range(max(resumed) + 1, tc.epochs + 1):
        if not runs:
            break
        fused = fuse([r.model for r in runs]) if mode == "grouped" else None
        step = GroupStep(fused, runs, autocast_dtype(precision, device), device) if fused else _Sequential(runs)
        epoch_start = time.perf_counter()
        for module in [fused] if fused is not None else [r.model for r in runs]:
            module.train()
        loss_sum = torch.zeros(len(runs), device=device)
        correct = torch.zeros(len(runs), dtype=torch.long, device=device)
        seen, lrs = 0, [r.schedule.lr for r in runs]
        for x, y in data.train_batches(tc.batch_size, config.data.augment, generator, channels_last):
            lrs = [r.schedule.lr for r in runs]  # the lr each step uses (Python floats: no sync)
            losses, n_correct = step(x, y)
            loss_sum += losses * len(y)
            correct += n_correct
            seen += len(y)
            if check is not None:
                check()
        sums = torch.stack([loss_sum, correct.float()]).tolist()  # the epoch's one sync
        train_seconds = time.perf_counter() - epoch_start
        measured = {"val": _evaluate(fused, runs, data.val_x, data.val_y, data, precision, channels_last)}
        for name, (x_more, y_more) in (also_evaluate or {}).items():
            measured[name] = _evaluate(fused, runs, x_more, y_more, data, precision, channels_last)
        seconds = time.perf_counter() - epoch_start
        live: list[_Run] = []
        for i, run in enumerate(runs):
            member = run.member
            run.train_seconds, run.train_images = run.train_seconds + train_seconds, run.train_images + seen
            try:
                train_loss = sums[0][i]
                if not math.isfinite(train_loss):
                    raise NonFiniteLoss(
                        f"training loss is {train_loss} in epoch {epoch}: the run diverged; try a lower "
                        f"optimizer.lr (now {member.config.optimizer.lr:g}) or set train.grad_clip (e.g. 1.0)")
                metrics = {"epoch": float(epoch), "train_loss": train_loss / seen, "train_acc": sums[1][i] / seen,
                           "val_loss": measured["val"][i]["loss"], "val_acc": measured["val"][i]["acc"],
                           "lr": lrs[i]}
                for name in also_evaluate or {}:
                    metrics[f"{name}_loss"], metrics[f"{name}_acc"] = (measured[name][i]["loss"],
                                                                       measured[name][i]["acc"])
                metrics["seconds"] = seconds
                run.history.append(metrics)
                run.schedule.step_epoch(metrics)
                value = metrics[config.metric]
                best = run.history[run.best_epoch - 1][config.metric] if run.best_epoch else None
                if best is None or (value > best if higher_is_better else value < best):
                    run.best_epoch = epoch
                    run.best_state = _cpu_copy(run.model)
                member.epochs = epoch
                if member.on_epoch is not None:
                    member.on_epoch(epoch, metrics)  # may raise (pruning): the member leaves
                if member.on_state is not None:
                    member.on_state(_state_getter(run, generator))
            except propagate:
                raise
            except Exception as exc:  # noqa: BLE001 - pruned, diverged, or its hook failed: it leaves the group
                leave(member, error=exc)
                continue
            live.append(run)
        runs = live

    for run in runs:  # the members that trained every epoch
        leave(run.member, result=TrainResult(
            epochs_run=len(run.history), best_epoch=run.best_epoch,
            best_metrics=dict(run.history[run.best_epoch - 1]) if run.best_epoch else {},
            history=run.history, seconds=time.perf_counter() - start,
            train_images_per_sec=run.train_images / run.train_seconds if run.train_seconds > 0 else 0.0,
            num_params=run.num_params, flops_per_image=run.flops, best_state=run.best_state,
            class_names=data.class_names, final_state=_cpu_copy(run.model), precision=precision))


def _build(member: Member, data: DeviceData, device: torch.device, channels_last: bool, steps_per_epoch: int,
           precision: str, seeded: bool) -> _Run:
    """A member's model, optimizer, schedule and step, built as for the trial alone (its initial weights drawn from
    the trial's seed), then its running state put back when it resumes."""
    config = member.config
    if not seeded:
        torch.manual_seed(config.train.seed)  # each model's initial weights are those of its trial alone
    model = build_model(config.model, data.num_classes, config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config.optimizer, model.parameters(), device, config)
    schedule = build_scheduler(config.scheduler, optimizer, config.train.epochs, steps_per_epoch, config.metric)
    step = Step(model, optimizer, schedule, config, device, precision)
    flops = train_flops_per_image(config.model, data.num_classes, tuple(data.train_x.shape[1:]))
    run = _Run(member, model, optimizer, schedule, step, count_parameters(model), flops)
    state = member.resume
    if state is not None:  # a retried trial: go on after its last finished epoch
        restore(state, model, optimizer, schedule, step.scaler)
        run.history = [dict(m) for m in state["history"]]
        run.best_epoch, run.best_state = int(state["best_epoch"]), dict(state["best_state"])
        run.train_seconds, run.train_images = float(state["train_seconds"]), int(state["train_images"])
        member.epochs = len(run.history)
    return run


def _evaluate(fused: nn.Module | None, runs: list[_Run], x: Tensor, y: Tensor, data: DeviceData, precision: str,
              channels_last: bool) -> list[dict[str, float]]:
    """Each member's figures on (x, y), in the precision it trains in: one pass of the fused model, or each
    member's own."""
    tc = runs[0].member.config.train
    device = data.train_y.device
    if fused is not None:
        return evaluate_members(fused, x, y, data.mean, data.std, tc.eval_batch_size, device, precision,
                                channels_last)
    return [evaluate(r.model, x, y, data.mean, data.std, tc.eval_batch_size, device, precision, channels_last)
            for r in runs]


def _cpu_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _state_getter(run: _Run, generator: torch.Generator) -> Callable[[], dict[str, Any]]:
    """A member's running state (resume= takes it back), whether it trained alone or in a group."""

    def get() -> dict[str, Any]:
        return {"epoch": len(run.history), "model": {k: v.clone() for k, v in run.model.state_dict().items()},
                "optimizer": run.optimizer.state_dict(), "schedule": run.schedule.state_dict(),
                "scaler": run.step.scaler.state_dict(), "rng": rng_state(generator),
                "precision": run.member.precision,
                "history": [dict(m) for m in run.history], "best_epoch": run.best_epoch,
                "best_state": run.best_state, "train_seconds": run.train_seconds, "train_images": run.train_images}

    return get


class _Sequential:
    """One optimizer step of every member on a batch, member after member, each through its own Step."""

    def __init__(self, runs: list[_Run]) -> None:
        self.steps = [r.step for r in runs]

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if len(self.steps) == 1:
            loss, n = self.steps[0](x, y)
            return loss.reshape(1), n.reshape(1)
        out = [step(x, y) for step in self.steps]
        return torch.stack([loss for loss, _ in out]), torch.stack([n for _, n in out])

