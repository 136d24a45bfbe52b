"""study.py: storage URLs, every sampler and pruner by name, create/resume and its guard."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from hpsearch import load_space, suggest
from hpsearch.config import PRUNERS, SAMPLERS
from hpsearch.study import (
    StudyError,
    artifact_dir,
    create_or_resume,
    diff,
    load,
    make_pruner,
    make_sampler,
    redact,
    storage_url,
)

HERE = Path(__file__).resolve().parent
TINY = HERE / "spaces" / "tiny.yaml"

# Options some samplers and pruners need before they can be built.
NEEDS = {"threshold": {"lower": 0.1}, "percentile": {"percentile": 25.0}}


def space_with(tmp_path: Path, study: str, body: str = "") -> object:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        study: {study}
        data: {{dataset: synthetic}}
        model:
          width: {{type: categorical, choices: [4, 8]}}
          stages: {{type: int, low: 1, high: 2}}
          dropout: {{type: float, low: 0.0, high: 0.2, step: 0.1}}
    """) + textwrap.dedent(body))
    return load_space(path)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_by_name_samples_the_space(tmp_path: Path, name: str) -> None:
    space = space_with(tmp_path, f"{{sampler: {{name: {name}, seed: 3}}}}")
    study = optuna.create_study(sampler=make_sampler(space), direction="maximize")
    assert type(study.sampler).__name__ == SAMPLERS[name]
    for i in range(3):
        trial = study.ask()
        config = suggest(trial, space)  # type: ignore[arg-type]
        assert config.model.width in (4, 8)
        study.tell(trial, float(i))


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_by_name(tmp_path: Path, name: str) -> None:
    options = "".join(f", {k}: {v}" for k, v in NEEDS.get(name, {}).items())
    space = space_with(tmp_path, f"{{pruner: {{name: {name}{options}}}}}")
    assert type(make_pruner(space)).__name__ == PRUNERS[name]  # type: ignore[arg-type]


def test_grid_sampler_needs_discrete_values(tmp_path: Path) -> None:
    space = space_with(tmp_path, "{sampler: {name: grid}}")
    assert make_sampler(space)  # type: ignore[arg-type]
    space = space_with(tmp_path, "{sampler: {name: grid}}", "optimizer: {lr: {type: float, low: 0.01, high: 0.1}}\n")
    with pytest.raises(StudyError, match="optimizer.lr is a continuous float range: give it `step`"):
        make_sampler(space)  # type: ignore[arg-type]


def test_storage_defaults_and_artifact_dirs() -> None:
    space = load_space(TINY)
    assert storage_url(space) == "sqlite:///studies/tiny.db"
    assert storage_url(space, "sqlite:///x.db") == "sqlite:///x.db"
    assert artifact_dir("sqlite:////data/s/tiny.db", "tiny") == Path("/data/s/tiny/artifacts")
    assert artifact_dir("postgresql://u@h/db", "tiny") == Path("studies/tiny/artifacts")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:pa55@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("sqlite:///studies/x.db", "sqlite:///studies/x.db"),
])
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_create_then_resume_then_refuse_a_changed_space(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = load_space(TINY)
    study = create_or_resume(space, url)
    study.enqueue_trial({"model.width": 4})
    assert create_or_resume(space, url).study_name == "tiny"
    changed = load_space(TINY, ["train.epochs=5", "model.width=8"])
    with pytest.raises(StudyError) as info:
        create_or_resume(changed, url)
    assert "train.epochs: 2 -> 5" in str(info.value) and "model.width:" in str(info.value)


def test_a_foreign_study_with_trials_is_not_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    foreign = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(StudyError, match="was not made by hpsearch"):
        create_or_resume(load_space(TINY), url)


def test_load_names_the_studies_that_exist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_or_resume(load_space(TINY), url)
    with pytest.raises(StudyError, match="no study named 'other'.*studies there: tiny"):
        load(url, "other")


def test_diff() -> None:
    assert diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 3, "d": 4}}) == [
        "a.b: 1 -> 3", "a.c: removed (was 2)", "a.d: added (4)"]
