"""Many real `hpsearch run` workers on one study, on every storage back-end; real signals to real processes.

SQLite always runs; PostgreSQL and MySQL/MariaDB run when .ci/run (or you) set HPSEARCH_POSTGRES_URL /
HPSEARCH_MYSQL_URL, and skip with that reason otherwise. Each test prints its figures (pytest -s shows them).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from procs import BACKENDS, HERE, figures, output, pid_of, start, storage, trials, wait_for
from sqlalchemy.engine import make_url

from hpsearch import load_space
from hpsearch.cli import main
from hpsearch.study.storage import running_dir
from hpsearch.training import checkpoint

STRESS = HERE / "spaces" / "stress.yaml"
CRASH = HERE / "spaces" / "crash.yaml"
EPOCHS = load_space(CRASH).sections["train"].fields["epochs"]
WORKERS, TRIALS_EACH = 4, 15
TROUBLE = ("Traceback", "database is locked", "StorageInternalError", "OperationalError")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def running_files(cwd: Path, url: str, study: str) -> list[Path]:
    """The running checkpoints of a study whose workers run in `cwd`."""
    return sorted((cwd / running_dir(url, study)).glob("*"))


def running_file(cwd: Path, url: str, study: str, number: int) -> Path:
    return cwd / running_dir(url, study) / f"trial-{number}.pt"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_four_workers_record_every_trial_once(backend: str, tmp_path: Path) -> None:
    """4 workers, fast trials, one study: every trial recorded once, by one worker; none failed; no lock errors."""
    with storage(backend, tmp_path, "stress") as (url, study):
        procs = [start(STRESS, url, study, tmp_path, TRIALS_EACH, worker=i) for i in range(WORKERS)]
        logs = [output(p) for p in procs]
        password = make_url(url).password
        for proc, log in zip(procs, logs, strict=True):
            assert proc.returncode == 0, log
            assert not any(s in log for s in TROUBLE), log
            assert not password or f":{password}@" not in log  # the URL is printed, its password never
        found = trials(url, study)
        print(f"\n{backend} stress ({WORKERS} workers x {TRIALS_EACH} trials): {figures(found)}")
        assert len(found) == WORKERS * TRIALS_EACH
        assert sorted(t.number for t in found) == list(range(WORKERS * TRIALS_EACH))
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in found)
        per_worker = {p.pid: sum(1 for t in found if pid_of(t) == p.pid) for p in procs}
        assert per_worker == {p.pid: TRIALS_EACH for p in procs}  # each ran its own, none ran one twice
        assert len({tuple(sorted(t.params.items())) for t in found}) == len(found)  # per-worker seeds
        assert figures(found)["lost"] == 0
        assert not running_files(tmp_path, url, study)  # no running state left behind
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
            assert main(["report", "--storage", url, "--study", study]) == 0
        assert f"{WORKERS * TRIALS_EACH} trials" in shown.getvalue()
        assert not password or f":{password}@" not in shown.getvalue()


def _kept_epoch(path: Path) -> int:
    """The epoch of a running state on disk; 0 while there is none (it is written atomically, never half)."""
    try:
        return int(checkpoint.read(path)["state"]["epoch"])
    except (OSError, checkpoint.CheckpointError):
        return 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_worker_s_trial_is_retried_by_a_live_worker_from_its_last_epoch(backend: str,
                                                                                 tmp_path: Path) -> None:
    """SIGKILL mid-trial: heartbeats stop, the live worker fails the trial, reruns its parameters, resumes it."""
    with storage(backend, tmp_path, "crash") as (url, study):
        victim = start(CRASH, url, study, tmp_path, 100, worker=0)
        live = start(CRASH, url, study, tmp_path, 6, worker=1)

        def victim_mid_trial() -> optuna.trial.FrozenTrial | None:
            """A running trial of the victim whose state on disk is 2 to EPOCHS - 4 epochs in (an epoch is
            reported before its state is written, so the reports alone can run one epoch ahead of the file)."""
            mine = [t for t in trials(url, study) if t.state == TrialState.RUNNING and pid_of(t) == victim.pid]
            return next((t for t in mine if 2 <= _kept_epoch(running_file(tmp_path, url, study, t.number))
                         <= EPOCHS - 4), None)

        wait_for("the live worker to start", lambda: any(pid_of(t) == live.pid for t in trials(url, study)),
                 [victim, live])
        killed = wait_for("a trial of the victim to be mid-way", victim_mid_trial, [victim, live])
        os.kill(victim.pid, signal.SIGKILL)
        output(victim)
        assert victim.returncode == -signal.SIGKILL
        kept = checkpoint.read(running_file(tmp_path, url, study, killed.number))  # its last epoch, on disk
        epoch = kept["state"]["epoch"]
        assert kept["trial"] == killed.number and 2 <= epoch < EPOCHS

        log = output(live)
        assert live.returncode == 0 and "Traceback" not in log, log
        found = trials(url, study)
        by_number = {t.number: t for t in found}
        dead = by_number[killed.number]
        assert dead.state == TrialState.FAIL
        retries = [t for t in found if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number]
        assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in found]
        retry = retries[0]
        assert retry.state == TrialState.COMPLETE and pid_of(retry) == live.pid
        assert retry.params == dead.params
        assert retry.user_attrs["retry_of"] == dead.number and "heartbeats" in retry.user_attrs["retry_reason"]
        assert retry.user_attrs["resumed_from"] == dead.number and retry.user_attrs["resumed_epoch"] == epoch
        assert retry.user_attrs["epochs_trained"] == EPOCHS - epoch  # finished epochs were not trained again
        assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
        for step in range(1, epoch + 1):  # the finished epochs, reported again from the checkpoint
            assert retry.intermediate_values[step] == dead.intermediate_values[step]
        assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in found)
        assert not running_files(tmp_path, url, study)
        counts = figures(found)
        print(f"\n{backend} kill test: {counts}, killed trial {dead.number} at epoch {epoch}, "
              f"resumed as trial {retry.number}")
        assert counts["retried"] == 1 and counts["failed"] == 1 and counts["lost"] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_worker_records_the_reason_keeps_the_state_and_the_next_run_resumes(sig: signal.Signals,
                                                                                     tmp_path: Path) -> None:
    """SIGTERM / Ctrl-C: exit 130, the trial failed with the reason, its last epoch kept, and a rerun resumes it."""
    with storage("sqlite", tmp_path, "crash") as (url, study):
        worker = start(CRASH, url, study, tmp_path, 100)

        def mid_trial() -> optuna.trial.FrozenTrial | None:
            running = [t for t in trials(url, study) if t.state == TrialState.RUNNING]
            return next((t for t in running if 2 <= len(t.intermediate_values) <= EPOCHS - 4), None)

        stopped = wait_for("a trial to be mid-way", mid_trial, [worker])
        os.kill(worker.pid, sig)
        log = output(worker, timeout=120)
        assert worker.returncode == 130, log
        assert "interrupted" in log and "Traceback" not in log
        found = {t.number: t for t in trials(url, study)}
        trial = found[stopped.number]
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["fail_reason"].startswith(f"interrupted ({sig.name})" if sig == signal.SIGTERM
                                                          else "interrupted")
        kept = checkpoint.read(running_file(tmp_path, url, study, trial.number))
        epoch = kept["state"]["epoch"]
        assert epoch >= 2 and len(trial.intermediate_values) in (epoch, epoch + 1)
        waiting = [t for t in found.values() if t.state == TrialState.WAITING]
        assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == trial.number
        assert waiting[0].params == trial.params
        if sig == signal.SIGINT:
            return  # the rerun is the same for both signals: once is enough

        rerun = start(CRASH, url, study, tmp_path, 1)
        log = output(rerun)
        assert rerun.returncode == 0, log
        retry = {t.number: t for t in trials(url, study)}[waiting[0].number]
        assert retry.state == TrialState.COMPLETE
        assert retry.user_attrs["resumed_from"] == trial.number and retry.user_attrs["resumed_epoch"] == epoch
        assert retry.user_attrs["epochs_trained"] == EPOCHS - epoch
        assert not running_files(tmp_path, url, study)
        print(f"\n{sig.name} test: {figures(list(trials(url, study)))}, stopped trial {trial.number} "
              f"at epoch {epoch}, resumed as trial {retry.number}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited: only its parent's wait is missing
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def test_workers_die_with_their_parent_and_their_trials_are_retried(tmp_path: Path) -> None:
    """SIGKILL of the command that started `--workers 2`: no worker goes on training unowned (each stops as
    SIGTERM stops it, recording its trial for a retry), and the rerun finishes the study with nothing lost."""
    url, study = f"sqlite:///{tmp_path / 'orphans.db'}", "orphans"
    parent = start(CRASH, url, study, tmp_path, 6, 0, "--workers", "2")
    running = wait_for("both workers mid-trial", lambda: [t for t in trials(url, study)
                                                         if t.state == TrialState.RUNNING
                                                         and len(t.intermediate_values) >= 1], [parent])
    workers = {pid for t in trials(url, study) if (pid := pid_of(t)) is not None}
    assert running and workers and parent.pid not in workers
    os.kill(parent.pid, signal.SIGKILL)
    output(parent)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker outlived the command that started it"
    stopped = [t for t in trials(url, study) if t.state == TrialState.FAIL]
    assert stopped and all("interrupted (SIGTERM)" in t.user_attrs["fail_reason"] for t in stopped)
    rerun = start(CRASH, url, study, tmp_path, 6, 0)
    log = output(rerun)
    assert rerun.returncode == 0, log
    assert figures(trials(url, study))["lost"] == 0


def test_a_killed_worker_s_remaining_trials_are_run_by_the_others(tmp_path: Path) -> None:
    """--workers 2 --trials 6, one worker SIGKILLed in its first trial: the other runs the rest, so the run still
    starts 6 trials (the killed one's trial among them, retried once its heartbeats are stale)."""
    url, study = f"sqlite:///{tmp_path / 'share.db'}", "share"
    parent = start(CRASH, url, study, tmp_path, 6, 0, "--workers", "2")
    first = wait_for("a worker mid-trial", lambda: next(
        (t for t in trials(url, study) if t.state == TrialState.RUNNING and t.intermediate_values), None), [parent])
    victim = pid_of(first)
    assert victim is not None and victim != parent.pid
    os.kill(victim, signal.SIGKILL)
    log = output(parent)
    assert parent.returncode == 1 and "was killed by SIGKILL; the other workers ran its remaining trials" in log
    found = trials(url, study)
    assert sum(1 for t in found if t.user_attrs.get("run")) == 6  # the run's count, the killed trial included
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in found if t.number != first.number)


