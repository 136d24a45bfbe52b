"""The component registries: every entry has its builder, the checker and the builder apply the same rules, and a
registry refuses what would make two places disagree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hpsearch.training.models
import hpsearch.training.optim
import hpsearch.training.rawdata  # noqa: F401  (each attaches its builders to the registries)
from hpsearch import SpaceError, load_space
from hpsearch.space.config import ModelConfig, OptimizerConfig, TrialConfig
from hpsearch.space.registry import DATASETS, MODELS, OPTIMIZERS, SCHEDULERS, ConfigError, Registry
from hpsearch.training.models import build_model
from hpsearch.training.optim import build_optimizer

BUILT = {"model": MODELS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "dataset": DATASETS}


@pytest.mark.parametrize("kind, name", [(k, n) for k, r in BUILT.items() for n in r])
def test_every_entry_has_its_builder(kind: str, name: str) -> None:
    assert BUILT[kind].has_builder(name), f"{kind} {name!r}: no @{kind.upper()}S.builder({name!r}) in training"


def test_a_builder_needs_an_entry_and_an_entry_is_added_once() -> None:
    registry = Registry("widget")
    registry.add("a", ("x",))
    with pytest.raises(KeyError, match="widget 'b' has no registry entry"):
        registry.builder("b")
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("a")
    with pytest.raises(ConfigError, match="unknown widget 'c'; known: a"):
        registry["c"]


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, where, config", [
    ("optimizer: {name: sgd, nesterov: true, momentum: 0.0}\n", "s.yaml:1: optimizer.momentum: optimizer 'sgd': "
     "nesterov needs momentum > 0", TrialConfig(optimizer=OptimizerConfig(nesterov=True, momentum=0.0))),
    ("optimizer:\n  choose:\n    sgd: {nesterov: true, momentum: 0.0}\n    adam: {}\n",
     "s.yaml:3: optimizer.choose.sgd.momentum: optimizer 'sgd': nesterov needs momentum > 0",
     TrialConfig(optimizer=OptimizerConfig(nesterov=True, momentum=0.0))),
    ("model: {widths: [4, 4, 4, 4, 4, 4]}\n",
     "s.yaml:1: model.widths: model 'cnn': 6 stages, each ending in a 2x2 pool, shrink a 32x32 image",
     TrialConfig(model=ModelConfig(widths=(4,) * 6))),
])
def test_a_rule_is_refused_by_validate_and_by_the_builder(tmp_path: Path, text: str, where: str,
                                                          config: TrialConfig) -> None:
    """One rule, two users: the checker (a fixed value, with its file and line) and the builder (any config)."""
    with pytest.raises(SpaceError) as caught:
        load_space(_space(tmp_path, text))
    assert len(caught.value.problems) == 1 and str(caught.value).endswith(str(caught.value.problems[0]))
    assert str(caught.value.problems[0]).startswith(str(tmp_path / where))
    message = where.split(": ", 2)[2].split(": ", 1)[1]
    with pytest.raises(ConfigError, match=message):
        if config.model == ModelConfig():  # an optimizer's rule
            build_optimizer(config.optimizer, [torch.zeros(1, requires_grad=True)], torch.device("cpu"), config)
        else:
            build_model(config.model, 10, config)


def test_a_rule_on_a_searched_field_is_left_to_the_trial(tmp_path: Path) -> None:
    """validate cannot know which momentum a trial draws; the trial that draws 0 fails (study/test_trials.py)."""
    load_space(_space(tmp_path, "optimizer: {name: sgd, nesterov: true, "
                                "momentum: {type: float, low: 0.0, high: 0.9}}\n"))
