"""Shared fixtures: one small real search that the results tests (report, export, evaluate, dashboard) read."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from hpsearch.cli import main
from hpsearch.training import precision, rawfiles

TINY = Path(__file__).resolve().parent / "spaces" / "tiny.yaml"
# tiny.yaml for 3 epochs under a median pruner: 12 trials end 5 complete, 7 pruned (random sampler, seed 0), and
# keep_checkpoints: 2 leaves completed trials both with a kept checkpoint and with a removed one.
SEARCH = ["--trials", "12", "--set", "train.epochs=3",
          "--set", "study.pruner={name: median, n_startup_trials: 3, n_warmup_steps: 1}"]


# A shell starts a background job (`pytest &`, a CI script run with &) with SIGINT ignored, and every process the
# tests start inherits that: the tests that stop a real command with Ctrl-C (SIGINT) would wait on it for ever.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _fp32_auto() -> Iterator[None]:
    """In this process `precision: auto` sees a CPU without native bf16, so it trains in fp32: on a tiny model
    bf16's measured gain is a coin toss on a busy machine, and the outcomes the tests expect are fp32's. The tests
    of precision.py set the CPU they need; commands the tests start as processes see the real one."""
    real = precision.cpu_info
    precision.cpu_info = lambda: (real()[0], None)  # type: ignore[assignment]
    yield
    precision.cpu_info = real  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _no_shared_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process a data set is found only where a test puts it: not through $HPSEARCH_DATA nor the system's
    copy (Debian's dataset-fashion-mnist), which some machines have and others not. The tests of that lookup set
    their own (test_idx.py); commands the tests start as processes see the real ones."""
    monkeypatch.delenv("HPSEARCH_DATA", raising=False)
    monkeypatch.setattr(rawfiles, "SYSTEM_ROOTS", {})


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in its own folder, so the default studies/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass(frozen=True)
class Searched:
    folder: Path
    url: str  # sqlite:///<folder>/tiny.db
    name: str  # the study name, "tiny"
    artifacts: Path  # <folder>/tiny/artifacts

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.url)

    def where(self) -> list[str]:
        return ["--storage", self.url, "--study", self.name]


def _searched(folder: Path) -> Searched:
    return Searched(folder, f"sqlite:///{folder / 'tiny.db'}", "tiny", folder / "tiny" / "artifacts")


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """The search, run once per session with `hpsearch run`; do not change it (use searched_copy for that)."""
    found = _searched(tmp_path_factory.mktemp("searched"))
    assert main(["run", str(TINY), "--storage", found.url, *SEARCH]) == 0
    return found


@pytest.fixture
def searched_copy(searched: Searched, tmp_path: Path) -> Searched:
    """A private copy of the search (database and artifacts), for tests that remove or break things."""
    shutil.copytree(searched.folder, tmp_path / "copy")
    return _searched(tmp_path / "copy")
