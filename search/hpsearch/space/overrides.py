"""`--set key.path=value`: command-line overrides applied to a parsed space file before it is checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .yamlfile import Problem, parse_value


@dataclass
class Overrides:
    """What the --set overrides did to a document, to blame each problem on the override that caused it."""

    blame: dict[tuple[str, ...], str] = field(default_factory=dict)  # path set or created -> "--set key=value"
    keys: dict[tuple[str, ...], str] = field(default_factory=dict)  # each key set -> its override

    def source(self, path: tuple[str, ...]) -> str | None:
        """The override a problem at `path` is blamed on: the one that set or created it, or what holds it."""
        owners = [p for p in self.blame if path[: len(p)] == p]
        return self.blame[max(owners, key=len)] if owners else None


# An override: "key.path=value" as --set gives it, or (key.path=value, what the user typed), e.g.
# ('data.root="/data"', "--data-root /data"), so that a problem is blamed on the words the user wrote.
Override = str | tuple[str, str]


def apply_override(tree: dict[str, Any], override: Override, problems: list[Problem], overrides: Overrides) -> None:
    """Set one `key.path=value` in the document (a branch's key may skip `choose`: optimizer.sgd.lr).

    The path it landed on, and every section it had to create on the way, are recorded in `overrides`, so that a
    problem there is blamed on `--set key.path=value`, not on the file. A key set twice is a problem, as a
    duplicate key in a file is.
    """
    item, where = (override, f"--set {override}") if isinstance(override, str) else override
    key, sep, raw = item.partition("=")
    parts = tuple(p for p in key.strip().split("."))
    if not sep or not key.strip() or any(not p for p in parts):
        problems.append(Problem(where, None, key.strip(), "expected key.path=value (example: --set train.epochs=5)"))
        return
    node: dict[str, Any] = tree
    real: list[str] = []
    created: list[tuple[str, ...]] = []
    for part in parts[:-1]:
        if part not in node and isinstance(node.get("choose"), dict) and part in node["choose"]:
            node, real = node["choose"], [*real, "choose"]  # optimizer.sgd.lr is optimizer.choose.sgd.lr
        child = node.get(part)
        if child is None:
            child = node[part] = {}
            created.append((*real, part))
        if not isinstance(child, dict):
            problems.append(Problem(where, None, key, f"{'.'.join((*real, part))} is a value ({child!r}), "
                                                      "not a section; set it directly"))
            return
        node, real = child, [*real, part]
    last = parts[-1]
    if last not in node and isinstance(node.get("choose"), dict) and last in node["choose"]:
        node, real = node["choose"], [*real, "choose"]
    path = (*real, last)
    if path in overrides.keys:
        problems.append(Problem(where, None, ".".join(path), f"is set twice ({overrides.keys[path]} and {where}); "
                                                             "keep one"))
        return
    node[last] = parse_value(raw)
    overrides.keys[path] = where
    for made in (*created, path):
        overrides.blame.setdefault(made, where)
