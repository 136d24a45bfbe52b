"""Ctrl-C and SIGTERM land anywhere in a trial's life: asking it, starting its heartbeat, training, telling it.

A probe process runs one short search after another, in one process, and sends itself the signal a given time after
the first trial line is printed: every millisecond over the first 50 ms (where asking, suggesting, the heartbeat's
start and telling happen), then every 20 ms across a trial. Each time the run must stop (exit 130), leave no trial
RUNNING, every finished trial COMPLETE and every stopped one FAIL with its reason and a rerun queued.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
TINY = HERE / "spaces" / "tiny.yaml"

pytestmark = pytest.mark.slow

PROBE = r'''
import json, os, signal, sys, tempfile, threading
import optuna
from optuna.trial import TrialState
from hpsearch.cli import main
from hpsearch.study import progress

space, name, delays = sys.argv[1], sys.argv[2], [float(d) for d in sys.argv[3].split(",")]
finished = progress.Progress.finished
out = []
for delay in delays:
    os.chdir(tempfile.mkdtemp())
    armed = []

    def line(self, study, trial, delay=delay):
        finished(self, study, trial)
        if not armed:
            armed.append(threading.Timer(delay, os.kill, (os.getpid(), getattr(signal, name))))
            armed[0].start()

    progress.Progress.finished = line
    code = main(["run", space, "--trials", "12", "--set", "train.epochs=1"])
    armed[0].join()
    for s in (signal.SIGINT, signal.SIGTERM):  # the run leaves further signals ignored: a fresh start
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    trials = optuna.load_study(study_name="tiny", storage="sqlite:///studies/tiny.db").trials
    out.append({"delay": delay, "code": code,
                "states": [t.state.name for t in trials],
                "fail": [t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL],
                "retried": sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs),
                "failed": sorted(t.number for t in trials if t.state == TrialState.FAIL)})
print(json.dumps(out))
'''


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_of_a_trial_stops_the_run_with_every_trial_recorded(name: str, tmp_path: Path) -> None:
    delays = [i / 1000 for i in range(0, 51)] + [i / 1000 for i in range(60, 400, 20)]
    if name == "SIGTERM":
        delays = delays[::3]  # the same paths as SIGINT: a sample of the delays
    probe = subprocess.run([sys.executable, "-c", PROBE, str(TINY), name, ",".join(map(str, delays))],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert "Traceback" not in probe.stderr, probe.stderr[-3000:]
    runs = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(runs) == len(delays)
    for run in runs:
        assert run["code"] == 130, run
        assert "RUNNING" not in run["states"], run
        assert run["states"][0] == "COMPLETE", run  # the trial whose line armed the signal
        assert all(reason and reason.startswith(f"interrupted ({name})") for reason in run["fail"]), run
        assert run["retried"] == run["failed"], run  # every stopped trial has its rerun queued
        assert run["states"].count("WAITING") == len(run["failed"]), run
    assert any(run["failed"] for run in runs)  # some signals landed in a trial


def test_sighup_stops_a_run_as_sigterm_does(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP): the trial is recorded and its rerun queued, exit 130."""
    probe = subprocess.run([sys.executable, "-c", PROBE.replace('getattr(signal, name)', 'signal.SIGHUP'),
                            str(TINY), "SIGTERM", "0.05,0.2"], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    for run in json.loads(probe.stdout.strip().splitlines()[-1]):
        assert run["code"] == 130 and "RUNNING" not in run["states"], run
        assert all(reason.startswith("interrupted (SIGHUP)") for reason in run["fail"]), run
        assert run["retried"] == run["failed"], run


def test_the_first_signal_stops_and_later_ones_are_ignored(tmp_path: Path) -> None:
    """Three signals in a row: one stop, one message, no traceback from a handler or an atexit hook."""
    code = r'''
import os, signal, sys, threading
from hpsearch.cli import entry
from hpsearch.study import progress
finished = progress.Progress.finished
def line(self, study, trial):
    finished(self, study, trial)
    for delay in (0.01, 0.02, 0.03):
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
progress.Progress.finished = line
sys.argv = ["hpsearch", "run", sys.argv[1], "--trials", "12", "--set", "train.epochs=1"]
entry()
'''
    done = subprocess.run([sys.executable, "-c", code, str(TINY)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stderr.count("interrupted (SIGINT)") == 1, done.stderr[-3000:]

