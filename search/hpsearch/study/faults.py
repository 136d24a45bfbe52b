"""What can end a trial or stop a worker, in words: the storage faults, out of memory, and the one message of each.

A fault of the trial (it diverged, broke a component's rule, ran out of memory, raised) fails that trial with its
reason and the study goes on. A fault of the worker's storage stops the worker (StorageFault, exit 1), the trials it
was running kept for their retries. The same fault reads the same whether its trial trained alone or in a group.
"""

from __future__ import annotations

import optuna
import sqlalchemy
import torch

from ..errors import EXIT_FAULT, HpsearchError
from ..space.registry import ConfigError
from ..training.train import NonFiniteLoss

# What a storage raises when it cannot write (a full disk, a lost server): optuna's wrapper and SQLAlchemy's own.
STORAGE_FAULTS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError,
                  sqlalchemy.exc.InterfaceError)

# How torch's CPU allocator says it ran out of memory (it raises a plain RuntimeError, not OutOfMemoryError).
CPU_OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")


class StorageFault(HpsearchError):
    """The study's storage failed under a running trial: the worker stops; the trial is retried by a later run."""

    exit_status = EXIT_FAULT


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line only (a reason stored on a trial stays one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def raised(exc: BaseException, epoch: int) -> str:
    """The reason of a trial failed by an exception nothing else explains."""
    return f"the trial raised {type(exc).__name__} in epoch {epoch}: {first_line(exc)[:500]}"


def out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(words in str(exc) for words in CPU_OUT_OF_MEMORY))


def member_reason(exc: BaseException, epoch: int, device: torch.device) -> str:
    """Why a trial failed by its own fault in `epoch` (its model, optimizer or hooks): a divergence or a broken rule
    in their own words."""
    if isinstance(exc, (NonFiniteLoss, ConfigError)):
        return str(exc)
    return computation_reason(exc, epoch, 1, device)


def computation_reason(exc: BaseException, epoch: int, k: int, device: torch.device) -> str:
    """Why the trials training together (k of them; 1: a trial alone) failed when their computation raised."""
    if out_of_memory(exc):
        if k > 1:
            return (f"out of {device.type} memory in epoch {epoch} with {k} trials fused; try a smaller --fuse, "
                    "batch_size or model")
        return f"out of {device.type} memory in epoch {epoch}; try a smaller batch_size or model"
    return raised(exc, epoch) + (f" (in a fused group of {k} trials)" if k > 1 else "")


def storage_said(exc: BaseException) -> str:
    """A storage fault in a few words, for its reason: "(OperationalError: (sqlite3.OperationalError) database or
    disk is full)". Optuna's StorageInternalError says only that a commit failed; what failed is its cause."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return f"({type(exc).__name__}: {first_line(exc)[:300]})"


def storage_stopped(reason: str, trials: str = "the trial's last saved epoch is") -> StorageFault:
    """The StorageFault that stops a worker, with `reason` and the one fix (the same whatever failed)."""
    return StorageFault(f"{reason}\nthe search stopped; {trials} kept. Fix: free disk space or bring the database "
                        "server back, then rerun the same command: the trials cut short are retried (a trial left "
                        "running is retried once its heartbeats are stale)")
