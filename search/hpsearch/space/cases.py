"""The `cases:` table: groups of named rows of fixed values; a trial takes one row of each group.

A row may be what makes a section valid (a row that picks adam makes its betas readable), so the sections are not
checked alone: each combination of rows is applied to the file as --set overrides are and checked as the whole
space it makes (space_of: the whole-space checker of checker.py), each problem blamed on the line of the row's value
and said once, however many combinations share it. What a row may set at all (a field's dotted path, nothing every
trial must share, a fixed value where the section searches none) is checked here, once per row.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
from typing import Any

from . import config as C
from .fields import FieldChecker, coerce
from .overrides import Overrides, apply_override
from .rules import CASE_GROUP, MAX_CASE_COMBINATIONS, SECTIONS, UNSEARCHABLE
from .space import Space
from .yamlfile import Document, Problem

_UNUSABLE = object()  # a row's value that a row may not set (its problem is said): left out of the row


class CaseChecker(FieldChecker):
    """The `cases:` table's checks; each combination of rows goes to space_of, the whole-space checker's."""

    def space_of(self, doc: Document, overrides: Overrides, problems: list[Problem], default_name: str) -> Space:
        """The Space of `doc` (a file without `cases:`), checked as this file is, its problems put in `problems`."""
        raise NotImplementedError

    def space_with_cases(self, default_name: str) -> Space:
        """A space with `cases:`: the sections sample as usual, then each group picks one of its rows, whose fixed
        values land on the sampled trial. Every combination of rows is checked as the whole space it makes, each
        problem blamed on the row's line; the sections alone are not checked, since a row may be what makes them
        valid (a row that picks adam makes its betas readable)."""
        cases = self.cases(self.doc.value["cases"])
        base_doc = Document(self.doc.source, {k: v for k, v in self.doc.value.items() if k != "cases"},
                            self.doc.lines)
        base = self.space_of(base_doc, self.overrides, [], default_name)
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
            self.space_of(Document(self.doc.source, tree, self.doc.lines), overrides, found, default_name)
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
        ok, coerced = coerce(str(fields[parts[-1]].type), value)
        return coerced if ok else value  # a wrong type is reported by the combinations, with the field's words
