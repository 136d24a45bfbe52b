"""Search spaces: a YAML file -> a validated Space -> suggest(trial, space) -> TrialConfig.

Any leaf is fixed (a plain value) or searched (a mapping with `type: float | int | categorical` and Optuna's own
fields). The model, optimizer and scheduler sections pick a component by `name`, or search over components with
`choose:`, each branch with its own parameters. Every problem in a file is reported at once, with its line
(checker.py does the validating).
No torch here: a space is validated and sampled without it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from . import config as C
from .yamlfile import Problem, SpaceError, parse

SECTIONS = ("data", "train", "model", "optimizer", "scheduler")
TOP_KEYS = ("study", *SECTIONS)
STUDY_KEYS = ("name", "direction", "metric", "storage", "sampler", "pruner", "keep_checkpoints",
              "heartbeat_interval", "grace_period", "max_retry", "resume_interval")
PARAM_KEYS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"),
              "categorical": ("choices",)}
DIRECTIONS = ("maximize", "minimize")

# Fields that fix the data every trial sees: searching them would make trials incomparable.
UNSEARCHABLE = {"data.dataset", "data.root", "data.download", "data.val_size", "data.train_limit",
                "data.split_seed", "data.synthetic", "train.device", "train.eval_batch_size"}
# Closed sets of strings, by field path.
OPTIONS: dict[str, tuple[str, ...]] = {
    "data.dataset": C.DATASETS, "train.precision": C.PRECISIONS,
    **{f"{s}.name": tuple(reg) for s, reg in C.NAMED_SECTIONS.items()},
}
# Allowed numeric ranges (low, high, low_open, high_open) by field path; None is unbounded.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.val_size": (1, None, False, False), "data.train_limit": (1, None, False, False),
    "data.augment.crop_padding": (0, 16, False, False), "data.synthetic.size": (2, None, False, False),
    "data.synthetic.test_size": (1, None, False, False), "data.synthetic.classes": (2, None, False, False),
    "data.synthetic.noise": (0, None, False, False),
    "train.epochs": (1, None, False, False), "train.batch_size": (1, None, False, False),
    "train.eval_batch_size": (1, None, False, False), "train.label_smoothing": (0, 1, False, True),
    "train.grad_clip": (0, None, True, False),
    "model.stages": (1, 5, False, False), "model.blocks_per_stage": (1, None, False, False),
    "model.width": (1, None, False, False), "model.width_growth": (0, None, True, False),
    "model.widths": (1, None, False, False), "model.dropout": (0, 1, False, True),
    "optimizer.lr": (0, None, True, False), "optimizer.momentum": (0, 1, False, True),
    "optimizer.weight_decay": (0, None, False, False), "optimizer.betas": (0, 1, False, True),
    "optimizer.eps": (0, None, True, False), "optimizer.alpha": (0, 1, False, False),
    "scheduler.warmup_epochs": (0, None, False, False), "scheduler.step_size": (1, None, False, False),
    "scheduler.milestones": (1, None, False, False), "scheduler.gamma": (0, None, True, False),
    "scheduler.min_lr_factor": (0, 1, False, False), "scheduler.pct_start": (0, 1, True, True),
    "scheduler.div_factor": (0, None, True, False), "scheduler.final_div_factor": (0, None, True, False),
    "scheduler.factor": (0, 1, True, True), "scheduler.patience": (0, None, False, False),
    "scheduler.end_factor": (0, 1, False, False),
}
# What a field's annotation accepts, and how to say it.
KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
         "int | None": "a whole number or null", "float | None": "a number or null",
         "tuple[int, ...]": "a list of whole numbers", "tuple[int, ...] | None": "a list of whole numbers or null",
         "tuple[float, float]": "a list of two numbers"}


@dataclass(frozen=True)
class Param:
    """A searched value: Optuna's suggest_float / suggest_int / suggest_categorical arguments."""

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.type == "categorical":
            assert self.choices is not None
            return trial.suggest_categorical(name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(name, int(self.low or 0), int(self.high or 0), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(name, float(self.low or 0.0), float(self.high or 0.0), step=self.step, log=self.log)

    def grid(self) -> list[Any] | None:
        """Every value this parameter can take, or None when it is continuous."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int" and not self.log:
            return list(range(int(self.low or 0), int(self.high or 0) + 1, int(self.step or 1)))
        if self.type == "float" and self.step:
            n = int(round((float(self.high or 0) - float(self.low or 0)) / self.step))
            return [float(self.low or 0) + i * self.step for i in range(n + 1)]
        return None


@dataclass(frozen=True)
class Section:
    """A section's fixed values, searched Params and nested Sections; `choose` maps branch name -> its Section."""

    fields: dict[str, Any]
    choose: dict[str, Section] | None = None


@dataclass(frozen=True)
class StudySpec:
    name: str  # Optuna study name; also names the default SQLite file studies/<name>.db
    direction: str  # maximize | minimize
    metric: str  # val_acc | val_loss
    storage: str | None  # RDB URL; None: sqlite:///studies/<name>.db
    sampler: dict[str, Any]  # {name: tpe, seed: 0, ...keyword arguments of that Optuna sampler}
    pruner: dict[str, Any]  # {name: median, ...keyword arguments of that Optuna pruner}
    keep_checkpoints: int  # best-epoch checkpoints kept for the best k completed trials
    heartbeat_interval: int | None = 60  # seconds between a running trial's heartbeats; null: no heartbeats
    grace_period: int | None = None  # seconds without a heartbeat before a trial counts as dead; null: 2 intervals
    max_retry: int = 3  # times a trial whose worker died or was stopped is rerun from its last epoch; 0: never
    resume_interval: int = 60  # seconds of training between a running trial's saved states; 0: after every epoch


@dataclass(frozen=True)
class Space:
    source: str
    study: StudySpec
    sections: dict[str, Section]
    tree: dict[str, Any]  # the validated document, overrides applied: what the study's space hash covers

    def params(self) -> dict[str, Param]:
        """Every searched parameter by its Optuna name (dotted path), branch parameters included."""
        out: dict[str, Param] = {}

        def walk(section: Section, prefix: str) -> None:
            for key, value in section.fields.items():
                if isinstance(value, Param):
                    out[f"{prefix}.{key}"] = value
                elif isinstance(value, Section):
                    walk(value, f"{prefix}.{key}")
            if section.choose:
                out[prefix] = Param("categorical", choices=tuple(section.choose))
                for branch, sub in section.choose.items():
                    walk(sub, f"{prefix}.{branch}")

        for name, section in self.sections.items():
            walk(section, name)
        return out

    def fixed_data(self) -> C.DataConfig:
        return fixed_data(self)

    def fixed_train_device(self) -> str:
        device = self.sections["train"].fields.get("device", C.TrainConfig.device)
        return str(device)

    def hash(self) -> str:
        """Digest of everything that defines a trial (not the study's name, storage, sampler or pruner)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        keep = {k: v for k, v in self.tree.items() if k in SECTIONS}
        return {**keep, "metric": self.study.metric, "direction": self.study.direction}


# ----------------------------------------------------------------------------------------------------------------
# Loading


def load_space(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Space:
    """Read and validate a space file; `overrides` are `key.path=value` strings applied first (--set).

    Raises SpaceError listing every problem, each with file, line, key path, bad value and the options.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpaceError([Problem(str(path), None, "", f"cannot read the space file: {reason}")]) from None
    doc = parse(text, str(path))
    if doc.value is None:
        raise SpaceError([Problem(str(path), None, "", "the file is empty; a space needs at least a `study:` "
                                                         "or `train:` section (see spaces/smoke.yaml)")])
    if not isinstance(doc.value, dict):
        raise SpaceError([Problem(str(path), doc.line(()), "", f"expected a mapping of sections "
                                                                f"({', '.join(TOP_KEYS)}), got {doc.value!r}")])
    from .checker import check  # the validator builds this module's classes, so it imports them from here

    space, problems = check(doc, overrides, default_name=path.stem)
    if problems:
        raise SpaceError(sorted(problems, key=lambda p: (p.source != "--set", p.line or 0)))
    return space


# ----------------------------------------------------------------------------------------------------------------
# Sampling


def suggest(trial: optuna.Trial, space: Space) -> C.TrialConfig:
    """Sample one concrete TrialConfig (define-by-run: a branch's parameters exist only when it is chosen)."""
    values: dict[str, Any] = {name: _sample(section, name, trial) for name, section in space.sections.items()}
    return C.TrialConfig.from_dict({**values, "metric": space.study.metric})


def _sample(section: Section, prefix: str, trial: optuna.Trial) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.fields.items():
        if isinstance(value, Param):
            out[key] = value.suggest(trial, f"{prefix}.{key}")
        elif isinstance(value, Section):
            out[key] = _sample(value, f"{prefix}.{key}", trial)
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    if section.choose:
        branch = trial.suggest_categorical(prefix, list(section.choose))
        out["name"] = branch
        out.update(_sample(section.choose[branch], f"{prefix}.{branch}", trial))
    return out


def num_classes(data: C.DataConfig) -> int:
    return {"cifar100": 100, "cifar10": 10}.get(data.dataset, data.synthetic.classes)


def _fixed(section: Section) -> dict[str, Any]:
    return {k: (_fixed(v) if isinstance(v, Section) else v) for k, v in section.fields.items()}


def fixed_data(space: Space) -> C.DataConfig:
    """The data every trial sees (data fields cannot be searched, except augmentation)."""
    values = _fixed(space.sections["data"])
    augment = values.get("augment", {})
    values["augment"] = {k: v for k, v in augment.items() if not isinstance(v, Param)}
    return C.TrialConfig.from_dict({"data": values}).data
