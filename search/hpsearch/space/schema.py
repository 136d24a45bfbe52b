"""A JSON Schema (draft-07) of the search-space YAML, for editors: completion, hover text and red squiggles.

Generated from the same tables that `hpsearch validate` checks against (config.py's dataclasses and their comments,
the registries' names and fields, rules.py's ranges and unsearchable fields), so it cannot drift from them.
`hpsearch validate` stays the authority: it also checks what a schema cannot say (components' rules, cross-field
rules). The options of each sampler and pruner are Optuna's; the study part lists them (study.samplers.options).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

from . import config as C
from .registry import NAMED_SECTIONS, PRUNERS, SAMPLERS, Registry
from .rules import CASE_GROUP, DIRECTIONS, MAX_FUSE, OPTIONS, RANGES, SECTIONS, UNSEARCHABLE
from .space import StudySpec

# Each sampler's and pruner's options by kind and name: {"sampler": {"tpe": ["seed", ...]}, "pruner": {...}}.
ComponentOptions = dict[str, dict[str, list[str]]]

SCHEMA_ID = "https://github.com/hpsearch/hpsearch/space.schema.json"

# JSON types of a field's fixed value, by its annotation (as written in config.py).
_FIXED: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "str": {"type": "string"},
    "int | None": {"type": ["integer", "null"]},
    "float | None": {"type": ["number", "null"]},
    "tuple[int, ...]": {"type": "array", "items": {"type": "integer"}},
    "tuple[int, ...] | None": {"type": ["array", "null"], "items": {"type": "integer"}},
    "tuple[float, float]": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    "tuple[float, ...] | None": {"type": ["array", "null"], "items": {"type": "number"}},
}
_COMMENT = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")


def space_schema(options: ComponentOptions | None = None) -> dict[str, Any]:
    """The whole schema as a JSON-ready dict. Each field is defined once, under definitions by its dotted path, and
    referenced from its section and from every `choose:` branch that reads it. `options`: each sampler's and
    pruner's options (without them, a sampler or pruner mapping may hold any key)."""
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {"study": _study(options or {})}
    for name in SECTIONS:
        cls = C.SECTION_TYPES[name]
        registry = NAMED_SECTIONS.get(name)
        properties[name] = _named(name, cls, registry, defs) if registry else _section(name, cls, defs)
    properties["cases"] = _cases()
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "hpsearch search space",
        "description": "A search space for `hpsearch run`. Any value is fixed (a plain value) or searched (a mapping "
                       "with `type: float | int | categorical` and Optuna's fields). Check a file with "
                       "`hpsearch validate FILE`.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "definitions": dict(sorted(defs.items())),
    }


def _comments(cls: type) -> dict[str, str]:
    """The comment beside each field of a dataclass: `lr: float = 0.05  # peak learning rate` -> {lr: ...}."""
    out: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        m = _COMMENT.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is dataclasses.MISSING:
        return dataclasses.MISSING
    return list(field.default) if isinstance(field.default, tuple) else field.default


def _section(path: str, cls: type, defs: dict[str, Any], only: tuple[str, ...] | None = None) -> dict[str, Any]:
    comments = _comments(cls)
    properties: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        dotted = f"{path}.{field.name}"
        nested = C.SECTION_TYPES.get(dotted)
        if nested is not None:
            sub = _section(dotted, nested, defs)
            sub["description"] = comments.get(field.name, f"{dotted} settings")
            properties[field.name] = sub
            continue
        if dotted not in defs:
            value = _value(dotted, str(field.type))
            value["description"] = comments.get(field.name, dotted)
            default = _default(field)
            if default is not dataclasses.MISSING:
                value["default"] = default
            defs[dotted] = value
        properties[field.name] = {"$ref": f"#/definitions/{dotted}"}
    return {"type": ["object", "null"], "additionalProperties": False, "properties": properties}


def _named(path: str, cls: type, registry: Registry, defs: dict[str, Any]) -> dict[str, Any]:
    """A section that picks a component by `name`, or searches over components with `choose:` branches."""
    out = _section(path, cls, defs)
    branches = {name: _section(path, cls, defs, only=fields) for name, fields in registry.fields().items()}
    out["properties"]["choose"] = {
        "description": f"search over {path} components: each branch names one and gives its own parameters; "
                       f"keys beside `choose` apply to every branch",
        "type": "object", "minProperties": 1, "additionalProperties": False, "properties": branches,
    }
    out["not"] = {"required": ["name", "choose"]}
    return out


def _cases() -> dict[str, Any]:
    """`cases:` groups of named rows; a row maps a field's dotted path to a fixed value (checked by validate)."""
    row = {"type": ["object", "null"], "description": "one row: fixed values by dotted path (model.width: 32)",
           "propertyNames": {"pattern": r"^(" + "|".join(SECTIONS) + r")\.[a-z_.]+$"}}
    group = {"type": "object", "minProperties": 1, "additionalProperties": row,
             "description": "one categorical parameter, cases.<group>, over its rows' names"}
    return {"type": "object", "minProperties": 1, "additionalProperties": False,
            "patternProperties": {f"^{CASE_GROUP}$": group},
            "description": "a table's rows: each group picks one of its named rows per trial (a grid sampler runs "
                           "every combination); a row sets fixed values of the sections"}


