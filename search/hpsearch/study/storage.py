"""Storage: URLs (passwords hidden), Optuna's RDB storage opened with SQLite set up for many workers, and where a
study's files live (artifacts, running checkpoints).

Optuna's RDB storage is the whole distributed engine: every worker on every machine opens the same URL.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from ..errors import HpsearchError
from ..space import Space, StudySpec

DEFAULT_DIR = Path("studies")
SQLITE_TIMEOUT_S = 60  # how long a SQLite writer waits for another's lock before giving up
CONNECT_TIMEOUT_S = 10  # how long to wait for a database server to answer a new connection
OPEN_ATTEMPTS = 6  # workers that open a new storage at once race to create its tables: the losers try again
DRIVERS_FIX = ("install the driver: pip install -e '.[postgres]' (psycopg) for postgresql://, "
               "pip install -e '.[mysql]' (PyMySQL) for mysql+pymysql://")

SQLITE_FIX = "run hpsearch from a folder you may write, or pass --storage sqlite:////WRITABLE/FOLDER/NAME.db"
SQLALCHEMY_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")  # built in; others are plugins


class StudyError(HpsearchError):
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


def running_dir(url: str, study_name: str) -> Path:
    """Where running trials keep their last-epoch state for a retry: beside the study's artifacts, in a folder of
    that storage's own. A SQLite study's folder sits beside its file; a server's studies share ./studies/<name>/
    with the default SQLite study of the same name, so theirs is `running-<digest of the URL>` (the password left
    out): two studies of one name never overwrite each other's trial-N.pt, and every worker of one study, given
    the same URL, finds the same files."""
    if _sqlite_file(url) is not None:
        return artifact_dir(url, study_name).parent / "running"
    digest = hashlib.sha256(redact(url).encode()).hexdigest()[:10]
    return artifact_dir(url, study_name).parent / f"running-{digest}"


def open_storage(url: str, spec: StudySpec | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage for the URL; a bad or unreachable URL raises StudyError naming it (password hidden).

    With a StudySpec (workers that run trials), running trials send heartbeats, and a trial whose worker died is
    failed by the next live worker and retried (resume.Retry). SQLite gets WAL and immediate transactions, so
    several workers on one machine neither block readers nor fail with "database is locked".
    """
    from .resume import Retry

    _check_url(url)
    if _in_memory(url):
        raise StudyError(f"{url} is an in-memory SQLite database: the study would vanish with this process, its "
                         "trials and checkpoints lost\nfix: give a file, e.g. --storage sqlite:///studies/NAME.db")
    engine_kwargs: dict[str, Any] = {}
    sqlite_path = _sqlite_file(url)
    if sqlite_path is not None:
        try:
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"cannot create the folder for the study database {sqlite_path}: "
                             f"{exc.strerror}\nfix: {SQLITE_FIX}") from None
        _enable_wal(sqlite_path)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S, "isolation_level": None}}
    elif not url.startswith("sqlite"):
        engine_kwargs = {"pool_pre_ping": True}  # a server restart or idle timeout must not kill a long search
        if url.startswith(("postgresql", "mysql")):  # a server that accepts and never answers: give up soon
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        print(f"hpsearch: connecting to {redact(url)} (up to {CONNECT_TIMEOUT_S} s) ...", file=sys.stderr, flush=True)
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
            backend = sqlalchemy.engine.make_url(url).get_backend_name()
            if "Can't load plugin" in reason and backend not in SQLALCHEMY_DIALECTS:
                raise StudyError(f"the study storage {redact(url)} names a kind of database SQLAlchemy does not "
                                 f"know ({backend!r})\nfix: pass --storage sqlite:///studies/NAME.db, "
                                 "postgresql://USER:PASSWORD@HOST/DB or mysql+pymysql://USER:PASSWORD@HOST/DB"
                                 ) from None
            if isinstance(exc, ImportError) or "Can't load plugin" in reason:
                raise StudyError(f"cannot open the study storage {redact(url)}: its database driver is not "
                                 f"installed ({redact(reason)})\nfix: {DRIVERS_FIX}") from None
            fix = (f"check that {sqlite_path} is an SQLite database in a folder you may write, or {SQLITE_FIX}"
                   if sqlite_path is not None else "pass --storage with a URL such as sqlite:///studies/NAME.db or "
                   "postgresql://USER:PASSWORD@HOST/DB, and check the server is reachable")
            raise StudyError(f"cannot open the study storage {redact(url)}: {redact(reason)}\nfix: {fix}") from None
    if sqlite_path is not None:
        sqlalchemy.event.listen(storage.engine, "connect", _sync_normal)
        storage.engine.dispose()  # connections opened while the storage was set up reconnect with the pragma
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    return storage


def open_if_exists(url: str, spec: StudySpec | None = None) -> optuna.storages.BaseStorage | None:
    """The storage when it may hold studies already (a server, an existing SQLite file), else None, creating
    nothing; a bad URL is a StudyError either way. Lets a run check its study before it loads data, and still leave
    no file behind when the data is missing."""
    _check_url(url)
    if _in_memory(url):
        return open_storage(url, spec)  # refused there, with the fix
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        return None
    return open_storage(url, spec)


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


def _in_memory(url: str) -> bool:
    """sqlite://, sqlite:///, sqlite:///:memory: and file::memory: URLs: a database that lives only in memory."""
    if not url.startswith("sqlite"):
        return False
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        return False  # _check_url has said what is wrong
    database = parsed.database or ""
    return database in ("", ":memory:") or "mode=memory" in url or database.startswith("file::memory:")


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


