"""Samplers and pruners by name: Optuna's own classes (the registry's SAMPLERS and PRUNERS name them), their options
checked against Optuna's signatures, and built with the space's seed rule.

`option_problems` is the check that `load_space` here adds to the space part's, so `hpsearch validate` refuses an
option Optuna does not take (or one only a Python object can give) with the options it does take; `space_schema`
lists the options each class takes. These two are what `hpsearch.load_space` and `hpsearch.space_schema` call.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from ..space import Space
from ..space import load_space as _load_space
from ..space.overrides import Override
from ..space.registry import PRUNERS, SAMPLERS
from ..space.schema import space_schema as _space_schema
from .compat import HyperbandPruner
from .storage import StudyError

_MODULES = {"sampler": (SAMPLERS, optuna.samplers), "pruner": (PRUNERS, optuna.pruners)}
_NOT_OPTIONS = ("self", "search_space", "kwargs", "args")  # grid's search space comes from the space itself
# The types a YAML value can be: options annotated with anything else (a function, a sampler) are refused.
_PLAIN_TYPES = {"int", "float", "bool", "str", "None", "list", "dict", "tuple", "Sequence", "Mapping", "Any"}


def load_space(path: str | Path, overrides: Sequence[Override] = ()) -> Space:
    """The space part's load_space with every sampler's and pruner's options checked against Optuna's classes."""
    return _load_space(path, overrides, option_check=option_problems)


def space_schema() -> dict[str, Any]:
    """The space part's JSON Schema with each sampler's and pruner's options."""
    return _space_schema(options())


def optuna_class(kind: str, name: str) -> type:
    """The Optuna class of a sampler or pruner name."""
    registry, module = _MODULES[kind]
    return getattr(module, registry[name].info["optuna_class"])  # type: ignore[no-any-return]


def options(kind: str | None = None) -> dict[str, dict[str, list[str]]]:
    """Each sampler's and pruner's options by kind and name: its class's keyword parameters (the schema's keys;
    the checker also refuses those only a Python object can give)."""
    return {k: {name: list(_plain_options(optuna_class(k, name))[1]) for name in registry}
            for k, (registry, _) in _MODULES.items() if kind in (None, k)}


def option_problems(kind: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    """[(option or "", message)] for a sampler or pruner spec {name, options...}: options the class does not take,
    options only a Python object can give, and values Optuna's constructor refuses."""
    if kind not in _MODULES:
        return []
    cls = optuna_class(kind, spec["name"])
    allowed, params = _plain_options(cls)
    out: list[tuple[str, str]] = []
    for key in spec:
        if key == "name" or key in allowed:
            continue
        if key in params:
            out.append((key, f"{cls.__name__}'s option {key!r} takes a Python object ({params[key].annotation}), "
                             f"which a YAML file cannot give; options it can: {', '.join(allowed) or 'none'}"))
        else:
            out.append((key, f"{cls.__name__} takes no option {key!r}; known: {', '.join(allowed) or 'none'}"))
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        out.append(("seed", f"expected a whole number >= 0 or null, got {seed!r}"))
    values = {k: v for k, v in spec.items() if k != "name"}
    if not out and spec["name"] != "grid":  # grid's search space comes from the space (make_sampler)
        try:
            _quietly(cls, **values)
        except (TypeError, ValueError) as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            out.append(("", f"{cls.__name__}({shown}) is refused by Optuna: {exc}"))
    return out


def _plain_options(cls: type) -> tuple[list[str], dict[str, inspect.Parameter]]:
    params = {k: p for k, p in inspect.signature(cls).parameters.items() if k not in _NOT_OPTIONS}
    return [k for k, p in params.items() if _plain(p.annotation)], params


def _plain(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9.]*", text)) <= _PLAIN_TYPES


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for trials told outside optimize: its after_trial would call study.stop once every point
    is done, which works only inside optimize. A run stops asking by itself once every point has a trial
    (trials.Trials.grid_done)."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Sequence[float] | None) -> None:
        pass


def make_sampler(space: Space, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler by name; its seed is offset so a resumed or parallel run does not repeat trials."""
    spec = dict(space.study.sampler)
    name = spec.pop("name")
    cls = optuna_class("sampler", name)
    if "seed" in spec and spec["seed"] is not None:
        spec["seed"] = (int(spec["seed"]) + seed_offset) % 2**32  # numpy's seeds are 32-bit
    if name == "grid":
        grid: dict[str, list[Any]] = {}
        for pname, param in space.params().items():
            values = param.grid()
            if values is None:
                raise StudyError(f"the grid sampler needs every searched value to have choices or a step; "
                                 f"{pname} is a continuous {param.type} range: give it `step` or use another "
                                 "sampler (tpe, random, qmc)")
            grid[pname] = values
        return _quietly(GridSampler, grid, **spec)  # type: ignore[no-any-return]
    return _quietly(cls, **spec)  # type: ignore[no-any-return]


def make_pruner(space: Space) -> optuna.pruners.BasePruner:
    """The space's pruner by name; Hyperband is compat.HyperbandPruner (the same decisions, fewer storage reads)."""
    spec = dict(space.study.pruner)
    name = spec.pop("name")
    cls = HyperbandPruner if name == "hyperband" else optuna_class("pruner", name)
    return _quietly(cls, **spec)  # type: ignore[no-any-return]


def _quietly(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """Build without Optuna's ExperimentalWarning (qmc, gp, ...): the user chose it by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(*args, **kwargs)


__all__ = ["load_space", "make_pruner", "make_sampler", "option_problems", "options", "optuna_class", "space_schema"]