def _bounds(path: str) -> dict[str, Any]:
    bounds = RANGES.get(path)
    if bounds is None:
        return {}
    lo, hi, lo_open, hi_open = bounds
    out: dict[str, Any] = {}
    if lo is not None:
        out["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        out["exclusiveMaximum" if hi_open else "maximum"] = hi
    return out


def _fixed(path: str, kind: str) -> dict[str, Any]:
    schema = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _FIXED.get(kind, {}).items()}
    if path in OPTIONS:
        schema = {"enum": list(OPTIONS[path])}
    bounds = _bounds(path)
    if bounds:
        (schema["items"] if "items" in schema else schema).update(bounds)
    return schema


def _searchable(path: str) -> bool:
    return not any(path == u or path.startswith(u + ".") for u in UNSEARCHABLE)


def _value(path: str, kind: str) -> dict[str, Any]:
    """A field's value: fixed, or (where the field may be searched) a float, int or categorical parameter."""
    fixed = _fixed(path, kind)
    if not _searchable(path) or kind.startswith("tuple"):
        return fixed
    choices = {"type": "array", "minItems": 1, "uniqueItems": True, "items": fixed}
    options = [fixed, _param("categorical", {"choices": choices}, ["choices"])]
    bounds = _bounds(path)
    number = {"type": "number", **bounds}
    whole = {"type": "integer", **bounds}
    searched = {"log": {"type": "boolean", "description": "sample on a log scale; needs low > 0, no step"},
                "step": {"type": "number", "exclusiveMinimum": 0, "description": "spacing of the values"}}
    if kind in ("float", "float | None"):
        options.append(_param("float", {"low": number, "high": number, **searched}, ["low", "high"]))
    if kind in ("int", "int | None", "float", "float | None"):
        options.append(_param("int", {"low": whole, "high": whole, **searched}, ["low", "high"]))
    return {"anyOf": options}


def _param(ptype: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "description": f"searched: Optuna's suggest_{ptype}",
            "properties": {"type": {"const": ptype}, **fields},
            "required": ["type", *required], "additionalProperties": False}


def _study(options: ComponentOptions) -> dict[str, Any]:
    comments = _comments(StudySpec)
    return {
        "type": ["object", "null"], "additionalProperties": False,
        "description": "the Optuna study: its name, storage, metric, sampler and pruner",
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "description": comments["name"]},
            "direction": {"enum": list(DIRECTIONS), "description": comments["direction"]},
            "metric": {"enum": list(C.METRICS), "default": "val_acc", "description": comments["metric"]},
            "storage": {"type": "string", "pattern": "://", "description": comments["storage"]},
            "keep_checkpoints": {"type": "integer", "minimum": 0, "default": 3,
                                 "description": comments["keep_checkpoints"]},
            "heartbeat_interval": {"type": ["integer", "null"], "minimum": 1, "default": StudySpec.heartbeat_interval,
                                   "description": comments["heartbeat_interval"]},
            "grace_period": {"type": ["integer", "null"], "minimum": 1, "description": comments["grace_period"]},
            "max_retry": {"type": "integer", "minimum": 0, "default": StudySpec.max_retry,
                          "description": comments["max_retry"]},
            "resume_interval": {"type": "integer", "minimum": 0, "default": StudySpec.resume_interval,
                                "description": comments["resume_interval"]},
            "fuse": {"type": "integer", "minimum": 1, "maximum": MAX_FUSE, "default": 1,
                     "description": comments["fuse"]},
            "sampler": _component(SAMPLERS, options.get("sampler"), "tpe", comments["sampler"]),
            "pruner": _component(PRUNERS, options.get("pruner"), "median", comments["pruner"]),
        },
    }


def _component(registry: Registry, options: dict[str, list[str]] | None, default: str,
               description: str) -> dict[str, Any]:
    """A sampler or pruner: its name alone, or {name, options of that Optuna class}."""
    names = list(registry)

    def only(name: str) -> dict[str, Any]:
        if options is None or name not in options:
            return {}
        return {"properties": {"name": {}, **{o: {} for o in options[name]}}, "additionalProperties": False}

    rules = [{"if": {"properties": {"name": {"const": name}}, "required": ["name"]}, "then": only(name)}
             for name in names]
    rules.append({"if": {"not": {"required": ["name"]}}, "then": only(default)})
    return {"description": description, "anyOf": [
        {"enum": names},
        {"type": "object", "properties": {"name": {"enum": names, "default": default}}, "allOf": rules},
    ]}
