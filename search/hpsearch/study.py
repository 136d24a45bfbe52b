"""Studies: storage URLs, samplers and pruners by name, create-or-resume with a guard on the space.

Optuna's RDB storage is the whole distributed engine: every worker on every machine opens the same URL.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore

from . import config as C
from .space import Space, StudySpec

DEFAULT_DIR = Path("studies")
SQLITE_TIMEOUT_S = 60  # how long a SQLite writer waits for another's lock before giving up
OPEN_ATTEMPTS = 6  # workers that open a new storage at once race to create its tables: the losers try again
# Where a worker's index comes from, first found wins: ours, a SLURM array task, a Kubernetes Indexed Job.
WORKER_INDEX_VARS = ("HPSEARCH_WORKER", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
DRIVERS_FIX = ("install the driver: pip install -e '.[postgres]' (psycopg) for postgresql://, "
               "pip install -e '.[mysql]' (PyMySQL) for mysql+pymysql://")
RUN_SEED_STRIDE = 100_003  # seed offset per worker index (one of several runs: machines, array tasks); far apart


class StudyError(Exception):
    """A storage or study problem the user can fix; str() is the whole message."""


def redact(url: str) -> str:
    """The URL with any password replaced by ***, fit for logs and errors.

    Up to the last '@', so a password with a raw '@' or '/' is hidden whole; a password=... query too.
    """
    url = re.sub(r"(://[^:/@?#]+:).*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


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


def running_dir(url: str, study_name: str) -> Path:
    """Where running trials keep their last-epoch state for a retry: beside the study's artifacts."""
    return artifact_dir(url, study_name).parent / "running"


def open_storage(url: str, spec: StudySpec | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage for the URL; a bad or unreachable URL raises StudyError naming it (password hidden).

    With a StudySpec (workers that run trials), running trials send heartbeats, and a trial whose worker died is
    failed by the next live worker and retried (resume.Retry). SQLite gets WAL and immediate transactions, so
    several workers on one machine neither block readers nor fail with "database is locked".
    """
    from .resume import Retry

    _check_url(url)
    engine_kwargs: dict[str, Any] = {}
    sqlite_path = _sqlite_file(url)
    if sqlite_path is not None:
        try:
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"cannot create the folder for the study database {sqlite_path}: "
                             f"{exc.strerror}") from None
        _enable_wal(sqlite_path)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S, "isolation_level": None}}
    elif not url.startswith("sqlite"):
        engine_kwargs = {"pool_pre_ping": True}  # a server restart or idle timeout must not kill a long search
    heartbeat: dict[str, Any] = {}
    if spec is not None and spec.heartbeat_interval is not None:
        heartbeat = {"heartbeat_interval": spec.heartbeat_interval, "grace_period": spec.grace_period,
                     "heartbeat_stale_trial_callback": Retry(spec.max_retry)}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            break
        except Exception as exc:  # SQLAlchemy raises many kinds: bad URL, missing driver, refused connection
            if attempt + 1 < OPEN_ATTEMPTS and _creation_race(exc):
                time.sleep(0.1 * 2**attempt * (1 + random.random()))
                continue
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, ImportError) or "Can't load plugin" in reason:
                raise StudyError(f"cannot open the study storage {redact(url)}: its database driver is not "
                                 f"installed ({redact(reason)})\nfix: {DRIVERS_FIX}") from None
            raise StudyError(f"cannot open the study storage {redact(url)}: {redact(reason)}\n"
                             "fix: pass --storage with a URL such as sqlite:///studies/NAME.db or "
                             "postgresql://USER:PASSWORD@HOST/DB, and check the server is reachable") from None
    if sqlite_path is not None:
        sqlalchemy.event.listen(storage.engine, "connect", _sync_normal)
        storage.engine.dispose()  # connections opened while the storage was set up reconnect with the pragma
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    return storage


def _sync_normal(dbapi_connection: Any, record: Any) -> None:
    """In WAL mode, NORMAL syncs at checkpoints rather than at every commit: still safe against a crash of the
    process (a power cut may lose the last commits, never the file), and each of the ~dozen writes of a trial
    (parameters, epoch reports, attributes) gets cheaper: ask + suggest on smoke.yaml went from 33 to 21 ms."""
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _check_url(url: str) -> None:
    """A URL SQLAlchemy cannot even parse is refused before any connection, with the form it should have."""
    try:
        sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        detail = f" ({redact(str(exc))})" if isinstance(exc, ValueError) else ""
        raise StudyError(f"the study storage {redact(url)} is not a database URL{detail}\n"
                         "fix: write DIALECT[+DRIVER]://USER:PASSWORD@HOST[:PORT]/DATABASE, e.g. "
                         "postgresql://hpsearch:PASSWORD@db-host:5432/hpsearch, or sqlite:///studies/NAME.db") from None


def _sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite URL; None for other URLs and in-memory databases."""
    if not url.startswith("sqlite"):
        return None
    try:
        database = sqlalchemy.engine.make_url(url).database
    except Exception:
        return None  # RDBStorage reports the malformed URL
    return Path(database) if database and database != ":memory:" and not database.startswith("file:") else None


def _enable_wal(path: Path) -> None:
    """Write-ahead logging: readers (a dashboard, a report) never block the workers' writes. Kept by the file."""
    try:
        with sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S) as db:
            db.execute("PRAGMA journal_mode=WAL")
        db.close()
    except sqlite3.Error:
        pass  # e.g. not a database: RDBStorage says so; a file system without WAL keeps the rollback journal


