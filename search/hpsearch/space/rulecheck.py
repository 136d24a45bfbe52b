"""A component's rules, applied by the checker wherever the fields a rule reads are fixed in the file, and, for a
rule that says `across_search`, at every value that matters of the searched ones (a searched stage count against
the image's size), blaming the searched key with the values that work. A rule reading a value already refused is
left out, so the other rules are reported in the same pass. RuleChecker sits between CaseChecker (cases.py) and the
whole-space checker (checker.py).
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

from . import config as C
from .cases import CaseChecker
from .registry import DATASETS, NAMED_SECTIONS, Registry, Rule
from .space import Param, Section
from .yamlfile import Problem

# A rule on searched fields (Rule.across_search) is tried at each value of a range of at most this many values (else
# at its two ends), and at no more than this many combinations of values (else it is left to the trials).
MAX_RULE_VALUES = 64
MAX_RULE_COMBINATIONS = 4_096


class RuleChecker(CaseChecker):
    def component_rules(self, sections: dict[str, Section], metric: str) -> None:
        """Each chosen component's rules (the data set's too), for every combination of `choose:` branches,
        wherever every field a rule reads is fixed; a rule that says `across_search` also where some are searched,
        at every value of theirs that matters (any other rule on a searched field is applied when a trial builds
        the component: that trial fails with the rule's words). A rule that reads a value refused above is left
        out, so that the rules on the other values are reported in the same pass."""
        refused = _refused_fields(self.problems)
        self.tolerant = bool(refused)
        kinds = list(NAMED_SECTIONS)
        branches: list[list[str | None]] = [list(sections[k].choose or [None]) for k in kinds]
        seen: set[str] = set()
        tried: set[str] = set()
        for combo in itertools.product(*branches):
            chosen = dict(zip(kinds, combo, strict=True))
            searched: dict[str, tuple[tuple[str, ...], Param]] = {}
            values = {name: _fixed_values(section, name, chosen.get(name), searched, (name,))
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
                prefix = f"{registry.kind} {name!r}: " if kind != "data" else ""
                for rule in registry[name].rules:
                    if rule.field in seen or any(_overlaps(need, field) and branch in (None, chosen.get(section))
                                                 for need in rule.needs for field, section, branch in refused):
                        continue
                    drawn = [(f, where, param) for need in rule.needs for f, (where, param) in searched.items()
                             if _overlaps(need, f)]  # in the order of `needs`: the first is blamed first
                    drawn = [d for i, d in enumerate(drawn) if d[0] not in {f for f, _, _ in drawn[:i]}]
                    if not drawn:
                        message = self.apply(rule, config)
                        if message is None:
                            continue
                        leaf = tuple(rule.field.split(".")[1:])
                        branch = chosen.get(kind)
                        where = (kind, "choose", branch, *leaf) if branch else (kind, *leaf)
                        found: tuple[tuple[str, ...], str] | None = (where, message)
                    elif rule.across_search:
                        key = repr((kind, name, rule.field, [(n, _value_at(values, n)) for n in rule.needs], drawn))
                        if key in tried:
                            continue  # the same rule on the same values, under another combination of branches
                        tried.add(key)
                        found = self.searched_rule(rule, values, metric, drawn)
                    else:
                        continue
                    if found is not None:
                        seen.add(rule.field)
                        self.problem(found[0], prefix + found[1])

    def apply(self, rule: Rule, config: C.TrialConfig) -> str | None:
        """A rule's word on one configuration. A rule may read a value beside its `needs` (the cnn's stage count
        reads the widths); where such a value was refused above, the rule cannot be applied and is left out."""
        try:
            return rule.check(config)
        except (TypeError, ValueError, AttributeError, KeyError, ArithmeticError):
            if self.tolerant:
                return None
            raise

    def searched_rule(self, rule: Rule, values: dict[str, Any], metric: str,
                      drawn: list[tuple[str, tuple[str, ...], Param]]) -> tuple[tuple[str, ...], str] | None:
        """A rule that reads searched fields, applied at every combination of the values of theirs that matter
        (each choice, each value of a short range, else the two ends): None when all hold, else the problem,
        blamed on the first searched field whose values do not all work, with the values that do."""
        options = [_values(param, ends=False) for _, _, param in drawn]
        if math.prod(len(v) for v, _ in options) > MAX_RULE_COMBINATIONS:
            options = [_values(param, ends=True) for _, _, param in drawn]
            if math.prod(len(v) for v, _ in options) > MAX_RULE_COMBINATIONS:
                return None  # too many to try: left to the trials
        results: list[tuple[tuple[Any, ...], str | None]] = []
        for combo in itertools.product(*(v for v, _ in options)):
            trial = copy.deepcopy(values)
            for (field, _, _), value in zip(drawn, combo, strict=True):
                _set_at(trial, field, value)
            try:
                config = C.TrialConfig.from_dict({**trial, "metric": metric})
            except (TypeError, ValueError):
                return None
            results.append((combo, self.apply(rule, config)))
        if all(message is None for _, message in results):
            return None
        verdicts = []  # each searched field: its values that work whatever the others draw, and those that do not
        for i, (candidates, _) in enumerate(options):
            broken = {repr(combo[i]) for combo, message in results if message is not None}
            verdicts.append(([v for v in candidates if repr(v) not in broken],
                             [v for v in candidates if repr(v) in broken]))
        i = next((i for i, (works, _) in enumerate(verdicts) if works), 0)
        field, where, param = drawn[i]
        (candidates, whole), (works, fails) = options[i], verdicts[i]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in candidates)
        below = bool(works) and numeric and max(works) < min(fails)  # the breaking values are the top of the range
        above = bool(works) and numeric and max(fails) < min(works)  # ... the bottom of it
        shown = min(fails) if below else max(fails) if above else fails[0]
        message = next(m for combo, m in results if m is not None and repr(combo[i]) == repr(shown))
        if whole:
            unit = param.type == "int" and param.choices is None and (param.step or 1) == 1 and len(fails) > 2
            contiguous = unit and [v for v in candidates if fails[0] <= v <= fails[-1]] == fails
            what = f"{_show(fails[0])} to {_show(fails[-1])}" if contiguous else ", ".join(map(_show, fails))
        else:
            what = ", ".join(f"{'low' if v == param.low else 'high'}={_show(v)}" for v in fails)
        text = f"a trial that draws {'any of ' if not works else ''}{what} fails: {message}"
        if not works:
            return where, text
        if not whole:
            end = "low" if works[0] == param.low else "high"
            return where, f"{text}; narrow the searched range to values that work ({end}={_show(works[0])} does)"
        if len(works) == 1:
            return where, f"{text}; only {_show(works[0])} works (give {field}: {_show(works[0])})"
        if param.choices is not None:
            fix = f"choices: [{', '.join(map(_show, works))}]"
        elif below:
            fix = f"high: {_show(max(works))}"
        elif above:
            fix = f"low: {_show(min(works))}"
        else:
            fix = f"type: categorical, choices: [{', '.join(map(_show, works))}]"
        if below:
            return where, f"{text}; the largest value that works is {_show(max(works))} ({fix})"
        if above:
            return where, f"{text}; the smallest value that works is {_show(min(works))} ({fix})"
        return where, f"{text}; the values that work: {', '.join(map(_show, works))} ({fix})"


def _fixed_values(section: Section, prefix: str, branch: str | None,
                  searched: dict[str, tuple[tuple[str, ...], Param]], path: tuple[str, ...]) -> dict[str, Any]:
    """A section's fixed values with one `choose:` branch merged in; searched fields go into `searched` (by their
    dotted field path, optimizer.lr, not optimizer.sgd.lr: their path in the document and their Param) and take no
    value."""
    out: dict[str, Any] = {}
    fields = {key: (value, (*path, key)) for key, value in section.fields.items()}
    if branch is not None and section.choose:
        fields.update({key: (value, (*path, "choose", branch, key))
                       for key, value in section.choose[branch].fields.items()})
        out["name"] = branch
    for key, (value, where) in fields.items():
        if isinstance(value, Param):
            searched[f"{prefix}.{key}"] = (where, value)
        elif isinstance(value, Section):
            out[key] = _fixed_values(value, f"{prefix}.{key}", None, searched, where)
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _refused_fields(problems: list[Problem]) -> list[tuple[str, str, str | None]]:
    """The fields whose values were refused: (dotted field path, its section, the `choose:` branch or None)."""
    out = []
    for problem in problems:
        parts = problem.path.split(".")
        branch = None
        if len(parts) >= 3 and parts[1] == "choose":  # a branch's value: optimizer.choose.sgd.lr -> optimizer.lr
            branch, parts = parts[2], [parts[0], *parts[3:]]
            if len(parts) == 1:
                continue  # a branch refused whole is left out of the branches: nothing of it is read
        out.append((".".join(parts), parts[0], branch))
    return out


def _overlaps(need: str, field: str) -> bool:
    """Whether a dotted field is `need` or lies inside it (data.augment.hue in data.augment), or holds it."""
    return bool(field) and (need == field or need.startswith(f"{field}.") or field.startswith(f"{need}."))


def _value_at(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set_at(values: dict[str, Any], dotted: str, value: Any) -> None:
    section, *inner, leaf = dotted.split(".")
    node = values.setdefault(section, {})
    for part in inner:
        node = node.setdefault(part, {})
    node[leaf] = value


def _values(param: Param, ends: bool) -> tuple[list[Any], bool]:
    """The values of a searched field that matter to a rule, and whether they are all it can take: each choice,
    each value of a range of at most MAX_RULE_VALUES, else (or with `ends`) the range's two ends."""
    if param.choices is not None:
        return list(param.choices), True
    low, high = param.low or 0, param.high or 0
    count = None
    if param.type == "int":
        count = int(high - low) // int(param.step or 1) + 1
    elif param.step:
        count = int(round((high - low) / param.step)) + 1
    if not ends and count is not None and count <= MAX_RULE_VALUES:
        if param.type == "int":
            return list(range(int(low), int(high) + 1, int(param.step or 1))), True
        return param.grid() or [low, high], True
    return ([low] if low == high else [low, high]), False


def _show(value: Any) -> str:
    """A value as the YAML file spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
