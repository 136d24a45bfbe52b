"""Checking a space file value by value: each field against its TrialConfig dataclass and the rules tables.

A fixed value is coerced to its field's type and checked against its closed set (rules.OPTIONS) and range
(rules.RANGES); a searched value (`type: float | int | categorical`) against Optuna's rules and the same range; a
section's keys against its dataclass and, in a model, optimizer or scheduler section, against the fields the chosen
component reads (registry.py). FieldChecker holds the problems found and blames each on its file and line, or on the
--set override that put the value there; the `cases:` table (cases.py) and the whole space (checker.py) build on it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from . import config as C
from .overrides import Overrides
from .registry import Registry
from .rules import KINDS, OPTIONS, PARAM_KEYS, RANGES, UNSEARCHABLE
from .space import Param, Section
from .yamlfile import Document, Problem


class FieldChecker:
    """A document's fields checked one by one, every Problem collected with its place."""

    def __init__(self, doc: Document, overrides: Overrides, problems: list[Problem]) -> None:
        self.doc, self.overrides, self.problems = doc, overrides, problems

    def problem(self, path: tuple[str, ...], message: str) -> None:
        source = self.overrides.source(path)
        if source is not None:
            self.problems.append(Problem(source, None, ".".join(path), message))
        else:
            self.problems.append(Problem(self.doc.source, self.doc.line(path), ".".join(path), message))

    # -- sections ------------------------------------------------------------------------------------------------

    def section(self, raw: dict[str, Any], path: tuple[str, ...], cls: type) -> Section:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in fields:
                self.problem((*path, key), f"unknown key {key!r}; known: {', '.join(fields)}")
                continue
            out[key] = self.leaf(value, (*path, key), str(fields[key].type))
        return Section(out)

    def named_section(self, raw: dict[str, Any], path: tuple[str, ...], cls: type, components: Registry) -> Section:
        registry = components.fields()
        raw = dict(raw)
        choose_raw = raw.pop("choose", None)
        common = self.section(raw, path, cls)
        sect = path[0]
        default = next(f.default for f in dataclasses.fields(cls) if f.name == "name")
        branches: dict[str, Section] | None = None
        if choose_raw is not None:
            if "name" in raw:
                self.problem((*path, "name"), "give `name` or `choose`, not both")
            if not isinstance(choose_raw, dict) or not choose_raw:
                self.problem((*path, "choose"), f"expected a mapping of {sect} names to their parameters, "
                                                f"got {choose_raw!r}; known names: {', '.join(registry)}")
                choose_raw = {}
            branches = {}
            for branch, braw in choose_raw.items():
                bpath = (*path, "choose", branch)
                if branch not in registry:
                    self.problem(bpath, f"unknown {sect} {branch!r}; known: {', '.join(registry)}")
                    continue
                braw = braw or {}
                if not isinstance(braw, dict):
                    self.problem(bpath, f"expected a mapping of {branch}'s parameters, got {braw!r}")
                    continue
                for key in braw:
                    if key in raw:
                        self.problem((*bpath, key), f"{key} is also given for every {sect} above; keep one")
                    elif key == "name" or key not in registry[branch]:
                        self.problem((*bpath, key), f"{sect} {branch!r} takes no {key!r}; "
                                                    f"it reads: {', '.join(registry[branch])}")
                keep = {k: v for k, v in braw.items() if k in registry[branch] and k not in raw}
                branches[branch] = self.section(keep, bpath, cls)
            names = list(branches)
        else:
            name = common.fields.get("name", default)
            names = list(name.choices or ()) if isinstance(name, Param) else [name]
        for key in common.fields:
            if key == "name":
                continue
            for name in names:
                if isinstance(name, str) and name in registry and key not in registry[name]:
                    self.problem((*path, key), f"{sect} {name!r} does not read {key!r}; it reads: "
                                               f"{', '.join(registry[name])}")
        return Section(common.fields, branches)

    def leaf(self, value: Any, path: tuple[str, ...], kind: str) -> Any:
        dotted = self.field_path(path)
        nested = C.SECTION_TYPES.get(dotted)
        if nested is not None:
            if isinstance(value, dict) and "type" not in value:
                return self.section(value, path, nested)
            self.problem(path, f"expected a mapping of {dotted} settings, got {value!r}")
            return None
        if isinstance(value, dict):
            return self.param(value, path, kind)
        return self.fixed(value, path, kind)

    @staticmethod
    def field_path(path: tuple[str, ...]) -> str:
        """optimizer.choose.sgd.lr -> optimizer.lr, model.name.choices.1 -> model.name: the field a value lands in."""
        if len(path) >= 3 and path[1] == "choose":
            path = (path[0], *path[3:])
        if len(path) >= 3 and path[-2] == "choices":
            path = path[:-2]
        return ".".join(path)

    def fixed(self, value: Any, path: tuple[str, ...], kind: str) -> Any:
        ok, value = coerce(kind, value)
        if not ok:
            self.problem(path, f"expected {KINDS.get(kind, kind)}, got {value!r}")
            return value
        self.check_value(value, path)
        return value

    def check_value(self, value: Any, path: tuple[str, ...]) -> None:
        dotted = self.field_path(path)
        options = OPTIONS.get(dotted)
        if options is not None and value not in options:
            self.problem(path, f"unknown {dotted.split('.')[-1]} {value!r}; known: {', '.join(options)}")
        if dotted == "train.device" and not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(value)):
            self.problem(path, f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        bounds = RANGES.get(dotted)
        if bounds is None or value is None:
            return
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, (int, float)) and not _in_range(v, bounds):
                self.problem(path, f"must be {_range_text(bounds)}, got {_fmt(value)}")
                return

    def param(self, raw: dict[str, Any], path: tuple[str, ...], kind: str) -> Any:
        dotted = self.field_path(path)
        ptype = raw.get("type")
        if not isinstance(ptype, str) or ptype not in PARAM_KEYS:
            if "type" not in raw:
                self.problem(path, f"expected {KINDS.get(kind, kind)}; a searched value is a mapping with "
                                   f"`type: float | int | categorical`, got {raw!r}")
            else:
                self.problem((*path, "type"), f"unknown type {ptype!r}; known: float, int, categorical")
            return None
        if dotted in UNSEARCHABLE:
            self.problem(path, "cannot be searched: every trial of a study must see the same data and setup; "
                               "give one value")
            return None
        if kind.startswith("tuple"):
            self.problem(path, "cannot be searched (Optuna's choices are single values); give one list, or "
                               "search the fields it is made from")
            return None
        n_problems = len(self.problems)
        for key in raw:
            if key != "type" and key not in PARAM_KEYS[ptype]:
                self.problem((*path, key), f"type {ptype} takes no {key!r}; it takes: "
                                           f"{', '.join(PARAM_KEYS[ptype])}")
        if ptype == "categorical":
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                self.problem((*path, "choices"), f"expected a non-empty list of values, got {choices!r}")
                return None
            out = []
            for i, choice in enumerate(choices):
                if choice is not None and not isinstance(choice, (bool, int, float, str)):
                    self.problem((*path, "choices", str(i)), f"Optuna's choices must be null, true/false, numbers "
                                                              f"or strings, got {choice!r}")
                    continue
                out.append(self.fixed(choice, (*path, "choices", str(i)), kind))
            if len(set(map(repr, out))) != len(out):
                self.problem((*path, "choices"), f"choices repeat a value: {choices!r}")
            return Param("categorical", choices=tuple(out)) if len(self.problems) == n_problems else None
        if kind not in ("int", "float", "int | None", "float | None"):
            self.problem((*path, "type"), f"expected {KINDS.get(kind, kind)}, which only `type: categorical` "
                                          f"can search, got type {ptype}")
            return None
        if ptype == "float" and kind.startswith("int"):
            self.problem((*path, "type"), "this field takes whole numbers: use `type: int`")
        want = "int" if ptype == "int" else "float"
        values: dict[str, Any] = {}
        for key in ("low", "high", "step"):
            if key not in raw:
                if key != "step":
                    self.problem(path, f"type {ptype} needs `{key}`")
                continue
            ok, v = coerce(want, raw[key])
            if not ok:
                self.problem((*path, key), f"expected {KINDS[want]}, got {raw[key]!r}")
            values[key] = v
        log = raw.get("log", False)
        if not isinstance(log, bool):
            self.problem((*path, "log"), f"expected true or false, got {log!r}")
        if len(self.problems) > n_problems:
            return None
        low, high, step = values["low"], values["high"], values.get("step")
        if low > high:
            self.problem(path, f"`low <= high` must hold, but got (low={low}, high={high})")
        if log and low <= 0:
            self.problem((*path, "low"), f"`log: true` needs low > 0, got low={low}")
        if log and step is not None:
            self.problem((*path, "step"), "`step` and `log: true` cannot be used together (Optuna)")
        if step is not None and step <= 0:
            self.problem((*path, "step"), f"must be > 0, got {step}")
        bounds = RANGES.get(dotted)
        if bounds is not None and len(self.problems) == n_problems:  # one message per mistake, not two
            for key, v in (("low", low), ("high", high)):
                if not _in_range(v, bounds):
                    self.problem((*path, key), f"{dotted} must be {_range_text(bounds)}, got {key}={_fmt(v)}")
        if len(self.problems) > n_problems:
            return None
        return Param(ptype, low=low, high=high, log=log, step=step)


