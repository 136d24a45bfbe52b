"""The one evaluation loop: top-1, top-5, loss (and per-class counts) of a model on uint8 images, for the validation
split of every epoch and for the test set alike; evaluate_members is the same loop for a fused group's model (its
logits (N, K, classes): K members' figures at once)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .data import normalize
from .device import autocast, autocast_dtype


def evaluate(model: nn.Module, x_uint8: Tensor, y: Tensor, mean: Tensor, std: Tensor, batch_size: int,
             device: torch.device, precision: str, channels_last: bool,
             num_classes: int | None = None) -> dict[str, Any]:
    """{"acc": top-1, "top5": top-5 (fractions 0..1), "loss": mean cross-entropy} of uint8 NCHW images; with
    `num_classes`, also "per_class": each class's count of correct top-1 predictions, in label order.

    Inference mode, large batches, sums kept on the device and one host sync; leaves the model in eval mode.
    """
    if len(y) == 0:
        raise ValueError("evaluate: no images")
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top-1 correct, top-5 correct
    right = torch.zeros(num_classes or 0, dtype=torch.long, device=device)
    with torch.inference_mode(), autocast(dtype, device):
        for i in range(0, len(y), batch_size):
            xb = x_uint8[i : i + batch_size].to(device, non_blocking=True)
            xb = normalize(xb, mean, std, channels_last)
            yb = y[i : i + batch_size].to(device, non_blocking=True)
            logits = model(xb).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            loss = F.cross_entropy(logits, yb, reduction="sum")
            hit = top[:, 0] == yb
            top1, top5 = hit.sum(), (top == yb[:, None]).any(1).sum()
            sums += torch.stack([loss, top1.float(), top5.float()]).double()
            if num_classes:
                right += torch.bincount(yb[hit], minlength=num_classes)
    loss, top1, top5 = (sums / len(y)).tolist()  # the one host sync
    out: dict[str, Any] = {"acc": top1, "loss": loss, "top5": top5}
    if num_classes:
        out["per_class"] = right.tolist()
    return out


def evaluate_members(model: nn.Module, x_uint8: Tensor, y: Tensor, mean: Tensor, std: Tensor, batch_size: int,
                     device: torch.device, precision: str, channels_last: bool) -> list[dict[str, float]]:
    """evaluate() for a model whose logits are (N, K, classes): one {"acc", "top5", "loss"} per member, in order,
    with one host sync for all of them."""
    if len(y) == 0:
        raise ValueError("evaluate: no images")
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    model.eval()
    sums: Tensor | None = None  # (3, K): loss, top-1 correct, top-5 correct
    with torch.inference_mode(), autocast(dtype, device):
        for i in range(0, len(y), batch_size):
            xb = normalize(x_uint8[i : i + batch_size].to(device, non_blocking=True), mean, std, channels_last)
            yb = y[i : i + batch_size].to(device, non_blocking=True)
            logits = model(xb).float()  # (n, K, classes)
            n, k, classes = logits.shape
            top = logits.topk(min(5, classes), dim=-1).indices  # (n, K, 5)
            loss = F.cross_entropy(logits.reshape(n * k, classes), yb.repeat_interleave(k), reduction="none")
            hit = top == yb[:, None, None]
            batch = torch.stack([loss.view(n, k).sum(0), hit[..., 0].sum(0).float(), hit.any(-1).sum(0).float()])
            sums = batch.double() if sums is None else sums + batch.double()
    assert sums is not None
    loss, top1, top5 = (sums / len(y)).tolist()  # the one host sync
    return [{"acc": a, "loss": lo, "top5": t} for lo, a, t in zip(loss, top1, top5, strict=True)]
