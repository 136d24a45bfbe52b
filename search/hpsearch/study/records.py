"""What a trial writes to its study while it trains and when it ends: its attributes, a report per epoch with the
pruner's word, its running state for a retry, its best-epoch checkpoint. The life cycle (study/trials.py) calls
these for every trial, alone or in a group; training knows nothing of them.
"""

from __future__ import annotations

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
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from .. import keys
from ..space import TrialConfig
from ..space.config import maximize
from ..training import checkpoint
from ..training.data import DeviceData
from ..training.train import Member, NonFiniteLoss, TrainResult
from . import resume
from .compat import set_user_attrs
from .worker import Worker

Progress = Callable[[optuna.Trial, int, dict[str, float]], None]


class Records:
    """A worker's way of recording its trials: its artifact folder (None: no checkpoints kept), its running-state
    folder (None: none kept), the study's metric, the command's id (keys.RUN).

    A trial keeps its running state after an epoch once `study.resume_interval` seconds have passed since it started
    or last saved (0: after every epoch), so that a retry resumes from it. The interval bounds what a crash costs
    while keeping the write off short epochs: a ResNet-18's state is ~135 MB to write and fsync.
    """

    def __init__(self, worker: Worker, *, keep_running: bool = True, keep_checkpoints: bool = True,
                 run: str = "") -> None:
        self.space = worker.space
        self.metric = worker.space.study.metric
        self.artifacts: Path | None = worker.artifacts if keep_checkpoints else None
        self.running: Path | None = worker.running if keep_running else None
        self.run = run

    def start(self, trial: optuna.Trial, config: TrialConfig, **attrs: Any) -> None:
        """The attributes every trial records when it starts (the config itself: studies.trial_config)."""
        set_user_attrs(trial, {keys.EPOCHS: config.train.epochs, keys.WORKER: f"{socket.gethostname()}:{os.getpid()}",
                               **({keys.RUN: self.run} if self.run else {}), **attrs})

    def resumed_state(self, trial: optuna.Trial, chain: list[int],
                      config: TrialConfig) -> dict[str, Any] | None:
        """The newest running state of the trials this one retries, with their epochs reported again (so the
        pruner sees this trial as if it had never stopped); TrialPruned when the pruner stops it there."""
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
        set_user_attrs(trial, {keys.RESUMED_FROM: number, keys.RESUMED_EPOCH: len(history)})
        if history and trial.should_prune():
            set_user_attrs(trial, {keys.EPOCHS_RUN: len(history), keys.EPOCHS_TRAINED: 0})
            raise optuna.TrialPruned(f"pruned at epoch {len(history)} on resuming trial {number}")
        return state

    @staticmethod
    def fail(trial: optuna.Trial, reason: str, epochs: int) -> None:
        set_user_attrs(trial, {keys.FAIL_REASON: reason, keys.EPOCHS_RUN: epochs})

    @staticmethod
    def result(trial: optuna.Trial, result: TrainResult, seconds: float, trained: int) -> None:
        set_user_attrs(trial, {
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
        })

    def keep_checkpoint(self, trial: optuna.Trial, result: TrainResult, config: TrialConfig, value: float,
                        data: DeviceData) -> None:
        """Store this trial's best-epoch weights if it ranks among the best k; drop those that fell out.

        Ties go to the earlier trial, as in the report's ranking: a trial that only ties the k-th best stores
        nothing (on a small validation set ties are common, and each would have cost a save and an eviction).
        """
        k = self.space.study.keep_checkpoints
        if self.artifacts is None or k == 0:
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
                                          mean=data.mean.flatten().tolist(), std=data.std.flatten().tolist(),
                                          precision=result.precision)
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)  # again each time: the folder may have been removed
            store = FileSystemArtifactStore(self.artifacts)
            with tempfile.TemporaryDirectory() as tmp:
                path = checkpoint.save(payload, Path(tmp) / f"trial-{trial.number}.pt")
                artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                              mimetype="application/octet-stream")
        except (OSError, checkpoint.CheckpointError) as exc:  # a full disk: the trial's result stands, unweighted
            reason = f"cannot store the checkpoint: {exc}"
            trial.set_user_attr(keys.CHECKPOINT_ERROR, reason)
            print(f"hpsearch: warning: trial {trial.number}: {reason}", file=sys.stderr)
            return
        trial.set_user_attr(keys.CHECKPOINT, artifact_id)
        ranked = sorted((t for t in done if keys.CHECKPOINT in t.user_attrs), key=lambda t: t.value or 0.0,
                        reverse=higher)
        for t in ranked[k - 1:]:  # this trial takes one of the k places
            try:
                store.remove(t.user_attrs[keys.CHECKPOINT])
            except (ArtifactNotFound, FileNotFoundError):
                pass  # already removed by an earlier trial or another worker
            except OSError as exc:  # a folder turned read-only: the older checkpoint stays, this trial's result too
                print(f"hpsearch: warning: cannot remove trial {t.number}'s checkpoint: {exc.strerror or exc}",
                      file=sys.stderr)

    def discard(self, numbers: list[int]) -> None:
        """Remove the running states of trials that ended for good (a read-only folder leaves them, and warns)."""
        if self.running is None:
            return
        try:
            resume.discard(self.running, numbers)
        except OSError as exc:  # a folder turned read-only: the trial's result stands, the file stays
            print(f"hpsearch: warning: trial {numbers[-1]}: cannot remove its running state in "
                  f"{self.running}: {exc.strerror or exc}", file=sys.stderr)


