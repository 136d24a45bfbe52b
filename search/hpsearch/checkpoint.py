"""Checkpoints: self-describing files written atomically and read with weights-only loading.

A checkpoint carries the state dict and the TrialConfig that built the model, so it rebuilds without the space file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import TrialConfig

FORMAT = "hpsearch-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that is missing, corrupt, or not one of ours; str() says which file and why."""


def make_payload(state_dict: dict[str, torch.Tensor], config: TrialConfig, metric: str, value: float,
                 trial_number: int | None, class_names: list[str] | tuple[str, ...], study: str | None = None,
                 epoch: int | None = None, mean: list[float] | None = None,
                 std: list[float] | None = None) -> dict[str, Any]:
    """Only plain types and tensors, so `torch.load(weights_only=True)` reads it back."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config.to_dict(),
        "metric": metric,
        "value": float(value),
        "trial": trial_number,
        "study": study,
        "epoch": epoch,
        "class_names": list(class_names),
        "mean": mean,  # per-channel input normalisation of the training split, in 0..1 units
        "std": std,
    }


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, fsynced, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_payload(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with weights-only unpickling (no code runs); CheckpointError when it is not usable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first} (a corrupt file, or one holding code, "
                              "which weights-only loading refuses)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an hpsearch checkpoint (no '{FORMAT}' marker)")
    try:
        TrialConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an unreadable config: {exc}") from None
    return payload
