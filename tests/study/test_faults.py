"""Faults inside a trial (a real divergence, an injected out-of-memory) and checkpoint files that go wrong."""

from __future__ import annotations

import errno
import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

import hpsearch.study.trials as trials_module
import hpsearch.training.train as train_module
from hpsearch import load_space
from hpsearch.cli import main
from hpsearch.study.storage import running_dir
from hpsearch.study.studies import create_or_resume
from hpsearch.training import checkpoint

HERE = Path(__file__).resolve().parents[1]  # tests/
TINY = HERE / "spaces" / "tiny.yaml"


def diverging_first(workdir: Path) -> tuple[Path, str]:
    """tiny.yaml whose sgd lr is 1e30 or 0.05, and a study on it whose first trial draws 1e30 (it diverges)."""
    space_file = workdir / "diverge.yaml"
    space_file.write_text(TINY.read_text().replace(
        "    sgd: {lr: {type: float, low: 1e-2, high: 0.1, log: true}}",
        "    sgd: {lr: {type: categorical, choices: [1.0e+30, 0.05]}}"))
    url = f"sqlite:///{workdir / 's.db'}"
    create_or_resume(load_space(space_file), url).enqueue_trial({"optimizer": "sgd", "optimizer.sgd.lr": 1e30})
    return space_file, url



