"""A component's rules on searched values: validate tries every value that matters (Rule.across_search) and names
the key and the values that work; every independent problem comes in one pass; sample says a broken rule in one
message."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from hpsearch import SpaceError, load_space
from hpsearch.cli import main
from hpsearch.space.registry import MODELS, Rule

TINY_DATA = "data: {dataset: synthetic, synthetic: {size: 200, test_size: 50, classes: 4}, val_size: 50}\n"


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    return [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]


SHRINK = "stages, each ending in a 2x2 pool, shrink a {0}x{0} image below 1x1; use 1 to {1} stages (or that many " \
         "widths), or model.pool: none"


@pytest.mark.parametrize("text, expected", [
    ("model:\n  name: cnn\n  stages: {type: int, low: 2, high: 9}\n",
     "s.yaml:3: model.stages: model 'cnn': a trial that draws 6 to 9 fails: 6 " + SHRINK.format(32, 5)
     + "; the largest value that works is 5 (high: 5)"),
    ("data: {dataset: mnist}\nmodel: {stages: {type: categorical, choices: [2, 4, 5, 6]}}\n",
     "s.yaml:2: model.stages: model 'cnn': a trial that draws 5, 6 fails: 5 " + SHRINK.format(28, 4)
     + "; the largest value that works is 4 (choices: [2, 4])"),
    ("model:\n  choose:\n    cnn: {stages: {type: int, low: 1, high: 16}}\n    mlp: {}\n",
     "s.yaml:3: model.choose.cnn.stages: model 'cnn': a trial that draws 6 to 16 fails: 6 " + SHRINK.format(32, 5)
     + "; the largest value that works is 5 (high: 5)"),
    ("model: {pool: {type: categorical, choices: [max, none]}, stages: {type: int, low: 2, high: 7}}\n",
     "s.yaml:1: model.stages: model 'cnn': a trial that draws 6, 7 fails: 6 " + SHRINK.format(32, 5)
     + "; the largest value that works is 5 (high: 5)"),
    ("model: {stages: 6, pool: {type: categorical, choices: [max, avg]}}\n",
     "s.yaml:1: model.pool: model 'cnn': a trial that draws any of max, avg fails: 6 " + SHRINK.format(32, 5)),
    ("model: {kernel_size: {type: int, low: 3, high: 7}}\n",
     "s.yaml:1: model.kernel_size: model 'cnn': a trial that draws 4, 6 fails: kernel sides must be odd, for the "
     "padding to keep the map's size; got 4; the values that work: 3, 5, 7 (type: categorical, choices: [3, 5, 7])"),
    ("model: {stages: {type: int, low: 2, high: 4}, kernel_sizes: [3, 5, 3]}\n",
     "s.yaml:1: model.stages: model 'cnn': a trial that draws 2, 4 fails: 3 kernel sizes for 2 stages; give one per "
     "stage; only 3 works (give model.stages: 3)"),
    ("data: {dataset: mnist, augment: {hue: {type: float, low: 0.0, high: 0.2}}}\n",
     "s.yaml:1: data.augment.hue: a trial that draws high=0.2 fails: saturation and hue need colour images; mnist's "
     "are grayscale (set saturation and hue to 0; brightness and contrast apply); narrow the searched range to values "
     "that work (low=0 does)"),
])
def test_a_searched_range_that_breaks_a_rule_names_the_key_and_what_works(tmp_path: Path, text: str,
                                                                          expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


@pytest.mark.parametrize("text", [
    "model: {stages: {type: int, low: 2, high: 5}}\n",
    "model: {stages: {type: int, low: 2, high: 9}, pool: none}\n",
    "data: {dataset: imagefolder, image_size: 128}\nmodel: {stages: {type: int, low: 2, high: 7}}\n",
    "model: {kernel_size: {type: int, low: 3, high: 7, step: 2}}\n",
    "model: {kernel_size: {type: categorical, choices: [3, 5]}, stages: {type: int, low: 1, high: 5}}\n",
    "data: {augment: {hue: {type: float, low: 0.0, high: 0.2}}}\n",  # CIFAR's images are in colour
    "model: {name: {type: categorical, choices: [cnn, resnet18]}}\n",
])
def test_a_searched_range_that_keeps_every_rule_is_valid(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    load_space(path)


def test_a_rule_validate_leaves_to_the_trial_stays_the_trials(tmp_path: Path) -> None:
    """nesterov's momentum rule does not say across_search: the trial that draws 0 fails with the rule's words."""
    path = tmp_path / "s.yaml"
    path.write_text("optimizer: {name: sgd, nesterov: true, momentum: {type: categorical, choices: [0.0, 0.9]}}\n")
    load_space(path)


def test_a_val_size_that_leaves_no_training_image_comes_with_the_other_errors(tmp_path: Path) -> None:
    assert problems(tmp_path, """
        data: {dataset: synthetic, synthetic: {size: 200, classes: 4}, val_size: 500}
        train: {epochs: 0}
    """) == [
        "s.yaml:2: data.val_size: 500 of the 200 training images held out for validation leave fewer than one per "
        "class (4 classes) to train on; use at most 196",
        "s.yaml:3: train.epochs: must be in [1, 10000], got 0",
    ]


def test_every_independent_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    """A rule's problem (val_size, the stage count) comes with the field errors, not after they are fixed."""
    assert problems(tmp_path, """
        data: {dataset: synthetic, synthetic: {size: 200, classes: 4}, val_size: 500}
        train: {epochs: 0}
        model: {stages: {type: int, low: 2, high: 9}, width: 0}
        optimizer: {name: adam, momentum: 0.9}
    """) == [
        "s.yaml:2: data.val_size: 500 of the 200 training images held out for validation leave fewer than one per "
        "class (4 classes) to train on; use at most 196",
        "s.yaml:3: train.epochs: must be in [1, 10000], got 0",
        "s.yaml:4: model.width: must be in [1, 4096], got 0",
        "s.yaml:4: model.stages: model 'cnn': a trial that draws 6 to 9 fails: 6 " + SHRINK.format(32, 5)
        + "; the largest value that works is 5 (high: 5)",
        "s.yaml:5: optimizer.momentum: optimizer 'adam' does not read 'momentum'; it reads: lr, betas, eps, "
        "weight_decay",
    ]


