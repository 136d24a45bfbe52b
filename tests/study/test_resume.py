"""resume.py and a trial's crash safety, in one process: retries, running checkpoints, resuming a trial.

The same paths with real processes and real signals are in test_workers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from runs import run_trials

from hpsearch import load_space
from hpsearch.space import Space
from hpsearch.study import resume
from hpsearch.study.storage import running_dir
from hpsearch.study.studies import create_or_resume
from hpsearch.study.worker import Worker
from hpsearch.training import checkpoint

HERE = Path(__file__).resolve().parents[1]  # tests/
TINY = HERE / "spaces" / "tiny.yaml"
EPOCHS = 4

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def space() -> Space:
    return load_space(TINY, [f"train.epochs={EPOCHS}", "study.resume_interval=0"])  # state saved every epoch


def stop_at(epoch: int, signal_name: str = "SIGTERM"):  # type: ignore[no-untyped-def]
    """An on_epoch hook that stops the worker the way cli's SIGTERM handler does, after `epoch` is reported."""

    def hook(trial: optuna.Trial, reported: int, metrics: dict[str, float]) -> None:
        if reported == epoch:
            raise KeyboardInterrupt(signal_name)

    return hook


def run_one(space: Space, url: str, on_epoch: Any = None, checkpoints: bool = False,
            pruner: optuna.pruners.BasePruner | None = None) -> None:
    """One trial by a worker on the study at url (its running folder on; best-k checkpoints when asked)."""
    worker = Worker.open(space, url)
    if pruner is not None:
        worker.study.pruner = pruner
    run_trials(worker, 1, progress=on_epoch, keep_checkpoints=checkpoints)


