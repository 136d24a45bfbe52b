"""study.py: storage URLs, every sampler and pruner by name, create/resume and its guard."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from hpsearch import SpaceError, load_space, suggest
from hpsearch.space.registry import PRUNERS, SAMPLERS
from hpsearch.study.samplers import make_pruner, make_sampler
from hpsearch.study.storage import StudyError, artifact_dir, open_storage, redact, running_dir, storage_url
from hpsearch.study.studies import create_or_resume, diff, load

HERE = Path(__file__).resolve().parents[1]  # tests/
TINY = HERE / "spaces" / "tiny.yaml"

# Options some samplers and pruners need before they can be built.
NEEDS = {"threshold": {"lower": 0.1}, "percentile": {"percentile": 25.0}}


def space_with(tmp_path: Path, study: str, body: str = "") -> object:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        study: {study}
        data: {{dataset: synthetic, val_size: 500}}
        model:
          width: {{type: categorical, choices: [4, 8]}}
          stages: {{type: int, low: 1, high: 2}}
          dropout: {{type: float, low: 0.0, high: 0.2, step: 0.1}}
    """) + textwrap.dedent(body))
    return load_space(path)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_by_name_samples_the_space(tmp_path: Path, name: str) -> None:
    space = space_with(tmp_path, f"{{sampler: {{name: {name}, seed: 3}}}}")
    study = optuna.create_study(sampler=make_sampler(space), direction="maximize")
    assert type(study.sampler).__name__ == SAMPLERS[name].info["optuna_class"]
    for i in range(3):
        trial = study.ask()
        config = suggest(trial, space)  # type: ignore[arg-type]
        assert config.model.width in (4, 8)
        study.tell(trial, float(i))


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_by_name(tmp_path: Path, name: str) -> None:
    options = "".join(f", {k}: {v}" for k, v in NEEDS.get(name, {}).items())
    space = space_with(tmp_path, f"{{pruner: {{name: {name}{options}}}}}")
    assert type(make_pruner(space)).__name__ == PRUNERS[name].info["optuna_class"]


def test_grid_sampler_needs_discrete_values(tmp_path: Path) -> None:
    space = space_with(tmp_path, "{sampler: {name: grid}}")
    study = optuna.create_study(sampler=make_sampler(space))  # type: ignore[arg-type]
    drawn = []

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, space)  # type: ignore[arg-type]
        drawn.append((config.model.width, config.model.stages, round(config.model.dropout, 6)))
        return 0.0

    while not study.sampler.is_exhausted(study):  # type: ignore[attr-defined]  # asked and told: no optimize here
        trial = study.ask()
        study.tell(trial, objective(trial))
    assert len(drawn) == 12
    # width x stages x dropout (0.0, 0.1, 0.2): the whole grid, each point once
    assert sorted(drawn) == sorted((w, s, d) for w in (4, 8) for s in (1, 2) for d in (0.0, 0.1, 0.2))
    with pytest.raises(SpaceError, match="optimizer.lr: the grid sampler .* needs every searched value to have "
                                         "choices or a step; this is a continuous float range: give it `step`"):
        space_with(tmp_path, "{sampler: {name: grid}}", "optimizer: {lr: {type: float, low: 0.01, high: 0.1}}\n")


def test_storage_defaults_and_artifact_dirs() -> None:
    space = load_space(TINY)
    assert storage_url(space) == "sqlite:///studies/tiny.db"
    assert storage_url(space, "sqlite:///x.db") == "sqlite:///x.db"
    assert artifact_dir("sqlite:////data/s/tiny.db", "tiny") == Path("/data/s/tiny/artifacts")
    assert artifact_dir("postgresql://u@h/db", "tiny") == Path("studies/tiny/artifacts")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:pa55@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("sqlite:///studies/x.db", "sqlite:///studies/x.db"),
    ("postgresql://u:p@ss/w@host/db", "postgresql://u:***@host/db"),  # raw '@' and '/' in the password
    ("postgresql://u@h/db?password=abc&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("postgresql://h:5432/db", "postgresql://h:5432/db"),
])
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_create_then_resume_then_refuse_a_changed_space(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = load_space(TINY)
    study = create_or_resume(space, url)
    study.enqueue_trial({"model.width": 4})
    assert create_or_resume(space, url).study_name == "tiny"
    changed = load_space(TINY, ["train.epochs=5", "model.width=8"])
    with pytest.raises(StudyError) as info:
        create_or_resume(changed, url)
    assert "train.epochs: 2 -> 5" in str(info.value) and "model.width:" in str(info.value)


def test_a_foreign_study_with_trials_is_not_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    foreign = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(StudyError, match="was not made by hpsearch"):
        create_or_resume(load_space(TINY), url)


def test_load_names_the_studies_that_exist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_or_resume(load_space(TINY), url)
    with pytest.raises(StudyError, match="no study named 'other'.*studies there: tiny"):
        load(url, "other")


def test_diff() -> None:
    assert diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 3, "d": 4}}) == [
        "a.b: 1 -> 3", "a.c: removed (was 2)", "a.d: added (4)"]


# -- reliability: SQLite for several workers, heartbeats, per-worker seeds, bad URLs ---------------------------------


def test_sqlite_storages_use_wal_and_take_the_write_lock_up_front(tmp_path: Path) -> None:
    """Readers never block writers (WAL); a storage transaction waits for another writer instead of failing."""
    import sqlite3
    import threading

    db = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{db}")
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holds the write lock
    done = threading.Event()
    thread = threading.Thread(target=lambda: (storage.get_all_studies(), done.set()))
    thread.start()
    assert not done.wait(0.5)  # even a read waits: it could go on to write (claiming a trial)
    other.execute("COMMIT")
    assert done.wait(30)
    thread.join()


