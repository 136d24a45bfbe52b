"""`hpsearch schema`: a valid JSON Schema that accepts every shipped space and rejects what validate rejects."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from hpsearch import load_space, space_schema
from hpsearch.cli import main
from hpsearch.space.yamlfile import SpaceError, parse

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted([*ROOT.glob("spaces/**/*.yaml"), *ROOT.glob("tests/spaces/*.yaml")])


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = space_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def document(text: str) -> Any:
    """YAML as hpsearch reads it (1e-4 is a number, as in YAML 1.2 and in editors)."""
    return parse(textwrap.dedent(text), "test.yaml").value


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_is_valid(validator: jsonschema.Draft7Validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(parse(path.read_text(), str(path)).value)]
    assert errors == []


GOOD = """
    study: {name: x, metric: val_loss, sampler: {name: tpe, seed: 1, n_startup_trials: 5}, pruner: hyperband}
    data: {dataset: synthetic, val_size: 500, augment: {crop_padding: {type: int, low: 0, high: 4}},
           synthetic: {classes: 3}}
    train: {epochs: 2, batch_size: {type: categorical, choices: [32, 64]}, grad_clip: null}
    model: {name: cnn, widths: [8, 16], dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}}
    optimizer:
      weight_decay: 1e-4
      choose:
        sgd: {lr: {type: float, low: 1e-3, high: 0.1, log: true}, nesterov: true}
        adamw: {lr: 3e-4, betas: [0.9, 0.95]}
    scheduler: {choose: {cosine: {}, step: {step_size: {type: int, low: 2, high: 5}}, none: null}}
"""


def test_a_space_using_every_construct_is_valid(validator: jsonschema.Draft7Validator, tmp_path: Path) -> None:
    assert [e.message for e in validator.iter_errors(document(GOOD))] == []
    (tmp_path / "good.yaml").write_text(textwrap.dedent(GOOD))
    load_space(tmp_path / "good.yaml")  # and hpsearch agrees


@pytest.mark.parametrize("text", [
    "optimiser: {lr: 0.1}",  # unknown section
    "train: {epoch: 3}",  # unknown key
    "model: {name: vgg}",  # unknown name
    "train: {batch_size: {type: float, low: 16, high: 64}}",  # float search of a whole-number field
    "train: {epochs: {type: int, low: 1}}",  # no high
    "data: {val_size: {type: int, low: 100, high: 200}}",  # data cannot be searched
    "train: {label_smoothing: 1.5}",  # out of range
    "optimizer: {choose: {lbfgs: {}}}",  # unknown branch
    "optimizer: {choose: {adam: {momentum: 0.9}}}",  # a field adam does not read
    "optimizer: {name: sgd, choose: {sgd: {}}}",  # name and choose
    "study: {sampler: {name: tpe, n_startup: 3}}",  # not an option of TPESampler
    "study: {pruner: {n_startup_trials: 3, reduction_factor: 2}}",  # median (the default) takes no reduction_factor
    "study: {metric: accuracy}",
    "train: {batch_size: {type: categorical, choices: []}}",
])
def test_bad_spaces_are_rejected_as_validate_rejects_them(validator: jsonschema.Draft7Validator, tmp_path: Path,
                                                          text: str) -> None:
    assert list(validator.iter_errors(document(text))), text
    (tmp_path / "bad.yaml").write_text(text + "\n")
    with pytest.raises(SpaceError):
        load_space(tmp_path / "bad.yaml")


def test_fields_carry_their_config_comments_and_defaults() -> None:
    defs = space_schema()["definitions"]
    assert defs["optimizer.lr"]["description"] == "peak learning rate (after warm-up)"
    assert defs["optimizer.lr"]["default"] == 0.05
    assert defs["data.augment.crop_padding"]["description"].startswith("pixels of zero padding")
    assert defs["optimizer.betas"]["default"] == [0.9, 0.999]


def test_schema_verb_prints_and_writes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == space_schema()
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["title"] == "hpsearch search space"
    (tmp_path / "afile").write_text("")
    assert main(["schema", "--out", str(tmp_path / "afile" / "s.json")]) == 2
    assert "cannot write" in capsys.readouterr().err
