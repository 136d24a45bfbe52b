"""Which fields the members of a fused group may choose each for itself (space/fusion.py), and study.fuse's checks."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from hpsearch import SpaceError, load_space
from hpsearch.space.config import ModelConfig, OptimizerConfig, TrainConfig, TrialConfig
from hpsearch.space.fusion import is_free, structural_params, structure

SPACE = Path(__file__).resolve().parents[2] / "spaces" / "smoke.yaml"


def test_free_fields_do_not_change_the_structure() -> None:
    base = TrialConfig()
    free = dataclasses.replace(
        base, optimizer=OptimizerConfig(name="adam", lr=1e-3), scheduler=dataclasses.replace(base.scheduler,
                                                                                             name="cosine"),
        model=dataclasses.replace(base.model, dropout=0.3, init="xavier_normal"),
        train=dataclasses.replace(base.train, label_smoothing=0.1, grad_clip=1.0))
    assert structure(free) == structure(base)


@pytest.mark.parametrize("change", [
    {"model": ModelConfig(width=32)}, {"model": ModelConfig(spatial_dropout=0.1)},
    {"train": TrainConfig(batch_size=64)}, {"train": TrainConfig(epochs=3)}, {"train": TrainConfig(seed=1)},
    {"train": TrainConfig(precision="fp32")},
])
def test_structural_fields_do(change: dict) -> None:
    assert structure(dataclasses.replace(TrialConfig(), **change)) != structure(TrialConfig())


def test_spatial_dropout_rates_fuse_while_on() -> None:
    on = [dataclasses.replace(TrialConfig(), model=ModelConfig(spatial_dropout=p)) for p in (0.1, 0.4)]
    assert structure(on[0]) == structure(on[1])


def test_parameter_names_under_choose_and_cases() -> None:
    assert is_free("optimizer") and is_free("optimizer.adam.lr") and is_free("scheduler.cosine.warmup_epochs")
    assert is_free("model.dropout") and is_free("model.cnn.dropout") and is_free("train.label_smoothing")
    assert not is_free("model") and not is_free("model.cnn.width") and not is_free("train.batch_size")
    cases = {"net": {"a": {"model.width": 8}}, "recipe": {"adam": {"optimizer.name": "adam", "optimizer.lr": 0.1}}}
    params = {"model.width": 8, "optimizer": "sgd", "optimizer.sgd.lr": 0.1, "cases.net": "a",
              "cases.recipe": "adam", "train.batch_size": 64}
    assert structural_params(params, cases) == {"model.width": 8, "cases.net": "a", "train.batch_size": 64}


def test_study_fuse_is_read_and_overridden() -> None:
    assert load_space(SPACE).study.fuse == 1
    assert load_space(SPACE, ["study.fuse=4"]).study.fuse == 4


@pytest.mark.parametrize("value", ["0", "65", "2.5", "true", "four"])
def test_a_bad_fuse_is_one_problem_with_the_range(value: str) -> None:
    with pytest.raises(SpaceError) as caught:
        load_space(SPACE, [f"study.fuse={value}"])
    assert [p.path for p in caught.value.problems] == ["study.fuse"]
    assert "from 1 (each alone) to 64" in str(caught.value)


def test_fuse_with_compile_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        study: {fuse: 4}
        train: {compile: true}
    """))
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    assert [p.path for p in caught.value.problems] == ["train.compile"]
    assert "set train.compile: false, or study.fuse: 1" in str(caught.value)
