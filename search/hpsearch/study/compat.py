"""The only module that touches Optuna's private API, behind a version check, each use with a public-API fallback.

Four uses need names Optuna does not promise to keep (the measured gains' figures are in docs/BENCHMARKS.md):

- `set_user_attrs`: a trial's attributes written in one transaction, through the RDBStorage method Optuna itself
  uses per key (`_set_trial_attr_without_commit`, `_create_scoped_session`). Fallback: `trial.set_user_attr` per key.
- `frozen`: a running trial read back by its storage id. Fallback: found among the study's trials by number.
- `with_system_attrs`: a finished trial seen without the records of checkpoints removed since (the dashboard).
  Fallback: the trial as stored.
- `HyperbandPruner`: the study each bracket sees is built once (`_create_bracket_study`) and shares the study's
  per-trial cache (`_thread_local`). Fallback: Optuna's Hyperband unchanged.

Each is used only when Optuna's version is in TESTED (the range CI runs) and the private names exist; anywhere
else (`PRIVATE_API` False) the public path runs, with the same results (slower, or, for the dashboard's view, with
stale records shown). tests/study/test_compat.py runs both paths.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import optuna

TESTED = ((5, 0), (6, 0))  # [from, to): the Optuna versions CI runs, whose private names below were read and tested


def _version(text: str) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _private_names_exist() -> bool:
    try:
        from optuna.storages._rdb import models  # noqa: F401
        from optuna.storages._rdb.storage import _create_scoped_session  # noqa: F401
    except ImportError:
        return False
    return (hasattr(optuna.storages.RDBStorage, "_set_trial_attr_without_commit")
            and hasattr(optuna.pruners.HyperbandPruner, "_create_bracket_study"))


def private_api_usable(version: str) -> bool:
    """Whether this Optuna version is one the private path was tested on, and has the names it uses."""
    return TESTED[0] <= _version(version) < TESTED[1] and _private_names_exist()


# Read at every call, so that a test (or a user who distrusts it) can turn the private path off.
PRIVATE_API = private_api_usable(optuna.__version__)


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """`trial.set_user_attr` for every key; in one transaction on an RDB storage when PRIVATE_API.

    Optuna commits each attribute on its own: a session, the write lock, a read of the trial and a commit per key
    (about 1 ms on SQLite, several round trips to a database server), and a finished trial records a dozen.
    """
    backend = getattr(trial.storage, "_backend", trial.storage)  # the RDBStorage behind Optuna's _CachedStorage
    cached = getattr(trial, "_cached_frozen_trial", None)
    if not PRIVATE_API or not isinstance(backend, optuna.storages.RDBStorage) or cached is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial._trial_id, key,
                                                   value)
    cached.user_attrs.update(attrs)


def frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The live trial as a FrozenTrial read anew from its storage (its system attrs hold Optuna's retry_history).

    A live Trial exposes neither its storage id nor its system attrs publicly (Optuna 5 removed
    `Trial.system_attrs`); the fallback finds it among the study's trials by number.
    """
    trial_id = getattr(trial, "_trial_id", None)
    if PRIVATE_API and trial_id is not None:
        return trial.storage.get_trial(trial_id)
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def with_system_attrs(trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """A shallow copy of a FrozenTrial with other system attrs (the dashboard's view without removed checkpoints).

    FrozenTrial has no public way to change them; the fallback returns the trial unchanged (the dashboard then
    lists a removed checkpoint, whose download fails, as plain optuna-dashboard does).
    """
    if not PRIVATE_API or not hasattr(trial, "_system_attrs"):
        return trial
    view = copy.copy(trial)  # the storage's cached trial keeps its own attributes
    view._system_attrs = attrs
    return view


class HyperbandPruner(optuna.pruners.HyperbandPruner):
    """Optuna's Hyperband, with the study seen by each bracket built once rather than at every call.

    Optuna builds a fresh Study for the trial's bracket at every suggest and every should_prune: each looks the
    study's id up in the storage again, and each starts with an empty per-trial cache of the trial list, so TPE
    reads the trials once per parameter instead of once per trial. Here a bracket's Study is kept, and shares the
    study's per-trial cache (emptied by Optuna at ask and tell, as for a study without brackets): the same trials
    and decisions with half the storage reads. Without PRIVATE_API it is Optuna's Hyperband unchanged.
    """

    _studies: tuple[optuna.Study, dict[int, optuna.Study]] | None = None

    def _create_bracket_study(self, study: optuna.Study, bracket_id: int) -> optuna.Study:
        if not PRIVATE_API:
            return super()._create_bracket_study(study, bracket_id)
        if self._studies is None or self._studies[0] is not study:  # one study per pruner, in practice
            self._studies = (study, {})
        brackets = self._studies[1]
        if bracket_id not in brackets:
            bracket = super()._create_bracket_study(study, bracket_id)
            if hasattr(study, "_thread_local"):
                object.__setattr__(bracket, "_thread_local", study._thread_local)
            brackets[bracket_id] = bracket
        return brackets[bracket_id]
