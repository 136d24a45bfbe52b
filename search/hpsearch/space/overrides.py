"""`--set key.path=value`: command-line overrides applied to a parsed space file before it is checked."""

from __future__ import annotations

from typing import Any

from .yamlfile import Problem, parse_value


def apply_override(tree: dict[str, Any], item: str, problems: list[Problem], set_paths: set[tuple[str, ...]]) -> None:
    """Set one `key.path=value` in the document (a branch's key may skip `choose`: optimizer.sgd.lr); the path it
    landed on goes into `set_paths`, so problems with it are blamed on --set, not on the file."""
    key, sep, raw = item.partition("=")
    parts = tuple(p for p in key.strip().split("."))
    if not sep or not key.strip() or any(not p for p in parts):
        problems.append(Problem("--set", None, key.strip(), f"expected key.path=value, got {item!r} "
                                                            "(example: --set train.epochs=5)"))
        return
    node: dict[str, Any] = tree
    real: list[str] = []
    for part in parts[:-1]:
        if part not in node and isinstance(node.get("choose"), dict) and part in node["choose"]:
            node, real = node["choose"], [*real, "choose"]  # optimizer.sgd.lr is optimizer.choose.sgd.lr
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(Problem("--set", None, key, f"{'.'.join((*real, part))} is a value ({child!r}), "
                                                        "not a section; set it directly"))
            return
        node, real = child, [*real, part]
    last = parts[-1]
    if last not in node and isinstance(node.get("choose"), dict) and last in node["choose"]:
        node, real = node["choose"], [*real, "choose"]
    node[last] = parse_value(raw)
    set_paths.add((*real, last))
