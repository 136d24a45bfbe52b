"""space.py and yamlfile.py: every validation error, sampling through study.ask(), overrides."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import optuna
import pytest

from hpsearch import SpaceError, TrialConfig, load_space, suggest
from hpsearch.space.config import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    SyntheticConfig,
    TrainConfig,
)
from hpsearch.space.registry import MODELS, OPTIMIZERS, SCHEDULERS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "spaces").glob("**/*.yaml"))


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(SpaceError) as info:
        load_space(write(tmp_path, text), overrides)
    return [str(p) for p in info.value.problems]


def one_problem(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> str:
    found = problems(tmp_path, text, overrides)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path: Path) -> None:
    space = load_space(path)
    assert space.study.name


# -- YAML level ---------------------------------------------------------------------------------------------------


def test_scientific_notation_is_a_number(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, """
        optimizer: {name: adam, lr: 1e-4, eps: 1E-7, weight_decay: 5e-4}
    """))
    fields = space.sections["optimizer"].fields
    assert fields["lr"] == pytest.approx(1e-4) and isinstance(fields["lr"], float)
    assert fields["eps"] == pytest.approx(1e-7)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    msg = one_problem(tmp_path, "train:\n  epochs: 3\n  batch_size: [1, 2\n")
    assert "space.yaml:" in msg and "not valid YAML" in msg


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    msg = one_problem(tmp_path, "train:\n  epochs: 3\n  epochs: 4\n")
    assert msg.endswith("train.epochs: duplicate key: it is given twice in this mapping")
    assert "space.yaml:3:" in msg


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert "empty" in one_problem(tmp_path, "")
    assert "expected a mapping of sections" in one_problem(tmp_path, "- 1\n- 2\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="cannot read the space file"):
        load_space(tmp_path / "nope.yaml")


def test_yaml_tags_are_refused(tmp_path: Path) -> None:
    msg = one_problem(tmp_path, "train: !!python/object/apply:os.system ['echo hi']\n")
    assert "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in msg
    assert "timestamp" in one_problem(tmp_path, "train: {epochs: 2001-01-01}\n")


# -- every validation error ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("extra: 1\n", "extra: unknown section 'extra'; known: study, data, train"),
    ("train: {lr: 0.1}\n", "train.lr: unknown key 'lr'; known: epochs, batch_size"),
    ("train: {epochs: 0}\n", "train.epochs: must be in [1, 10000], got 0"),
    ("train: {epochs: three}\n", "train.epochs: expected a whole number, got 'three'"),
    ("train: {epochs: 2.5}\n", "train.epochs: expected a whole number, got 2.5"),
    ("train: {precision: fp8}\n", "train.precision: unknown precision 'fp8'; known: auto, bf16, fp16, fp32"),
    ("train: {device: gpu}\n", "train.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("train: {label_smoothing: 1.0}\n", "train.label_smoothing: must be in [0, 1), got 1"),
    ("data: {dataset: imagenet}\n", "data.dataset: unknown dataset 'imagenet'; known: cifar100, cifar10, mnist, "
     "fashion_mnist, imagefolder, synthetic"),
    ("data: {val_size: {type: int, low: 1, high: 5}}\n", "data.val_size: cannot be searched"),
    ("data: {augment: {flip: maybe}}\n", "data.augment.flip: expected true or false, got 'maybe'"),
    ("data: {augment: 3}\n", "data.augment: expected a mapping of data.augment settings, got 3"),
    ("model: {name: resnet50}\n", "model.name: unknown name 'resnet50'; known: cnn, resnet18, resnet34"),
    ("model: {name: resnet18, width: 8}\n", "model.width: model 'resnet18' does not read 'width'"),
    ("model: {widths: [8, 16], stages: 2}\n", "model.stages: give `widths` (it sets the stages) or stages"),
    ("model: {widths: [8, x]}\n", "model.widths: expected a list of whole numbers or null, got [8, 'x']"),
    ("model: {stages: 6}\n", "model.widths: model 'cnn': 6 stages, each ending in a 2x2 pool, shrink a 32x32 image"),
    ("model: {stages: 17}\n", "model.stages: must be in [1, 16], got 17"),
    ("model: {width: {type: float, low: 8, high: 16}}\n", "model.width.type: this field takes whole numbers"),
    ("model: {widths: {type: categorical, choices: [8, 16]}}\n", "model.widths: cannot be searched"),
    ("model: {dropout: {type: float, low: 0.6, high: 0.2}}\n",
     "model.dropout: `low <= high` must hold, but got (low=0.6, high=0.2)"),
    ("model: {dropout: {type: float, low: 0.0, high: 1.5}}\n", "model.dropout.high: model.dropout must be in [0, 1)"),
    ("model: {dropout: {type: float, high: 0.5}}\n", "model.dropout: type float needs `low`"),
    ("model: {dropout: {type: uniform, low: 0, high: 1}}\n",
     "model.dropout.type: unknown type 'uniform'; known: float, int, categorical"),
    ("model: {dropout: {type: float, low: 0, high: 0.5, choices: [1]}}\n",
     "model.dropout.choices: type float takes no 'choices'; it takes: low, high, log, step"),
    ("model: {dropout: {low: 0, high: 0.5}}\n", "model.dropout: expected a number; a searched value is a mapping"),
    ("model: {batchnorm: {type: int, low: 0, high: 1}}\n", "model.batchnorm.type: expected true or false, which only"),
    ("model: {width: {type: categorical, choices: [8, 8]}}\n", "model.width.choices: choices repeat a value"),
    ("model: {width: {type: categorical, choices: [8, [16]]}}\n",
     "model.width.choices.1: Optuna's choices must be null, true/false, numbers or strings"),
    ("model: {width: {type: categorical, choices: [8, 16.5]}}\n",
     "model.width.choices.1: expected a whole number, got 16.5"),
    ("optimizer: {lr: {type: float, low: 0, high: 0.1, log: true}}\n", "`log: true` needs low > 0, got low=0.0"),
    ("optimizer: {lr: {type: float, low: 0.1, high: 1, log: true, step: 0.1}}\n",
     "`step` and `log: true` cannot be used together"),
    ("optimizer: {name: adam, momentum: 0.9}\n", "optimizer.momentum: optimizer 'adam' does not read 'momentum'"),
    ("optimizer: {choose: {lion: {lr: 0.1}}}\n", "optimizer.choose.lion: unknown optimizer 'lion'; known: sgd, adam"),
    ("optimizer: {choose: {sgd: {betas: [0.9, 0.9]}}}\n",
     "optimizer.choose.sgd.betas: optimizer 'sgd' takes no 'betas'; it reads: lr, momentum"),
    ("optimizer: {choose: []}\n", "optimizer.choose: expected a mapping of optimizer names to their parameters"),
    ("optimizer: {name: sgd, choose: {adam: {}}}\n", "optimizer.name: give `name` or `choose`, not both"),
    ("optimizer: {lr: 0.1, choose: {sgd: {lr: 0.2}}}\n", "optimizer.choose.sgd.lr: lr is also given for every"),
    ("optimizer: {momentum: 0.9, choose: {sgd: {}, adam: {}}}\n",
     "optimizer.momentum: optimizer 'adam' does not read 'momentum'"),
    ("optimizer: {name: adam, betas: [0.9]}\n", "optimizer.betas: expected a list of two numbers, got [0.9]"),
    ("scheduler: {name: onecycle, warmup_epochs: 1}\n",
     "scheduler.warmup_epochs: scheduler 'onecycle' does not read 'warmup_epochs'"),
    ("scheduler: {name: multistep, milestones: [20, 10]}\n", "scheduler.milestones: must be increasing"),
    ("study: {metric: val_accuracy}\n", "study.metric: unknown metric 'val_accuracy'; known: val_acc, val_loss"),
    ("study: {direction: up}\n", "study.direction: expected maximize or minimize, got 'up'"),
    ("study: {metric: val_acc, direction: minimize}\n", "minimize val_acc makes the search seek the worst model"),
    ("study: {name: 'my study'}\n", "study.name: expected a name that starts with a letter or digit, then "
     "letters, digits"),
    ("study: {storage: studies/x.db}\n", "study.storage: expected a database URL such as sqlite:///"),
    ("study: {keep_checkpoints: -1}\n", "study.keep_checkpoints: expected a whole number >= 0, got -1"),
    ("study: {sampler: {name: tpee}}\n", "study.sampler.name: unknown sampler 'tpee'; known: tpe, random"),
    ("study: {pruner: {name: median, n_startup: 3}}\n",
     "study.pruner.n_startup: MedianPruner takes no option 'n_startup'; known: n_startup_trials"),
    ("study: {name: {type: categorical, choices: [a, b]}}\n", "study.name: study settings cannot be searched"),
])
def test_each_error(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(tmp_path / "space.yaml") + ":") for p in found), found


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        train:
          epochs: 0
          batch_size: {type: categorical, choices: []}
        model:
          name: resnet50
        optimizer:
          choose: {lion: {lr: 0.1}}
    """)
    assert len(found) == 4
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines) == [3, 4, 6, 8]


