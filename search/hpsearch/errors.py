"""One error model for the whole package: a mistake the user can fix is an `HpsearchError`.

Each part raises its own subclass (SpaceError, DataError, StudyError, CheckpointError, UsageError) and never prints
or exits; `report` is the one place that turns an error into a message on stderr and an exit status, used by the
command line and by every worker process alike. Anything that is not an HpsearchError is a bug and keeps its
traceback. Imports nothing of the package, torch or Optuna.
"""

from __future__ import annotations

import sys
from typing import IO

EXIT_OK = 0
EXIT_FAULT = 1  # the machine failed the command (a full disk, a lost database server): fix it, then rerun
EXIT_BAD_INPUT = 2  # bad input of any kind: a space file, an argument, a storage URL, missing data, a checkpoint
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports a process stopped by SIGINT


class HpsearchError(Exception):
    """A problem the user can fix; str() is the whole message (what, where, the fix)."""

    exit_status = EXIT_BAD_INPUT

    def message(self) -> str:
        """The text printed for it: one `hpsearch: error:` line (more when the message says more)."""
        return f"hpsearch: error: {self}"


def report(exc: BaseException, stream: IO[str] | None = None) -> int | None:
    """Print an HpsearchError's message and return its exit status; None for anything else (a bug: re-raise it)."""
    if not isinstance(exc, HpsearchError):
        return None
    print(exc.message(), file=stream or sys.stderr, flush=True)
    return exc.exit_status


def interruption(exc: KeyboardInterrupt) -> str:
    """What stopped the command, for its message: the signal's name (SIGTERM, or SIGINT in a search, which raise
    KeyboardInterrupt with it), else Ctrl-C (Python's own KeyboardInterrupt says nothing)."""
    return str(exc) or "Ctrl-C"
