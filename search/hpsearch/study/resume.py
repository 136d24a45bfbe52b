"""Crash-safe trials: each running trial keeps its last epoch's state on disk, and a trial cut short is retried.

A trial is cut short when its worker dies (SIGKILL, a lost machine: its heartbeats stop and the next live worker
fails it, see storage.open_storage) or is stopped (SIGTERM, Ctrl-C: study/trials.py fails it with the reason).
Either way `Retry` enqueues a copy with the same parameters, marked the way Optuna's RetryHeartbeatStaleTrialCallback
marks it (system attrs `failed_trial`, `retry_history`), and the worker that runs the copy resumes from the newest
running checkpoint of the trials it retries, so finished epochs are not trained again.

Running checkpoints live in studies/<name>/running/trial-<N>.pt (storage.running_dir), written atomically each
epoch, and hold only plain values and tensors (weights-only loadable). One per running trial: deleted when the
trial ends for good (complete, pruned, failed by its own fault), kept when it was cut short.
Retry needs no torch (every worker's storage holds one); the checkpoint functions import it when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import keys

FORMAT = "hpsearch-running"
VERSION = 1


def path_of(folder: Path, trial_number: int) -> Path:
    return folder / f"trial-{trial_number}.pt"


def history(system_attrs: dict[str, Any]) -> list[int]:
    """The trials a retry reruns, oldest first (Optuna's retry_history); [] for a fresh trial."""
    return [int(n) for n in system_attrs.get("retry_history", [])]


class Retry:
    """Enqueue a rerun of a cut-short trial with the same parameters, at most `max_retry` times per original.

    Used as the storage's heartbeat-stale-trial callback (a dead worker: maybe the trial's fault, as when the kernel
    kills it for its memory, so counted) and by the trial life cycle when its worker was stopped (`stopped`: Ctrl-C,
    SIGTERM, a lost storage, never the trial's fault, so not counted: such a trial is rerun however often its worker
    is stopped, unless max_retry is 0). Like Optuna's RetryHeartbeatStaleTrialCallback, but the copy does not
    inherit the failed run's user attrs (its fail reason, epochs), it says why it exists (keys.RETRY_OF,
    keys.RETRY_REASON), and a trial is never retried twice.
    """

    def __init__(self, max_retry: int, reason: str | None = None, stopped: bool = False) -> None:
        self.max_retry = max_retry
        self.reason = reason
        self.stopped = stopped

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        chain = [*history(trial.system_attrs), trial.number]
        if self.max_retry == 0 or (not self.stopped and len(chain) > self.max_retry):
            return
        if any(history(t.system_attrs)[-1:] == [trial.number] for t in study.get_trials(deepcopy=False)):
            return  # already retried (a worker stopped by SIGTERM, then found stale)
        reason = self.reason or "its worker stopped sending heartbeats (killed, or its machine was lost)"
        system_attrs = {**trial.system_attrs, "failed_trial": chain[0], "retry_history": chain}
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={keys.RETRY_OF: trial.number, keys.RETRY_REASON: reason}, system_attrs=system_attrs))


def save(folder: Path, trial_number: int, study_name: str, config: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write the running trial's state atomically (checkpoint.save): a crash mid-write keeps the previous one."""
    from ..training import checkpoint

    payload = {"format": FORMAT, "version": VERSION, "study": study_name, "trial": trial_number, "config": config,
               "state": state}
    return checkpoint.save(payload, path_of(folder, trial_number))


def load(folder: Path, chain: list[int], config: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(trial number, state) of the newest usable running checkpoint among the trials of a retry's `chain`.

    A missing file (another machine's disk, a crash before the first epoch) is skipped; so is an unreadable one or
    one made for another configuration, with checkpoint.CheckpointError naming it if nothing usable is left.
    """
    from ..training import checkpoint

    problems: list[str] = []
    for number in reversed(chain):
        path = path_of(folder, number)
        if not path.is_file():
            continue
        try:
            payload = checkpoint.read(path)
        except checkpoint.CheckpointError as exc:
            problems.append(str(exc))
            continue
        if payload.get("format") != FORMAT or payload.get("config") != config or "state" not in payload:
            problems.append(f"{path} is not the running checkpoint of this configuration")
            continue
        return number, payload["state"]
    if problems:
        raise checkpoint.CheckpointError("; ".join(problems))
    return None


def discard(folder: Path, numbers: list[int]) -> None:
    """Delete the running checkpoints of these trials (and any half-written temporary files of theirs)."""
    for number in numbers:
        path = path_of(folder, number)
        path.unlink(missing_ok=True)
        for tmp in folder.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