def test_line_numbers_point_at_the_key(tmp_path: Path) -> None:
    msg = one_problem(tmp_path, "# comment\ntrain:\n  epochs: 5\n  batch_size: 0\n")
    assert msg.startswith(f"{tmp_path / 'space.yaml'}:4: train.batch_size: must be in [1, 65536], got 0")


# -- overrides ------------------------------------------------------------------------------------------------------


def test_set_overrides_fixed_and_searched_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
        train: {epochs: 30, batch_size: {type: categorical, choices: [64, 128]}}
        optimizer: {choose: {sgd: {lr: {type: float, low: 0.01, high: 0.1}}, adam: {lr: 1e-3}}}
    """)
    space = load_space(path, ["train.epochs=2", "train.batch_size=32", "optimizer.sgd.lr=1e-2",
                              "data.train_limit=500"])
    assert space.sections["train"].fields == {"epochs": 2, "batch_size": 32}
    assert space.sections["optimizer"].choose is not None
    assert space.sections["optimizer"].choose["sgd"].fields["lr"] == pytest.approx(0.01)
    assert space.fixed_data().train_limit == 500


def test_bad_set_is_reported_as_coming_from_the_command_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "train: {epochs: 3}\n", ("train.epochs=abc", "train.epoch=3", "novalue"))
    assert "--set train.epochs=abc: train.epochs: expected a whole number, got 'abc'" in found
    assert any(p.startswith("--set train.epoch=3: train.epoch: unknown key 'epoch'") for p in found)
    assert any(p.startswith("--set novalue: novalue: expected key.path=value") for p in found)


def test_a_section_made_by_set_is_blamed_on_that_set(tmp_path: Path) -> None:
    """--set foo.bar=2 makes the section foo: its problem names the override, not the file's first line."""
    assert one_problem(tmp_path, "train: {epochs: 3}\n", ("foo.bar=2",)) == \
        "--set foo.bar=2: foo: unknown section 'foo'; known: study, data, train, model, optimizer, scheduler, cases"


