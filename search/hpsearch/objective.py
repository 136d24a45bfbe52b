"""The Optuna objective: trial -> TrialConfig -> train, reporting and pruning every epoch, keeping checkpoints.

The only place where Optuna meets training: train.py knows nothing of trials, space.py nothing of torch.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from . import checkpoint
from .config import TrialConfig
from .data import DeviceData, prepare
from .space import Space, suggest
from .train import NonFiniteLoss, TrainResult, resolve_device, train

CHECKPOINT_ATTR = "checkpoint"  # user attr: the artifact id of a trial's best-epoch checkpoint


class TrialFailed(Exception):
    """A trial that cannot finish (non-finite loss, out of memory): recorded as failed, the study goes on."""


class Objective:
    """Callable for `study.optimize`. One per worker process; the data set is loaded once and reused."""

    def __init__(self, space: Space, store: FileSystemArtifactStore | None,
                 on_epoch: Callable[[optuna.Trial, int, dict[str, float]], None] | None = None) -> None:
        self.space = space
        self.store = store
        self.metric = space.study.metric
        self.on_epoch_hook = on_epoch

    def __call__(self, trial: optuna.Trial) -> float:
        config = suggest(trial, self.space)
        trial.set_user_attr("config", config.to_dict())
        device = resolve_device(config.train.device)
        data = prepare(config.data, device)
        epochs_seen, epoch_seconds = 0, 0.0

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal epochs_seen, epoch_seconds
            epochs_seen, epoch_seconds = epoch, epoch_seconds + metrics["seconds"]
            value = metrics[self.metric]
            trial.report(value, epoch)
            if self.on_epoch_hook is not None:
                self.on_epoch_hook(trial, epoch, metrics)
            if trial.should_prune():
                trial.set_user_attr("epochs_run", epoch)
                trial.set_user_attr("epoch_seconds", round(epoch_seconds, 4))
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.metric}={value:.4f}")

        started = time.perf_counter()
        try:
            result = train(config, data, on_epoch)
        except optuna.TrialPruned:
            raise
        except NonFiniteLoss as exc:
            self._fail(trial, str(exc), epochs_seen)
            raise TrialFailed(str(exc)) from None
        except torch.OutOfMemoryError:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            reason = f"out of {device.type} memory at epoch {epochs_seen + 1}; try a smaller batch_size or model"
            self._fail(trial, reason, epochs_seen)
            raise TrialFailed(reason) from None
        except KeyboardInterrupt as exc:
            self._fail(trial, f"interrupted ({exc or 'Ctrl-C'}) during epoch {epochs_seen + 1}", epochs_seen)
            raise
        value = float(result.best_metrics[self.metric])
        self._record(trial, result, time.perf_counter() - started)
        self._keep_checkpoint(trial, result, config, value, data)
        return value

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str, epochs: int) -> None:
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("epochs_run", epochs)

    @staticmethod
    def _record(trial: optuna.Trial, result: TrainResult, seconds: float) -> None:
        attrs: dict[str, Any] = {
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "seconds": round(seconds, 3),
            "train_seconds": round(result.seconds, 3),
            "epoch_seconds": round(sum(h["seconds"] for h in result.history), 4),  # training + validation
            "images_per_sec": round(result.train_images_per_sec, 1),
            "params": result.num_params,
            "flops_per_image": result.flops_per_image,  # forward + backward of one training image
            "tflops": round(result.flops_per_image * result.train_images_per_sec / 1e12, 4),  # achieved, training
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def _keep_checkpoint(self, trial: optuna.Trial, result: TrainResult, config: TrialConfig, value: float,
                         data: DeviceData) -> None:
        """Store this trial's best-epoch weights if it ranks among the best k; drop those that fell out."""
        k = self.space.study.keep_checkpoints
        if self.store is None or k == 0:
            return
        study = trial.study
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        values = [float(t.value) for t in done if t.value is not None]
        better = sum(1 for v in values if (v > value if maximize else v < value))
        if better >= k:
            return
        payload = checkpoint.make_payload(result.best_state, config, self.metric, value,
                                          trial.number, result.class_names, study.study_name, result.best_epoch,
                                          mean=data.mean.flatten().tolist(), std=data.std.flatten().tolist())
        with tempfile.TemporaryDirectory() as tmp:
            path = checkpoint.save(payload, Path(tmp) / f"trial-{trial.number}.pt")
            artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
        trial.set_user_attr(CHECKPOINT_ATTR, artifact_id)
        ranked = sorted((t for t in done if CHECKPOINT_ATTR in t.user_attrs), key=lambda t: t.value or 0.0,
                        reverse=maximize)
        survivors = k - 1  # this trial takes one of the k places
        for t in ranked[survivors:]:
            try:
                self.store.remove(t.user_attrs[CHECKPOINT_ATTR])
            except (ArtifactNotFound, FileNotFoundError):
                pass  # already removed by an earlier trial or another worker

