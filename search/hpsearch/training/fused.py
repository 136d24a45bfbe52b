"""Fused models: K models of one architecture computed as one module, for a group of trials in the `grouped` mode.

`fuse(models)` makes one module that computes every member's model at once, reading the members' own parameters:

- a convolution becomes one grouped convolution (the members' kernels side by side, groups x K), a linear layer one
  batched matrix product, a BatchNorm one BatchNorm over the K members' channels, whose running statistics the
  members' own buffers view (so each member's state_dict is its own model's, at every step);
- activations and pools work channel by channel already and are shared; dropout draws one mask per member, at the
  member's own rate.

Activations are laid out member-major along the channels: (N, K*C, H, W). The input is every member's, so the first
layer reads it unrepeated. One forward and one backward serve the group (GroupStep); the optimizers then step one by
one (each its own learning rate, momentum, clipping and, under fp16, its own loss scale).

That is the `grouped` mode, made for a GPU, where a small model's step is bound by kernel launches and Python. On
the CPU the fused kernels (grouped convolutions over K times the channels) run slower than the members' own, so
there a group trains `sequential`ly: each member's own Step on the shared batch. default_mode picks; the epoch loop
around either is training/train.py's, the one every trial goes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .device import autocast

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


# ---------------------------------------------------------------------------------------------------- the mode
MODES = ("grouped", "sequential")


def default_mode(device: torch.device, k: int) -> str:
    """How a group of k computes on this device: one fused model on a GPU for more than one member (grouped
    kernels, fewer launches); otherwise each member's own step on each shared batch, the CPU's way, where the fused
    kernels run slower than the members' own (docs/BENCHMARKS.md: fused trials)."""
    return "grouped" if device.type == "cuda" and k > 1 else "sequential"


class GroupStep:
    """One optimizer step of every member on a batch: one fused forward and backward, then each member's update.

    Each member's loss is its own mean cross-entropy (with its own label smoothing); their sum is backpropagated, and
    as the members share no parameter each gradient is that of its member's loss alone.
    """

    def __init__(self, fused: FusedModel, runs: Sequence[Any], dtype: torch.dtype | None, device: torch.device) -> None:
        self.fused, self.runs, self.dtype, self.device = fused, runs, dtype, device
        self.smoothing = torch.tensor([r.member.config.train.label_smoothing for r in runs], device=device)
        self.scaled = any(r.step.scaler.is_enabled() for r in runs)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for run in self.runs:
            run.optimizer.zero_grad(set_to_none=True)
        with autocast(self.dtype, self.device):
            logits = self.fused(x)  # (N, K, classes)
        losses = member_losses(logits.float(), y, self.smoothing)
        if self.scaled:
            total = torch.stack([r.step.scaler.scale(losses[i]) for i, r in enumerate(self.runs)]).sum()
        else:
            total = losses.sum()
        total.backward()
        for run in self.runs:
            clip = run.member.config.train.grad_clip
            if clip is not None:
                run.step.scaler.unscale_(run.optimizer)
                nn.utils.clip_grad_norm_(run.model.parameters(), clip)
            run.step.scaler.step(run.optimizer)
            run.step.scaler.update()
            run.schedule.step_batch()
        return losses.detach(), (logits.detach().argmax(-1) == y[:, None]).sum(0)


def member_losses(logits: Tensor, y: Tensor, smoothing: Tensor) -> Tensor:
    """(N, K, classes) logits -> the K members' mean cross-entropy, each with its label smoothing (torch's formula:
    (1 - s) * the target's negative log-likelihood + s * the mean over the classes)."""
    log_p = F.log_softmax(logits, dim=-1)
    target = -log_p.gather(-1, y[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(-1)  # (N, K)
    uniform = -log_p.mean(-1)
    return ((1 - smoothing) * target + smoothing * uniform).mean(0)
