"""The CLI verbs, run for real on tiny synthetic spaces: run, resume, validate, sample, every bad-input exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpsearch.cli import main
from hpsearch.keys import CHECKPOINT as CHECKPOINT_ATTR
from hpsearch.training import checkpoint

HERE = Path(__file__).resolve().parents[1]  # tests/
TINY = HERE / "spaces" / "tiny.yaml"



def study_of(workdir: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'studies' / (name + '.db')}")


def test_run_records_trials_with_dotted_params_attrs_and_checkpoints(workdir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("COMPLETE") == 3 and "best: trial" in out
    assert "hpsearch dashboard " + str(TINY) + "   # optuna-dashboard on the study" in out

    study = study_of(workdir)
    assert len(study.trials) == 3
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert {"model.width", "optimizer"} <= set(t.params)
        assert f"optimizer.{t.params['optimizer']}.lr" in t.params or t.params["optimizer"] == "adam"
        assert t.user_attrs["epochs_run"] == 2 and 1 <= t.user_attrs["best_epoch"] <= 2
        assert t.user_attrs["params"] > 0 and t.user_attrs["images_per_sec"] > 0
        assert t.value == max(t.intermediate_values.values())  # the best epoch, not the last
        assert sorted(t.intermediate_values) == [1, 2]
    assert study.user_attrs["space_hash"]

    # keep_checkpoints: 2 -> only the two best trials keep a file, and it loads weights-only
    kept = [t for t in study.trials if CHECKPOINT_ATTR in t.user_attrs
            and (workdir / "studies/tiny/artifacts" / t.user_attrs[CHECKPOINT_ATTR]).exists()]
    assert len(kept) == 2
    assert {t.number for t in kept} == {t.number for t in sorted(study.trials, key=lambda t: -t.value)[:2]}
    payload = checkpoint.load_payload(workdir / "studies/tiny/artifacts" / kept[0].user_attrs[CHECKPOINT_ATTR])
    assert payload["trial"] == kept[0].number and payload["value"] == pytest.approx(kept[0].value)
    assert payload["config"]["model"]["width"] == kept[0].params["model.width"]


def test_tied_trials_keep_the_earlier_checkpoints(workdir: Path) -> None:
    """Trials that tie rank by number (report, export): a later tie neither saves its weights nor evicts an
    earlier trial's. Identical trials: one configuration, the same seed, the same value."""
    assert main(["run", str(TINY), "--trials", "4", "--set", "model.width=8",
                 "--set", "optimizer={name: adam, lr: 0.001}"]) == 0
    trials = study_of(workdir).trials
    assert len({t.value for t in trials}) == 1
    assert [CHECKPOINT_ATTR in t.user_attrs for t in trials] == [True, True, False, False]
    assert all((workdir / "studies/tiny/artifacts" / t.user_attrs[CHECKPOINT_ATTR]).exists() for t in trials[:2])


def test_rerun_resumes_and_adds_trials_without_repeating_them(workdir: Path) -> None:
    assert main(["run", str(TINY), "--trials", "2"]) == 0
    assert main(["run", str(TINY), "--trials", "2"]) == 0
    trials = study_of(workdir).trials
    assert len(trials) == 4
    assert len({repr(sorted(t.params.items())) for t in trials}) == 4  # the sampler seed moved on


