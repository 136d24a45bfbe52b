"""A trial's life (study/trials.py) on a real in-memory Optuna study: what a trial returns, reports, records and
keeps, and that it trains on its worker's device and data."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from runs import run_trials

from hpsearch import keys, load_space
from hpsearch.space import Space
from hpsearch.study.studies import trial_config
from hpsearch.study.worker import Worker
from hpsearch.training import checkpoint
from hpsearch.training import train as train_module
from hpsearch.training.data import prepare
from hpsearch.training.device import resolve_device

TINY = Path(__file__).resolve().parents[1] / "spaces" / "tiny.yaml"


def in_memory_worker(space: Space, tmp_path: Path, study: optuna.Study) -> Worker:
    """A worker around an in-memory study: its data prepared once, checkpoints under tmp_path."""
    device = resolve_device(space.fixed_train_device())
    (tmp_path / "artifacts").mkdir(exist_ok=True)
    return Worker(space, "", device, prepare(space.fixed_data(), device), study,
                  tmp_path / "artifacts", tmp_path / "running")


@pytest.fixture
def space() -> Space:
    return load_space(TINY, ["train.epochs=2", "study.keep_checkpoints=1", "study.resume_interval=0"])


def test_a_trial_returns_its_best_epoch_and_records_what_it_did(space: Space, tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    worker = in_memory_worker(space, tmp_path, study)
    epochs: list[int] = []
    saved: list[bool] = []  # whether the trial's running state was on disk after each epoch

    def progress(trial: optuna.Trial, epoch: int, metrics: dict[str, float]) -> None:
        epochs.append(epoch)
        saved.append((tmp_path / "running" / "trial-0.pt").is_file())

    run_trials(worker, 1, progress=progress)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and epochs == [1, 2]
    assert sorted(trial.intermediate_values) == [1, 2]
    best = trial.user_attrs[keys.BEST_EPOCH]
    assert trial.value == trial.intermediate_values[best] == max(trial.intermediate_values.values())
    assert trial.user_attrs[keys.EPOCHS_RUN] == 2 and trial.user_attrs[keys.EPOCHS_TRAINED] == 2
    assert trial.user_attrs[keys.EPOCHS] == 2 and keys.CONFIG not in trial.user_attrs
    assert max(len(repr(v)) for v in trial.user_attrs.values()) < 60  # a table of trials stays readable
    study.set_user_attr(keys.SPACE, space.identity())  # as create_or_resume stores it
    assert trial_config(study, trial).model.width == trial.params["model.width"]
    kept = tmp_path / "artifacts" / trial.user_attrs[keys.CHECKPOINT]
    payload = checkpoint.load_payload(kept)
    assert payload["trial"] == 0 and payload["epoch"] == best and payload["value"] == trial.value
    assert saved == [False, True]  # written after epoch 1 (resume_interval 0), while the trial ran
    assert not list((tmp_path / "running").glob("*"))  # ended for good: no running state is left


def test_a_trial_trains_on_its_workers_data_and_loads_nothing(space: Space, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    study = optuna.create_study(direction="maximize")
    worker = in_memory_worker(space, tmp_path, study)
    seen: list[object] = []
    real_train = train_module.train_group

    def train_group(members, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(data)
        return real_train(members, data, *args, **kwargs)

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trial loaded data: the worker's must be used")

    monkeypatch.setattr("hpsearch.study.trials.train_group", train_group)
    monkeypatch.setattr(train_module, "prepare", no_loading)
    run_trials(worker, 2, keep_checkpoints=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert seen == [worker.data, worker.data]


def test_a_pruned_trial_stops_at_the_pruners_word(space: Space, tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    run_trials(in_memory_worker(space, tmp_path, study), 1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    assert trial.user_attrs[keys.EPOCHS_RUN] == 1 and keys.CHECKPOINT not in trial.user_attrs


def test_a_searched_value_that_breaks_a_rule_fails_that_trial_only(tmp_path: Path) -> None:
    """validate cannot refuse a rule on a searched field; the trial that draws a breaking value fails with the
    rule's words, and the study goes on."""
    path = tmp_path / "rule.yaml"
    path.write_text(TINY.read_text().replace(
        "    sgd: {lr: {type: float, low: 1e-2, high: 0.1, log: true}}",
        "    sgd: {lr: 0.05, nesterov: true, momentum: {type: categorical, choices: [0.0, 0.9]}}"))
    space = load_space(path, ["train.epochs=1"])
    study = optuna.create_study(direction="maximize")
    for momentum in (0.0, 0.9):
        study.enqueue_trial({"optimizer": "sgd", "optimizer.sgd.momentum": momentum})
    run_trials(in_memory_worker(space, tmp_path, study), 2, keep_checkpoints=False)
    broken, fine = study.trials
    assert broken.state == TrialState.FAIL and fine.state == TrialState.COMPLETE
    assert broken.user_attrs[keys.FAIL_REASON] == ("optimizer.momentum: nesterov needs momentum > 0, got momentum=0 "
                                                   "(set nesterov: false or a momentum)")