def test_a_key_set_twice_is_refused_as_a_duplicate_key_is(tmp_path: Path) -> None:
    assert one_problem(tmp_path, "train: {epochs: 3}\n", ("train.epochs=2", "train.epochs=5")) == \
        "--set train.epochs=5: train.epochs: is set twice (--set train.epochs=2 and --set train.epochs=5); keep one"


@pytest.mark.parametrize("text, expected", [
    ("model: {name: {type: categorical, choices: [cnn, resnet50]}}\n",
     "s.yaml:1: model.name.choices.1: unknown name 'resnet50'; known: cnn, resnet18, resnet34, mlp"),
    ("train: {epochs: 1" + "0" * 400 + "}\n", "s.yaml:1: train.epochs: must be in [1, 10000], got a 401-digit number"),
    ("model: {width: 100000}\n", "s.yaml:1: model.width: must be in [1, 4096], got 100000"),
    ("data: {dataset: synthetic, synthetic: {size: 100000000000}}\n",
     "s.yaml:1: data.synthetic.size: must be in [2, 1e+06], got 1e+11"),
    ("study: {sampler: {name: grid}}\noptimizer: {lr: {type: float, low: 0.01, high: 0.1}}\n",
     "s.yaml:2: optimizer.lr: the grid sampler (study.sampler) needs every searched value to have choices or a "
     "step; this is a continuous float range: give it `step`, or use another sampler (tpe, random, qmc)"),
    ("data: {dataset: synthetic, synthetic: {size: 100, classes: 10}, val_size: 100}\n",
     "s.yaml:1: data.val_size: 100 of the 100 training images held out for validation leave fewer than one per "
     "class (10 classes) to train on; use at most 90"),
    ("data: {dataset: synthetic, synthetic: {size: 5, classes: 10}, val_size: 1}\n",
     "s.yaml:1: data.val_size: data.synthetic.size=5 is fewer images than its 10 classes; give at least one per "
     "class"),
    ("data: {dataset: cifar100, train_limit: 60000}\n", "s.yaml:1: data.train_limit: must be between 100 (one "
     "image per class) and 45000 (the images left after val_size=5000), got 60000"),
    ("study: {name: " + "a" * 1000 + "}\n", "s.yaml:1: study.name: a study name has at most 128 characters, got 1000"),
    ("study: {name: ../../etc/x}\n", "s.yaml:1: study.name: expected a name that starts with a letter or digit, "
     "then letters, digits, '_', '.' or '-' (no '..'), got '../../etc/x'"),
])
def test_what_run_would_refuse_validate_refuses(tmp_path: Path, text: str, expected: str) -> None:
    assert one_problem(tmp_path, text) == str(tmp_path / expected.replace("s.yaml:", "space.yaml:", 1))