@pytest.mark.parametrize("text, expected", [
    ("model: {stages: 17}\n", "s.yaml:1: model.stages: must be in [1, 16], got 17"),
    ("model: {stages: {type: int, low: 2, high: 99}}\n",
     "s.yaml:1: model.stages.high: model.stages must be in [1, 16], got high=99"),
    ("data: {dataset: synthetic, synthetic: {size: 200, classes: 4}, val_size: abc}\n",
     "s.yaml:1: data.val_size: expected a whole number, got 'abc'"),
    ("data: {dataset: mnist, augment: {hue: {type: float, low: 0.0, high: 0.9}}}\n",
     "s.yaml:1: data.augment.hue.high: data.augment.hue must be in [0, 0.5], got high=0.9"),
    ("model: {width: abc, stages: 3}\n", "s.yaml:1: model.width: expected a whole number, got 'abc'"),
])
def test_a_rule_is_not_applied_to_a_value_already_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


def test_sample_says_a_broken_rule_in_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A rule validate leaves to the trial (one without across_search): sample stops at the first sample that
    breaks it with the rule's words and exit status 2, not a traceback."""
    narrow = Rule("model.width", ("model.width",), lambda c: f"at most 8 channels, got {c.model.width}"
                  if c.model.width > 8 else None)
    cnn = MODELS["cnn"]
    monkeypatch.setitem(MODELS._entries, "cnn", dataclasses.replace(cnn, rules=(*cnn.rules, narrow)))
    path = tmp_path / "s.yaml"
    path.write_text("study: {sampler: {name: grid}}\n" + TINY_DATA
                    + "model: {width: {type: categorical, choices: [4, 16]}}\n")
    load_space(path)  # valid: the width is the trial's to draw
    assert main(["sample", str(path), "-n", "2"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and out.count("# sample") <= 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hpsearch: error: {path}: sample ")
    assert lines[0].endswith(": model.width: at most 8 channels, got 16 (drawn: model.width=16); a trial that draws "
                             "this fails with these words and the search goes on; narrow the searched values to "
                             "those that work")
