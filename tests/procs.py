"""Helpers for the tests that run real `hpsearch run` processes against a real storage (test_workers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

HERE = Path(__file__).resolve().parent
EXE = Path(sys.executable).with_name("hpsearch")  # the console script of the environment running the tests

# Storage back-ends by name: the environment variable holding a server's URL (None: a SQLite file, always there).
# .ci/run starts the servers and sets the variables; elsewhere those back-ends are skipped with the reason.
BACKENDS: dict[str, str | None] = {
    "sqlite": None,
    "postgresql": "HPSEARCH_POSTGRES_URL",
    "mysql": "HPSEARCH_MYSQL_URL",
}


@contextmanager
def storage(backend: str, folder: Path, name: str) -> Iterator[tuple[str, str]]:
    """(URL, study name) of a fresh study on `backend`; a server's study is deleted afterwards."""
    var = BACKENDS[backend]
    if var is None:
        yield f"sqlite:///{folder / 'studies.db'}", name
        return
    url = os.environ.get(var)
    if not url:
        pytest.skip(f"set {var} to a {backend} URL to run this test (.ci/run starts a server and sets it)")
    study = f"{name}-{uuid.uuid4().hex[:8]}"  # a shared server: never meet another run's study
    try:
        yield url, study
    finally:
        try:
            optuna.delete_study(study_name=study, storage=url)
        except KeyError:
            pass


def start(space: Path, url: str, study: str, cwd: Path, trials: int, worker: int = 0,
          *extra: str) -> subprocess.Popen[str]:
    """A real `hpsearch run` worker process; its output (stdout and stderr) is read with output()."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HPSEARCH_WORKER=str(worker),
               OMP_NUM_THREADS="1")  # several workers share 2 cores: one thread each
    log = open(cwd / f"worker-{worker}-{uuid.uuid4().hex[:6]}.log", "w")  # noqa: SIM115 (closed by output())
    proc = subprocess.Popen([str(EXE), "run", str(space), "--storage", url, "--study", study, "--trials",
                             str(trials), *extra], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env=env)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    """Wait for the process to end; everything it printed."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log.close()  # type: ignore[attr-defined]
    return Path(proc.log.name).read_text()  # type: ignore[attr-defined]


def trials(url: str, study: str) -> list[FrozenTrial]:
    """The study's trials as they are now; [] while the study does not exist yet."""
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_for(what: str, check: Callable[[], Any], procs: list[subprocess.Popen[str]],
             timeout: float = 240) -> Any:
    """Poll `check` until it returns something truthy; fail (killing the workers) on timeout or a dead worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:  # the storage is still being created by a worker
            found = None
        if found:
            return found
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            logs = "\n".join(output(p) for p in dead)
            for p in procs:
                p.kill()
            pytest.fail(f"a worker ended while waiting for {what}:\n{logs}")
        time.sleep(0.1)
    for p in procs:
        p.kill()
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def pid_of(trial: FrozenTrial) -> int | None:
    worker = trial.user_attrs.get("worker")
    return int(worker.rsplit(":", 1)[1]) if worker else None


def figures(all_trials: list[FrozenTrial]) -> dict[str, int]:
    """started, completed, pruned, failed, retried and lost trials of a study.

    Lost: a trial that ended neither complete nor pruned and whose reruns (retry_of chains) did not either, plus
    any trial still running or waiting. Must be 0.
    """
    by_number = {t.number: t for t in all_trials}
    retry_of = {t.number: t.user_attrs["retry_of"] for t in all_trials if "retry_of" in t.user_attrs}
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    recovered = set()
    for number, original in retry_of.items():
        if by_number[number].state in done:
            while original is not None:
                recovered.add(original)
                original = retry_of.get(original)
    lost = [t for t in all_trials if t.state not in done and t.number not in recovered]
    return {
        "started": sum(1 for t in all_trials if t.datetime_start is not None),
        "completed": sum(1 for t in all_trials if t.state == TrialState.COMPLETE),
        "pruned": sum(1 for t in all_trials if t.state == TrialState.PRUNED),
        "failed": sum(1 for t in all_trials if t.state == TrialState.FAIL),
        "retried": len(retry_of),
        "lost": len(lost),
    }