class TrialHooks:
    """One trial's training hooks: `on_start` records the precision it trains in, `on_epoch` reports each epoch to
    Optuna and prunes, `on_state` keeps the running state every study.resume_interval seconds.

    `seen`: epochs already reported (a resumed trial's). `progress`: the run's per-epoch hook.
    """

    def __init__(self, records: Records, trial: optuna.Trial, config: TrialConfig, seen: int = 0,
                 progress: Progress | None = None) -> None:
        self.records, self.trial, self.config, self.progress = records, trial, config, progress
        self.epochs_seen = seen
        self.trained, self.epoch_seconds = 0, 0.0  # epochs trained by this run (a resumed trial skips some)
        self.started = self.saved = time.perf_counter()  # when the running state was last written (or started)

    def on_start(self, member: Member) -> None:
        self.trial.set_user_attr(keys.PRECISION, member.precision)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        metric = self.records.metric
        self.epochs_seen, self.trained = epoch, self.trained + 1
        self.epoch_seconds += metrics["seconds"]
        value = metrics[metric]
        if not math.isfinite(value):
            raise NonFiniteLoss(f"validation {metric} is {value} in epoch {epoch}: the run diverged")
        self.trial.report(value, epoch)
        if self.progress is not None:
            self.progress(self.trial, epoch, metrics)
        if epoch < self.config.train.epochs and self.trial.should_prune():  # never after the last: it finished
            set_user_attrs(self.trial, {keys.EPOCHS_RUN: epoch, keys.EPOCH_SECONDS: round(self.epoch_seconds, 4),
                                        keys.EPOCHS_TRAINED: self.trained})
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {metric}={value:.4f}")

    def on_state(self, get: Callable[[], dict[str, Any]]) -> None:
        running = self.records.running
        if running is None or time.perf_counter() - self.saved < self.records.space.study.resume_interval:
            return
        trial = self.trial
        try:
            resume.save(running, trial.number, trial.study.study_name, self.config.to_dict(), get())
        except (OSError, checkpoint.CheckpointError) as exc:  # a full disk: the trial goes on (a retry would
            trial.set_user_attr(keys.RUNNING_CHECKPOINT_ERROR, str(exc))  # resume from an older epoch)
        self.saved = time.perf_counter()
