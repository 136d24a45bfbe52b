"""Fused groups on a real SQLite study (study/trials.py with --fuse): every member an ordinary trial with its reports,
attributes, pruning, failure and checkpoint; groups that share their structure; interrupted groups retried and
resumed alone."""

from __future__ import annotations

import json
import sqlite3
import textwrap
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from runs import run_trials

from hpsearch import keys, load_space
from hpsearch.cli import main
from hpsearch.results import dashboard
from hpsearch.space import Space
from hpsearch.study.storage import running_dir
from hpsearch.study.trials import Trials
from hpsearch.study.worker import Worker

TINY = Path(__file__).resolve().parents[1] / "spaces" / "tiny.yaml"


def tiny(*overrides: str) -> Space:
    return load_space(TINY, ["study.resume_interval=0", *overrides])


def run_groups(space: Space, url: str, k: int, trials: int, on_epoch: Any = None,
               worker: Worker | None = None) -> tuple[optuna.Study, list[str]]:
    worker = worker or Worker.open(space, url)
    lines: list[str] = []
    run_trials(worker, trials, fuse=k, progress=on_epoch, lines=lines)
    return worker.study, lines


def by_group(study: optuna.Study) -> dict[int, list[optuna.trial.FrozenTrial]]:
    groups: dict[int, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in study.trials:
        if keys.FUSE_LEADER in t.user_attrs:
            groups[t.user_attrs[keys.FUSE_LEADER]].append(t)
    return dict(groups)


def test_members_are_ordinary_trials_that_share_their_structure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study, lines = run_groups(tiny(), url, k=3, trials=6)
    trials = study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(lines) == sorted(f"{t.number} COMPLETE" for t in trials)  # a line per trial
    groups = by_group(study)
    assert sorted(len(g) for g in groups.values()) == [3, 3]
    for members in groups.values():
        assert {t.params["model.width"] for t in members} == {members[0].params["model.width"]}
        assert len({str(sorted(t.params.items())) for t in members}) > 1  # the free parameters drawn apart
        for t in members:
            assert t.user_attrs[keys.FUSED] == 3 and sorted(t.intermediate_values) == [1, 2]
            assert t.value == max(t.intermediate_values.values()) and t.user_attrs[keys.EPOCHS_RUN] == 2
            assert t.user_attrs["params"] > 0 and t.user_attrs["images_per_sec"] > 0
    kept = [t for t in trials if keys.CHECKPOINT in t.user_attrs]
    best = sorted(trials, key=lambda t: (-(t.value or 0), t.number))[:2]
    files = list((tmp_path / "tiny" / "artifacts").iterdir())
    assert len(files) == 2 and {t.number for t in best} <= {t.number for t in kept}
    assert not list(running_dir(url, "tiny").glob("*.pt"))  # every member ended for good


class PruneOdd(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


def test_a_pruned_member_is_told_at_once_and_the_others_go_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = tiny("train.epochs=3")
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize", pruner=PruneOdd(),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    worker = Worker.open(space, url)
    worker = Worker(space, url, worker.device, worker.data, study, worker.artifacts, worker.running)
    study, lines = run_groups(space, url, k=4, trials=4, worker=worker)
    pruned = [t for t in study.trials if t.number % 2]
    done = [t for t in study.trials if not t.number % 2]
    assert all(t.state == TrialState.PRUNED and list(t.intermediate_values) == [1] for t in pruned)
    assert all(t.state == TrialState.COMPLETE and len(t.intermediate_values) == 3 for t in done)
    assert lines[:2] == ["1 PRUNED", "3 PRUNED"]  # told when they left, before the others finished
    assert max(t.datetime_complete for t in pruned) <= min(t.datetime_complete for t in done)


def test_a_member_that_breaks_a_rule_fails_with_the_reason_and_the_group_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(TINY.read_text().replace(
        "sgd: {lr: {type: float, low: 1e-2, high: 0.1, log: true}}",
        "sgd: {lr: 0.05, nesterov: true, momentum: {type: categorical, choices: [0.0, 0.9]}}"))
    space = load_space(path, ["study.resume_interval=0"])
    study, _ = run_groups(space, f"sqlite:///{tmp_path / 's.db'}", k=4, trials=8)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.params.get("optimizer.sgd.momentum") == 0.0 for t in failed)
    assert all("nesterov" in t.user_attrs[keys.FAIL_REASON] for t in failed)
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t not in failed)