def coerce(kind: str, value: Any) -> tuple[bool, Any]:
    """(whether `value` fits `kind`, a field's type as its dataclass spells it: int, float | None, tuple[int, ...]),
    the value as that type (an int as a float, a list as a tuple) when it fits, else unchanged."""
    if kind.endswith(" | None"):
        return (True, None) if value is None else coerce(kind[: -len(" | None")], value)
    if isinstance(value, bool):
        return kind == "bool", value
    if kind == "int":
        return isinstance(value, int), value
    if kind == "float":
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        return ok, float(value) if ok else value
    if kind == "str":
        return isinstance(value, str), value
    if kind in ("tuple[int, ...]", "tuple[float, float]", "tuple[float, ...]") and isinstance(value, list):
        item = "int" if kind == "tuple[int, ...]" else "float"
        coerced = [coerce(item, v) for v in value]
        ok = all(c[0] for c in coerced) and (kind != "tuple[float, float]" or len(value) == 2)
        return ok, tuple(c[1] for c in coerced) if ok else value
    return False, value


def _in_range(v: float, bounds: tuple[float | None, float | None, bool, bool]) -> bool:
    lo, hi, lo_open, hi_open = bounds
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    return not (hi is not None and (v > hi or (hi_open and v == hi)))


def _range_text(bounds: tuple[float | None, float | None, bool, bool]) -> str:
    lo, hi, lo_open, hi_open = bounds
    if hi is None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}"
    return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return repr(list(v))
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**15:
        return f"a {len(str(abs(v)))}-digit number"  # f"{v:g}" overflows past a float's range
    return f"{v:g}" if isinstance(v, (int, float)) else repr(v)
