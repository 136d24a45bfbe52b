"""The Optuna objective: trial -> TrialConfig -> train, reporting and pruning every epoch, keeping checkpoints.

The only place where Optuna meets training: training knows nothing of trials, the space nothing of torch.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from .. import keys
from ..errors import EXIT_FAULT, HpsearchError, interruption
from ..space import TrialConfig, suggest
from ..space.config import maximize
from ..space.registry import ConfigError
from ..training import checkpoint
from ..training.data import DeviceData
from ..training.train import NonFiniteLoss, ResumeError, TrainResult, train
from . import resume
from .compat import frozen, set_user_attrs
from .worker import Worker

# What a storage raises when it cannot write (a full disk, a lost server): optuna's wrapper and SQLAlchemy's own.
STORAGE_FAULTS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError,
                  sqlalchemy.exc.InterfaceError)


# How torch's CPU allocator says it ran out of memory (it raises a plain RuntimeError, not OutOfMemoryError).
CPU_OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line only (a reason stored on a trial stays one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def raised(exc: BaseException, epoch: int) -> str:
    """The reason of a trial failed by an exception nothing else explains."""
    return f"the trial raised {type(exc).__name__} in epoch {epoch}: {first_line(exc)[:500]}"


class StorageFault(HpsearchError):
    """The study's storage failed under a running trial: the worker stops; the trial is retried by a later run."""

    exit_status = EXIT_FAULT


def storage_stopped(reason: str, trials: str = "the trial's last saved epoch is") -> StorageFault:
    """The StorageFault that stops a worker, with `reason` and the one fix (the same whatever failed)."""
    return StorageFault(f"{reason}\nthe search stopped; {trials} kept. Fix: free disk space or bring the database "
                        "server back, then rerun the same command: the trials cut short are retried (a trial left "
                        "running is retried once its heartbeats are stale)")