def stopped_study(space: Space, tmp_path: Path, epoch: int = 3) -> tuple[optuna.Study, str, Path]:
    """A study whose trial 0 was stopped after `epoch` was reported (its state saved for epoch - 1)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = create_or_resume(space, url)
    running = running_dir(url, "tiny")
    with pytest.raises(KeyboardInterrupt):
        run_one(space, url, stop_at(epoch), checkpoints=True)
    return study, url, running


def test_the_running_state_is_written_once_per_resume_interval(space: Space, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """resume_interval 0: after every epoch; the default (60 s): not within a short trial; stopped, it starts over."""
    writes: list[int] = []
    save = resume.save
    monkeypatch.setattr(resume, "save", lambda *a: writes.append(a[4]["epoch"]) or save(*a))
    stopped_study(space, tmp_path, epoch=3)
    assert writes == [1, 2]  # epoch 3 was reported, then the stop: its state was never due
    writes.clear()
    default = load_space(TINY, [f"train.epochs={EPOCHS}"])
    study, url, running = stopped_study(default, tmp_path / "default", epoch=3)
    assert writes == [] and not list(running.glob("*"))
    run_one(default, url)
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and "resumed_from" not in retry.user_attrs
    assert retry.user_attrs["epochs_trained"] == EPOCHS  # nothing saved: the rerun trained every epoch


def test_a_stopped_trial_is_failed_with_the_reason_its_state_kept_and_a_rerun_enqueued(space: Space,
                                                                                      tmp_path: Path) -> None:
    study, url, running = stopped_study(space, tmp_path, epoch=3)
    stopped, retry = study.trials
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "interrupted (SIGTERM) during epoch 4"
    assert checkpoint.read(running / "trial-0.pt")["state"]["epoch"] == 2  # saved after epoch 2; 3 was reported
    assert retry.state == TrialState.WAITING and retry.params == stopped.params
    assert retry.user_attrs == {"retry_of": 0, "retry_reason": stopped.user_attrs["fail_reason"]}
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0


def test_the_rerun_resumes_after_the_last_saved_epoch_and_reports_the_earlier_ones(space: Space,
                                                                                  tmp_path: Path) -> None:
    study, url, running = stopped_study(space, tmp_path, epoch=3)
    stopped = study.trials[0]
    epochs: list[int] = []
    run_one(space, url, lambda trial, epoch, metrics: epochs.append(epoch), checkpoints=True)
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.params == stopped.params
    assert epochs == [3, 4]  # epochs 1 and 2 came from the running checkpoint
    assert retry.user_attrs["resumed_from"] == 0 and retry.user_attrs["resumed_epoch"] == 2
    assert retry.user_attrs["epochs_trained"] == 2 and retry.user_attrs["epochs_run"] == EPOCHS
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4]
    assert [retry.intermediate_values[s] for s in (1, 2, 3)] == [stopped.intermediate_values[s] for s in (1, 2, 3)]
    assert not list(running.glob("*"))  # the trial ended for good: no running state is left


def test_re_reported_epochs_are_judged_by_the_pruner(space: Space, tmp_path: Path) -> None:
    study, url, running = stopped_study(space, tmp_path, epoch=3)
    run_one(space, url, pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    retry = study.trials[1]
    assert retry.state == TrialState.PRUNED and retry.user_attrs["epochs_trained"] == 0
    assert not list(running.glob("*"))


def test_an_unreadable_running_checkpoint_means_training_from_the_start(space: Space, tmp_path: Path) -> None:
    study, url, running = stopped_study(space, tmp_path, epoch=3)
    (running / "trial-0.pt").write_bytes(b"not a checkpoint")
    run_one(space, url)
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["epochs_trained"] == EPOCHS
    assert "cannot read checkpoint" in retry.user_attrs["resume_error"]
    assert "resumed_from" not in retry.user_attrs


def test_a_checkpoint_of_another_configuration_is_not_resumed(space: Space, tmp_path: Path) -> None:
    study, url, running = stopped_study(space, tmp_path, epoch=3)
    payload = checkpoint.read(running / "trial-0.pt")
    payload["config"]["model"]["width"] += 1
    checkpoint.save(payload, running / "trial-0.pt")
    run_one(space, url)
    assert "not the running checkpoint of this configuration" in study.trials[1].user_attrs["resume_error"]
    assert study.trials[1].user_attrs["epochs_trained"] == EPOCHS


def test_retry_respects_max_retry_and_never_doubles(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=TrialState.FAIL)
    retry = resume.Retry(max_retry=2, reason="test")
    retry(study, study.trials[0])
    retry(study, study.trials[0])  # a second call (another worker, a stopped-then-stale trial): no second copy
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    first = study.trials[1]
    assert first.params == study.trials[0].params and resume.history(first.system_attrs) == [0]

    for expected_history in ([0, 1], None):  # rerun 1 fails -> rerun 2; rerun 2 fails -> no third (max_retry=2)
        running = study.ask()
        study.tell(running, state=TrialState.FAIL)
        before = len(study.trials)
        retry(study, study.trials[running.number])
        if expected_history is None:
            assert len(study.trials) == before
        else:
            assert resume.history(study.trials[-1].system_attrs) == expected_history
            assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[-1]) == 0
    assert resume.Retry(max_retry=0)(study, study.trials[0]) is None and len(study.trials) == 3


def test_load_picks_the_newest_checkpoint_of_the_chain(tmp_path: Path) -> None:
    config = {"model": {"width": 4}}
    for number, epoch in ((0, 2), (3, 5)):
        resume.save(tmp_path, number, "s", config, {"epoch": epoch})
    assert resume.load(tmp_path, [0, 3], config) == (3, {"epoch": 5})
    assert resume.load(tmp_path, [0, 7], config) == (0, {"epoch": 2})  # 7 died before its first epoch
    assert resume.load(tmp_path, [9], config) is None
    resume.discard(tmp_path, [0, 3])
    assert not list(tmp_path.glob("*"))


def test_a_trial_stopped_again_and_again_is_queued_each_time_a_stop_is_not_counted(tmp_path: Path) -> None:
    """max_retry counts crashes (maybe the trial's fault), not stops: Ctrl-C twice on one trial still leaves it a
    rerun that resumes it."""
    space = load_space(TINY, [f"train.epochs={EPOCHS}", "study.resume_interval=0", "study.max_retry=1"])
    study, url, running = stopped_study(space, tmp_path, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        run_one(space, url, stop_at(3))  # the rerun, stopped too
    first, second, third = study.trials
    assert [t.state for t in (first, second)] == [TrialState.FAIL] * 2
    assert third.state == TrialState.WAITING and third.user_attrs["retry_of"] == second.number
    run_one(space, url)
    assert study.trials[2].state == TrialState.COMPLETE and study.trials[2].user_attrs["resumed_from"] == 1
