"""Opening a study: create it on first use or resume it, with a guard that refuses a changed space (and, where the
data set's root is its data, changed data); load one to read it; say what changed between two spaces.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from .. import keys
from ..space import Space, SpaceError, TrialConfig, suggest
from ..space.load import space_from_identity
from ..training.rawdata import data_changes, data_identity
from .samplers import make_pruner, make_sampler
from .seeds import concurrent_offset, seed_offset
from .storage import StudyError, open_storage, redact


def create_or_resume(space: Space, url: str, study_name: str | None = None, process: int = 0,
                     storage: optuna.storages.BaseStorage | None = None, run: str = "",
                     existing: optuna.Study | None = None) -> optuna.Study:
    """Open the study (creating it on first use) with the space's sampler and pruner.

    A study remembers the space it was created from, and where the data set's root is its data (an image folder)
    which data that was (keys.DATA); resuming with a different one is refused, since its trials would not be
    comparable, with a message that names what changed. `existing`: the study as check_resumable found
    and checked it, reused as it is (one open of the study per command). The sampler's seed moves on by the trials
    already there, by `process` (the index of a --workers process) and by this run's worker index (seeds.py), so
    neither a resumed run nor a parallel worker repeats another's trials. `run` (the command's id) marks this run
    on the study: runs that start beside each other, at the same trial count, move apart (seeds.concurrent_offset)
    so that they cannot draw the same trials even without HPSEARCH_WORKER. A new study is named after its metric
    (`study.set_metric_names`), so the dashboard and `trials_dataframe()` say val_acc, not "Objective 0".
    """
    name = study_name or space.study.name
    storage = storage or open_storage(url, space.study)
    study = existing if existing is not None else _existing(storage, name)
    so_far = len(study.get_trials(deepcopy=False)) if study is not None else 0
    direction = optuna.study.StudyDirection[space.study.direction.upper()]
    sampler, pruner = make_sampler(space, seed_offset=seed_offset(so_far, process)), make_pruner(space)
    if study is None:
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                        pruner=pruner, load_if_exists=True)  # another worker may create it too
        except ValueError as exc:  # e.g. an existing study with the other direction
            raise StudyError(f"cannot resume study {name!r} in {redact(url)}: {exc}") from None
    else:
        study.sampler, study.pruner = sampler, pruner
    if existing is None or keys.SPACE not in study.user_attrs:
        new = _guard(study, space, url)
    else:
        new = False
    if study.directions != [direction]:
        raise StudyError(f"cannot resume study {name!r} in {redact(url)}: it {study.directions[0].name.lower()}s "
                         f"its objective, this space {space.study.direction}s {space.study.metric}")
    if new:  # ours from now on
        study.set_user_attr(keys.SPACE, space.identity())
        study.set_user_attr(keys.SPACE_HASH, space.hash())
        study.set_user_attr(keys.SPACE_FILE, space.source)
        identity = data_identity(space.fixed_data())  # the folder's listing, once: only a new study needs it here
        if identity is not None:
            study.set_user_attr(keys.DATA, identity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([space.study.metric])
    if run:
        extra = concurrent_offset(storage, storage.get_study_id_from_name(name), run, so_far)
        if extra:
            study.sampler = make_sampler(space, seed_offset=seed_offset(so_far, process) + extra)
    return study


def check_resumable(space: Space, url: str, study_name: str | None = None,
                    storage: optuna.storages.BaseStorage | None = None) -> optuna.Study | None:
    """The space guard alone, reading only: refuse at once (before the data loads) to resume a study made from
    another space or other images (an image folder's listing), or not by hpsearch. Returns the study found (None
    when it does not exist yet), for create_or_resume's `existing`."""
    name = study_name or space.study.name
    existing = _existing(storage or open_storage(url, space.study), name)
    if existing is not None:
        _guard(existing, space, url)
    return existing


