"""Fused trials: K models of one architecture trained as one model, each with its own optimizer, schedule and result.

`train_group(members, data)` is train() for a group: the members share the structure (space/fusion.py: the
architecture, data, augmentation, batch size, epochs, precision, seed) and may differ in everything the optimizer
step, the loss or a dropout mask reads. Each member is an ordinary model, built by its builder exactly as it would
be for a trial alone (the same seed, so the same initial weights); `fuse` makes one module that computes all of them
at once, reading the members' own parameters:

- a convolution becomes one grouped convolution (the members' kernels side by side, groups x K), a linear layer one
  batched matrix product, a BatchNorm one BatchNorm over the K members' channels, whose running statistics the
  members' own buffers view (so each member's state_dict is its own model's, at every step);
- activations and pools work channel by channel already and are shared; dropout draws one mask per member, at the
  member's own rate.

Activations are laid out member-major along the channels: (N, K*C, H, W). The input is every member's, so the first
layer reads it unrepeated. One forward and one backward serve the group; the optimizers then step one by one (each
its own learning rate, momentum, clipping and, under fp16, its own loss scale). The members see the same batches and
augmentations, as trials of one study with one train.seed do: a member's curve equals the same configuration trained
alone up to floating-point order and its dropout draws.

That is the `grouped` mode, made for a GPU, where a small model's step is bound by kernel launches and Python. On
the CPU the fused kernels (grouped convolutions over K times the channels) run slower than the members' own, so
there the group trains `sequential`ly: each member's own forward and backward on the shared batch (train()'s
Step), sharing the batches, their augmentation and the bookkeeping. default_mode picks; the benchmark measures both.

A member leaves the group at once when its hook raises (pruning), when it diverges, or when its optimizer or schedule
cannot be built; the rest go on in a group rebuilt without it. Its running state (on_state) has train()'s format, so
a member cut short resumes as a trial alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..space.config import TrialConfig, maximize
from ..space.fusion import structure
from .data import DeviceData
from .device import autocast, autocast_dtype
from .device import channels_last as use_channels_last
from .evaluate import evaluate, evaluate_members
from .models import build_model, count_parameters
from .optim import LRSchedule, build_optimizer, build_scheduler
from .train import NonFiniteLoss, Step, TrainResult, rng_state, seed_everything, train_flops_per_image

# Modules that act on each channel (or element) alone: one instance serves every member.
_CHANNELWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                nn.Flatten, nn.Identity)


_LAYERS = (nn.Conv2d, nn.Linear)  # the layers that take the unrepeated input, as the first of a model


class FusionError(ValueError):
    """Models that cannot be fused: a module of a kind fuse() does not know, or members whose shapes differ."""


# ------------------------------------------------------------------------------------------------------ fused modules
class _FusedConv2d(nn.Module):
    """K convolutions as one: their kernels concatenated, groups x K on member-major input."""

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = convs[0]
        if first.padding_mode != "zeros":
            raise FusionError(f"a convolution with padding_mode={first.padding_mode!r} cannot be fused")
        self.convs = list(convs)  # a plain list: the members own the parameters, the fused module owns none
        self.k, self.in_channels, self.groups = len(convs), first.in_channels, first.groups
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.cat([c.weight for c in self.convs])
        bias = torch.cat([c.bias for c in self.convs]) if self.convs[0].bias is not None else None  # type: ignore[misc]
        shared = x.shape[1] == self.in_channels and self.k > 1  # the input, the same for every member
        groups = self.groups if shared else self.groups * self.k
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class _FusedBatchNorm2d(nn.Module):
    """K BatchNorms as one over the members' channels; the members' running statistics become views of its own."""

    def __init__(self, norms: Sequence[nn.BatchNorm2d]) -> None:
        super().__init__()
        first = norms[0]
        if not first.track_running_stats or first.momentum is None:
            raise FusionError("a BatchNorm without running statistics or with a cumulative average cannot be fused")
        self.norms = list(norms)
        self.momentum, self.eps, self.affine = first.momentum, first.eps, first.affine
        c = first.num_features
        running_mean = torch.cat([n.running_mean for n in norms])  # type: ignore[misc]
        running_var = torch.cat([n.running_var for n in norms])  # type: ignore[misc]
        batches = torch.stack([n.num_batches_tracked for n in norms])  # type: ignore[misc]
        for i, n in enumerate(norms):  # every update of the fused buffers is the members' own
            n.running_mean = running_mean[i * c : (i + 1) * c]
            n.running_var = running_var[i * c : (i + 1) * c]
            n.num_batches_tracked = batches[i]
        self.running_mean, self.running_var, self.batches = running_mean, running_var, batches

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.batches.add_(1)
        weight = torch.cat([n.weight for n in self.norms]) if self.affine else None
        bias = torch.cat([n.bias for n in self.norms]) if self.affine else None
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, self.training, self.momentum,
                            self.eps)


class _FusedLinear(nn.Module):
    """K linear layers as one batched matrix product over member-major features."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.linears = list(linears)
        self.k, self.in_features = len(linears), linears[0].in_features

    def forward(self, x: Tensor) -> Tensor:
        has_bias = self.linears[0].bias is not None
        if x.shape[-1] == self.in_features and self.k > 1:  # the input itself (an mlp's first layer)
            weight = torch.cat([m.weight for m in self.linears])
            return F.linear(x, weight, torch.cat([m.bias for m in self.linears]) if has_bias else None)
        n = x.shape[0]
        weight = torch.stack([m.weight for m in self.linears])  # (K, out, in)
        per_member = x.reshape(n, self.k, self.in_features).transpose(0, 1)  # (K, N, in)
        if has_bias:
            bias = torch.stack([m.bias for m in self.linears]).unsqueeze(1)  # type: ignore[misc]
            out = torch.baddbmm(bias, per_member, weight.transpose(1, 2))
        else:
            out = torch.bmm(per_member, weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(n, -1)  # (N, K*out)


class _FusedDropout(nn.Module):
    """Dropout (or Dropout2d: whole channels) with each member's own rate, one mask per member."""

    def __init__(self, rates: Sequence[float], channels: bool) -> None:
        super().__init__()
        self.rates, self.channels = [float(p) for p in rates], channels
        self.keep: Tensor | None = None  # 1 - rate per member, made once on the activations' device

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not any(self.rates):
            return x
        k, n = len(self.rates), x.shape[0]
        if self.keep is None or self.keep.device != x.device or self.keep.dtype != x.dtype:
            self.keep = torch.tensor([1.0 - p for p in self.rates], device=x.device, dtype=x.dtype)
        keep = self.keep
        per_member = x.reshape(n, k, x.shape[1] // k, *x.shape[2:])
        shape = (n, k, per_member.shape[2], *([1] * (x.dim() - 2))) if self.channels else per_member.shape
        view = (1, k, *([1] * (per_member.dim() - 2)))
        mask = torch.rand(shape, device=x.device, dtype=x.dtype) < keep.view(view)
        return (per_member * mask / keep.view(view)).reshape(x.shape)


class FusedModel(nn.Module):
    """The members' models as one: (N, C, H, W) images -> (N, K, classes) logits, member i's at [:, i]."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.k = len(models)
        self.body = _fuse(list(models))
        # The first layer to run reads the images themselves when it is a convolution or a linear layer (their
        # kernels side by side); anything else (an mlp's dropout) needs a copy per member.
        first = next((m for m in models[0].modules() if isinstance(m, (*_LAYERS, nn.Dropout, nn.Dropout2d))), None)
        self.repeat = self.k > 1 and not isinstance(first, _LAYERS)

    def forward(self, x: Tensor) -> Tensor:
        if self.repeat:
            x = x.repeat(1, self.k, *([1] * (x.dim() - 2)))
        out = self.body(x)
        return out.reshape(out.shape[0], self.k, -1)


def fuse(models: Sequence[nn.Module]) -> FusedModel:
    """One module computing every model of `models`, all of one architecture (FusionError when they are not)."""
    if not models:
        raise FusionError("nothing to fuse")
    return FusedModel(models)


def _fuse(models: list[nn.Module]) -> nn.Module:
    first = models[0]
    kind = type(first)
    if any(type(m) is not kind for m in models):
        raise FusionError(f"the members' models differ: {sorted({type(m).__name__ for m in models})}")
    if kind is nn.Conv2d:
        return _FusedConv2d(_same_shapes(models))  # type: ignore[arg-type]
    if kind is nn.BatchNorm2d:
        return _FusedBatchNorm2d(_same_shapes(models))  # type: ignore[arg-type]
    if kind is nn.Linear:
        return _FusedLinear(_same_shapes(models))  # type: ignore[arg-type]
    if kind in (nn.Dropout, nn.Dropout2d):
        return _FusedDropout([float(m.p) for m in models], channels=kind is nn.Dropout2d)  # type: ignore[arg-type,misc]
    if kind in _CHANNELWISE:
        return first
    children = [dict(m.named_children()) for m in models]
    if not children[0] or any(list(c) != list(children[0]) for c in children):
        raise FusionError(f"cannot fuse a {kind.__name__}: fuse() knows convolutions, BatchNorm2d, linear "
                          "layers, dropout, activations, pools and containers of them")
    if any(dict(m.named_parameters(recurse=False)) or dict(m.named_buffers(recurse=False)) for m in models):
        raise FusionError(f"cannot fuse a {kind.__name__} with parameters of its own")
    # A container (Sequential, a ResNet, a residual block): its own class and plain attributes (a block's stride),
    # a module's fresh internals, and fused children.
    fused = kind.__new__(kind)
    nn.Module.__init__(fused)
    for key, value in vars(first).items():
        if key not in vars(fused):
            setattr(fused, key, value)
    for name in children[0]:
        fused.add_module(name, _fuse([c[name] for c in children]))
    return fused


def _same_shapes(models: list[nn.Module]) -> list[nn.Module]:
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise FusionError(f"the members' {type(models[0]).__name__} layers have different shapes")
    return models


# ---------------------------------------------------------------------------------------------------- the group
@dataclass
class Member:
    """One trial of a group: its configuration and hooks in, its result or its error out.

    `on_epoch(epoch, metrics)` and `on_state(get)` are train()'s hooks. When the hook raises, the member leaves the
    group with that exception as its `error` (the exceptions in train_group's `propagate` stop the whole group).
    `on_leave(member)` is called the moment it leaves, with its result or error set (what it raises propagates).
    """

    config: TrialConfig
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    on_state: Callable[[Callable[[], dict[str, Any]]], None] | None = None
    on_leave: Callable[[Member], None] | None = None
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
    scaler: torch.amp.GradScaler
    num_params: int
    flops: int
    step: Step  # train()'s own step for this member (the sequential mode)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Tensor] = field(default_factory=dict)


MODES = ("grouped", "sequential")


def default_mode(device: torch.device) -> str:
    """How a group computes on this device: one fused model on a GPU (grouped kernels, fewer launches); member after
    member on each shared batch on the CPU, where the fused kernels run slower than the members' own
    (docs/BENCHMARKS.md: fused trials)."""
    return "grouped" if device.type == "cuda" else "sequential"


def train_group(members: Sequence[Member], data: DeviceData, *, propagate: tuple[type[BaseException], ...] = (),
                mode: str | None = None) -> None:
    """Train every member on `data`, all on each batch before the next; each ends with its `result` or its `error`.

    `mode` (default: default_mode): `grouped`, one fused forward and backward for the group (fuse()); `sequential`,
    each member's own forward and backward on the shared batch. Either way the members share the batches, their
    augmentation and the epoch's bookkeeping, and each keeps its own optimizer, schedule and hooks.

    The members must share their structure (space/fusion.structure), else ValueError before anything runs. An
    exception of the fused computation itself (out of memory) ends the call with every member still training left
    as it was: the caller decides their fate.
    """
    if not members:
        return
    shape = structure(members[0].config)
    if any(structure(m.config) != shape for m in members):
        raise ValueError("train_group: the members differ in more than their free fields (space/fusion.py)")
    start = time.perf_counter()
    config = members[0].config
    tc = config.train
    device = data.train_y.device
    mode = mode or default_mode(device)
    if mode not in MODES:
        raise ValueError(f"train_group: mode {mode!r}; known: {', '.join(MODES)}")
    seed_everything(tc.seed, tc.deterministic)
    generator = torch.Generator(device=device)
    generator.manual_seed(tc.seed)  # shuffling and augmentation: the same stream as each member's trial alone
    channels_last = use_channels_last(device)
    steps_per_epoch = data.steps_per_epoch(tc.batch_size)
    image_shape = tuple(data.train_x.shape[1:])

    runs: list[_Run] = []
    for member in members:
        try:
            torch.manual_seed(tc.seed)  # each model's initial weights are those of its trial alone
            model = build_model(member.config.model, data.num_classes, member.config).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = build_optimizer(member.config.optimizer, model.parameters(), device, member.config)
            schedule = build_scheduler(member.config.scheduler, optimizer, tc.epochs, steps_per_epoch,
                                       member.config.metric)
        except Exception as exc:  # noqa: BLE001 - a rule of this member's optimizer or schedule: it alone fails
            _leave(member, start, error=exc)
            continue
        alone = Step(model, optimizer, schedule, member.config, device)  # the sequential mode's step; its scaler
        flops = train_flops_per_image(member.config.model, data.num_classes, image_shape)  # type: ignore[arg-type]
        runs.append(_Run(member, model, optimizer, schedule, alone.scaler, count_parameters(model), flops, alone))

    dtype = autocast_dtype(tc.precision, device)
    higher_is_better = maximize(config.metric)
    train_seconds, train_images = 0.0, 0
    for epoch in range(1, tc.epochs + 1):
        if not runs:
            break
        fused = fuse([r.model for r in runs]) if mode == "grouped" else None
        step = _GroupStep(fused, runs, dtype, device) if fused is not None else _SequentialStep(runs)
        epoch_start = time.perf_counter()
        for module in [fused] if fused is not None else [r.model for r in runs]:
            module.train()
        loss_sum = torch.zeros(len(runs), device=device)
        correct = torch.zeros(len(runs), dtype=torch.long, device=device)
        seen, lrs = 0, [r.schedule.lr for r in runs]
        for x, y in data.train_batches(tc.batch_size, config.data.augment, generator, channels_last):
            lrs = [r.schedule.lr for r in runs]
            losses, n_correct = step(x, y)
            loss_sum += losses * len(y)
            correct += n_correct
            seen += len(y)
        sums = torch.stack([loss_sum, correct.float()]).tolist()  # the epoch's one sync
        train_seconds += time.perf_counter() - epoch_start
        train_images += seen
        if fused is not None:
            vals = evaluate_members(fused, data.val_x, data.val_y, data.mean, data.std, tc.eval_batch_size, device,
                                    tc.precision, channels_last)
        else:
            vals = [evaluate(r.model, data.val_x, data.val_y, data.mean, data.std, tc.eval_batch_size, device,
                             tc.precision, channels_last) for r in runs]
        seconds = time.perf_counter() - epoch_start
        live: list[_Run] = []
        for i, run in enumerate(runs):
            member = run.member
            train_loss = sums[0][i]
            try:
                if not math.isfinite(train_loss):
                    raise NonFiniteLoss(
                        f"training loss is {train_loss} in epoch {epoch}: the run diverged; try a lower "
                        f"optimizer.lr (now {member.config.optimizer.lr:g}) or set train.grad_clip (e.g. 1.0)")
                metrics = {"epoch": float(epoch), "train_loss": train_loss / seen, "train_acc": sums[1][i] / seen,
                           "val_loss": vals[i]["loss"], "val_acc": vals[i]["acc"], "lr": lrs[i],
                           "seconds": seconds}
                run.history.append(metrics)
                run.schedule.step_epoch(metrics)
                value = metrics[config.metric]
                best = run.history[run.best_epoch - 1][config.metric] if run.best_epoch else None
                if best is None or (value > best if higher_is_better else value < best):
                    run.best_epoch = epoch
                    run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
                member.epochs = epoch
                if member.on_epoch is not None:
                    member.on_epoch(epoch, metrics)
                if member.on_state is not None:
                    member.on_state(_state_getter(run, generator, train_seconds, train_images))
            except propagate:
                raise
            except Exception as exc:  # noqa: BLE001 - pruned, diverged, or its hook failed: it leaves the group
                _leave(member, start, error=exc)
                continue
            live.append(run)
        runs = live

    for run in runs:  # the members that trained every epoch
        seconds = time.perf_counter() - start
        _leave(run.member, start, result=TrainResult(
            epochs_run=len(run.history), best_epoch=run.best_epoch,
            best_metrics=dict(run.history[run.best_epoch - 1]) if run.best_epoch else {},
            history=run.history, seconds=seconds,
            train_images_per_sec=train_images / train_seconds if train_seconds > 0 else 0.0,
            num_params=run.num_params, flops_per_image=run.flops, best_state=run.best_state,
            class_names=data.class_names))


def _leave(member: Member, start: float, result: TrainResult | None = None, error: Exception | None = None) -> None:
    member.result, member.error, member.seconds = result, error, time.perf_counter() - start
    if member.on_leave is not None:
        member.on_leave(member)


def _state_getter(run: _Run, generator: torch.Generator, train_seconds: float,
                  train_images: int) -> Callable[[], dict[str, Any]]:
    """A member's running state in train()'s format (train(resume=...) takes it), so it resumes as a trial alone."""

    def get() -> dict[str, Any]:
        return {"epoch": len(run.history), "model": {k: v.clone() for k, v in run.model.state_dict().items()},
                "optimizer": run.optimizer.state_dict(), "schedule": run.schedule.state_dict(),
                "scaler": run.scaler.state_dict(), "rng": rng_state(generator),
                "history": [dict(m) for m in run.history], "best_epoch": run.best_epoch,
                "best_state": run.best_state, "train_seconds": train_seconds, "train_images": train_images}

    return get


class _GroupStep:
    """One optimizer step of every member on a batch: one fused forward and backward, then each member's update.

    Each member's loss is its own mean cross-entropy (with its own label smoothing); their sum is backpropagated, and
    as the members share no parameter each gradient is that of its member's loss alone.
    """

    def __init__(self, fused: FusedModel, runs: list[_Run], dtype: torch.dtype | None, device: torch.device) -> None:
        self.fused, self.runs, self.dtype, self.device = fused, runs, dtype, device
        self.smoothing = torch.tensor([r.member.config.train.label_smoothing for r in runs], device=device)
        self.scaled = any(r.scaler.is_enabled() for r in runs)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for run in self.runs:
            run.optimizer.zero_grad(set_to_none=True)
        with autocast(self.dtype, self.device):
            logits = self.fused(x)  # (N, K, classes)
        losses = member_losses(logits.float(), y, self.smoothing)
        if self.scaled:
            total = torch.stack([r.scaler.scale(losses[i]) for i, r in enumerate(self.runs)]).sum()
        else:
            total = losses.sum()
        total.backward()
        for run in self.runs:
            clip = run.member.config.train.grad_clip
            if clip is not None:
                run.scaler.unscale_(run.optimizer)
                nn.utils.clip_grad_norm_(run.model.parameters(), clip)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.schedule.step_batch()
        return losses.detach(), (logits.detach().argmax(-1) == y[:, None]).sum(0)


class _SequentialStep:
    """One optimizer step of every member on a batch, member after member, each through train()'s own Step."""

    def __init__(self, runs: list[_Run]) -> None:
        self.runs = runs

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = [run.step(x, y) for run in self.runs]
        return torch.stack([loss for loss, _ in out]), torch.stack([n for _, n in out])


def member_losses(logits: Tensor, y: Tensor, smoothing: Tensor) -> Tensor:
    """(N, K, classes) logits -> the K members' mean cross-entropy, each with its label smoothing (torch's formula:
    (1 - s) * the target's negative log-likelihood + s * the mean over the classes)."""
    log_p = F.log_softmax(logits, dim=-1)
    target = -log_p.gather(-1, y[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(-1)  # (N, K)
    uniform = -log_p.mean(-1)
    return ((1 - smoothing) * target + smoothing * uniform).mean(0)
