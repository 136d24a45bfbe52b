"""runner.py: --workers N processes on one study, --trials as their total, signals passed on to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from hpsearch import load_space
from hpsearch.cli import main

HERE = Path(__file__).resolve().parents[1]  # tests/
TINY = HERE / "spaces" / "tiny.yaml"



def launch(workdir: Path, trials: int, epochs: int) -> subprocess.Popen[str]:
    """`hpsearch run TINY --workers 2` as a real process (for signals), its output merged into stdout."""
    exe = Path(sys.executable).with_name("hpsearch")
    return subprocess.Popen([str(exe), "run", str(TINY), "--workers", "2", "--trials", str(trials),
                             "--set", f"train.epochs={epochs}"], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def trials_of(workdir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'studies/tiny.db'}").trials


def test_the_workers_claim_exactly_the_runs_trials_from_one_count() -> None:
    """Four processes claiming at once from the run's count take exactly its trials, whoever claims first."""
    import multiprocessing

    from hpsearch.study.runner import _claimer

    ctx = multiprocessing.get_context("fork")
    slots, taken = ctx.Value("q", 0), ctx.Value("q", 0)

    def claim_all() -> None:
        claim = _claimer(slots, 10)
        while claim():
            with taken.get_lock():
                taken.value += 1

    procs = [ctx.Process(target=claim_all) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert taken.value == 10 and slots.value == 10
    assert _claimer(None, None)() and _claimer(None, 3)()  # one worker alone, or no limit: never stopped


def test_two_workers_run_the_total_on_one_study(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Every parameter continuous, so that two workers drawing the same configuration would be a seed clash.
    continuous = ["--set", "optimizer.adam.lr={type: float, low: 1e-4, high: 1e-2, log: true}"]
    assert main(["run", str(TINY), "--trials", "5", "--workers", "2", *continuous]) == 0
    captured = capsys.readouterr()
    assert "2 workers" in captured.err
    trials = trials_of(workdir)
    assert len(trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    lrs = [v for t in trials for k, v in t.params.items() if k.endswith(".lr")]
    assert len(set(lrs)) == 5  # distinct sampler streams
    assert "5 new trials (5 complete)" in captured.out


def test_workers_run_in_the_callers_folder_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Workers fork from a server started once per process: each run's workers still get that run's folder and
    environment: the relative default storage lands in the run's folder, and HPSEARCH_WORKER (which moves the
    sampler seeds on) reaches the workers, so the second run draws other values than the first."""
    drawn = []
    for name, index in (("first", "0"), ("second", "5")):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("HPSEARCH_WORKER", index)
        assert main(["run", str(TINY), "--trials", "2", "--workers", "2", "--set", "optimizer.adam.lr={type: float, "
                     "low: 1e-4, high: 1e-2, log: true}"]) == 0
        trials = trials_of(folder)
        assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        drawn.append({v for t in trials for k, v in t.params.items() if k.endswith(".lr")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]
    assert not drawn[0] & drawn[1]
    capsys.readouterr()


def test_missing_data_under_workers_fails_once_before_the_study(workdir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--workers", "2", "--set", "data.dataset=cifar100", "--set", "data.download=false",
                 "--data-root", str(workdir / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("cifar100 data not found") == 1 and "Fix: pass --data-root DIR" in err
    assert not (workdir / "studies").exists()  # no study was created or touched


def test_the_parent_of_workers_never_imports_torch(workdir: Path) -> None:
    """The workers' forkserver imports torch once; the parent only checks the data and opens the study, so its
    start-up does not compete with theirs on a small machine."""
    code = ("import sys; from hpsearch.cli import main; "
            f"code = main(['run', {str(TINY)!r}, '--trials', '2', '--workers', '2']); "
            "print('exit', code, 'torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert "exit 0 torch imported: False" in out.stdout, out.stdout + out.stderr


def test_the_forkserver_preload_never_touches_cuda() -> None:
    """Workers fork from a server that imported runner.PRELOAD; had those imports asked CUDA for its devices, a
    forked worker could not use CUDA (nor pick its GPU with CUDA_VISIBLE_DEVICES). Every device query goes through
    torch._C._cuda_getDeviceCount, so count its calls during the imports, in a fresh interpreter."""
    code = textwrap.dedent("""
        import importlib, torch
        calls = []
        count = torch._C._cuda_getDeviceCount
        torch._C._cuda_getDeviceCount = lambda *a: calls.append(1) or count(*a)
        from hpsearch.study.runner import PRELOAD
        for name in PRELOAD:
            importlib.import_module(name)
        print("queries", len(calls), "initialised", torch.cuda.is_initialized())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "queries 0 initialised False" in out.stdout, out.stdout + out.stderr


def test_gpus_without_cuda_is_a_clear_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA devices")
    assert main(["run", str(TINY), "--workers", "2", "--gpus", "0,1"]) == 2
    err = capsys.readouterr().err
    assert "--gpus 0,1: no CUDA device 0, 1 here (devices: none" in err and "drop --gpus to train on the CPU" in err


def test_sigterm_to_the_parent_stops_every_worker_cleanly(workdir: Path) -> None:
    proc = launch(workdir, trials=40, epochs=300)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until both workers have a trial under way
        try:
            running = [t for t in trials_of(workdir) if t.intermediate_values]
        except Exception:
            running = []
        if len(running) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    trials = trials_of(workdir)
    assert "Traceback" not in out
    stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]  # each rerun, for the next run
    assert len(stopped) == 2 and len(trials) == 4
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in stopped)
    for t in stopped:
        assert t.user_attrs["fail_reason"].startswith("interrupted (SIGTERM)")