def _guard(study: optuna.Study, space: Space, url: str) -> bool:
    """StudyError unless `study` may take this space's trials; True when it is new (no space stored yet). The
    data's identity is listed here only for a study that stored one, so once per process (check_resumable, or
    create_or_resume without `existing`)."""
    name = study.study_name
    if len(study.directions) != 1:
        raise StudyError(f"study {name!r} in {redact(url)} has {len(study.directions)} objectives; hpsearch runs "
                         "single-objective studies: choose another name with --study NAME")
    has_trials = bool(study.get_trials(deepcopy=False))  # before the attrs: another worker may be creating it
    stored = study.user_attrs.get(keys.SPACE)
    if stored is None:
        if has_trials:
            raise StudyError(f"study {name!r} in {redact(url)} already has trials but was not made by hpsearch; "
                             "choose another name with --study NAME")
        return True
    was, now = _what_trials_are(stored), _what_trials_are(space.identity())
    if was != now:
        changes = diff(was, now)
        shown = "\n".join(f"  {c}" for c in changes[:20]) + ("\n  ..." if len(changes) > 20 else "")
        raise StudyError(f"study {name!r} in {redact(url)} was created from a different space; changed:\n{shown}\n"
                         f"fix: start a new study with --study {name}-2 (or a new study.name), or run the "
                         "original space to add trials to this one")
    _guard_data(study, space, url)
    return False


def _guard_data(study: optuna.Study, space: Space, url: str) -> None:
    """StudyError when the study stored its data's identity (an image folder: the root is the data) and the data
    at this space's root is other data. A study of a data set whose root is only a location, or made before the
    identity was stored, has none and resumes as before."""
    stored = study.user_attrs.get(keys.DATA)
    if not isinstance(stored, dict):
        return
    data = space.fixed_data()
    now = data_identity(data)  # a missing folder: the loader's own DataError, before anything loads
    if now is None or now == stored:
        return
    name = study.study_name
    changes = data_changes(stored, now) or ["the folder's listing"]
    shown = "\n".join(f"  {c}" for c in changes)
    raise StudyError(f"study {name!r} in {redact(url)} was created from other images than those in "
                     f"{Path(data.root).expanduser()}; changed:\n{shown}\nfix: start a new study with --study "
                     f"{name}-2, or point --data-root at the original images")


# Where this machine keeps the data and whether it may fetch it: not what a trial is. A study resumes with
# another --data-root (the data moved, or another machine of the study keeps it elsewhere). Where the root is the
# data (an image folder), which images it holds is guarded apart: _guard_data, keys.DATA.
WHERE_NOT_WHAT = ("root", "download")


def _what_trials_are(identity: dict[str, Any]) -> dict[str, Any]:
    """A space's identity without the data's location (WHERE_NOT_WHAT): what the space guard compares."""
    data = identity.get("data")
    if not isinstance(data, dict):
        return identity
    return {**identity, "data": {k: v for k, v in data.items() if k not in WHERE_NOT_WHAT}}


def _existing(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    """The study of that name, or None; a missing one is looked up by name, not opened."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> TrialConfig:
    """A trial's whole TrialConfig: rebuilt from the study's stored space and the trial's parameters (the trial
    itself stores only the parameters, so that a table of trials stays readable); older studies stored it whole."""
    if keys.CONFIG in trial.user_attrs:
        return TrialConfig.from_dict(trial.user_attrs[keys.CONFIG])
    identity = study.user_attrs.get(keys.SPACE)
    if not isinstance(identity, dict):
        raise StudyError(f"study {study.study_name!r} has no stored space: it was not made by hpsearch, so its "
                         f"trial {trial.number} cannot be rebuilt")
    try:
        return suggest(optuna.trial.FixedTrial(trial.params, trial.number), space_from_identity(identity))
    except (ValueError, KeyError, SpaceError) as exc:
        raise StudyError(f"trial {trial.number} of study {study.study_name!r} does not fit the study's stored "
                         f"space ({exc})") from None


def load(url: str, study_name: str) -> optuna.Study:
    """An existing study, for the verbs that read one; a missing one is a StudyError listing those there."""
    storage = open_storage(url)
    found = _existing(storage, study_name)
    if found is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StudyError(f"no study named {study_name!r} in {redact(url)}; studies there: "
                         f"{', '.join(names) or 'none'} (run `hpsearch run SPACE` first)")
    return found


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two nested dicts: 'train.epochs: 30 -> 1'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else key
            if key not in old:
                out.append(f"{sub}: added ({new[key]!r})")
            elif key not in new:
                out.append(f"{sub}: removed (was {old[key]!r})")
            else:
                out.extend(diff(old[key], new[key], sub))
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
