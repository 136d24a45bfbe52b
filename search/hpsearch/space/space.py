"""A validated search space, and suggest(trial, space) -> TrialConfig: one concrete trial drawn from it.

Any leaf is fixed (a plain value) or searched (a mapping with `type: float | int | categorical` and Optuna's own
fields). The model, optimizer and scheduler sections pick a component by `name`, or search over components with
`choose:`, each branch with its own parameters. load.py reads a file into a Space (checker.py validates it).
Neither torch nor Optuna here: a space is validated without them, and sampled through any object with Optuna's
`suggest_*` methods (an optuna.Trial).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import config as C
from .rules import SECTIONS

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Param:
    """A searched value: Optuna's suggest_float / suggest_int / suggest_categorical arguments."""

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
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
    fuse: int = 1  # trials of one structure trained together as one fused model (--fuse); 1: each trial alone


@dataclass(frozen=True)
class Space:
    source: str
    study: StudySpec
    sections: dict[str, Section]
    tree: dict[str, Any]  # the validated document, overrides applied: what the study's space hash covers
    # `cases:`: {group: {row: {dotted field: fixed value}}}; each group is one categorical parameter, cases.<group>
    cases: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

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
        for group, rows in self.cases.items():
            out[f"cases.{group}"] = Param("categorical", choices=tuple(rows))
        return out

    def fixed_data(self) -> C.DataConfig:
        return fixed_data(self)

    def fixed_train_device(self) -> str:
        device = self.sections["train"].fields.get("device", C.TrainConfig.device)
        return str(device)

    def precisions(self) -> tuple[str, ...]:
        """The train.precision values its trials may train with: the fixed one, or the searched choices."""
        field = self.sections["train"].fields.get("precision", C.TrainConfig.precision)
        return tuple(map(str, field.choices if isinstance(field, Param) and field.choices else (field,)))

    def hash(self) -> str:
        """Digest of everything that defines a trial (not the study's name, storage, sampler or pruner)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        keep = {k: v for k, v in self.tree.items() if k in SECTIONS or k == "cases"}
        return {**keep, "metric": self.study.metric, "direction": self.study.direction}


# ----------------------------------------------------------------------------------------------------------------
# Sampling


def suggest(trial: optuna.trial.BaseTrial, space: Space) -> C.TrialConfig:
    """Sample one concrete TrialConfig (define-by-run: a branch's parameters exist only when it is chosen)."""
    values: dict[str, Any] = {name: _sample(section, name, trial) for name, section in space.sections.items()}
    for group, rows in space.cases.items():
        row = trial.suggest_categorical(f"cases.{group}", list(rows))
        for key, value in rows[row].items():
            section, *inner, leaf = key.split(".")
            node = values[section]
            for part in inner:
                node = node.setdefault(part, {})
            node[leaf] = list(value) if isinstance(value, tuple) else value
    return C.TrialConfig.from_dict({**values, "metric": space.study.metric})


def _sample(section: Section, prefix: str, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
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


def _fixed(section: Section) -> dict[str, Any]:
    return {k: (_fixed(v) if isinstance(v, Section) else v) for k, v in section.fields.items()}


def fixed_data(space: Space) -> C.DataConfig:
    """The data every trial sees (data fields cannot be searched, except augmentation)."""
    values = _fixed(space.sections["data"])
    augment = values.get("augment", {})
    values["augment"] = {k: v for k, v in augment.items() if not isinstance(v, Param)}
    return C.TrialConfig.from_dict({"data": values}).data
