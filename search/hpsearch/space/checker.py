"""Validating a space file: every problem at once, each with file, line, key path, bad value and the options.

load_space (load.py) parses the YAML and hands the document here; the _Checker walks it once against the
TrialConfig dataclasses, the rules tables (rules.py) and the registries (registry.py), and builds the Space while it
collects Problems. This module owns the whole space: its sections, the study section (a sampler's and a pruner's
options through the OptionCheck passed in), the checks across fields, and a component's rules, applied wherever the
fields they read are fixed in the file, and, for a rule that says `across_search`, at every value that matters of
the searched ones (a searched stage count against the image's size); a rule reading a value already refused is left
out, the others are applied in the same pass. Each value is checked by FieldChecker (fields.py); a file with
`cases:` is checked row by row by CaseChecker (cases.py), each combination of rows as a whole space, here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import config as C
from .overrides import Override, Overrides, apply_override
from .registry import NAMED_SECTIONS, PRUNERS, SAMPLERS, Registry
from .rulecheck import RuleChecker
from .rules import DIRECTIONS, MAX_FUSE, SECTIONS, STUDY_KEYS, TOP_KEYS, study_name_problem
from .space import Param, Section, Space, StudySpec
from .yamlfile import Document, Problem

# Checks of a component's options that need more than this part knows (the study part checks a sampler's or a
# pruner's options against Optuna's signatures): (kind, its spec {name, options}) -> [(key or "", message)].
OptionCheck = Callable[[str, dict[str, Any]], list[tuple[str, str]]]


def check(doc: Document, overrides: Sequence[Override], default_name: str,
          option_check: OptionCheck | None = None) -> tuple[Space, list[Problem]]:
    """Apply the --set overrides to the document, then validate it: the Space and every Problem found."""
    problems: list[Problem] = []
    applied = Overrides()
    for item in overrides:
        apply_override(doc.value, item, problems, applied)
    space = _Checker(doc, applied, problems, option_check).space(default_name)
    return space, problems


class _Checker(RuleChecker):
    """Walks the document once, building the Space and collecting every Problem."""

    def __init__(self, doc: Document, overrides: Overrides, problems: list[Problem],
                 option_check: OptionCheck | None = None) -> None:
        super().__init__(doc, overrides, problems)
        self.option_check = option_check
        self.tolerant = False  # a rule may fail to apply (component_rules: a value it reads was refused)

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
        self.component_rules(sections, study.metric)
        return Space(self.doc.source, study, sections, tree)

    def space_of(self, doc: Document, overrides: Overrides, problems: list[Problem], default_name: str) -> Space:
        return _Checker(doc, overrides, problems, self.option_check).space(default_name)

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

    # -- the whole space -----------------------------------------------------------------------------------------

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