def test_resume_with_a_changed_space_is_refused_and_keeps_the_study(workdir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--trials", "1"]) == 0
    capsys.readouterr()
    assert main(["run", str(TINY), "--trials", "1", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "was created from a different space" in err and "train.epochs: 2 -> 3" in err
    assert "--study tiny-2" in err
    assert len(study_of(workdir).trials) == 1
    assert main(["run", str(TINY), "--trials", "1", "--set", "train.epochs=3", "--study", "tiny-2"]) == 0


def test_where_the_data_sits_is_not_part_of_the_space(workdir: Path, tmp_path: Path) -> None:
    """Another --data-root (the data moved, another machine's path) or download setting resumes the study."""
    assert main(["run", str(TINY), "--trials", "1"]) == 0
    assert main(["run", str(TINY), "--trials", "1", "--data-root", str(tmp_path / "moved")]) == 0
    assert main(["run", str(TINY), "--trials", "1", "--set", "data.download=false"]) == 0
    assert len(study_of(workdir).trials) == 3


def test_storage_and_study_flags(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'elsewhere.db'}"
    assert main(["run", str(TINY), "--trials", "1", "--storage", url, "--study", "mine"]) == 0
    assert len(optuna.load_study(study_name="mine", storage=url).trials) == 1


def test_failed_trials_are_recorded_with_a_reason_and_the_study_goes_on(workdir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import hpsearch.study.trials as trials
    from hpsearch.training.train import NonFiniteLoss

    def explode(members, data, **options):  # type: ignore[no-untyped-def]
        for member in members:
            member.on_epoch(1, {"val_acc": 0.1, "val_loss": 2.0, "train_loss": float("nan"), "seconds": 0.1})
            member.error = NonFiniteLoss("training loss is nan at epoch 2")
            member.on_leave(member)

    monkeypatch.setattr(trials, "train_group", explode)
    assert main(["run", str(TINY), "--trials", "2"]) == 1  # nothing completed: the run failed
    assert "every trial of this run failed (2)" in capsys.readouterr().err
    assert main(["run", str(TINY), "--trials", "2"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 2 and "reason: training loss is nan at epoch 2" in out
    trials = study_of(workdir).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 4
    assert trials[0].user_attrs["fail_reason"] == "training loss is nan at epoch 2"


def test_validate(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(TINY)]) == 0
    assert "valid; study 'tiny', 3 searched: model.width, optimizer, optimizer.sgd.lr" in capsys.readouterr().out
    bad = workdir / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\nmodel: {name: vgg}\n")
    assert main(["validate", str(TINY), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: train.epochs: must be in [1, 10000], got 0" in err
    assert f"{bad}:3: model.name: unknown name 'vgg'; known: cnn, resnet18, resnet34" in err
    assert "1 of 2 space files have problems" in err


def test_sample_prints_configurations_and_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(TINY), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("# sample") == 3 and "parameters" in out and "model.width:" in out
    assert main(["sample", str(TINY), "-n", "1", "--full"]) == 0
    assert "batch_size: 64" in capsys.readouterr().out


FIXED = """\
study: {name: fixed}
data: {dataset: synthetic, val_size: 40, synthetic: {size: 200, test_size: 10, classes: 4}}
train: {epochs: 1, batch_size: 64, device: cpu}
model: {widths: [4], blocks_per_stage: 1}
"""


def test_sample_stops_where_a_grid_is_drawn_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(FIXED + "cases: {net: {a: {model.widths: [4]}, b: {model.widths: [8]}}}\n")
    assert main(["sample", str(grid), "-n", "5", "--set", "study.sampler={name: grid}"]) == 0
    assert capsys.readouterr().out.count("# sample") == 2  # the grid's two rows, then the study stops


def test_a_space_that_searches_nothing_runs_one_trial(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "fixed.yaml").write_text(FIXED)
    assert main(["run", "fixed.yaml"]) == 0
    assert "the space searches nothing: running 1 trial" in capsys.readouterr().err
    assert len(study_of(workdir, "fixed").trials) == 1


@pytest.mark.parametrize("argv, message", [
    (["run", "nope.yaml"], "cannot read the space file"),
    (["evaluate", str(TINY)], "is a space file; evaluate takes a checkpoint. Fix: hpsearch export"),
    (["run", str(TINY), "--set", "train.epochs=-1"], "--set train.epochs=-1: train.epochs: must be in [1, 10000], "
                                                     "got -1"),
    (["run", str(TINY), "--storage", "notaurl://x"], "notaurl://x names a kind of database SQLAlchemy does not "
                                                     "know ('notaurl')\nfix: pass --storage sqlite:///"),
    (["run", str(TINY), "--storage", "postgresql://u:s3cret@127.0.0.1:1/db"], "postgresql://u:***@127.0.0.1:1/db"),
    (["run", str(TINY), "--set", "data.dataset=cifar100", "--set", "data.download=false", "--data-root", "nodata"],
     "nodata"),
])
def test_bad_input_is_one_message_and_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                             message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "s3cret" not in err
    assert not (workdir / "studies" / "tiny.db").exists() or "storage" in " ".join(argv)


@pytest.mark.parametrize("argv", [["run", str(TINY), "--trials", "0"], ["run", str(TINY), "--timeout", "x"],
                                  ["frobnicate"], ["run"], ["sample", str(TINY), "-n", "-1"]])
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_missing_data_lists_the_paths_tried_and_touches_no_study(workdir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--set", "data.dataset=cifar100", "--set", "data.download=false",
                 "--data-root", str(workdir / "empty")]) == 2
    err = capsys.readouterr().err
    assert str(workdir / "empty" / "cifar100.npz") in err and "--data-root" in err
    assert not (workdir / "studies").exists()


def test_console_script_and_ctrl_c_leave_a_failed_trial_with_its_reason(workdir: Path) -> None:
    """A real SIGINT to a real `hpsearch run`: exit 130, the running trial FAIL with a reason, the study readable."""
    exe = Path(sys.executable).with_name("hpsearch")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(exe), "run", str(TINY), "--trials", "50", "--set", "train.epochs=200"],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    db = workdir / "studies" / "tiny.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a trial has reported an epoch
        if db.exists():
            try:
                trials = study_of(workdir).trials
            except Exception:
                trials = []
            if trials and trials[0].intermediate_values:
                break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    trial, retry = study_of(workdir).trials  # the stopped trial, and its rerun waiting for the next run
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("interrupted")
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == trial.params


def test_shipped_smoke_space_runs_ten_trials_with_some_pruned(workdir: Path) -> None:
    """The README's CPU command: 10 trials, some pruned, the data really learnt (its time is a benchmark's)."""
    assert main(["run", str(HERE.parent / "spaces" / "smoke.yaml"), "--trials", "10"]) == 0
    trials = study_of(workdir, "smoke").trials
    states = [t.state for t in trials]
    assert len(trials) == 10 and optuna.trial.TrialState.PRUNED in states
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 2
    assert max(t.value or 0 for t in trials) > 0.5  # the synthetic data set is really learnt


@pytest.mark.parametrize("argv, message", [
    (["run", str(TINY), "--storage", "postgresql://u:s3cret@db:port/x"], "is not a database URL"),
    (["run", str(TINY), "--storage", "mysql+nosuchdriver://u:s3cret@h/db"], "its database driver is not installed"),
    (["run", str(TINY), "--storage", "sqlite:///notes.txt"], "file is not a database"),
    (["run", str(TINY), "--set", "study.grace_period=1"], "study.grace_period: must be longer than heartbeat"),
])
def test_storage_problems_are_one_message_and_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                     argv: list[str], message: str) -> None:
    (workdir / "notes.txt").write_text("not a database")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "s3cret" not in err
    assert (workdir / "notes.txt").read_text() == "not a database"  # nothing was written into it


@pytest.mark.parametrize("argv", [["run", str(TINY), "--storage"], ["run", str(TINY), "--timeout", "-1"],
                                  ["run", str(TINY), "--trails", "3"], ["validate"], ["run", str(TINY), "-n", "2"]])
def test_more_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


@pytest.mark.parametrize("resumed", [False, True], ids=["new", "resumed"])
def test_a_run_opens_its_storage_and_its_study_once(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                    resumed: bool) -> None:
    """One `hpsearch run` (one worker) opens the storage once and makes one Study object, the one its trials, its
    summary and its space guard all use."""
    if resumed:
        assert main(["run", str(TINY), "--trials", "1"]) == 0
    opened: list[str] = []
    storage_init, study_init = optuna.storages.RDBStorage.__init__, optuna.Study.__init__

    def storage(self: object, *args: object, **kwargs: object) -> None:
        opened.append("storage")
        storage_init(self, *args, **kwargs)  # type: ignore[arg-type]

    def study(self: object, *args: object, **kwargs: object) -> None:
        opened.append("study")
        study_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", storage)
    monkeypatch.setattr(optuna.Study, "__init__", study)
    assert main(["run", str(TINY), "--trials", "2"]) == 0
    assert opened == ["storage", "study"]


def test_a_trial_that_trained_every_epoch_is_never_pruned(workdir: Path) -> None:
    """A pruner that would stop every trial: asked after epoch 1 of 2, it prunes; a 1-epoch trial has finished by
    then, and completes."""
    never = "study.pruner={name: threshold, lower: 2.0}"
    assert main(["run", str(TINY), "--trials", "1", "--set", never]) == 0
    assert main(["run", str(TINY), "--trials", "1", "--set", never, "--set", "train.epochs=1",
                 "--set", "study.name=one-epoch"]) == 0
    assert study_of(workdir).trials[0].state == optuna.trial.TrialState.PRUNED
    finished = study_of(workdir, "one-epoch").trials[0]
    assert finished.state == optuna.trial.TrialState.COMPLETE and CHECKPOINT_ATTR in finished.user_attrs


def test_a_finished_grid_runs_nothing_more(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tiny.yaml's grid of width x optimizer (with sgd's lr fixed): 4 points, each run once, however many trials
    are asked for, and a rerun adds none."""
    grid = ["--set", "study.sampler={name: grid}", "--set", "optimizer.choose.sgd.lr=0.05"]
    assert main(["run", str(TINY), "--trials", "10", *grid]) == 0
    assert main(["run", str(TINY), "--trials", "10", *grid]) == 0
    trials = study_of(workdir).trials
    assert sorted((t.params["model.width"], t.params["optimizer"]) for t in trials) == [
        (4, "adam"), (4, "sgd"), (8, "adam"), (8, "sgd")]
    out = capsys.readouterr().out
    assert "0 new trials" in out and "the grid's 4 points are all done" in out


def test_a_run_stopped_before_its_first_trial_leaves_the_next_runs_seed_as_it_was(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same space and seed give the same trials whether or not an earlier start of the study was stopped."""
    from hpsearch.study.trials import Trials

    assert main(["run", str(TINY), "--trials", "3", "--set", "study.name=plain"]) == 0
    run = Trials.run

    def stopped(self: Trials) -> None:
        raise KeyboardInterrupt("SIGINT")

    monkeypatch.setattr(Trials, "run", stopped)
    assert main(["run", str(TINY), "--trials", "3", "--set", "study.name=restarted"]) == 130
    monkeypatch.setattr(Trials, "run", run)
    assert main(["run", str(TINY), "--trials", "3", "--set", "study.name=restarted"]) == 0
    assert [t.params for t in study_of(workdir, "restarted").trials] == [t.params for t in
                                                                          study_of(workdir, "plain").trials]


def test_a_study_folder_removed_during_a_run_is_made_again_for_the_next_checkpoint(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from hpsearch.study.progress import Progress

    finished = Progress.finished

    def line(self: Progress, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished(self, study, trial)
        if trial.number == 0:  # the study's folder goes, checkpoints and all
            shutil.rmtree(workdir / "studies" / "tiny")

    monkeypatch.setattr(Progress, "finished", line)
    assert main(["run", str(TINY), "--trials", "3", "--set", "study.keep_checkpoints=3"]) == 0
    last = study_of(workdir).trials[-1]
    assert (workdir / "studies" / "tiny" / "artifacts" / last.user_attrs[CHECKPOINT_ATTR]).is_file()


def test_a_grid_with_a_branch_stops_once_optuna_s_grid_is_done(workdir: Path) -> None:
    """adam's trials never suggest sgd's lr: the grid's own count (2 widths x 2 optimizers x 2 lrs) decides."""
    grid = ["--set", "study.sampler={name: grid}", "--set", "optimizer.choose.sgd.lr={type: categorical, "
            "choices: [0.01, 0.05]}"]
    assert main(["run", str(TINY), "--trials", "20", *grid]) == 0
    assert main(["run", str(TINY), "--trials", "20", *grid]) == 0
    trials = study_of(workdir).trials
    assert len(trials) == 8
    assert {(t.params["model.width"], t.params["optimizer"], t.params.get("optimizer.sgd.lr")) for t in trials} == {
        (w, "sgd", lr) for w in (4, 8) for lr in (0.01, 0.05)} | {(w, "adam", None) for w in (4, 8)}
