"""Checkpoints: self-describing files written atomically and read with weights-only loading.

A checkpoint carries the state dict and the TrialConfig that built the model, so it rebuilds without the space file:
`load_checkpoint(path)`. The study writes them (a trial's best epoch), retries write running states with the
same atomic save, and results/export.py turns them into TorchScript or torch.export programs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from ..errors import HpsearchError
from ..space.config import TrialConfig
from ..space.registry import ConfigError, input_shape
from .data import normalize
from .models import build_model

FORMAT = "hpsearch-checkpoint"
VERSION = 1
METADATA_FILE = "hpsearch.json"  # the extra file inside a torchscript or exported archive: class names, config, ...


class CheckpointError(HpsearchError):
    """A checkpoint that is missing, corrupt, or not one of ours; str() says which file and why."""


def make_payload(state_dict: dict[str, torch.Tensor], config: TrialConfig, metric: str, value: float,
                 trial_number: int | None, class_names: list[str] | tuple[str, ...], study: str | None = None,
                 epoch: int | None = None, mean: list[float] | None = None,
                 std: list[float] | None = None, precision: str | None = None) -> dict[str, Any]:
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
        "precision": precision,  # what it was trained in (train.precision resolved): evaluation uses it too
    }


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, fsynced, then renamed over `path`."""
    return write_atomic(path, lambda f: torch.save(payload, f))


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """write(file) into a temporary file beside `path`, fsync, rename; CheckpointError when the place is unusable.

    The file gets the mode a plain open() would give it (what `path` had, else 0o666 less the umask), and only a
    regular file is ever replaced: a rename over /dev/null or a pipe would destroy it.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise CheckpointError(f"cannot write {path}: it is not a regular file (a folder, device or pipe); choose a "
                              "file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}; choose a writable path") from None
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(OSError):  # a file system without permissions keeps its own
                os.fchmod(f.fileno(), _mode_for(path))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as RuntimeError ("unexpected pos")
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the temporary may stay; the previous file is whole either way
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        if isinstance(exc, RuntimeError) and "unexpected pos" in reason:
            reason = f"the disk is full or failed (torch's writer stopped short: {reason.split('] ')[-1].strip(' .')})"
        raise CheckpointError(f"cannot write {path}: {reason}; choose a writable path") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _mode_for(path: Path) -> int:
    """The permissions of the file that replaces `path`: its own if it exists, else what open() would give."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after save() returns keeps the new file); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder
    finally:
        os.close(fd)


def read(path: str | Path) -> dict[str, Any]:
    """A file written by save(), unpickled weights-only (no code runs): CheckpointError when it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    kind = exported_kind(path)
    if kind is not None:
        loader = "torch.jit.load(path)" if kind == "torchscript" else "torch.export.load(path).module()"
        what = "TorchScript model" if kind == "torchscript" else "torch.export program"
        raise CheckpointError(f"{path} is a {what} for running without hpsearch ({loader}); hpsearch reads "
                              "the checkpoint file: hpsearch export SPACE --out best.pt (the default --format)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's hints about other archive kinds; our message says it all
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({first}): a corrupt or truncated file, or one holding "
                              "code, which weights-only loading refuses; write it again with hpsearch export") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not an hpsearch checkpoint (it holds a {type(payload).__name__})")
    return payload


def load_payload(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with weights-only unpickling (no code runs); CheckpointError when it is not usable."""
    path = Path(path)
    payload = read(path)
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an hpsearch checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is an hpsearch checkpoint of version {payload.get('version')!r}; this "
                              f"hpsearch reads version {VERSION}: export it again with this version")
    try:
        TrialConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an unreadable config: {exc}") from None
    return payload


def _checked_stats(payload: dict[str, Any], source: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The input mean and std a checkpoint claims, as (C,) tensors for its data set's C channels (3 RGB, 1
    grayscale): C finite numbers each, the std above 0 (a std of 0 would divide every image by zero)."""
    out = []
    for key in ("mean", "std"):
        value = payload.get(key)
        try:
            tensor = torch.tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            tensor = torch.zeros(0)
        if tensor.shape != (channels,) or not bool(torch.isfinite(tensor).all()) or (key == "std" and
                                                                                   bool((tensor <= 0).any())):
            count = {1: "one finite number", 3: "three finite numbers"}.get(channels, f"{channels} finite numbers")
            what = {1: "the grayscale images' one channel", 3: "one per RGB channel"}.get(channels, "one per channel")
            raise CheckpointError(f"{source}: its input {key} must be {count}"
                                  f"{' above 0' if key == 'std' else ''} ({what}), got {value!r}; "
                                  "it cannot be used: export it again")
        out.append(tensor)
    return out[0], out[1]


def channels_of(config: TrialConfig, source: str) -> int:
    """The image channels of a checkpoint's data set (registry.input_shape); CheckpointError naming `source` when
    its config names a data set this hpsearch does not know."""
    try:
        return input_shape(config)[0]
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{source}: its config's data set cannot be used here: {exc}") from None


def exported_kind(path: Path) -> str | None:
    """'torchscript' or 'exported' for the files `export` writes in those formats, else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if not any(n.endswith(f"/extra/{METADATA_FILE}") for n in names):
        return None
    return "exported" if any(n.endswith("/archive_format") for n in names) else "torchscript"


# ----------------------------------------------------------------------------------------------------------------
# Loading a model back


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checkpoint's model, rebuilt in eval mode, with everything needed to use it."""

    model: nn.Module  # in eval mode, on the device it was loaded to
    config: TrialConfig  # the trial's whole configuration
    metric: str  # what `value` measures: val_acc, val_loss (a search) or test_acc (hpsearch retrain)
    value: float
    trial: int | None  # the trial number in its study
    study: str | None
    epoch: int | None  # the epoch whose weights these are
    class_names: tuple[str, ...]
    mean: torch.Tensor  # (C,) input normalisation of the training split, 0..1 scale (C: the images' channels)
    std: torch.Tensor
    payload: dict[str, Any]  # the file's contents as read

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW (0..255) or float NCHW (0..1) images -> the normalised float input the model expects."""
        return normalize(images, self.mean.to(images.device), self.std.to(images.device))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild a checkpoint's model in eval mode without the space file (weights-only loading: no code runs)."""
    return from_payload(load_payload(path), str(path), device)


def from_payload(payload: dict[str, Any], source: str = "the checkpoint",
                 device: str | torch.device = "cpu") -> Checkpoint:
    """The Checkpoint of a payload (as make_payload builds it); CheckpointError naming `source` when unusable."""
    config = TrialConfig.from_dict(payload["config"])
    names = tuple(payload.get("class_names") or ())
    if not names or payload.get("mean") is None or payload.get("std") is None:
        raise CheckpointError(f"{source} lacks class names or the input mean/std; it cannot be used for inference")
    mean, std = _checked_stats(payload, source, channels_of(config, source))
    try:
        model = build_model(config.model, len(names), config)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: the weights do not fit the model its config describes: {first}") from None
    broken = [k for k, v in payload["state_dict"].items()
              if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{source}: its weights hold NaN or infinite values ({', '.join(broken[:3])}"
                              f"{', ...' if len(broken) > 3 else ''}); the trial diverged or the file was damaged")
    model.to(torch.device(device)).eval()
    return Checkpoint(model=model, config=config, metric=str(payload["metric"]), value=float(payload["value"]),
                      trial=payload.get("trial"), study=payload.get("study"), epoch=payload.get("epoch"),
                      class_names=names, mean=mean, std=std, payload=payload)