SIMULTANEOUS = """
import sys, time
from hpsearch import load_space
from hpsearch.study.studies import create_or_resume
space = load_space(sys.argv[1])
while time.time() < float(sys.argv[3]):
    pass
create_or_resume(space, sys.argv[2])
"""


def test_workers_creating_a_new_storage_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    """Six processes open one new SQLite study within a millisecond: the losers of the table-creation race retry."""
    import os
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'new.db'}"
    at = str(time.time() + 5)  # after every process has imported hpsearch (optuna, no torch)
    procs = [subprocess.Popen([sys.executable, "-c", SIMULTANEOUS, str(TINY), url, at], stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ)) for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert load(url, "tiny").user_attrs["space_hash"] == load_space(TINY).hash()


def test_heartbeats_and_retries_follow_the_study_settings(tmp_path: Path) -> None:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    from hpsearch.study.resume import Retry

    url = f"sqlite:///{tmp_path / 's.db'}"
    assert not is_heartbeat_enabled(open_storage(url))  # readers (report, export) send no heartbeats
    # settings away from their defaults (60 s, no grace period, 3 retries): a storage that ignored them gives those
    settings = load_space(TINY, ["study.heartbeat_interval=7", "study.grace_period=30", "study.max_retry=5"]).study
    storage = open_storage(url, settings)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (7, 30)
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, Retry) and callback.max_retry == 5
    off = load_space(TINY, ["study.heartbeat_interval=null"]).study
    assert not is_heartbeat_enabled(open_storage(url, off))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_worker_index_offsets_the_sampler_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.study.seeds import worker_index

    for var in ("HPSEARCH_WORKER", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(var, raising=False)
    assert worker_index() == 0
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "4")  # a Kubernetes Indexed Job
    assert worker_index() == 4
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert worker_index() == 7
    monkeypatch.setenv("HPSEARCH_WORKER", "2")  # ours wins
    assert worker_index() == 2
    monkeypatch.setenv("HPSEARCH_WORKER", "two")
    with pytest.raises(StudyError, match="HPSEARCH_WORKER='two': a worker index must be a whole number"):
        worker_index()

    firsts = []
    for index in ("0", "1"):  # two workers starting the same new study at once draw different trials
        monkeypatch.setenv("HPSEARCH_WORKER", index)
        study = create_or_resume(load_space(TINY), f"sqlite:///{tmp_path / (index + '.db')}")
        firsts.append(suggest(study.ask(), load_space(TINY)))
    assert firsts[0] != firsts[1]


@pytest.mark.parametrize("url, message", [
    ("postgresql://u:s3cret@host:notaport/db", "postgresql://u:***@host:notaport/db is not a database URL"),
    ("no-scheme", "the study storage no-scheme is not a database URL\nfix: write DIALECT[+DRIVER]://"),
    ("mysql+nosuchdriver://u:s3cret@h/db", "its database driver is not installed"),
    ("postgresql://u:s3cret@127.0.0.1:1/db", "Connection refused"),
    ("sqlite:////proc/hpsearch/x.db", "cannot create the folder for the study database /proc/hpsearch/x.db"),
    ("sqlite:////proc/x.db", "cannot open the study storage sqlite:////proc/x.db: (sqlite3.OperationalError) "
                             "unable to open database file\nfix: check that /proc/x.db is an SQLite database in a "
                             "folder you may write, or run hpsearch from a folder you may write"),
])
def test_bad_storage_urls_are_one_clear_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StudyError) as info:
        open_storage(url)
    assert message in str(info.value) and "s3cret" not in str(info.value)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("hello")
    with pytest.raises(StudyError, match="file is not a database"):
        open_storage(f"sqlite:///{tmp_path / 'notes.db'}")


def test_resuming_with_other_reliability_settings_is_allowed(tmp_path: Path) -> None:
    """Heartbeats and retries are how a study is run, not what it searches: changing them keeps the study."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_or_resume(load_space(TINY), url).enqueue_trial({"model.width": 4})
    changed = load_space(TINY, ["study.heartbeat_interval=5", "study.max_retry=0", "study.keep_checkpoints=1"])
    assert len(create_or_resume(changed, url).trials) == 1


def test_resuming_with_another_metric_says_what_changed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_or_resume(load_space(TINY), url)
    with pytest.raises(StudyError) as info:
        create_or_resume(load_space(TINY, ["study.metric=val_loss"]), url)
    message = str(info.value)
    assert "metric: 'val_acc' -> 'val_loss'" in message and "direction: 'maximize' -> 'minimize'" in message
    assert "fix: start a new study with --study tiny-2" in message


def test_sqlite_storage_is_wal_with_normal_sync(tmp_path: Path) -> None:
    from hpsearch.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with storage.engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_studies_of_one_name_on_two_storages_keep_their_running_states_apart() -> None:
    """A SQLite study and a PostgreSQL study named alike, run from one folder: trial-0.pt of one must never be the
    other's (a SIGTERM of one overwrote the other's). The workers of one study, given one URL, share the folder."""
    sqlite = running_dir("sqlite:///studies/x.db", "x")
    server = running_dir("postgresql://u:secret@db/h", "x")
    assert sqlite == Path("studies/x/running")
    assert server.parent == sqlite.parent and server != sqlite and server.name.startswith("running-")
    assert running_dir("postgresql://u:other@db/h", "x") == server  # the password is not part of it
    assert running_dir("postgresql://u:secret@db2/h", "x") != server
    assert "secret" not in str(server)
