"""Running a worker's trials in a test, as `hpsearch run` does (study/trials.Trials), for a given count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from hpsearch.study.trials import Trials
from hpsearch.study.worker import Worker


def counter(total: int) -> Callable[[], bool]:
    """claim() for a run of `total` trials."""
    left = [total]

    def claim() -> bool:
        left[0] -= 1
        return left[0] >= 0

    return claim


def run_trials(worker: Worker, trials: int, *, fuse: int = 1, progress: Any = None,
               lines: list[str] | None = None, **kwargs: Any) -> optuna.Study:
    """Ask, train and tell `trials` trials on the worker's study; `lines` collects "NUMBER STATE" per trial told."""

    def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if lines is not None:
            lines.append(f"{trial.number} {trial.state.name}")

    Trials(worker, fuse=fuse, claim=counter(trials), progress=progress, finished=finished, **kwargs).run()
    return worker.study
