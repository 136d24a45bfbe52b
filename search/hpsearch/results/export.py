"""Export: a checkpoint as TorchScript or a torch.export program, which run with torch alone.

Both take float NCHW images in 0..1, normalise them inside (the training split's mean and std, as every trial does)
and carry hpsearch.json (class names, config, metric) beside the graph, as an extra file of the archive (where
training/checkpoint.exported_kind finds it to tell the file's format). torch.export writes and reads it through its
public `extra_files`; TorchScript offers only torch.jit's `_extra_files`, so study/compat.save_torchscript and
load_torchscript do it there, each with a public fallback.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..space import TrialConfig
from ..space.registry import input_shape
from ..study.compat import load_torchscript, save_torchscript
from ..training.checkpoint import (
    FORMAT,
    METADATA_FILE,
    VERSION,
    Checkpoint,
    CheckpointError,
    channels_of,
    exported_kind,
    load_checkpoint,
    load_payload,
)
from ..training.data import standardize
from .files import serialized, write_file, write_torch

EXPORT_FORMATS = ("checkpoint", "torchscript", "exported")  # hpsearch's own file | torch.jit | torch.export


class Classifier(nn.Module):
    """The model with its input normalisation inside: float NCHW images in 0..1 in, class logits out."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.flatten().clone())
        self.register_buffer("std", std.flatten().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(standardize(x, self.mean, self.std))


def metadata(ckpt: Checkpoint) -> dict[str, Any]:
    """What an exported file says about itself (stored beside the graph as hpsearch.json)."""
    channels, h, w = input_shape(ckpt.config)
    pixels = {3: "RGB", 1: "grayscale"}.get(channels, f"{channels}-channel")
    return {"format": FORMAT, "version": VERSION, "input": f"float32 NCHW images of {h}x{w} {pixels} pixels in 0..1 "
            f"(shape (N, {channels}, {h}, {w}))",
            "output": "class logits", "class_names": list(ckpt.class_names), "metric": ckpt.metric,
            "value": ckpt.value, "trial": ckpt.trial, "study": ckpt.study, "epoch": ckpt.epoch,
            "mean": ckpt.mean.tolist(), "std": ckpt.std.tolist(), "config": ckpt.config.to_dict()}


def export(source: str | Path, out: str | Path, fmt: str = "checkpoint") -> Path:
    """Write the checkpoint at `source` to `out` as hpsearch's own file, TorchScript or a torch.export program.

    TorchScript (torch.jit.load) and exported (torch.export.load(...).module()) files need only torch: they take
    float images in 0..1, normalise them inside, and carry hpsearch.json (class names, config, metric). The file is
    made in memory and written whole (results/files.py): a full disk is DiskFull, and leaves no partial file.
    """
    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    if fmt == "checkpoint":
        payload = load_payload(source)
        load_checkpoint(source)  # the weights must build their model before we hand the file on
        return write_torch(out, payload)
    ckpt = load_checkpoint(source)
    net = Classifier(ckpt.model, ckpt.mean, ckpt.std).eval()
    example = torch.rand(2, *input_shape(ckpt.config))  # the images of the data set it was trained on
    extra = {METADATA_FILE: json.dumps(metadata(ckpt))}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices: the user asked for this format by name
        if fmt == "torchscript":
            scripted = torch.jit.trace(net, example)
            return write_file(out, serialized(lambda f: save_torchscript(scripted, f, extra)))
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
        return write_file(out, serialized(lambda f: torch.export.save(program, f, extra_files=extra)))


class Frozen(nn.Module):
    """An exported model as a module to evaluate: it was exported in eval mode, and train()/eval() leave it so
    (torch.export's module refuses eval())."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> Frozen:
        self.training = mode  # not passed on: the graph's dropout and BatchNorm were fixed at export
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]


def load_any(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """A checkpoint file (load_checkpoint), or a TorchScript or torch.export file that `export` wrote: its model
    with the normalisation inside, and what its hpsearch.json says (config, class names, metric), so that
    `hpsearch evaluate` measures an exported model as it measures a checkpoint."""
    path = Path(path)
    kind = exported_kind(path) if path.is_file() else None
    if kind is None:
        return load_checkpoint(path, device)
    extra: dict[str, Any] = {METADATA_FILE: ""}
    model: nn.Module
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the file is in that format already
            if kind == "torchscript":
                model, extra = load_torchscript(path, [METADATA_FILE])
            else:
                model = torch.export.load(str(path), extra_files=extra).module()
        meta = json.loads(extra[METADATA_FILE])
        config = TrialConfig.from_dict(meta["config"])
        names = tuple(meta["class_names"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path} as an exported hpsearch model ({first}); export it again") from None
    # The model normalises inside: the evaluation feeds it images in 0..1 (mean 0, std 1 leaves them so), one
    # value a channel, so that a grayscale model's input keeps its one channel.
    channels = channels_of(config, str(path))
    return Checkpoint(model=Frozen(model).to(torch.device(device)), config=config, metric=str(meta.get("metric")),
                      value=float(meta.get("value") or 0.0), trial=meta.get("trial"), study=meta.get("study"),
                      epoch=meta.get("epoch"), class_names=names, mean=torch.zeros(channels),
                      std=torch.ones(channels),
                      payload={**meta, "format": kind})