def _begin_immediate(conn: sqlalchemy.Connection) -> None:
    """Every SQLite transaction takes the write lock first (waiting up to SQLITE_TIMEOUT_S for it).

    A deferred transaction that reads and then writes fails at once with "database is locked" when another worker
    wrote in between, and two workers could both read a trial as WAITING (or a stale trial as RUNNING) and both
    claim it. Taking the lock up front serialises the read-then-write, as SELECT ... FOR UPDATE does on a server.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _creation_race(exc: Exception) -> bool:
    """Errors of several workers creating the same new storage at once (tables, schema version): try again."""
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or any(
        s in text for s in ("already exists", "duplicate key", "database is locked", "duplicate entry"))


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """`trial.set_user_attr` for every key, in one transaction on an RDB storage.

    Optuna commits each attribute on its own: a session, the write lock, a read of the trial and a commit per key
    (about 1 ms on SQLite, several round trips to a database server), and a finished trial records a dozen. This
    writes them through the same RDBStorage method Optuna uses, in one session; on any other storage, or an Optuna
    without that method, it falls back to one call per key.
    """
    backend = getattr(trial.storage, "_backend", trial.storage)  # the RDBStorage behind Optuna's _CachedStorage
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    cached = getattr(trial, "_cached_frozen_trial", None)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        write = None
    if not isinstance(backend, optuna.storages.RDBStorage) or write is None or cached is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            write(session, models.TrialUserAttributeModel, trial._trial_id, key, value)
    cached.user_attrs.update(attrs)


def worker_index() -> int:
    """This worker's index among several on one study (0 when alone), from WORKER_INDEX_VARS."""
    for var in WORKER_INDEX_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(0, int(value))
            except ValueError:
                raise StudyError(f"{var}={value!r}: a worker index must be a whole number >= 0") from None
    return 0


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
    name = C.PRUNERS[spec.pop("name")]
    return _quietly(HyperbandPruner if name == "HyperbandPruner" else getattr(optuna.pruners, name), **spec)


class HyperbandPruner(optuna.pruners.HyperbandPruner):
    """Optuna's Hyperband, with the study seen by each bracket built once rather than at every call.

    Optuna builds a fresh Study for the trial's bracket at every suggest and every should_prune: each looks the
    study's id up in the storage again, and each starts with an empty per-trial cache of the trial list, so TPE
    reads the trials once per parameter instead of once per trial. Here a bracket's Study is kept, and shares the
    study's per-trial cache (emptied by Optuna at ask and tell, as for a study without brackets): on smoke.yaml,
    half the storage reads (28 -> 14 a trial), the same trials and decisions. Where Optuna's internals differ (another
    version), it is Optuna's Hyperband unchanged.
    """

    _studies: tuple[optuna.Study, dict[int, optuna.Study]] | None = None

    def _create_bracket_study(self, study: optuna.Study, bracket_id: int) -> optuna.Study:
        if self._studies is None or self._studies[0] is not study:  # one study per pruner, in practice
            self._studies = (study, {})
        brackets = self._studies[1]
        if bracket_id not in brackets:
            bracket = super()._create_bracket_study(study, bracket_id)
            if hasattr(study, "_thread_local"):
                object.__setattr__(bracket, "_thread_local", study._thread_local)
            brackets[bracket_id] = bracket
        return brackets[bracket_id]


def _quietly(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """Build without Optuna's ExperimentalWarning (qmc, gp, ...): the user chose it by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(*args, **kwargs)


def create_or_resume(space: Space, url: str, study_name: str | None = None, seed_offset: int = 0) -> optuna.Study:
    """Open the study (creating it on first use) with the space's sampler and pruner.

    A study remembers the space it was created from; resuming with a different one is refused, since its trials
    would not be comparable, with a message that names what changed. The sampler's seed moves on by the trials
    already there, by `seed_offset` (the runner's worker processes) and by this run's worker index (worker_index:
    machines, array tasks), so neither a resumed run nor a parallel worker repeats another's trials.
    """
    name = study_name or space.study.name
    storage = open_storage(url, space.study)
    existing = _existing(storage, name)
    offset = seed_offset + (len(existing.trials) if existing else 0) + RUN_SEED_STRIDE * worker_index()
    sampler = make_sampler(space, seed_offset=offset)
    try:
        direction = optuna.study.StudyDirection[space.study.direction.upper()]
        study = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                    sampler=sampler, pruner=make_pruner(space), load_if_exists=True)
    except ValueError as exc:  # e.g. an existing study with the other direction
        raise StudyError(f"cannot resume study {name!r} in {redact(url)}: {exc}") from None
    has_trials = bool(study.get_trials(deepcopy=False))  # before the attrs: another worker may be creating it
    stored = study.user_attrs.get("space")
    if stored is None:
        if has_trials:
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
