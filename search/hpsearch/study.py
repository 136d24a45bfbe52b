"""Studies: storage URLs, samplers and pruners by name, create-or-resume with a guard on the space.

Optuna's RDB storage is the whole distributed engine: every worker on every machine opens the same URL.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore

from . import config as C
from .space import Space

DEFAULT_DIR = Path("studies")
SQLITE_TIMEOUT_S = 60  # how long a SQLite writer waits for another's lock before giving up


class StudyError(Exception):
    """A storage or study problem the user can fix; str() is the whole message."""


def redact(url: str) -> str:
    """The URL with any password replaced by ***, fit for logs and errors."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def storage_url(space: Space, override: str | None = None) -> str:
    """--storage, else study.storage, else sqlite:///studies/<name>.db."""
    return override or space.study.storage or f"sqlite:///{DEFAULT_DIR / (space.study.name + '.db')}"


def artifact_dir(url: str, study_name: str) -> Path:
    """Where a study's checkpoints live: beside a SQLite file, else under ./studies/."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):]).parent / study_name / "artifacts"
    return DEFAULT_DIR / study_name / "artifacts"


def artifact_store(url: str, study_name: str) -> FileSystemArtifactStore:
    path = artifact_dir(url, study_name)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for the URL; a bad or unreachable URL raises StudyError naming it (password hidden)."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"cannot create the folder for the study database {path}: {exc.strerror}") from None
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # SQLAlchemy raises many kinds: bad URL, missing driver, refused connection
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(f"cannot open the study storage {redact(url)}: {redact(reason)}\n"
                         "fix: pass --storage with a URL such as sqlite:///studies/NAME.db or "
                         "postgresql://USER:PASSWORD@HOST/DB, and check the server is reachable") from None


def make_sampler(space: Space, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler by name; its seed is offset so a resumed or parallel run does not repeat trials."""
    spec = dict(space.study.sampler)
    name = spec.pop("name")
    cls = getattr(optuna.samplers, C.SAMPLERS[name])
    if "seed" in spec and spec["seed"] is not None:
        spec["seed"] = int(spec["seed"]) + seed_offset
    if name == "grid":
        grid: dict[str, list[Any]] = {}
        for pname, param in space.params().items():
            values = param.grid()
            if values is None:
                raise StudyError(f"the grid sampler needs every searched value to have choices or a step; "
                                 f"{pname} is a continuous {param.type} range: give it `step` or use another "
                                 "sampler (tpe, random, qmc)")
            grid[pname] = values
        return _quietly(cls, grid, **spec)
    return _quietly(cls, **spec)


def make_pruner(space: Space) -> optuna.pruners.BasePruner:
    spec = dict(space.study.pruner)
    return _quietly(getattr(optuna.pruners, C.PRUNERS[spec.pop("name")]), **spec)


def _quietly(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """Build without Optuna's ExperimentalWarning (qmc, gp, ...): the user chose it by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(*args, **kwargs)


def create_or_resume(space: Space, url: str, study_name: str | None = None, seed_offset: int = 0) -> optuna.Study:
    """Open the study (creating it on first use) with the space's sampler and pruner.

    A study remembers the space it was created from; resuming with a different one is refused, since its trials
    would not be comparable, with a message that names what changed. `seed_offset` separates the sampler seeds
    of workers on one study; the number of trials already there is added, so a resumed run does not repeat one.
    """
    name = study_name or space.study.name
    storage = open_storage(url)
    existing = _existing(storage, name)
    sampler = make_sampler(space, seed_offset=seed_offset + (len(existing.trials) if existing else 0))
    try:
        direction = optuna.study.StudyDirection[space.study.direction.upper()]
        study = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                    sampler=sampler, pruner=make_pruner(space), load_if_exists=True)
    except ValueError as exc:  # e.g. an existing study with the other direction
        raise StudyError(f"cannot resume study {name!r} in {redact(url)}: {exc}") from None
    stored = study.user_attrs.get("space")
    if stored is None:
        if study.trials:
            raise StudyError(f"study {name!r} in {redact(url)} already has trials but was not made by hpsearch; "
                             "choose another name with --study NAME")
        study.set_user_attr("space", space.identity())
        study.set_user_attr("space_hash", space.hash())
        study.set_user_attr("space_file", space.source)
    elif stored != space.identity():
        changes = diff(stored, space.identity())
        shown = "\n".join(f"  {c}" for c in changes[:20]) + ("\n  ..." if len(changes) > 20 else "")
        raise StudyError(f"study {name!r} in {redact(url)} was created from a different space; changed:\n{shown}\n"
                         f"fix: start a new study with --study {name}-2 (or a new study.name), or run the "
                         "original space to add trials to this one")
    return study


def _existing(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


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
