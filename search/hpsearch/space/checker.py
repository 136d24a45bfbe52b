"""Validating a space file: every problem at once, each with file, line, key path, bad value and the options.

load_space (load.py) parses the YAML and hands the document here; the _Checker walks it once against the
TrialConfig dataclasses, the rules tables (rules.py) and the registries (registry.py), and builds the Space while it
collects Problems. A component's rules are applied wherever the fields they read are fixed in the file.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from . import config as C
from .overrides import Override, Overrides, apply_override
from .registry import DATASETS, NAMED_SECTIONS, PRUNERS, SAMPLERS, Registry
from .rules import (
    CASE_GROUP,
    DIRECTIONS,
    KINDS,
    MAX_CASE_COMBINATIONS,
    MAX_FUSE,
    OPTIONS,
    PARAM_KEYS,
    RANGES,
    SECTIONS,
    STUDY_KEYS,
    TOP_KEYS,
    UNSEARCHABLE,
    study_name_problem,
)
from .space import Param, Section, Space, StudySpec
from .yamlfile import Document, Problem

# Checks of a component's options that need more than this part knows (the study part checks a sampler's or a
# pruner's options against Optuna's signatures): (kind, its spec {name, options}) -> [(key or "", message)].
OptionCheck = Callable[[str, dict[str, Any]], list[tuple[str, str]]]

_UNUSABLE = object()  # a row's value that a row may not set (its problem is said): left out of the row


def check(doc: Document, overrides: Sequence[Override], default_name: str,
          option_check: OptionCheck | None = None) -> tuple[Space, list[Problem]]:
    """Apply the --set overrides to the document, then validate it: the Space and every Problem found."""
    problems: list[Problem] = []
    applied = Overrides()
    for item in overrides:
        apply_override(doc.value, item, problems, applied)
    space = _Checker(doc, applied, problems, option_check).space(default_name)
    return space, problems


class _Checker:
    """Walks the document once, building the Space and collecting every Problem."""

    def __init__(self, doc: Document, overrides: Overrides, problems: list[Problem],
                 option_check: OptionCheck | None = None) -> None:
        self.doc, self.overrides, self.problems, self.option_check = doc, overrides, problems, option_check

    def problem(self, path: tuple[str, ...], message: str) -> None:
        source = self.overrides.source(path)
        if source is not None:
            self.problems.append(Problem(source, None, ".".join(path), message))
        else:
            self.problems.append(Problem(self.doc.source, self.doc.line(path), ".".join(path), message))

    def space(self, default_name: str) -> Space:
        if "cases" in self.doc.value:
            return self.space_with_cases(default_name)
        tree: dict[str, Any] = self.doc.value
        for key in tree:
            if key not in TOP_KEYS:
                self.problem((key,), f"unknown section {key!r}; known: {', '.join(TOP_KEYS)}")
        sections: dict[str, Section] = {}
        for name in SECTIONS:
            raw = tree.get(name) or {}
            if not isinstance(raw, dict):
                self.problem((name,), f"expected a mapping of {name} settings, got {raw!r}")
                raw = {}
            cls = C.SECTION_TYPES[name]
            if name in NAMED_SECTIONS:
                sections[name] = self.named_section(raw, (name,), cls, NAMED_SECTIONS[name])
            else:
                sections[name] = self.section(raw, (name,), cls)
        study = self.study(tree.get("study") or {}, default_name)
        self.cross_checks(sections)
        self.grid_needs_steps(sections, study)
        self.fuse_fits(sections, study)
        if not self.problems:
            self.component_rules(sections, study.metric)
        return Space(self.doc.source, study, sections, tree)

    # -- cases ---------------------------------------------------------------------------------------------------

    def space_with_cases(self, default_name: str) -> Space:
        """A space with `cases:`: the sections sample as usual, then each group picks one of its rows, whose fixed
        values land on the sampled trial. Every combination of rows is checked as the whole space it makes, each
        problem blamed on the row's line; the sections alone are not checked, since a row may be what makes them
        valid (a row that picks adam makes its betas readable)."""
        cases = self.cases(self.doc.value["cases"])
        base_doc = Document(self.doc.source, {k: v for k, v in self.doc.value.items() if k != "cases"},
                            self.doc.lines)
        base = _Checker(base_doc, self.overrides, [], self.option_check).space(default_name)
        space = dataclasses.replace(base, tree=self.doc.value, cases=cases)
        groups = list(cases)  # (a value said unusable above is left out of its row: each problem is said once)
        count = math.prod(len(rows) for rows in cases.values())
        if count > MAX_CASE_COMBINATIONS:
            self.problem(("cases",), f"the groups make {count:,} combinations of rows; at most "
                                     f"{MAX_CASE_COMBINATIONS:,} (split the table into several spaces)")
            return space
        seen: set[str] = set()
        for combo in itertools.product(*(list(cases[g]) for g in groups)):
            tree, overrides = copy.deepcopy(base_doc.value), copy.deepcopy(self.overrides)
            found: list[Problem] = []
            rows: dict[str, tuple[str, tuple[str, ...]]] = {}  # a value's blame -> its row and path
            for group, row in zip(groups, combo, strict=True):
                for key, value in cases[group][row].items():
                    where = f"cases.{group}.{row}.{key}"
                    rows[where] = (f"cases.{group}.{row}", ("cases", group, row, key))
                    apply_override(tree, (f"{key}={json.dumps(value)}", where), found, overrides)
            _Checker(Document(self.doc.source, tree, self.doc.lines), overrides, found,
                     self.option_check).space(default_name)
            for problem in found:
                if problem.source in rows:  # blamed on a row's value: the file's line of that value
                    row_name, row_path = rows[problem.source]
                    problem = Problem(self.doc.source, self.doc.line(row_path), f"{problem.path} (row {row_name})",
                                      problem.message)
                if str(problem) not in seen:
                    seen.add(str(problem))
                    self.problems.append(problem)
        return space

    def cases(self, raw: Any) -> dict[str, dict[str, dict[str, Any]]]:
        """`cases:` as {group: {row: {dotted field: value}}}, each value coerced to its field's type; the shape,
        the field paths and what a row may set are checked here, the values' meaning by the combinations."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        if not isinstance(raw, dict) or not raw:
            self.problem(("cases",), f"expected a mapping of groups, each a mapping of named rows of fixed values "
                                     f"(e.g. cases: {{net: {{small: {{model.width: 32}}}}}}), got {raw!r}")
            return out
        for group, rows in raw.items():
            gpath = ("cases", str(group))
            if not isinstance(group, str) or not re.fullmatch(CASE_GROUP, group):
                self.problem(gpath, f"a group's name is a letter, then letters, digits or '_'; got {group!r}")
                continue
            if not isinstance(rows, dict) or not rows:
                self.problem(gpath, f"expected a mapping of named rows, each a mapping of fixed values, got {rows!r}")
                continue
            out[group] = {}
            for row, values in rows.items():
                rpath = (*gpath, str(row))
                if not isinstance(row, str) or not row:
                    self.problem(rpath, f"a row's name is a string (it is the trial's parameter value), got {row!r}")
                    continue
                values = values or {}
                if not isinstance(values, dict):
                    self.problem(rpath, f"expected a mapping of dotted fields to values (model.width: 32), "
                                        f"got {values!r}")
                    continue
                coerced = {key: self.case_value(key, value, (*rpath, str(key))) for key, value in values.items()}
                out[group][row] = {key: value for key, value in coerced.items() if value is not _UNUSABLE}
        return out

    def case_value(self, key: Any, value: Any, path: tuple[str, ...]) -> Any:
        """A row's value for `key` (a field's dotted path), coerced; problems for what a row may not set (those
        values are _UNUSABLE: left out of the row, so that the combinations check the rest)."""
        parts = key.split(".") if isinstance(key, str) else []
        cls = C.SECTION_TYPES.get(".".join(parts[:-1])) if len(parts) >= 2 else None
        fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
        if not parts or parts[0] not in SECTIONS or parts[-1] not in fields:
            self.problem(path, f"expected a field's dotted path in {', '.join(SECTIONS)} (model.width, "
                               f"data.augment.flip, optimizer.name), got {key!r}")
            return _UNUSABLE
        if any(key == u or key.startswith(f"{u}.") for u in UNSEARCHABLE):
            self.problem(path, "a row cannot set this: every trial of a study must see the same data and setup; "
                               "give it in its section")
            return _UNUSABLE
        if isinstance(value, dict):
            self.problem(path, f"a row gives fixed values; searching is done in the sections, got {value!r}")
            return _UNUSABLE
        node: Any = self.doc.value
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "type" in node:
            self.problem(path, f"{key} is searched in the {parts[0]} section; a row fixes it: keep one of the two")
            return _UNUSABLE
        ok, coerced = _coerce(str(fields[parts[-1]].type), value)
        return coerced if ok else value  # a wrong type is reported by the combinations, with the field's words

    # -- study ---------------------------------------------------------------------------------------------------

    def study(self, raw: Any, default_name: str) -> StudySpec:
        if not isinstance(raw, dict):
            self.problem(("study",), f"expected a mapping, got {raw!r}")
            raw = {}
        for key in raw:
            if key not in STUDY_KEYS:
                self.problem(("study", key), f"unknown key {key!r}; known: {', '.join(STUDY_KEYS)}")
        for key, value in raw.items():
            if isinstance(value, dict) and "type" in value:
                self.problem(("study", key), "study settings cannot be searched; give one value")
        name = raw.get("name", default_name)
        bad_name = study_name_problem(name)
        if bad_name is not None:
            if "name" in raw:
                self.problem(("study", "name"), bad_name)
            else:  # the file's own name is the default
                self.problem(("study",), f"the file name {default_name!r} cannot name the study ({bad_name}); "
                                         "give study.name")
            name = "study"
        metric = raw.get("metric", "val_acc")
        if not isinstance(metric, str) or metric not in C.METRICS:
            self.problem(("study", "metric"), f"unknown metric {metric!r}; known: {', '.join(C.METRICS)}")
            metric = "val_acc"
        direction = raw.get("direction", C.METRICS[metric])
        if direction not in DIRECTIONS:
            self.problem(("study", "direction"), f"expected maximize or minimize, got {direction!r}")
        elif direction != C.METRICS[metric]:
            self.problem(("study", "direction"), f"{direction} {metric} makes the search seek the worst model; "
                                                 f"use {C.METRICS[metric]}")
        storage = raw.get("storage")
        if storage is not None and (not isinstance(storage, str) or "://" not in storage):
            self.problem(("study", "storage"), f"expected a database URL such as sqlite:///studies/x.db or "
                                               f"postgresql://user@host/db, got {storage!r}")
        keep = raw.get("keep_checkpoints", 3)
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            self.problem(("study", "keep_checkpoints"), f"expected a whole number >= 0, got {keep!r}")
        sampler = self.component(raw.get("sampler", {"name": "tpe"}), ("study", "sampler"), SAMPLERS, default="tpe")
        pruner = self.component(raw.get("pruner", {"name": "median"}), ("study", "pruner"), PRUNERS,
                                default="median")
        interval, grace, retries, resume_every = self.reliability(raw)
        fuse = raw.get("fuse", 1)
        if not isinstance(fuse, int) or isinstance(fuse, bool) or not 1 <= fuse <= MAX_FUSE:
            self.problem(("study", "fuse"), f"expected a whole number of trials from 1 (each alone) to {MAX_FUSE}, "
                                            f"got {fuse!r}")
            fuse = 1
        return StudySpec(name, direction, metric, storage, sampler, pruner, keep, interval, grace, retries,
                         resume_every, fuse)

    def reliability(self, raw: dict[str, Any]) -> tuple[int | None, int | None, int, int]:
        """heartbeat_interval, grace_period (whole seconds or null), max_retry and resume_interval (whole numbers
        >= 0)."""
        out: list[Any] = []
        for key, default, low in (("heartbeat_interval", StudySpec.heartbeat_interval, 1),
                                  ("grace_period", StudySpec.grace_period, 1), ("max_retry", StudySpec.max_retry, 0),
                                  ("resume_interval", StudySpec.resume_interval, 0)):
            value = raw.get(key, default)
            nullable = key in ("heartbeat_interval", "grace_period")
            if (value is None and not nullable) or (value is not None and (
                    not isinstance(value, int) or isinstance(value, bool) or value < low)):
                kind = "retries" if key == "max_retry" else "seconds"
                self.problem(("study", key), f"expected a whole number of {kind} >= {low}"
                                             f"{' or null (off)' if nullable else ''}, got {value!r}")
                value = default
            out.append(value)
        interval, grace, retries, resume_every = out
        if grace is not None and interval is not None and grace <= interval:
            self.problem(("study", "grace_period"), f"must be longer than heartbeat_interval ({interval} s), or a "
                                                    f"live trial counts as dead; got {grace} (e.g. {2 * interval})")
        if grace is not None and interval is None:
            self.problem(("study", "grace_period"), "needs heartbeat_interval (heartbeats are off when it is null)")
        return interval, grace, retries, resume_every

    def component(self, raw: Any, path: tuple[str, ...], registry: Registry, default: str) -> dict[str, Any]:
        """A sampler or pruner: its name alone, or {name, options}; options are checked by `option_check`."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            self.problem(path, f"expected {{name: ..., <options>}}, got {raw!r}")
            return {"name": default}
        name = raw.get("name", default)
        if not isinstance(name, str) or name not in registry:
            self.problem((*path, "name"), f"unknown {path[-1]} {name!r}; known: {', '.join(registry)}")
            return {"name": default}
        spec = dict(raw, name=name)
        if self.option_check is not None:
            for key, message in self.option_check(registry.kind, spec):
                self.problem((*path, key) if key else path, message)
        return spec

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
        ok, value = _coerce(kind, value)
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
            ok, v = _coerce(want, raw[key])
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

    def cross_checks(self, sections: dict[str, Section]) -> None:
        model = sections["model"]
        widths = model.fields.get("widths")
        if widths is not None:
            for other in ("stages", "width", "width_growth"):
                if other in model.fields:
                    self.problem(("model", other), f"give `widths` (it sets the stages) or {other}, not both")
        if model.fields.get("kernel_sizes") is not None and "kernel_size" in model.fields:
            self.problem(("model", "kernel_size"), "give `kernel_sizes` (one per stage) or kernel_size, not both")
        milestones = sections["scheduler"].fields.get("milestones")
        if isinstance(milestones, tuple) and list(milestones) != sorted(set(milestones)):
            self.problem(("scheduler", "milestones"), f"must be increasing, got {list(milestones)}")

    def component_rules(self, sections: dict[str, Section], metric: str) -> None:
        """Each chosen component's rules (the data set's too), for every combination of `choose:` branches,
        wherever every field a rule reads is fixed (a rule on a searched field is applied when a trial builds the
        component: that trial fails with the rule's words)."""
        kinds = list(NAMED_SECTIONS)
        branches: list[list[str | None]] = [list(sections[k].choose or [None]) for k in kinds]
        seen: set[str] = set()
        for combo in itertools.product(*branches):
            chosen = dict(zip(kinds, combo, strict=True))
            searched: set[str] = set()
            values = {name: _fixed_values(section, name, chosen.get(name), searched)
                      for name, section in sections.items()}
            try:
                config = C.TrialConfig.from_dict({**values, "metric": metric})
            except (TypeError, ValueError):
                continue  # a value the field checks above already refused
            registries: list[tuple[str, Registry]] = [*NAMED_SECTIONS.items(), ("data", DATASETS)]
            for kind, registry in registries:
                name = registry.chosen(config)
                if name not in registry or f"{kind}.name" in searched:
                    continue  # a searched name: each choice's rules apply when a trial builds it
                for rule in registry[name].rules:
                    if any(f in searched for f in rule.needs) or rule.field in seen:
                        continue
                    message = rule.check(config)
                    if message is None:
                        continue
                    seen.add(rule.field)
                    leaf = tuple(rule.field.split(".")[1:])
                    branch = chosen.get(kind)
                    where = (kind, "choose", branch, *leaf) if branch else (kind, *leaf)
                    self.problem(where, f"{registry.kind} {name!r}: {message}" if kind != "data" else message)

    def fuse_fits(self, sections: dict[str, Section], study: StudySpec) -> None:
        """A fused group trains its members together, uncompiled: train.compile cannot be on with it."""
        if study.fuse > 1 and sections["train"].fields.get("compile", False) is not False:
            self.problem(("train", "compile"), f"study.fuse: {study.fuse} trains each group's members together, "
                                               "uncompiled; set train.compile: false, or study.fuse: 1")

    def grid_needs_steps(self, sections: dict[str, Section], study: StudySpec) -> None:
        """The grid sampler tries every combination: each searched value needs a finite set of values."""
        if study.sampler.get("name") != "grid":
            return
        for path, param in _params_with_paths(sections):
            if param.grid() is None:
                self.problem(path, f"the grid sampler (study.sampler) needs every searched value to have choices "
                                   f"or a step; this is a continuous {param.type} range: give it `step`, or use "
                                   "another sampler (tpe, random, qmc)")


def _params_with_paths(sections: dict[str, Section]) -> list[tuple[tuple[str, ...], Param]]:
    """Every searched value with its path in the document (optimizer.choose.sgd.lr)."""
    out: list[tuple[tuple[str, ...], Param]] = []

    def walk(section: Section, path: tuple[str, ...]) -> None:
        for key, value in section.fields.items():
            if isinstance(value, Param):
                out.append(((*path, key), value))
            elif isinstance(value, Section):
                walk(value, (*path, key))
        for branch, sub in (section.choose or {}).items():
            walk(sub, (*path, "choose", branch))

    for name, section in sections.items():
        walk(section, (name,))
    return out


def config_branch(section: Section, name: str) -> str | None:
    """The `choose:` branch that names a component, or None when the section names it directly."""
    return name if section.choose and name in section.choose else None


def _fixed_values(section: Section, prefix: str, branch: str | None, searched: set[str]) -> dict[str, Any]:
    """A section's fixed values with one `choose:` branch merged in; searched fields go into `searched` (dotted,
    as the field path: optimizer.lr, not optimizer.sgd.lr) and take no value."""
    out: dict[str, Any] = {}
    fields = dict(section.fields)
    if branch is not None and section.choose:
        fields.update(section.choose[branch].fields)
        out["name"] = branch
    for key, value in fields.items():
        if isinstance(value, Param):
            searched.add(f"{prefix}.{key}")
        elif isinstance(value, Section):
            out[key] = _fixed_values(value, f"{prefix}.{key}", None, searched)
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _coerce(kind: str, value: Any) -> tuple[bool, Any]:
    if kind.endswith(" | None"):
        return (True, None) if value is None else _coerce(kind[: -len(" | None")], value)
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
        coerced = [_coerce(item, v) for v in value]
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
