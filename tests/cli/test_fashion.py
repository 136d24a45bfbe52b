"""spaces/fashion_mnist.yaml on the real Fashion-MNIST files, read where Debian's dataset-fashion-mnist puts them:
a short search on a few thousand images learns far above chance, and the data folder is left as it was. The long
search is a benchmark (docs/BENCHMARKS.md), not a test."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from hpsearch.cli import main

ROOT = Path(__file__).resolve().parents[2]
FASHION = os.environ.get("HPSEARCH_FASHION_MNIST")

pytestmark = pytest.mark.skipif(
    not FASHION, reason="set HPSEARCH_FASHION_MNIST to the folder of the four Fashion-MNIST idx files "
    "(apt-get install dataset-fashion-mnist: /usr/share/datasets/fashion-mnist) to run")


def _listing(folder: Path) -> list[tuple[str, int, float]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime) for p in folder.iterdir())


def test_a_short_real_search_learns_far_above_chance_and_writes_nothing_beside_the_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert FASHION is not None
    monkeypatch.chdir(tmp_path)
    before = _listing(Path(FASHION))
    url = f"sqlite:///{tmp_path / 'fashion.db'}"
    code = main(["run", str(ROOT / "spaces" / "fashion_mnist.yaml"), "--trials", "3", "--storage", url,
                 "--data-root", FASHION, "--set", "data.train_limit=3000", "--set", "data.val_size=1000",
                 "--set", "train.epochs=2", "--set", "study.pruner={name: none}"])
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="fashion_mnist", storage=url)
    assert len(study.trials) == 3 and study.best_value > 0.6  # chance is 0.1
    assert _listing(Path(FASHION)) == before
