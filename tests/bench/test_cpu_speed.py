"""The CPU-speed benchmarks in a reduced form (docs/BENCHMARKS.md: CPU speed), so that they cannot rot: the accuracy
parity of fp32 and bf16, the step profile and the whole-trial speed script."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.bench import breakdown, parity
from hpsearch.space.config import DataConfig, SyntheticConfig

ROOT = Path(__file__).resolve().parents[2]
FASHION = os.environ.get("HPSEARCH_FASHION_MNIST")
needs_fashion = pytest.mark.skipif(
    not FASHION, reason="set HPSEARCH_FASHION_MNIST to the folder of the four Fashion-MNIST idx files "
    "(apt-get install dataset-fashion-mnist: /usr/share/datasets/fashion-mnist) to run")


def test_parity_trains_each_configuration_in_both_precisions_per_seed(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    tiny = DataConfig(dataset="synthetic", val_size=40, synthetic=SyntheticConfig(size=200, test_size=40, classes=4))
    real = parity.configs

    def small(fashion: str, cifar100: str | None) -> dict[str, object]:
        return {name: dataclasses.replace(c, data=tiny, train=dataclasses.replace(c.train, epochs=1))
                for name, c in list(real(fashion, cifar100).items())[:1]}

    monkeypatch.setattr(parity, "configs", small)
    assert parity.main(["--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if line.startswith("| fashion cnn") and line.count("|") == 6]
    assert [line.split("|")[2:4] for line in runs] == [[" fp32 ", " 0 "], [" bf16 ", " 0 "], [" fp32 ", " 1 "],
                                                       [" bf16 ", " 1 "]]
    summary = [line for line in out.splitlines() if line.startswith("| fashion cnn") and line.count("|") == 5]
    assert [line.split("|")[2] for line in summary] == [" fp32 ", " bf16 "]


@needs_fashion
def test_the_profile_times_every_part_of_a_small_net_s_step(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FASHION is not None
    monkeypatch.setattr(breakdown, "FASHION_ROOT", FASHION)
    rows = dict(breakdown.profile("mlp", batch_size=16, repeats=2, compile_too=False))
    assert {"batch: crop (gather), flip", "batch: crop as a 4-D index (before)", "forward + backward, bf16",
            "optimizer update, fused", "whole Step, fp32, 1 thread",
            "evaluate 5,000 validation images, bf16"} <= set(rows)
    assert all(ms > 0 for ms in rows.values())


def test_trainspeed_runs_as_a_file_and_prints_one_line_per_model(tmp_path: Path) -> None:
    script = ROOT / "search" / "hpsearch" / "bench" / "trainspeed.py"
    done = subprocess.run([sys.executable, str(script), "--models", "smoke", "--images", "300", "--epochs", "1",
                           "--batch-size", "64", "--tag", "after"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["tag"] == "after" and line["model"] == "smoke" and line["train_img_s"] > 0
    assert line["precision"] in ("bf16", "fp32") and 0 <= line["val_acc"] <= 1