def test_more_workers_than_trials_start_no_more_than_the_trials(tmp_path: Path) -> None:
    url, study = f"sqlite:///{tmp_path / 'few.db'}", "few"
    proc = start(CRASH, url, study, tmp_path, 1, 0, "--workers", "1000", "--set", "train.epochs=1")
    log = output(proc)
    assert proc.returncode == 2 and "--workers 1000: more than" in log and "Traceback" not in log
    proc = start(CRASH, url, study, tmp_path, 1, 0, "--workers", "3", "--set", "train.epochs=1")
    log = output(proc)
    assert proc.returncode == 0, log
    assert "--workers 3 for --trials 1: starting 1 worker" in log
    assert log.count("ready on") == 0 and len(trials(url, study)) == 1  # one worker: this process, no forks


def test_plain_concurrent_runs_draw_distinct_trials(tmp_path: Path) -> None:
    """Three `hpsearch run` started together on one study, none with HPSEARCH_WORKER: each draws its own trials
    (they used to see the same trial count and draw the same ones)."""
    url, study = f"sqlite:///{tmp_path / 'together.db'}", "together"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("HPSEARCH_WORKER", None)
    exe = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "hpsearch"
    exe = exe if exe.is_file() else Path(sys.executable).with_name("hpsearch")
    procs = [subprocess.Popen([str(exe), "run", str(CRASH), "--storage", url, "--study", study, "--trials", "3",
                               "--set", "train.epochs=1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    drawn = [tuple(sorted(t.params.items())) for t in trials(url, study)]
    assert len(drawn) == 9 and len(set(drawn)) == 9, drawn


def test_a_fused_group_killed_after_its_first_epoch_resumes_each_member_on_the_next_run(tmp_path: Path) -> None:
    """SIGKILL of a `--fuse 3` run once every member has saved its first epoch: the next run (once the heartbeats
    are stale) fails the three trials, retries each, and each retry resumes from its own member's running state.
    The study then holds the same completed trials, with the same values, as an uninterrupted run."""
    fixed = ("--fuse", "3", "--set", "model.dropout=0", "--set", "train.epochs=12")
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    baseline = start(CRASH, whole, "whole", tmp_path, 3, 0, *fixed)
    assert baseline.wait(timeout=300) == 0, output(baseline)
    output(baseline)
    url, study = f"sqlite:///{tmp_path / 'killed.db'}", "killed"
    victim = start(CRASH, url, study, tmp_path, 3, 0, *fixed)

    def every_member_saved() -> bool:
        running = [t for t in trials(url, study) if t.state == TrialState.RUNNING]
        return len(running) == 3 and all(running_file(tmp_path, url, study, t.number).is_file() for t in running)

    wait_for("every member's first saved epoch", every_member_saved, [victim])
    os.kill(victim.pid, signal.SIGKILL)
    output(victim)
    killed = trials(url, study)
    assert [t.state for t in killed] == [TrialState.RUNNING] * 3
    assert all(t.user_attrs["fused"] == 3 for t in killed)
    time.sleep(load_space(CRASH).study.grace_period + 1)  # their heartbeats go stale
    rerun = start(CRASH, url, study, tmp_path, 3, 0, *fixed)
    log = output(rerun)
    assert rerun.returncode == 0 and "Traceback" not in log, log
    found = trials(url, study)
    retries = [t for t in found if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [0, 1, 2]
    for retry in retries:
        assert retry.state == TrialState.COMPLETE
        assert retry.user_attrs["resumed_from"] == retry.user_attrs["retry_of"]  # its own member's state
        assert retry.user_attrs["resumed_epoch"] >= 1
        assert retry.user_attrs["epochs_trained"] == 12 - retry.user_attrs["resumed_epoch"]
    complete = sorted((tuple(sorted(t.params.items())), t.value) for t in found if t.state == TrialState.COMPLETE)
    expected = sorted((tuple(sorted(t.params.items())), t.value) for t in trials(whole, "whole"))
    assert [p for p, _ in complete] == [p for p, _ in expected]
    assert [v for _, v in complete] == pytest.approx([v for _, v in expected], abs=1e-6)
    assert figures(found)["lost"] == 0 and not running_files(tmp_path, url, study)
