"""YAML reading that remembers where every value came from.

PyYAML's safe loader builds plain Python values (no tags, no objects), but forgets line numbers, silently keeps the
last of two duplicate keys, and reads `1e-4` as a string (YAML 1.1 wants a dot). This module fixes all three so
that the checker can say `spaces/x.yaml:12: optimizer.lr: ...` about any value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import HpsearchError

Path = tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a space: where it is and what to do about it."""

    source: str  # file name, or "--set" for a command-line override
    line: int | None  # 1-based line in source, when known
    path: str  # dotted key path, "" for the whole file
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpaceError(HpsearchError):
    """A space file (or its overrides) has one or more problems; str() lists them all, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def message(self) -> str:
        n = len(self.problems)
        return f"{self}\nhpsearch: {n} problem{'s' if n != 1 else ''} in the space; nothing was run"


class _Loader(yaml.SafeLoader):
    """Safe loader that also reads 1e-4, 5E3 and -2e+1 as floats (YAML 1.2 style)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _Loader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_first, []) if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


@dataclass
class Document:
    """A parsed YAML document: plain values plus the line of every key path."""

    source: str
    value: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


# Bounds on what one space file may make, so that a crafted file (a "billion laughs" of nested aliases, thousands of
# nested brackets) is refused with a message instead of eating the machine's memory or the interpreter's stack.
MAX_DEPTH = 64  # nested mappings and lists; a real space nests four or five
MAX_VALUES = 100_000  # values after alias expansion; a real space has a few hundred


class _TooBig(Exception):
    """Raised inside _convert when the document passes MAX_DEPTH or MAX_VALUES; parse turns it into a Problem."""


def parse(text: str, source: str) -> Document:
    """Parse one YAML document; raises SpaceError with the line of any syntax error or duplicate key, or when it
    nests deeper than MAX_DEPTH or expands (through aliases) to more than MAX_VALUES values."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a control character: YAML allows only printable text
        where = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpaceError([Problem(source, where, "", f"not valid YAML: character {char:#06x} is not allowed "
                                                    "(only printable text is); delete it")]) from None
    try:
        node = loader.get_single_node()
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SpaceError([Problem(source, None, "", f"nested too deeply for a space file (more than {MAX_DEPTH} "
                                                    "levels of mappings or lists)")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SpaceError([Problem(source, line, "", f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise SpaceError([Problem(source, None, "", f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    doc = Document(source, None)
    if node is None:
        return doc
    problems: list[Problem] = []
    try:
        doc.value = _convert(loader, node, (), doc, problems, [0])
    except _TooBig as exc:
        raise SpaceError([Problem(source, None, "", str(exc))]) from None
    if problems:
        raise SpaceError(problems)
    return doc


def parse_value(text: str) -> Any:
    """A scalar or flow value as written on a command line (`--set key=1e-4`), with the same float rules."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except (yaml.YAMLError, ValueError, OverflowError):
        return text


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")}


def _convert(loader: _Loader, node: yaml.Node, path: Path, doc: Document, problems: list[Problem],
             count: list[int]) -> Any:
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise _TooBig(f"expands to more than {MAX_VALUES:,} values (aliases that repeat aliases?); a space file "
                      "is a few hundred")
    if len(path) > MAX_DEPTH:
        raise _TooBig(f"line {node.start_mark.line + 1}: nested too deeply for a space file (more than "
                      f"{MAX_DEPTH} levels of mappings or lists)")
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        problems.append(Problem(doc.source, node.start_mark.line + 1, ".".join(path),
                                f"not valid YAML here: tag {node.tag!r} is not allowed; write plain values"))
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = _scalar(loader, key_node, path, doc, problems) if isinstance(key_node, yaml.ScalarNode) else \
                loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                where = ".".join(path)
                problems.append(Problem(doc.source, line, where, f"keys must be names, got {key!r}"))
                continue
            if key in out:
                dotted = ".".join((*path, key))
                problems.append(Problem(doc.source, line, dotted, "duplicate key: it is given twice in this mapping"))
                continue
            doc.lines[(*path, key)] = line
            out[key] = _convert(loader, value_node, (*path, key), doc, problems, count)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, (*path, str(i)), doc, problems, count) for i, item in enumerate(node.value)]
    return _scalar(loader, node, path, doc, problems)


def _scalar(loader: _Loader, node: yaml.Node, path: Path, doc: Document, problems: list[Problem]) -> Any:
    """A scalar's value; one that its resolved type cannot hold is a problem, not a traceback."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        kind = str(node.tag).rsplit(":", 1)[-1]
        problems.append(Problem(doc.source, node.start_mark.line + 1, ".".join(path),
                                f"cannot read {node.value!r} as a {kind} ({exc}); quote it to make it a string"))
        return None
