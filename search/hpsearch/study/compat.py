"""The only module that touches Optuna's or torch's private API, behind a version check, each use with a public
fallback.

Five uses need names Optuna or torch do not promise to keep (the measured gains' figures are in docs/BENCHMARKS.md):

- `set_user_attrs`: a trial's attributes written in one transaction, through the RDBStorage method Optuna itself
  uses per key (`_set_trial_attr_without_commit`, `_create_scoped_session`). Fallback: `trial.set_user_attr` per key.
- `frozen`: a running trial read back by its storage id. Fallback: found among the study's trials by number.
- `artifact_records`: which of a trial's system attrs record an artifact (the dashboard hides those whose file was
  removed). Optuna's upload_artifact writes each as `artifacts:<id>` and optuna-dashboard lists a trial's artifacts
  by that prefix, but neither publishes it; the public `optuna.artifacts.get_all_artifact_meta` lists the artifacts
  without naming their attrs, and reads the storage once per trial. Fallback: none found (every record shown).
- `HyperbandPruner`: the study each bracket sees is built once (`_create_bracket_study`) and shares the study's
  per-trial cache (`_thread_local`). Fallback: Optuna's Hyperband unchanged.
- `save_torchscript`, `load_torchscript`: a TorchScript file with hpsearch.json inside, through torch.jit.save's and
  torch.jit.load's `_extra_files` (documented, yet named private: the only way torch offers; users of an exported
  file read it so). Fallback: the file appended to, and read from, the archive's `extra/` folder with zipfile,
  where `_extra_files` puts it.

The Optuna uses run only when Optuna's version is in TESTED (the range CI runs) and the private names exist; the torch
ones only when torch's is in TORCH_TESTED and torch.jit.save and load take `_extra_files`. Anywhere else
(`PRIVATE_API`, `TORCH_PRIVATE_API` False) the public path runs, with the same results (slower; for the dashboard's
view, with stale records shown; the same TorchScript file). tests/study/test_compat.py runs both paths, and fails
when CI's Optuna or torch is outside the tested ranges.
"""

from __future__ import annotations

import inspect
import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import optuna

TESTED = ((5, 0), (6, 0))  # [from, to): the Optuna versions CI runs, whose private names below were read and tested
TORCH_TESTED = ((2, 4), (2, 15))  # [from, to): the torch versions whose torch.jit.save `_extra_files` was read and
# tested (CI's 2.14; the keyword has been the same since torch 1.x)
ARTIFACT_RECORD = "artifacts:"  # the system-attr key prefix of an artifact's record (Optuna 5, optuna-dashboard 0.21)


def _version(text: str) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _private_names_exist() -> bool:
    try:
        from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
        from optuna.storages._rdb import models  # noqa: F401
        from optuna.storages._rdb.storage import _create_scoped_session  # noqa: F401
    except ImportError:
        return False
    return (ARTIFACTS_ATTR_PREFIX == ARTIFACT_RECORD  # the key upload_artifact records an artifact under
            and hasattr(optuna.storages.RDBStorage, "_set_trial_attr_without_commit")
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


def artifact_records(system_attrs: Mapping[str, Any]) -> dict[str, str]:
    """{system-attr key: artifact id} for each artifact recorded among a trial's system attrs.

    Optuna's upload_artifact records an artifact as the attr `artifacts:<id>` (ARTIFACT_RECORD), which is where
    optuna-dashboard lists a trial's artifacts from; the public get_all_artifact_meta names no attr and reads the
    storage once per trial. The fallback finds none (the dashboard then lists a removed checkpoint, whose download
    fails, as plain optuna-dashboard does).
    """
    if not PRIVATE_API:
        return {}
    return {key: key[len(ARTIFACT_RECORD):] for key in system_attrs if key.startswith(ARTIFACT_RECORD)}


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


# Decided at the first use, so that importing this module loads no torch (`hpsearch validate` must not); a test
# may set it.
TORCH_PRIVATE_API: bool | None = None


def torch_private_api_usable(version: str) -> bool:
    """Whether this torch version is one the TorchScript private path was tested on, and has `_extra_files`."""
    import torch

    return (TORCH_TESTED[0] <= _version(version) < TORCH_TESTED[1]
            and all("_extra_files" in inspect.signature(f).parameters for f in (torch.jit.save, torch.jit.load)))


def _torch_private() -> bool:
    global TORCH_PRIVATE_API
    if TORCH_PRIVATE_API is None:
        import torch

        TORCH_PRIVATE_API = torch_private_api_usable(torch.__version__)
    return TORCH_PRIVATE_API


def save_torchscript(module: Any, f: IO[bytes], extra_files: Mapping[str, str]) -> None:
    """torch.jit.save(module, f) with each of `extra_files` (name: text) inside the archive, as torch.jit.load's
    `_extra_files` reads them back.

    torch.jit.save's `_extra_files` (documented, but named private) is the only way torch writes one. The fallback
    saves without it and appends each file to the archive's `<archive>/extra/` folder with zipfile, where
    `_extra_files` puts it and torch.jit.load finds it (the whole archive is built in memory first).
    """
    import torch

    if _torch_private():
        torch.jit.save(module, f, _extra_files=dict(extra_files))
        return
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    with zipfile.ZipFile(buffer, "a") as archive:
        root = archive.namelist()[0].split("/", 1)[0]  # every record sits in the archive's one top folder
        for name, text in extra_files.items():
            archive.writestr(f"{root}/extra/{name}", text)
    f.write(buffer.getvalue())


def load_torchscript(path: str | Path, names: Iterable[str]) -> tuple[Any, dict[str, str]]:
    """torch.jit.load(path) on the CPU, and the text of each extra file in `names` ("" for one it lacks).

    torch.jit.load's `_extra_files` reads them. The fallback reads each from the archive's `<archive>/extra/` folder
    with zipfile (the layout training/checkpoint.exported_kind tells an export by).
    """
    import torch

    if _torch_private():
        extra: dict[str, Any] = dict.fromkeys(names, "")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return module, {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
    module = torch.jit.load(str(path), map_location="cpu")
    with zipfile.ZipFile(path) as archive:
        found = {n.rsplit("/extra/", 1)[1]: n for n in archive.namelist() if "/extra/" in n}
        return module, {name: archive.read(found[name]).decode() if name in found else "" for name in names}
