"""The training device and precision: `train.device` and `train.precision` resolved once, for training and
evaluation alike."""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import HpsearchError
from ..space.config import PRECISIONS


class DeviceError(HpsearchError):
    """A device that this machine does not have, or that torch does not know; str() says which and the fix."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; cpu, cuda, cuda:N or mps when this machine has it (DeviceError
    otherwise, before anything is loaded onto it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fix = "fix: train.device: auto (or cpu), or --device auto for evaluate and retrain"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device {name!r} is not one torch knows; use auto, cpu, cuda or cuda:N\n{fix}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {name!r}: this machine has no CUDA device (torch.cuda.is_available() is "
                              f"False; torch {torch.__version__})\n{fix}")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}\n{fix}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {name!r}: this machine has no Apple MPS device\n{fix}")
    elif device.type != "cpu":
        raise DeviceError(f"device {name!r}: hpsearch trains on cpu, cuda or mps\n{fix}")
    return device


def channels_last(device: torch.device) -> bool:
    """Whether models and batches on this device are kept channels_last (NHWC): on CUDA (cuDNN's fast kernels) and
    on the CPU (oneDNN's), where the same trial trains faster in it (docs/BENCHMARKS.md: layout); elsewhere NCHW."""
    return device.type in ("cuda", "cpu")


def repeatable_cublas() -> None:
    """Ask cuBLAS for the fixed workspace it needs to repeat its matrix products (torch's deterministic algorithms
    warn without it). CUDA reads the variable when its context starts, so callers that will train with
    train.deterministic call this before anything touches the GPU; a value the user set is kept."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision on a device; None: plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager[object]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