@pytest.mark.parametrize("text, expected", [
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply for a space file (more than 64 levels"),
    ("".join(f"{'  ' * i}k:\n" for i in range(100)) + "  " * 100 + "x: 1\n", "nested too deeply"),
    ("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 9)}]\n" for c in "bcdefghi"),
     "expands to more than 100,000 values"),
])
def test_bombs_are_refused_with_a_message(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in one_problem(tmp_path, text)


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="is larger than 1,000 kB; a space file is a few kB"):
        load_space("/dev/zero")


# -- sampling -------------------------------------------------------------------------------------------------------


BRANCHY = """
    study: {sampler: {name: random, seed: 1}}
    data: {dataset: synthetic, val_size: 500}
    train: {epochs: 2, batch_size: {type: categorical, choices: [32, 64]}}
    model:
      width: {type: int, low: 4, high: 16, step: 4}
      dropout: {type: float, low: 0.0, high: 0.5}
    optimizer:
      weight_decay: {type: float, low: 1e-5, high: 1e-3, log: true}
      choose:
        sgd: {lr: {type: float, low: 0.01, high: 0.5, log: true}, momentum: 0.9}
        adamw: {lr: {type: float, low: 1e-4, high: 1e-2, log: true}}
    scheduler:
      choose: {cosine: {}, step: {step_size: {type: int, low: 1, high: 3}}}
"""


def test_suggest_through_study_ask_uses_dotted_names_and_conditional_branches(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, BRANCHY))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        config = suggest(trial, space)
        assert isinstance(config, TrialConfig)
        branch = trial.params["optimizer"]
        seen.add(branch)
        assert config.optimizer.name == branch
        assert config.optimizer.lr == trial.params[f"optimizer.{branch}.lr"]
        other = "adamw" if branch == "sgd" else "sgd"
        assert f"optimizer.{other}.lr" not in trial.params  # only the chosen branch's parameters exist
        assert config.optimizer.weight_decay == trial.params["optimizer.weight_decay"]
        assert config.model.width in (4, 8, 12, 16)
        assert config.train.epochs == 2 and config.data.dataset == "synthetic"
        if config.scheduler.name == "step":
            assert config.scheduler.step_size == trial.params["scheduler.step.step_size"]
        study.tell(trial, 0.0)
    assert seen == {"sgd", "adamw"}