def test_an_interrupted_group_is_failed_retried_and_each_member_resumes_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = tiny("train.epochs=3")

    def stop(trial: optuna.Trial, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise KeyboardInterrupt("SIGTERM")

    with pytest.raises(KeyboardInterrupt):
        run_groups(space, url, k=3, trials=3, on_epoch=stop)
    study = optuna.load_study(study_name="tiny", storage=url)
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 3
    reasons = {t.user_attrs[keys.FAIL_REASON] for t in stopped}  # each after its own last reported epoch
    assert reasons <= {"interrupted (SIGTERM) during epoch 2", "interrupted (SIGTERM) during epoch 3"}, reasons
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs[keys.RETRY_OF] for t in waiting) == [t.number for t in stopped]
    assert len(list(running_dir(url, "tiny").glob("*.pt"))) == 3  # each member's state after epoch 1

    study, _ = run_groups(space, url, k=3, trials=3)
    retried = [t for t in study.trials if t.number >= 3]
    assert len(retried) == 3 and all(t.state == TrialState.COMPLETE for t in retried)
    for t in retried:
        assert t.user_attrs[keys.RESUMED_FROM] == t.user_attrs[keys.RETRY_OF]  # its own member's state
        assert t.user_attrs[keys.RESUMED_EPOCH] == 1 and t.user_attrs[keys.EPOCHS_TRAINED] == 2
        assert keys.FUSED not in t.user_attrs  # resumed as a trial alone
        original = study.trials[t.user_attrs[keys.RETRY_OF]]
        assert t.intermediate_values[1] == original.intermediate_values[1]


