"""What a run prints: a progress bar over the running trial's epochs, one line per finished trial."""

from __future__ import annotations

import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from .. import keys
from ..space import Space


class Progress:
    def __init__(self, space: Space, stream: Any = None, bars: bool = True, prefix: str = "") -> None:
        self.metric = space.study.metric
        self.stream = stream or sys.stderr
        self.bars, self.prefix = bars, prefix
        self.bar: tqdm | None = None
        self.bar_trial: int | None = None

    def epoch(self, trial: optuna.Trial, epoch: int, metrics: dict[str, float]) -> None:
        """Called after every epoch of the trial shown (study/trials.py)."""
        if not self.bars:
            return
        if self.bar_trial != trial.number:
            self.close()
            total = planned_epochs(trial.user_attrs)
            self.bar = tqdm(total=total, desc=f"trial {trial.number}", unit="epoch", leave=False,
                            file=self.stream, dynamic_ncols=True, disable=None)  # None: off when not a terminal
            self.bar_trial = trial.number
        assert self.bar is not None
        self.bar.set_postfix_str(f"{self.metric}={metrics[self.metric]:.4f} loss={metrics['train_loss']:.3f}")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.bar_trial = None, None

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: one line per finished trial."""
        self.close()
        print(self.prefix + format_trial(trial, self.metric), flush=True)


def format_trial(trial: FrozenTrial, metric: str) -> str:
    epochs = trial.user_attrs.get(keys.EPOCHS_RUN, len(trial.intermediate_values))
    total = planned_epochs(trial.user_attrs) or "?"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        value = f"{metric}={trial.value:.4f}"
    elif trial.intermediate_values:
        value = f"{metric}={trial.intermediate_values[max(trial.intermediate_values)]:.4f}"
    else:
        value = f"{metric}=-"
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    line = (f"trial {trial.number:>3}  {trial.state.name:<8}  {value}  epochs {epochs}/{total}  "
            f"{seconds:6.1f}s  {params}")
    reason = trial.user_attrs.get(keys.FAIL_REASON)
    return f"{line}\n            reason: {reason}" if trial.state == TrialState.FAIL and reason else line


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def planned_epochs(user_attrs: dict[str, Any]) -> int | None:
    """A trial's planned epochs: keys.EPOCHS, or (studies made before it) its stored config's train.epochs."""
    if keys.EPOCHS in user_attrs:
        return int(user_attrs[keys.EPOCHS])
    epochs = (user_attrs.get(keys.CONFIG) or {}).get("train", {}).get("epochs")
    return int(epochs) if epochs is not None else None