def test_params_lists_every_searched_name(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, BRANCHY))
    assert set(space.params()) == {
        "train.batch_size", "model.width", "model.dropout", "optimizer", "optimizer.weight_decay",
        "optimizer.sgd.lr", "optimizer.adamw.lr", "scheduler", "scheduler.step.step_size"}


def test_hash_ignores_the_study_settings_but_not_the_search(tmp_path: Path) -> None:
    a = load_space(write(tmp_path, BRANCHY))
    b = load_space(write(tmp_path, BRANCHY.replace("seed: 1", "seed: 2")))
    c = load_space(write(tmp_path, BRANCHY), ["train.epochs=3"])
    assert a.hash() == b.hash() != c.hash()


def test_trialconfig_round_trips_through_a_dict() -> None:
    """Every section away from its defaults (the default config would come back from a from_dict that ignored its
    input), stored as plain JSON as a checkpoint keeps it: each value, tuples and nested sections included, returns."""
    config = TrialConfig(
        data=DataConfig(dataset="synthetic", val_size=40, train_limit=200, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                        augment=AugmentConfig(crop_padding=2, flip=False, rotation=15.0),
                        synthetic=SyntheticConfig(size=300, classes=4, seed=3)),
        train=TrainConfig(epochs=7, batch_size=32, label_smoothing=0.1, grad_clip=1.0, seed=5),
        model=ModelConfig(widths=(8, 16), kernel_sizes=(5, 3), hidden=(32,), dropout=0.25, init="xavier_uniform"),
        optimizer=OptimizerConfig(name="adamw", lr=3e-4, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01),
        scheduler=SchedulerConfig(name="multistep", milestones=(3, 5), gamma=0.3, warmup_epochs=1.0),
        metric="val_loss")
    assert all(getattr(config, f.name) != getattr(TrialConfig(), f.name) for f in dataclasses.fields(TrialConfig))
    stored = json.loads(json.dumps(config.to_dict()))  # tuples become lists
    assert TrialConfig.from_dict(stored) == config
    with pytest.raises(ValueError, match="unknown field"):
        TrialConfig.from_dict({"train": {"nope": 1}})


def test_registries_name_only_real_fields() -> None:
    from dataclasses import fields

    from hpsearch.space.config import ModelConfig, OptimizerConfig, SchedulerConfig

    for registry, cls in ((MODELS, ModelConfig), (OPTIMIZERS, OptimizerConfig), (SCHEDULERS, SchedulerConfig)):
        names = {f.name for f in fields(cls)}
        for component, reads in registry.fields().items():
            assert set(reads) <= names, (component, set(reads) - names)


def test_sampler_and_pruner_options_are_checked_by_building_them(tmp_path: Path) -> None:
    msg = one_problem(tmp_path, "study: {pruner: {name: threshold}}\n")
    assert "study.pruner: ThresholdPruner() is refused by Optuna" in msg
    msg = one_problem(tmp_path, "study: {pruner: {name: median, n_startup_trials: -1}}\n")
    assert "MedianPruner(n_startup_trials=-1) is refused by Optuna: Number of startup trials" in msg


# -- reliability settings, and what YAML can never do ----------------------------------------------------------------


def test_reliability_settings_have_safe_defaults(tmp_path: Path) -> None:
    study = load_space(write(tmp_path, "study: {name: s}\n")).study
    assert (study.heartbeat_interval, study.grace_period, study.max_retry, study.resume_interval) == (60, None, 3, 60)
    study = load_space(write(tmp_path, "study: {heartbeat_interval: 5, grace_period: 30, max_retry: 0, "
                                       "resume_interval: 0}\n")).study
    assert (study.heartbeat_interval, study.grace_period, study.max_retry, study.resume_interval) == (5, 30, 0, 0)
    assert load_space(write(tmp_path, "study: {heartbeat_interval: null}\n")).study.heartbeat_interval is None