def test_a_crashed_group_is_found_stale_retried_and_each_member_resumes_alone(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies in epoch 2 with nothing recorded (as under SIGKILL: the real signal is test_workers.py's)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = tiny("train.epochs=3", "study.heartbeat_interval=1", "study.grace_period=2")

    def crash(trial: optuna.Trial, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            monkeypatch.setattr(Trials, "_stop", lambda *args: None)  # a dead process records nothing
            raise SystemExit("the process dies")

    with pytest.raises(SystemExit):
        run_groups(space, url, k=2, trials=2, on_epoch=crash)
    monkeypatch.undo()
    study = optuna.load_study(study_name="tiny", storage=url)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2
    time.sleep(3)  # their heartbeats go stale (grace period 2 s)

    study, _ = run_groups(space, url, k=2, trials=2)
    crashed, retried = study.trials[:2], study.trials[2:]
    assert [t.state for t in crashed] == [TrialState.FAIL] * 2
    assert sorted(t.user_attrs[keys.RETRY_OF] for t in retried) == [0, 1]
    assert all(t.state == TrialState.COMPLETE and t.user_attrs[keys.RESUMED_EPOCH] == 1 for t in retried)


def test_a_trial_that_does_not_fit_the_group_waits_and_leads_the_next(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = tiny()
    worker = Worker.open(space, url)
    worker.study.enqueue_trial({"model.width": 4})
    worker.study.enqueue_trial({"model.width": 8})  # asked while the width-4 group forms: it must wait
    study, _ = run_groups(space, url, k=2, trials=4, worker=worker)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # none lost, none left waiting
    groups = by_group(study)
    assert sorted(len(g) for g in groups.values()) == [2, 2]
    assert sorted(g[0].params["model.width"] for g in groups.values()) == [4, 8]
    for members in groups.values():
        assert len({t.params["model.width"] for t in members}) == 1


def test_a_grid_runs_every_point_once_in_groups(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent("""
        study: {name: grid, sampler: {name: grid}, pruner: {name: none}, resume_interval: 0}
        data: {dataset: synthetic, synthetic: {size: 300, test_size: 100, classes: 4}, val_size: 100}
        train: {epochs: 1, batch_size: 64, device: cpu}
        model: {stages: 1, blocks_per_stage: 1}
        cases:
          net: {small: {model.width: 4}, big: {model.width: 8}}
          recipe:
            adam: {optimizer.name: adam, optimizer.lr: 0.001}
            sgd: {optimizer.name: sgd, optimizer.lr: 0.05}
            fast: {optimizer.name: sgd, optimizer.lr: 0.1}
    """))
    study, _ = run_groups(load_space(path), f"sqlite:///{tmp_path / 'g.db'}", k=3, trials=20)
    points = sorted((t.params["cases.net"], t.params["cases.recipe"]) for t in study.trials)
    assert points == sorted((n, r) for n in ("small", "big") for r in ("adam", "sgd", "fast"))
    assert sorted(len(g) for g in by_group(study).values()) == [3, 3]  # one group per net, each whole
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for members in by_group(study).values():
        assert len({t.params["cases.net"] for t in members}) == 1


def test_every_open_member_sends_heartbeats(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study, _ = run_groups(tiny("study.heartbeat_interval=1"), url, k=3, trials=3)
    with sqlite3.connect(tmp_path / "s.db") as db:
        beating = {row[0] for row in db.execute("SELECT trial_id FROM trial_heartbeats")}
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name("tiny")
    assert beating == {storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in study.trials}


def test_the_command_line_runs_fused_groups_with_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    assert main(["run", str(TINY), "--storage", url, "--trials", "5", "--fuse", "2", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "--fuse 2" in out  # the next: line carries it
    study = optuna.load_study(study_name="tiny", storage=url)
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(keys.FUSED in t.user_attrs for t in study.trials)
    best = max(study.trials, key=lambda t: t.value or 0)
    assert main(["export", "--storage", url, "--study", "tiny", "--out", str(tmp_path / "best.pt")]) == 0
    assert (tmp_path / "best.pt").is_file() and keys.CHECKPOINT in best.user_attrs
    assert main(["report", "--storage", url, "--study", "tiny"]) == 0
    assert f"{best.value:.4f}" in capsys.readouterr().out
    server = dashboard.serve(url, "tiny", "127.0.0.1", 0)  # the dashboard lists and serves each kept checkpoint
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        study_id = json.loads(fetch(f"{base}/api/studies"))["study_summaries"][0]["study_id"]
        shown = {t["number"]: t for t in json.loads(fetch(f"{base}/api/studies/{study_id}"))["trials"]}
        kept = [t for t in study.trials if (tmp_path / "tiny" / "artifacts" / t.user_attrs.get(keys.CHECKPOINT, "-"))
                .is_file()]
        assert best.number in {t.number for t in kept}  # (two workers racing may keep one more or fewer)
        for t in kept:
            artifact = t.user_attrs[keys.CHECKPOINT]
            assert artifact in {a["artifact_id"] for a in shown[t.number]["artifacts"]}
            data = fetch(f"{base}/artifacts/{study_id}/{shown[t.number]['trial_id']}/{artifact}")
            assert data == (tmp_path / "tiny" / "artifacts" / artifact).read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (loopback only)
        return bytes(response.read())


@pytest.mark.parametrize("args, words", [
    (["--fuse", "65"], "study.fuse"),
    (["--fuse", "2", "--set", "train.compile=true"], "set train.compile: false"),
])
def test_bad_fuse_values_exit_2_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(TINY), "--trials", "1", *args]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()  # refused before any study is made
