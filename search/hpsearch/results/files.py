"""The files the results verbs write (an export, a plot, a report, a retrained model): whole or not at all.

Each file is made in memory first, then written by training/checkpoint.write_atomic (a temporary file beside it,
fsynced, renamed over it), so a failed write leaves no partial file and the previous one whole. torch's zip writer
never writes to the disk itself: when its file fails it can abort the process from a destructor (exit 134), after
the error was reported. A full disk is the machine's fault, not the user's input: DiskFull, exit status 1.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import EXIT_FAULT, HpsearchError
from ..training.checkpoint import CheckpointError, write_atomic

# The errors of a disk that cannot take the file, in words (EDQUOT: the user's quota on it).
FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}


class DiskFull(HpsearchError):
    """A file could not be written whole for want of disk space; str() names the file and the fix."""

    exit_status = EXIT_FAULT


def serialized(write: Callable[[IO[bytes]], object]) -> bytes:
    """What write(file) writes (torch.save, torch.export.save, ...), made in memory."""
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def write_file(path: str | Path, data: bytes, option: str = "--out") -> Path:
    """Write `data` to `path` whole, or leave no file there (the previous one, if any, unchanged).

    DiskFull when the disk is full (its fix names `option`, the argument that chose the path); CheckpointError,
    as write_atomic raises it, when the place is unusable for any other reason.
    """
    failed: list[OSError] = []

    def write(f: IO[bytes]) -> None:
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # where the file system finds out late that the disk is full
        except OSError as exc:
            failed.append(exc)
            raise

    try:
        return write_atomic(path, write)
    except CheckpointError:
        if failed and failed[0].errno in FULL:
            raise disk_full(path, failed[0], option) from None
        raise


def disk_full(path: str | Path, exc: OSError, option: str) -> DiskFull:
    """The message of a file that the disk could not take: what, where, and the fix."""
    folder = Path(path).parent
    return DiskFull(f"cannot write {path}: {FULL.get(exc.errno or 0, 'the disk is full')} ({exc.strerror}); "
                    f"nothing was written there. Fix: free disk space on the disk of {folder}/ (or point {option} at "
                    "another disk), then run the command again")


def write_torch(path: str | Path, obj: Any, option: str = "--out") -> Path:
    """torch.save(obj) to `path` whole (a checkpoint's payload), as write_file writes."""
    return write_file(path, serialized(lambda f: torch.save(obj, f)), option)


__all__ = ["FULL", "DiskFull", "disk_full", "serialized", "write_file", "write_torch"]
