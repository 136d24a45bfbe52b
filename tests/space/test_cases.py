"""`cases:`: a table's rows as groups of named rows of fixed values, one categorical parameter a group."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from hpsearch import SpaceError, load_space, suggest
from hpsearch.study.samplers import make_sampler

TABLE = """
study: {sampler: {name: grid}, pruner: {name: none}}
model: {blocks_per_stage: 1}
cases:
  net:
    small: {model.widths: [4]}
    big: {model.widths: [8, 16], train.batch_size: 64}
  recipe:
    adam: {optimizer.name: adam, optimizer.lr: 0.001, scheduler.name: none}
    sgd_step: {optimizer.name: sgd, optimizer.lr: 0.005, scheduler.name: step, scheduler.step_size: 10}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(SpaceError) as caught:
        load_space(write(tmp_path, text), overrides)
    return [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]


def test_each_group_is_one_parameter_and_a_row_lands_on_the_trial(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, TABLE))
    assert list(space.params()) == ["cases.net", "cases.recipe"]
    config = suggest(optuna.trial.FixedTrial({"cases.net": "big", "cases.recipe": "sgd_step"}), space)
    assert config.model.widths == (8, 16) and config.model.blocks_per_stage == 1 and config.train.batch_size == 64
    assert (config.optimizer.name, config.optimizer.lr) == ("sgd", 0.005)
    assert (config.scheduler.name, config.scheduler.step_size) == ("step", 10)
    config = suggest(optuna.trial.FixedTrial({"cases.net": "small", "cases.recipe": "adam"}), space)
    assert config.model.widths == (4,) and config.train.batch_size == 256  # the section's (default) value
    assert config.optimizer.name == "adam" and config.scheduler.name == "none"


def test_the_grid_sampler_runs_every_combination_once(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, TABLE))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, space)
        seen.append((trial.params["cases.net"], config.optimizer.name))
        return 0.0

    for _ in range(10):  # asked and told as a run does; it stops asking once the grid is done
        if study.sampler.is_exhausted(study):  # type: ignore[attr-defined]
            break
        trial = study.ask()
        study.tell(trial, objective(trial))
    assert sorted(seen) == sorted((n, o) for n in ("small", "big") for o in ("adam", "sgd"))


def test_rows_are_part_of_the_space_hash(tmp_path: Path) -> None:
    one = load_space(write(tmp_path, TABLE)).hash()
    two = load_space(write(tmp_path, TABLE.replace("optimizer.lr: 0.001", "optimizer.lr: 0.002"))).hash()
    assert one != two


def test_a_rows_problem_names_its_line_and_row(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        cases:
          net:
            a: {model.dropout: 2.0}
            b: {optimizer.name: adam, optimizer.momentum: 0.5}
        """)
    assert found == ["s.yaml:3: model.dropout (row cases.net.a): must be in [0, 1), got 2",
                     "s.yaml:4: optimizer.momentum (row cases.net.b): optimizer 'adam' does not read 'momentum'; "
                     "it reads: lr, betas, eps, weight_decay"]


def test_a_rows_unusable_key_hides_no_other_rows_problem(tmp_path: Path) -> None:
    """validate says every problem at once: a misspelt key in one row, a bad value in another."""
    found = problems(tmp_path, """\
        cases:
          recipe:
            a: {model.widthz: 4}
            b: {train.epochs: 0}
        """)
    assert found == ["s.yaml:3: cases.recipe.a.model.widthz: expected a field's dotted path in data, train, model, "
                     "optimizer, scheduler (model.width, data.augment.flip, optimizer.name), got 'model.widthz'",
                     "s.yaml:4: train.epochs (row cases.recipe.b): must be in [1, 10000], got 0"]


def test_combinations_are_checked_as_whole_spaces(tmp_path: Path) -> None:
    """Each row is fine alone; one combination breaks a component's rule (nesterov needs momentum)."""
    found = problems(tmp_path, """\
        optimizer: {name: sgd, nesterov: true}
        cases:
          a: {fast: {optimizer.momentum: 0.9}, still: {optimizer.momentum: 0.0}}
        """)
    assert found == ["s.yaml:3: optimizer.momentum (row cases.a.still): optimizer 'sgd': nesterov needs momentum > 0, "
                     "got momentum=0 (set nesterov: false or a momentum)"]


def test_a_row_may_make_the_sections_valid(tmp_path: Path) -> None:
    """betas is read by adam, not by sgd (the default): every row picks adam, so the space is valid."""
    space = load_space(write(tmp_path, """\
        optimizer: {betas: [0.8, 0.99]}
        cases: {opt: {adam: {optimizer.name: adam}, adamw: {optimizer.name: adamw}}}
        """))
    config = suggest(optuna.trial.FixedTrial({"cases.opt": "adamw"}), space)
    assert config.optimizer.name == "adamw" and config.optimizer.betas == (0.8, 0.99)


@pytest.mark.parametrize("text, expected", [
    ("cases: [1, 2]\n", "s.yaml:1: cases: expected a mapping of groups"),
    ("cases: {net: {}}\n", "s.yaml:1: cases.net: expected a mapping of named rows"),
    ("cases: {'bad group': {a: {}}}\n", "s.yaml:1: cases.bad group: a group's name is a letter"),
    ("cases: {net: {a: 5}}\n", "s.yaml:1: cases.net.a: expected a mapping of dotted fields to values"),
    ("cases: {net: {a: {model.bogus: 1}}}\n", "s.yaml:1: cases.net.a.model.bogus: expected a field's dotted path"),
    ("cases: {net: {a: {study.name: x}}}\n", "s.yaml:1: cases.net.a.study.name: expected a field's dotted path"),
    ("cases: {net: {a: {data.root: x}}}\n", "s.yaml:1: cases.net.a.data.root: a row cannot set this"),
    ("cases: {net: {a: {data.synthetic.size: 9}}}\n", "s.yaml:1: cases.net.a.data.synthetic.size: a row cannot"),
    ("cases: {net: {a: {model.width: {type: int, low: 1, high: 4}}}}\n",
     "s.yaml:1: cases.net.a.model.width: a row gives fixed values"),
    ("model: {width: {type: int, low: 1, high: 4}}\ncases: {net: {a: {model.width: 2}}}\n",
     "s.yaml:2: cases.net.a.model.width: model.width is searched in the model section; a row fixes it"),
    ("optimizer: {choose: {sgd: {}, adam: {}}}\ncases: {o: {a: {optimizer.name: adam}}}\n",
     "s.yaml:2: optimizer.name (row cases.o.a): give `name` or `choose`, not both"),
    ("cases: {n: {a: {model.width: x}}}\n", "s.yaml:1: model.width (row cases.n.a): expected a whole number"),
])
def test_each_error(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found


def test_too_many_combinations_are_refused(tmp_path: Path) -> None:
    rows = "{" + ", ".join(f"r{i}: {{}}" for i in range(32)) + "}"
    found = problems(tmp_path, f"cases: {{a: {rows}, b: {rows}}}\n")
    assert found == ["s.yaml:1: cases: the groups make 1,024 combinations of rows; at most 1,000 (split the table "
                     "into several spaces)"]


def test_a_set_override_and_a_row_on_one_field_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, "cases: {n: {a: {model.width: 8}}}\n", ("model.width=4",))
    assert found == ["s.yaml:1: model.width (row cases.n.a): is set twice (--set model.width=4 and "
                     "cases.n.a.model.width); keep one"]
