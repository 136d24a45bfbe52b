"""A full disk without root: the files written from now on share `free` bytes, and a write past them fails with
ENOSPC after writing what fits (a partial file, unless the writer removes it), as a full disk does.

It covers both ways files are written: os.fdopen (write_atomic's temporary file) and Path.write_bytes. In a test,
fill(free, monkeypatch.setattr); in a child process (a writer that may abort it), python -c FILL.format(...).
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The start of a child's `python -c` script: the disk filled, then `hpsearch` with the arguments in sys.argv[1:].
FILL = ("import sys; sys.path.insert(0, {here!r}); import fulldisk; fulldisk.fill({free}); "
        "from hpsearch.cli import main; sys.exit(main(sys.argv[1:]))")


class Disk:
    def __init__(self, free: int) -> None:
        self.free = free

    def take(self, data: Any) -> tuple[memoryview, bool]:
        """What of data fits, and whether all of it did."""
        view = memoryview(data).cast("B")
        fits = view[: self.free]
        self.free -= len(fits)
        return fits, len(fits) == len(view)


class _FullFile(io.BufferedWriter):
    disk: Disk

    def write(self, data: Any) -> int:
        fits, whole = self.disk.take(data)
        super().write(fits)
        if not whole:
            super().flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(fits)


def fill(free: int, patch: Callable[[Any, str, Any], None] = setattr) -> Disk:
    """From now on files get `free` bytes in all; patch is monkeypatch.setattr in a test (undone after it)."""
    disk = Disk(free)
    fdopen = os.fdopen

    def full_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" not in mode or "b" not in mode:
            return fdopen(fd, mode, *args, **kwargs)
        f = _FullFile(io.FileIO(fd, "w"))
        f.disk = disk
        return f

    def write_bytes(self: Path, data: Any) -> int:
        fits, whole = disk.take(data)
        with io.FileIO(self, "w") as f:
            f.write(fits)
        if not whole:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return len(fits)

    patch(os, "fdopen", full_fdopen)
    patch(pathlib.Path, "write_bytes", write_bytes)
    return disk