def storage_said(exc: BaseException) -> str:
    """A storage fault in a few words, for its reason: "(OperationalError: (sqlite3.OperationalError) database or
    disk is full)". Optuna's StorageInternalError says only that a commit failed; what failed is its cause."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return f"({type(exc).__name__}: {first_line(exc)[:300]})"


def storage_cause(exc: BaseException) -> BaseException | None:
    """The storage fault behind `exc`, if any: the exception itself, or one it was raised while handling.

    study.optimize lets a storage fault outside the objective (asking for a trial, telling its result) out as it
    is, or as the AssertionError its bookkeeping raises on finding the trial still running.
    """
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, STORAGE_FAULTS):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


class TrialFailed(Exception):
    """A trial that cannot finish (non-finite loss, out of memory): recorded as failed, the study goes on."""


class Objective:
    """Callable for `study.optimize` on its worker's study: every trial trains on the worker's device and data.

    With the worker's `running` folder (None turns it off), each trial keeps its state there after an epoch once
    `study.resume_interval` seconds have passed since the trial started or last saved (0: after every epoch), and a
    retried trial (resume.Retry) goes on from it; a trial stopped by Ctrl-C or SIGTERM is failed with the reason
    and retried. The interval bounds what a crash costs while keeping the write off short epochs: a ResNet-18's
    state (weights, momentum, the best epoch's weights) is ~135 MB to write and fsync, a real share of a fast GPU
    epoch. A trial's running state is removed once the trial is told (pass `told` among study.optimize's
    callbacks): until then it is kept, so that a trial whose result the storage failed to take resumes from it.
    Without the worker's store (None), no checkpoint is kept.
    """

    def __init__(self, worker: Worker,
                 on_epoch: Callable[[optuna.Trial, int, dict[str, float]], None] | None = None, *,
                 keep_running: bool = True, keep_checkpoints: bool = True, run: str = "") -> None:
        self.worker = worker
        self.space = worker.space
        self.store = worker.store if keep_checkpoints else None
        self.metric = worker.space.study.metric
        self.on_epoch_hook = on_epoch
        self.running: Path | None = worker.running if keep_running else None
        self.epochs_seen = 0  # epochs of the running trial reported so far, resumed ones included
        self.run = run  # the id of the command that runs these trials (keys.RUN)
        self.current: optuna.Trial | None = None  # the trial called last
        self.ended: list[int] = []  # its chain of trials, once it ended for good: their states go when it is told

    def __call__(self, trial: optuna.Trial) -> float:
        self.epochs_seen = 0
        self.current, self.ended = trial, []
        chain = resume.history(frozen(trial).system_attrs)
        stopped = False
        try:
            return self._run(trial, chain)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (runner turns it into this): retried, state kept
            stopped = True
            reason = f"interrupted ({interruption(exc)}) during epoch {self.epochs_seen + 1}"
            self.fail(trial, reason, self.epochs_seen)
            resume.Retry(self.space.study.max_retry, reason)(trial.study, frozen(trial))
            raise
        except STORAGE_FAULTS as exc:  # the worker's fault, not the trial's: stop, keep its state, retry it later
            stopped = True
            when = f"at epoch {self.epochs_seen}" if self.epochs_seen else "before its first epoch"  # its writes
            reason = f"the study's storage failed {when} of trial {trial.number} {storage_said(exc)}"  # per epoch
            self._cut_short(trial, reason)
            raise storage_stopped(reason) from None
        except (TrialFailed, optuna.TrialPruned):
            raise
        except Exception as exc:  # anything else a trial raises is that trial's failure, and the study goes on
            reason = raised(exc, self.epochs_seen + 1)
            self.fail(trial, reason, self.epochs_seen)
            raise TrialFailed(reason) from exc
        finally:
            if not stopped:  # ended for good: its running state goes once the trial is told
                self.ended = [*chain, trial.number]

    def told(self, *_: object) -> None:
        """study.optimize's callback once the trial called last was told: the running states of the trials that
        ended with it go."""
        ended, self.ended = self.ended, []
        if ended:
            self.discard(ended)

    def storage_fault(self, exc: BaseException) -> StorageFault | None:
        """The StorageFault for a storage that failed outside the trial's own code (asking for a trial, telling its
        result), None if `exc` is no storage fault. A trial left running by it is failed with the reason and queued
        again, if the storage answers; its running state is kept for that retry."""
        cause = storage_cause(exc)
        if cause is None or isinstance(exc, HpsearchError):
            return None
        trial, self.current, self.ended = self.current, None, []
        what = storage_said(cause)
        try:
            running = trial is not None and frozen(trial).state == TrialState.RUNNING
        except STORAGE_FAULTS:
            running = False
        if trial is None or not running:
            return storage_stopped(f"the study's storage failed between trials {what}", "every finished trial is")
        reason = f"the study's storage failed as trial {trial.number}'s end was written {what}"
        self._cut_short(trial, reason)
        try:
            trial.study.tell(trial.number, state=TrialState.FAIL)
        except STORAGE_FAULTS:
            pass
        return storage_stopped(reason)

    def _cut_short(self, trial: optuna.Trial, reason: str) -> None:
        """Record why the worker stopped under `trial` and queue its rerun, if the storage answers again; if not,
        the next run finds it stale and retries it."""
        try:
            self.fail(trial, reason, self.epochs_seen)
            resume.Retry(self.space.study.max_retry, reason)(trial.study, frozen(trial))
        except STORAGE_FAULTS:
            pass

    def _run(self, trial: optuna.Trial, chain: list[int]) -> float:
        config = suggest(trial, self.space)
        self.start(trial, config)
        device, data = self.worker.device, self.worker.data
        state = self._resumed_state(trial, chain, config) if chain else None
        hooks = TrialHooks(self, trial, config, seen=self.epochs_seen)
        started = hooks.started

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            self.epochs_seen = epoch
            hooks.on_epoch(epoch, metrics)

        on_state = hooks.on_state
        out_of_memory = False
        try:
            try:
                result = train(config, data, on_epoch, on_state=on_state, resume=state)
            except ResumeError as exc:  # a state that does not fit after all: train from the start
                trial.set_user_attr(keys.RESUME_ERROR, str(exc))
                self.epochs_seen = 0
                result = train(config, data, on_epoch, on_state=on_state)
        except optuna.TrialPruned:
            raise
        except (NonFiniteLoss, ConfigError) as exc:  # diverged, or a searched value broke a component's rule
            self.fail(trial, str(exc), self.epochs_seen)
            raise TrialFailed(str(exc)) from None
        except torch.OutOfMemoryError:
            out_of_memory = True  # handled below, once the traceback (and the model it holds) is gone
        except RuntimeError as exc:  # the CPU allocator's out of memory is a plain RuntimeError
            if not any(words in str(exc) for words in CPU_OUT_OF_MEMORY):
                raise
            out_of_memory = True
        if out_of_memory:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            reason = (f"out of {device.type} memory in epoch {self.epochs_seen + 1}; try a smaller batch_size "
                      "or model")
            self.fail(trial, reason, self.epochs_seen)
            raise TrialFailed(reason)
        value = float(result.best_metrics[self.metric])
        self.record(trial, result, time.perf_counter() - started, hooks.trained)
        self.keep_checkpoint(trial, result, config, value, data)
        return value

    def start(self, trial: optuna.Trial, config: TrialConfig, **attrs: Any) -> None:
        """The attributes every trial records when it starts (the config itself: studies.trial_config)."""
        set_user_attrs(trial, {keys.EPOCHS: config.train.epochs, keys.WORKER: f"{socket.gethostname()}:{os.getpid()}",
                               **({keys.RUN: self.run} if self.run else {}), **attrs})

    def _resumed_state(self, trial: optuna.Trial, chain: list[int], config: TrialConfig) -> dict[str, Any] | None:
        """The newest running state of the trials this one retries, with their epochs reported again.

        Re-reporting the finished epochs keeps the pruner's view of this trial the same as if it had never stopped.
        """
        if self.running is None:
            return None
        try:
            found = resume.load(self.running, chain, config.to_dict())
        except checkpoint.CheckpointError as exc:
            trial.set_user_attr(keys.RESUME_ERROR, str(exc))
            return None
        if found is None:
            return None
        number, state = found
        history = state["history"]
        for metrics in history:
            trial.report(float(metrics[self.metric]), int(metrics["epoch"]))
        self.epochs_seen = len(history)
        set_user_attrs(trial, {keys.RESUMED_FROM: number, keys.RESUMED_EPOCH: len(history)})
        if history and trial.should_prune():
            set_user_attrs(trial, {keys.EPOCHS_RUN: len(history), keys.EPOCHS_TRAINED: 0})
            raise optuna.TrialPruned(f"pruned at epoch {len(history)} on resuming trial {number}")
        return state

    def discard(self, numbers: list[int]) -> None:
        """Remove the running states of trials that ended for good (a read-only folder leaves them, and warns)."""
        if self.running is None:
            return
        try:
            resume.discard(self.running, numbers)
        except OSError as exc:  # a folder turned read-only: the trial's result stands, the file stays
            print(f"hpsearch: warning: trial {numbers[-1]}: cannot remove its running state in "
                  f"{self.running}: {exc.strerror or exc}", file=sys.stderr)

    @staticmethod
    def fail(trial: optuna.Trial, reason: str, epochs: int) -> None:
        set_user_attrs(trial, {keys.FAIL_REASON: reason, keys.EPOCHS_RUN: epochs})

    @staticmethod
    def record(trial: optuna.Trial, result: TrainResult, seconds: float, trained: int) -> None:
        attrs: dict[str, Any] = {
            keys.EPOCHS_RUN: result.epochs_run,
            keys.BEST_EPOCH: result.best_epoch,
            "seconds": round(seconds, 3),
            "train_seconds": round(result.seconds, 3),
            keys.EPOCH_SECONDS: round(sum(h["seconds"] for h in result.history), 4),  # training + validation
            "images_per_sec": round(result.train_images_per_sec, 1),
            "params": result.num_params,
            "flops_per_image": result.flops_per_image,  # forward + backward of one training image
            "tflops": round(result.flops_per_image * result.train_images_per_sec / 1e12, 4),  # achieved, training
            keys.EPOCHS_TRAINED: trained,  # by this run: fewer than epochs_run when it resumed a stopped trial
        }
        set_user_attrs(trial, attrs)

    def keep_checkpoint(self, trial: optuna.Trial, result: TrainResult, config: TrialConfig, value: float,
                        data: DeviceData) -> None:
        """Store this trial's best-epoch weights if it ranks among the best k; drop those that fell out.

        Ties go to the earlier trial, as in the report's ranking: a trial that only ties the k-th best stores
        nothing (on a small validation set ties are common, and each would have cost a save and an eviction).
        """
        k = self.space.study.keep_checkpoints
        if self.store is None or k == 0:
            return
        study = trial.study
        higher = maximize(self.metric)  # the study's direction: the checker ties it to the metric
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        values = [float(t.value) for t in done if t.value is not None]
        ahead = sum(1 for v in values if (v >= value if higher else v <= value))  # earlier trials win ties
        if ahead >= k:
            return
        payload = checkpoint.make_payload(result.best_state, config, self.metric, value,
                                          trial.number, result.class_names, study.study_name, result.best_epoch,
                                          mean=data.mean.flatten().tolist(), std=data.std.flatten().tolist())
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = checkpoint.save(payload, Path(tmp) / f"trial-{trial.number}.pt")
                artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
        except (OSError, checkpoint.CheckpointError) as exc:  # a full disk: the trial's result stands, unweighted
            reason = f"cannot store the checkpoint: {exc}"
            trial.set_user_attr(keys.CHECKPOINT_ERROR, reason)
            print(f"hpsearch: warning: trial {trial.number}: {reason}", file=sys.stderr)
            return
        trial.set_user_attr(keys.CHECKPOINT, artifact_id)
        ranked = sorted((t for t in done if keys.CHECKPOINT in t.user_attrs), key=lambda t: t.value or 0.0,
                        reverse=higher)
        survivors = k - 1  # this trial takes one of the k places
        for t in ranked[survivors:]:
            try:
                self.store.remove(t.user_attrs[keys.CHECKPOINT])
            except (ArtifactNotFound, FileNotFoundError):
                pass  # already removed by an earlier trial or another worker
            except OSError as exc:  # a folder turned read-only: the older checkpoint stays, this trial's result too
                print(f"hpsearch: warning: cannot remove trial {t.number}'s checkpoint: {exc.strerror or exc}",
                      file=sys.stderr)



class TrialHooks:
    """One trial's train() hooks: `on_epoch` reports each epoch to Optuna and prunes, `on_state` keeps the running
    state every study.resume_interval seconds. The objective uses them for a trial alone, the fused group for each
    of its members.

    `seen`: epochs already reported (a resumed trial's). `progress`: the run's per-epoch hook, when this trial's
    epochs are the ones it shows.
    """

    def __init__(self, objective: Objective, trial: optuna.Trial, config: TrialConfig, seen: int = 0,
                 progress: Callable[[optuna.Trial, int, dict[str, float]], None] | None = None) -> None:
        self.objective, self.trial, self.config = objective, trial, config
        self.progress = objective.on_epoch_hook if progress is None else progress
        self.epochs_seen = seen
        self.trained, self.epoch_seconds = 0, 0.0  # epochs trained by this run (a resumed trial skips some)
        self.started = self.saved = time.perf_counter()  # when the running state was last written (or started)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        metric = self.objective.metric
        self.epochs_seen, self.trained = epoch, self.trained + 1
        self.epoch_seconds += metrics["seconds"]
        value = metrics[metric]
        if not math.isfinite(value):
            raise NonFiniteLoss(f"validation {metric} is {value} in epoch {epoch}: the run diverged")
        self.trial.report(value, epoch)
        if self.progress is not None:
            self.progress(self.trial, epoch, metrics)
        if self.trial.should_prune():
            set_user_attrs(self.trial, {keys.EPOCHS_RUN: epoch, keys.EPOCH_SECONDS: round(self.epoch_seconds, 4),
                                        keys.EPOCHS_TRAINED: self.trained})
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {metric}={value:.4f}")

    def on_state(self, get: Callable[[], dict[str, Any]]) -> None:
        running = self.objective.running
        if running is None or time.perf_counter() - self.saved < self.objective.space.study.resume_interval:
            return
        trial = self.trial
        try:
            resume.save(running, trial.number, trial.study.study_name, self.config.to_dict(), get())
        except (OSError, checkpoint.CheckpointError) as exc:  # a full disk: the trial goes on (a retry would
            trial.set_user_attr(keys.RUNNING_CHECKPOINT_ERROR, str(exc))  # resume from an older epoch)
        self.saved = time.perf_counter()