def test_a_worker_killed_by_a_signal_fails_the_run(workdir: Path) -> None:
    """SIGKILL to one worker under --workers: the other finishes its share, the run's status is 1, and it says why."""
    proc = launch(workdir, trials=4, epochs=40)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline:  # wait until both workers run a trial that has reported; their pids
        try:  # are in the trials' `worker` attribute (host:pid)
            workers = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials_of(workdir)
                       if t.intermediate_values and "worker" in t.user_attrs}
        except Exception:
            workers = set()
        if len(workers) >= 2:
            break
        time.sleep(0.3)
    assert len(workers) == 2 and proc.pid not in workers, workers
    os.kill(max(workers), signal.SIGKILL)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, out
    assert "was killed by SIGKILL" in out and "Traceback" not in out


def test_startup_pauses_collection_then_freezes_what_it_made() -> None:
    import gc

    from hpsearch.study.runner import startup

    for collecting in (True, False):  # off before: as in a worker forked from the forkserver (hpsearch.preload)
        gc.enable() if collecting else gc.disable()
        with startup():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= len(made)  # the search collects; start-up's are skipped
        gc.unfreeze()
        assert gc.get_freeze_count() == 0


def test_the_forkserver_imports_without_collection_and_its_workers_collect() -> None:
    code = textwrap.dedent("""
        import gc
        import hpsearch.study.preload
        from hpsearch.study.runner import PRELOAD, startup
        print("preload first", PRELOAD[0] == "hpsearch.study.preload", "collecting", gc.isenabled())
        with startup():  # what a forked worker does before its search
            pass
        print("worker collecting", gc.isenabled())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "preload first True collecting False\nworker collecting True" in out.stdout, out.stdout + out.stderr


def test_a_run_leaves_collection_on_and_nothing_frozen(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In a long-lived process (a notebook, these tests), a run, failed or not, leaves the collector as it was."""
    import gc

    assert main(["run", str(TINY), "--trials", "1"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert main(["run", str(TINY), "--set", "data.dataset=cifar100", "--set", "data.download=false",
                 "--data-root", str(workdir / "nowhere")]) == 2
    assert gc.isenabled() and gc.get_freeze_count() == 0
    capsys.readouterr()


def test_a_search_started_through_the_runner_leaves_nothing_frozen(workdir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """runner.run on its own (a library caller, no `hpsearch run` around it) unfreezes what its start-up froze."""
    import gc

    from hpsearch.study.runner import Plan, run

    plan = Plan(load_space(TINY), f"sqlite:///{workdir / 'tiny.db'}", "tiny", trials=1, timeout=None)
    assert run(plan) == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    capsys.readouterr()