def test_a_diverging_trial_fails_with_the_reason_and_the_next_one_runs(workdir: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A real NaN: lr 1e30 blows the loss up in the first epoch. Not retried (it would diverge again)."""
    space_file, url = diverging_first(workdir)
    assert main(["run", str(space_file), "--storage", url, "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "reason: training loss is nan in epoch 1: the run diverged; try a lower optimizer.lr" in out
    diverged, after = optuna.load_study(study_name="tiny", storage=url).trials
    assert diverged.state == TrialState.FAIL and diverged.params["optimizer.sgd.lr"] == 1e30
    assert diverged.user_attrs["fail_reason"].startswith("training loss is nan in epoch 1")
    assert after.state == TrialState.COMPLETE  # the study went on
    assert not list((workdir / running_dir(url, "tiny")).glob("*"))


def test_a_non_finite_validation_metric_fails_the_trial(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_evaluate = train_module.evaluate

    def inf_loss(*args: Any, **kwargs: Any) -> dict[str, float]:
        return {**real_evaluate(*args, **kwargs), "loss": float("inf")}

    monkeypatch.setattr(train_module, "evaluate", inf_loss)
    assert main(["run", str(TINY), "--trials", "1", "--set", "study.metric=val_loss"]) == 1  # it alone failed
    trial = optuna.load_study(study_name="tiny", storage="sqlite:///studies/tiny.db").trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "validation val_loss is inf in epoch 1: the run diverged"


def test_out_of_memory_fails_the_trial_frees_its_memory_and_the_next_one_runs(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An injected torch.OutOfMemoryError in the first trial's second epoch, on the CPU.

    By the time the trial's life releases memory (gc.collect, then the CUDA cache), the failed trial's model must
    already be unreachable: a traceback still alive at that point would keep every tensor of the trial.
    """
    refs: list[weakref.ref[torch.nn.Module]] = []
    alive_at_release: list[bool] = []
    real_build = train_module.build_model

    def build(config: Any, num_classes: int, trial_config: Any = None) -> torch.nn.Module:
        model = real_build(config, num_classes, trial_config)
        if not refs:  # the first trial's model runs out of memory at its first training step after a validation
            validated = {"yes": False}

            def forward_hook(module: torch.nn.Module, inputs: Any) -> None:
                if not module.training:
                    validated["yes"] = True
                elif validated["yes"]:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")

            model.register_forward_pre_hook(forward_hook)
        refs.append(weakref.ref(model))
        return model

    class Gc:
        @staticmethod
        def collect() -> int:
            alive_at_release.append(refs[0]() is not None)
            return gc.collect()

    monkeypatch.setattr(train_module, "build_model", build)
    monkeypatch.setattr(trials_module, "gc", Gc)
    assert main(["run", str(TINY), "--trials", "2"]) == 0
    out = capsys.readouterr().out
    first, second = optuna.load_study(study_name="tiny", storage="sqlite:///studies/tiny.db").trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "out of cpu memory in epoch 2; try a smaller batch_size or model"
    assert "reason: out of cpu memory in epoch 2" in out
    assert second.state == TrialState.COMPLETE
    assert refs[0]() is None  # (later entries: the second trial, and FLOP counting builds a model too)
    assert alive_at_release == [False]  # nothing held the failed trial's model when memory was released


# -- checkpoint files ---------------------------------------------------------------------------------------------


def payload(value: float) -> dict[str, Any]:
    return {"format": "test", "value": value, "weights": torch.full((1000,), value)}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = checkpoint.save(payload(1.0), tmp_path / "c.pt")
    real_save = torch.save

    def disk_full(obj: Any, f: Any) -> None:
        real_save(obj, f)
        f.truncate(100)  # half written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(checkpoint.CheckpointError, match="cannot write .*c.pt: No space left on device"):
        checkpoint.save(payload(2.0), path)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)

    def rename_fails(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(checkpoint.os, "replace", rename_fails)
    with pytest.raises(checkpoint.CheckpointError, match="cross-device"):
        checkpoint.save(payload(3.0), path)
    assert checkpoint.read(path)["value"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_write_never_replaces_what_is_not_a_regular_file_and_gets_open_s_mode(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(checkpoint.CheckpointError, match="pipe: it is not a regular file"):
        checkpoint.save(payload(1.0), pipe)
    assert pipe.is_fifo()
    umask = os.umask(0o027)
    try:
        fresh = checkpoint.save(payload(1.0), tmp_path / "fresh.pt")
        assert fresh.stat().st_mode & 0o777 == 0o640  # as open() would make it: 0o666 less the umask
        fresh.chmod(0o604)
        assert checkpoint.save(payload(2.0), fresh).stat().st_mode & 0o777 == 0o604  # a replaced file keeps its own
    finally:
        os.umask(umask)


def test_torch_s_short_write_is_reported_as_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def short(obj: Any, f: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 26048 vs 25944")

    monkeypatch.setattr(checkpoint.torch, "save", short)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.save(payload(1.0), tmp_path / "c.pt")
    assert str(info.value) == (f"cannot write {tmp_path / 'c.pt'}: the disk is full or failed (torch's writer "
                               "stopped short: unexpected pos 26048 vs 25944); choose a writable path")


WRITER = """
import sys, torch
from hpsearch.training import checkpoint
i = 0
while True:
    i += 1
    checkpoint.save({"i": i, "weights": torch.full((2_000_000,), float(i))}, sys.argv[1])
    print(i, flush=True)
"""


def test_sigkill_during_writes_never_leaves_a_corrupt_checkpoint(tmp_path: Path) -> None:
    """A real process rewriting an 8 MB checkpoint in a loop, killed at several moments: the file always loads."""
    path = tmp_path / "c.pt"
    for delay in (0.0, 0.013, 0.029, 0.05):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert proc.stdout is not None
        proc.stdout.readline()  # one complete save
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        got = checkpoint.read(path)
        assert torch.equal(got["weights"], torch.full((2_000_000,), float(got["i"])))


def test_checkpoint_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load_payload(tmp_path / "missing.pt")
    good = checkpoint.save(payload(1.0), tmp_path / "good.pt")
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:200])
    (tmp_path / "noise.pt").write_bytes(os.urandom(500))
    for name in ("truncated.pt", "noise.pt"):
        with pytest.raises(checkpoint.CheckpointError, match=f"cannot read checkpoint .*{name} .*corrupt or trunc"):
            checkpoint.load_payload(tmp_path / name)
    with pytest.raises(checkpoint.CheckpointError, match="not an hpsearch checkpoint"):
        checkpoint.load_payload(good)  # a dict, but not ours
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(checkpoint.CheckpointError, match="holds a list"):
        checkpoint.load_payload(tmp_path / "list.pt")


class Exploit:
    """Unpickling this runs a shell command: what a checkpoint from an untrusted source can hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_code_is_refused_and_the_code_never_runs(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    torch.save({"format": checkpoint.FORMAT, "state_dict": {}, "payload": Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(checkpoint.CheckpointError, match="which weights-only loading refuses"):
        checkpoint.load_payload(tmp_path / "evil.pt")
    assert main(["evaluate", str(tmp_path / "evil.pt")]) == 2  # the verb that takes a file from anywhere
    err = capsys.readouterr().err
    assert "which weights-only loading refuses" in err and "Traceback" not in err
    assert not marker.exists()


# -- faults of the machine under a finished or running trial: never the trial's failure ---------------------------


def _study(workdir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'studies' / 'tiny.db'}")


def test_a_running_folder_turned_read_only_leaves_finished_trials_complete(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The folder turns read-only once the trials have run: removing their running state fails (EROFS); their
    results stand and the remaining trials run."""
    def read_only(path: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "unlink", read_only)
    assert main(["run", str(TINY), "--trials", "3", "--set", "study.resume_interval=0"]) == 0
    assert [t.state for t in _study(workdir).trials] == [TrialState.COMPLETE] * 3
    assert "cannot remove its running state" in capsys.readouterr().err


def test_a_disk_that_fills_while_saving_the_running_state_lets_the_trial_finish(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's writer reports a full disk as RuntimeError ('unexpected pos'): the state is not saved, the trial goes
    on to its end and says why nothing was saved."""
    real_save = torch.save

    def disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and obj.get("format") == "hpsearch-running":
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4377")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    assert main(["run", str(TINY), "--trials", "2", "--set", "study.resume_interval=0"]) == 0
    trials = _study(workdir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all("unexpected pos" in t.user_attrs["running_checkpoint_error"] for t in trials)
    assert not list((workdir / "studies" / "tiny" / "running").glob(".*.tmp"))  # no half-written file left


def test_a_storage_that_fails_under_a_trial_stops_the_worker_and_the_rerun_retries_it(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """'database or disk is full' while trial 1 reports its second epoch: the worker stops with the reason (exit 1),
    trial 1 keeps its saved epoch and is queued again; the rerun resumes it, and nothing was lost."""
    real_report = optuna.trial.Trial.report
    failed: list[int] = []

    def report(self: optuna.trial.Trial, value: float, step: int) -> None:
        if self.number == 1 and step == 2 and not failed:
            failed.append(step)
            raise optuna.exceptions.StorageInternalError("(sqlite3.OperationalError) database or disk is full")
        real_report(self, value, step)

    monkeypatch.setattr(optuna.trial.Trial, "report", report)
    argv = ["run", str(TINY), "--trials", "3", "--set", "train.epochs=3", "--set", "study.resume_interval=0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the study's storage failed at epoch 2 of trial 1" in err and "database or disk is full" in err
    assert "Traceback" not in err and "rerun the same command" in err
    first, cut, retry = _study(workdir).trials
    assert first.state == TrialState.COMPLETE and cut.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == cut.params
    assert (workdir / "studies" / "tiny" / "running" / "trial-1.pt").is_file()  # its first epoch, kept
    assert main(["run", str(TINY), "--trials", "1", "--set", "train.epochs=3",
                 "--set", "study.resume_interval=0"]) == 0
    rerun = _study(workdir).trials[2]
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs["resumed_from"] == 1


def _fail_once(monkeypatch: pytest.MonkeyPatch, method: str, when: Any) -> list[bool]:
    """Make RDBStorage.`method` raise 'database or disk is full' the first time `when(*args)` holds."""
    real = getattr(optuna.storages.RDBStorage, method)
    failed: list[bool] = []

    def flaky(self: optuna.storages.RDBStorage, *args: Any, **kwargs: Any) -> Any:
        if not failed and when(self, *args, **kwargs):
            failed.append(True)
            raise optuna.exceptions.StorageInternalError("(sqlite3.OperationalError) database or disk is full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, method, flaky)
    return failed


def _finishing(number: int) -> Any:
    """when(): the storage is told that trial `number` completed."""
    def when(storage: optuna.storages.RDBStorage, trial_id: int, state: TrialState, *rest: Any, **kw: Any) -> bool:
        return state == TrialState.COMPLETE and storage.get_trial(trial_id).number == number
    return when


@pytest.mark.parametrize("fuse", ["1", "2"])
def test_a_storage_that_fails_as_a_finished_trial_is_told_keeps_its_state_and_the_rerun_finishes_it(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fuse: str) -> None:
    """The disk fills as trial 1's result is written (after training ended, inside Optuna's tell): the
    worker stops with one message (exit 1), trial 1 is failed with the reason and queued again, and its running
    state is kept, so the rerun resumes it at its last epoch instead of training it again."""
    failed = _fail_once(monkeypatch, "set_trial_state_values", _finishing(1))
    argv = ["run", str(TINY), "--trials", "3", "--set", "train.epochs=2", "--set", "study.resume_interval=0",
            "--fuse", fuse]
    assert main(argv) == 1 and failed
    err = capsys.readouterr().err
    assert "the study's storage failed" in err and "trial" in err and "1" in err and "disk is full" in err
    assert "Traceback" not in err and "rerun the same command" in err
    trials = _study(workdir).trials
    cut = trials[1]
    assert cut.state == TrialState.FAIL and "storage failed" in cut.user_attrs["fail_reason"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.state == TrialState.WAITING and retry.params == cut.params
    assert (workdir / "studies" / "tiny" / "running" / "trial-1.pt").is_file()  # its last epoch, kept
    assert not any(t.state == TrialState.RUNNING for t in trials)
    assert main(["run", str(TINY), "--trials", "1", "--set", "train.epochs=2", "--set", "study.resume_interval=0",
                 "--fuse", fuse]) == 0
    rerun = next(t for t in _study(workdir).trials if t.user_attrs.get("retry_of") == 1)
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs["resumed_from"] == 1
    assert rerun.user_attrs["epochs_trained"] == 0  # nothing trained twice
    assert not (workdir / "studies" / "tiny" / "running" / "trial-1.pt").exists()


@pytest.mark.parametrize("fuse", ["1", "2"])
def test_a_storage_that_fails_when_asked_for_a_trial_stops_with_one_message(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fuse: str) -> None:
    """The storage fails as the third trial is created: the worker stops with the reason (exit 1), the finished
    trials stand, nothing is left running."""
    calls: list[int] = []

    def third(storage: optuna.storages.RDBStorage, *args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        return len(calls) == 3

    _fail_once(monkeypatch, "_create_new_trial", third)  # what Optuna's cached storage calls to create one
    argv = ["run", str(TINY), "--trials", "4", "--set", "train.epochs=1", "--fuse", fuse]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the study's storage failed" in err and "disk is full" in err and "Traceback" not in err
    trials = _study(workdir).trials
    assert len(trials) == 2 and all(t.state != TrialState.RUNNING for t in trials)


def test_the_cpu_allocator_running_out_fails_the_trial_like_out_of_memory(workdir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's CPU allocator raises a plain RuntimeError: it is the trial's out of memory, not a traceback."""
    real_build = train_module.build_model
    built: list[int] = []

    def build(config: Any, num_classes: int, trial_config: Any = None) -> torch.nn.Module:
        built.append(1)
        if len(built) == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory:"
                               " you tried to allocate 6250000000000 bytes. Error code 12 (Cannot allocate memory)")
        return real_build(config, num_classes, trial_config)

    monkeypatch.setattr(train_module, "build_model", build)
    assert main(["run", str(TINY), "--trials", "2"]) == 0
    first, second = _study(workdir).trials
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"].startswith("out of cpu memory")
    assert second.state == TrialState.COMPLETE


def test_anything_else_a_trial_raises_fails_that_trial_and_the_study_goes_on(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_train = trials_module.train_group
    calls: list[int] = []

    def train_group(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise IndexError("index 7 is out of bounds for dimension 0 with size 4 (an unforeseen case)")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trials_module, "train_group", train_group)
    assert main(["run", str(TINY), "--trials", "2"]) == 0
    first, second = _study(workdir).trials
    assert first.state == TrialState.FAIL and second.state == TrialState.COMPLETE
    assert first.user_attrs["fail_reason"] == ("the trial raised IndexError in epoch 1: index 7 is out of bounds for "
                                               "dimension 0 with size 4 (an unforeseen case)")
    assert "Traceback" not in capsys.readouterr().err


def test_a_storage_full_for_a_moment_as_a_failure_is_written_leaves_the_reason_and_a_rerun(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The disk is full just as a diverged trial's reason is written, then has room again: the worker stops with
    one message (exit 1); the trial is FAIL with the storage's reason, never without one, and its rerun is queued;
    the next run reruns it (it diverges again, and says so)."""
    import sqlalchemy

    from hpsearch.study.records import Records

    space_file, url = diverging_first(workdir)
    fail = Records.fail
    full = [True]

    def fail_once(trial: optuna.Trial, reason: str, epochs: int) -> None:
        if full.pop() if full else False:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
        fail(trial, reason, epochs)

    monkeypatch.setattr(Records, "fail", staticmethod(fail_once))
    assert main(["run", str(space_file), "--storage", url, "--trials", "2"]) == 1
    assert "the study's storage failed" in capsys.readouterr().err
    cut, retry = optuna.load_study(study_name="tiny", storage=url).trials
    assert cut.state == TrialState.FAIL and "disk is full" in cut.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0
    assert main(["run", str(space_file), "--storage", url, "--trials", "1"]) == 1  # it alone ran, and failed
    rerun = optuna.load_study(study_name="tiny", storage=url).trials[1]
    assert rerun.state == TrialState.FAIL and rerun.user_attrs["fail_reason"].startswith("training loss is nan")
