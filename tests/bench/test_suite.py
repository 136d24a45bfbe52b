"""The device check's dry run: every step's code path on this machine's device, with tiny sizes, so that the one
GPU run cannot fail on a typo; and the budgets that keep a slow step from eating the rest. It runs from another
working directory than the checkout, as on the device machine, and without the real CIFAR-100."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hpsearch.bench import suite
from hpsearch.cli import main
from hpsearch.space import SpaceError, load_space
from hpsearch.space import load as space_load
from hpsearch.space.load import shipped_space

CIFAR100 = str(shipped_space("cifar100.yaml"))


def test_the_dry_run_runs_every_step_and_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"  # no spaces/ here, and a relative --out
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("HPSEARCH_CIFAR100", raising=False)  # no real data: the search makes a fake cifar100.npz
    assert main(["bench", "--suite", "gpu", "--dry-run", "--out", "check", "--device", "cpu"]) == 0
    tmp_path = elsewhere / "check"
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    steps = record["steps"]
    assert list(steps) == [name for name, _ in suite.STEPS] and record["dry_run"] is True
    assert {n: e["status"] for n, e in steps.items()} == {
        "env": "ok", "loop": "ok", "resnet18_epoch": "ok", "trials_per_hour": "ok", "search": "ok",
        "fused": "ok", "seeds": "ok"}
    fused = steps["fused"]
    assert set(fused["train_img_s"]) == {"K=1", "K=2"} and fused["train_img_s"]["K=2"]["grouped"] > 0
    assert fused["train_img_s"]["K=2"]["sequential"] > 0
    assert set(fused["searches_trials_per_h"]) == {"separate", "fuse 2"}
    assert all(v > 0 for v in fused["searches_trials_per_h"].values())
    assert steps["loop"]["resnet18"]["hpsearch_img_s"] > 0 and steps["loop"]["cnn6"]["ratio"] > 0
    assert steps["resnet18_epoch"]["train_s_per_epoch"] > 0
    assert set(steps["seeds"]["table_nets"]) == {"cnn6", "cnn10", "cnn10_batch64"}
    assert steps["seeds"]["table_estimate_min"] > 0 and steps["seeds"]["deterministic_img_s"]["ratio"] > 0
    assert {k for k in steps["trials_per_hour"] if k.endswith("_workers")} == {"1_workers", "2_workers"}
    search = steps["search"]  # the real run's space, shrunk by --set, on a stand-in of the real data's format
    assert search["space"] == CIFAR100 and search["set"] == " ".join(suite.DRY_SETS)
    assert search["data"].startswith("fake cifar100.npz") and search["test_images"] == 200
    assert search["trials"] == {"complete": suite.DRY_TRIALS} and 0 <= search["test_top1"] <= 1
    assert (tmp_path / "best.pt2").is_file() and (tmp_path / "search.db").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["check"]  # nothing written beside it
    table = (tmp_path / "gpu-check.md").read_text()
    assert table.startswith("# Device check") and "| search | ok |" in table
    assert table == capsys.readouterr().out


def test_a_step_over_its_budget_is_stopped_and_the_next_one_runs(tmp_path: Path) -> None:
    finished: list[str] = []

    def slow(ctx: suite.Context, seconds: float) -> dict[str, object]:
        time.sleep(30)
        finished.append("slow")  # never reached: the budget stops the step inside its sleep
        return {}

    def broken(ctx: suite.Context, seconds: float) -> dict[str, object]:
        raise ValueError("a typo")

    ctx = suite.Context(tmp_path, True, None, "cpu", CIFAR100, {"slow": 0.5, "broken": 5, "env": 5})
    record = suite.run_suite(ctx, [("slow", slow), ("broken", broken), ("env", suite.step_env)], out=lambda s: None)
    assert record["steps"]["slow"]["status"] == "over budget" and finished == []
    assert record["steps"]["broken"] == {"status": "failed", "reason": "ValueError: a typo",
                                         "seconds": record["steps"]["broken"]["seconds"]}
    assert record["steps"]["env"]["status"] == "ok"
    assert json.loads((tmp_path / "gpu-check.json").read_text()) == record


def test_the_real_search_without_data_is_skipped_with_the_fix(tmp_path: Path) -> None:
    ctx = suite.Context(tmp_path, False, None, "cpu", CIFAR100, {"search": 5})
    record = suite.run_suite(ctx, [("search", suite.step_search)], out=lambda s: None)
    assert record["steps"]["search"]["status"] == "skipped"
    assert "pass --data-root DIR" in record["steps"]["search"]["reason"]


def test_the_full_budgets_fit_one_device_call() -> None:
    assert sum(suite.BUDGETS.values()) <= 8 * 60


def test_the_dry_runs_overrides_fit_the_real_space_and_its_fake_data(tmp_path: Path) -> None:
    """What the dry run searches is spaces/cifar100.yaml as the checker accepts it, on data in the reader's format."""
    from hpsearch.space.config import DataConfig
    from hpsearch.training.data import stratified_split
    from hpsearch.training.rawdata import load_arrays

    space = load_space(CIFAR100, suite.DRY_SETS)
    data = space.sections["data"].fields
    assert data["dataset"] == "cifar100" and space.sections["train"].fields["epochs"] == 1
    suite.fake_cifar100(tmp_path)
    raw = load_arrays(DataConfig(dataset="cifar100", root=str(tmp_path), download=False))
    assert raw.x_train.shape == (600, 32, 32, 3) and len(set(raw.y_test.tolist())) == 100
    train, val = stratified_split(raw.y_train, data["val_size"], data["train_limit"], 0)
    assert (len(train), len(val)) == (400, 100)


def test_an_out_that_is_a_file_is_refused_and_left_as_it_was(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    assert main(["bench", "--suite", "gpu", "--dry-run", "--out", str(taken), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--out {taken} is a file, not a folder" in err and "Fix: pass --out with a new folder" in err
    assert "Traceback" not in err and taken.read_text() == "mine\n"
    inside = taken / "check"  # a folder that cannot be made: its parent is that file
    assert main(["bench", "--suite", "gpu", "--dry-run", "--out", str(inside), "--device", "cpu"]) == 2
    assert f"--out {inside}: cannot make the folder" in capsys.readouterr().err


def test_the_shipped_spaces_are_found_from_the_package_or_named_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("cifar100.yaml", "bench/fixed-smoke.yaml", "bench/fuse-smoke.yaml", "seeds/cifar100_vgg.yaml"):
        assert shipped_space(name) == Path(__file__).resolve().parents[2] / "spaces" / name  # the checkout's
    with pytest.raises(SpaceError, match="no such space shipped with hpsearch; the shipped ones: .*cifar100.yaml"):
        shipped_space("nope.yaml")
    monkeypatch.setattr(space_load, "SHIPPED", tmp_path / "site-packages" / "spaces")  # an install without the repo
    with pytest.raises(SpaceError, match=r"hpsearch's own spaces are not here.*Fix: run it from a checkout"):
        shipped_space("cifar100.yaml")