@pytest.mark.parametrize("text, expected", [
    ("study: {heartbeat_interval: 0}\n", "study.heartbeat_interval: expected a whole number of seconds >= 1 or null"),
    ("study: {heartbeat_interval: 1.5}\n", "study.heartbeat_interval: expected a whole number of seconds >= 1"),
    ("study: {grace_period: true}\n", "study.grace_period: expected a whole number of seconds >= 1 or null (off), "
                                      "got True"),
    ("study: {heartbeat_interval: 10, grace_period: 10}\n",
     "study.grace_period: must be longer than heartbeat_interval (10 s), or a live trial counts as dead; got 10"),
    ("study: {heartbeat_interval: null, grace_period: 10}\n", "study.grace_period: needs heartbeat_interval"),
    ("study: {max_retry: -1}\n", "study.max_retry: expected a whole number of retries >= 0, got -1"),
    ("study: {max_retry: null}\n", "study.max_retry: expected a whole number of retries >= 0, got None"),
    ("study: {resume_interval: -5}\n", "study.resume_interval: expected a whole number of seconds >= 0, got -5"),
    ("study: {resume_interval: null}\n", "study.resume_interval: expected a whole number of seconds >= 0, got None"),
    ("study: {heartbeat_interval: {type: int, low: 1, high: 5}}\n",
     "study.heartbeat_interval: study settings cannot be searched"),
])
def test_reliability_setting_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in "\n".join(problems(tmp_path, text))


@pytest.mark.parametrize("text, expected", [
    ("study: {sampler: {name: tpe, gamma: 5}}\n", "TPESampler's option 'gamma' takes a Python object (Callable"),
    ("study: {sampler: {name: cmaes, independent_sampler: random}}\n",
     "CmaEsSampler's option 'independent_sampler' takes a Python object (BaseSampler | None), which a YAML file "
     "cannot give"),
    ("study: {sampler: {name: nsga2, constraints_func: os.system}}\n", "option 'constraints_func' takes a Python"),
    ("study: {sampler: {name: optuna.samplers.TPESampler}}\n", "unknown sampler 'optuna.samplers.TPESampler'; known"),
    ("study: {pruner: os.system}\n", "unknown pruner 'os.system'; known: median"),
    ("model: {name: torchvision.models.vgg16}\n", "unknown name 'torchvision.models.vgg16'; known: cnn"),
    ("study: {sampler: !!python/name:optuna.samplers.TPESampler ''}\n", "is not allowed; write plain values"),
])
def test_yaml_names_only_registered_components_and_plain_values(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in "\n".join(problems(tmp_path, text))


@pytest.mark.parametrize("text, expected", [
    ("train:\n  epochs: 3\x1f\n", "space.yaml:2: not valid YAML: character 0x001f is not allowed"),
    ("model: {name: [cnn]}\n", "model.name: expected a string, got ['cnn']"),
    ("model: {dropout: {type: [float], low: 0, high: 1}}\n", "model.dropout.type: unknown type ['float']"),
    ("study: {pruner: {name: {x: 1}}}\n", "study.pruner.name: unknown pruner {'x': 1}; known: median"),
    ("optimizer: {name: {}, lr: 0.1}\n", "optimizer.name: expected a string; a searched value is a mapping"),
    ("train:\n  ._: 1\n", "train.._: unknown key '._'"),  # read as a float by the 1e-4 rule, then float('.')
    ("train: {epochs: -.5e1}\n", "train.epochs: expected a whole number, got -5.0"),
])
def test_inputs_found_by_the_fuzzer_are_clear_errors(tmp_path: Path, text: str, expected: str) -> None:
    """Each of these once raised a traceback (TypeError: unhashable type, yaml ReaderError); see test_fuzz.py."""
    assert expected in "\n".join(problems(tmp_path, text))


def test_a_log_range_below_zero_is_one_problem_not_two(tmp_path: Path) -> None:
    msg = one_problem(tmp_path, "optimizer: {lr: {type: float, low: 0, high: 0.1, log: true}}\n")
    assert "`log: true` needs low > 0" in msg
