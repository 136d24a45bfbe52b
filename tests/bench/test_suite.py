"""The device check's dry run: every step's code path on this machine's device, with tiny sizes, so that the one
GPU run cannot fail on a typo; and the budgets that keep a slow step from eating the rest."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hpsearch.bench import suite
from hpsearch.cli import main


def test_the_dry_run_runs_every_step_and_writes_json_and_markdown(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--suite", "gpu", "--dry-run", "--out", str(tmp_path), "--device", "cpu"]) == 0
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
    assert steps["search"]["trials"] == {"complete": 2} and 0 <= steps["search"]["test_top1"] <= 1
    assert (tmp_path / "best.pt2").is_file()
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

    ctx = suite.Context(tmp_path, True, None, "cpu", "spaces/cifar100.yaml", {"slow": 0.5, "broken": 5, "env": 5})
    record = suite.run_suite(ctx, [("slow", slow), ("broken", broken), ("env", suite.step_env)], out=lambda s: None)
    assert record["steps"]["slow"]["status"] == "over budget" and finished == []
    assert record["steps"]["broken"] == {"status": "failed", "reason": "ValueError: a typo",
                                         "seconds": record["steps"]["broken"]["seconds"]}
    assert record["steps"]["env"]["status"] == "ok"
    assert json.loads((tmp_path / "gpu-check.json").read_text()) == record


def test_the_real_search_without_data_is_skipped_with_the_fix(tmp_path: Path) -> None:
    ctx = suite.Context(tmp_path, False, None, "cpu", "spaces/cifar100.yaml", {"search": 5})
    record = suite.run_suite(ctx, [("search", suite.step_search)], out=lambda s: None)
    assert record["steps"]["search"]["status"] == "skipped"
    assert "pass --data-root DIR" in record["steps"]["search"]["reason"]


def test_the_full_budgets_fit_one_device_call() -> None:
    assert sum(suite.BUDGETS.values()) <= 8 * 60
