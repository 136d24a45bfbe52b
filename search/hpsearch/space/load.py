"""Reading a space file: YAML with lines (yamlfile.py), then every check at once (checker.py) -> a Space."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checker import OptionCheck, check
from .overrides import Override
from .rules import TOP_KEYS
from .space import Space
from .yamlfile import Document, Problem, SpaceError, parse

MAX_BYTES = 1_000_000  # a space file's size at most


def load_space(path: str | Path, overrides: Sequence[Override] = (),
               option_check: OptionCheck | None = None) -> Space:
    """Read and validate a space file; `overrides` are `key.path=value` strings applied first (--set).

    Raises SpaceError listing every problem, each with file, line, key path, bad value and the options.
    `option_check` adds the checks of sampler and pruner options; `hpsearch.load_space`, the function every caller
    uses, passes the study part's.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:  # at most MAX_BYTES: /dev/zero or a huge file is refused, not read whole
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise SpaceError([Problem(str(path), None, "", f"is larger than {MAX_BYTES // 1000:,} kB; a space file "
                                                             "is a few kB of YAML (is this the right file?)")])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpaceError([Problem(str(path), None, "", f"cannot read the space file: {reason}")]) from None
    doc = parse(text, str(path))
    if doc.value is None:
        raise SpaceError([Problem(str(path), None, "", "the file is empty; a space needs at least a `study:` "
                                                         "or `train:` section (see spaces/smoke.yaml)")])
    if not isinstance(doc.value, dict):
        raise SpaceError([Problem(str(path), doc.line(()), "", f"expected a mapping of sections "
                                                                f"({', '.join(TOP_KEYS)}), got {doc.value!r}")])
    space, problems = check(doc, overrides, default_name=path.stem, option_check=option_check)
    if problems:
        raise SpaceError(sorted(problems, key=lambda p: (not p.source.startswith("--set "), p.line or 0)))
    return space


def space_from_identity(identity: dict[str, Any], source: str = "the study's stored space") -> Space:
    """The Space a study was made from, rebuilt from what it stores (Space.identity()): its sections, metric and
    direction. With a trial's parameters it gives back that trial's TrialConfig (suggest on an optuna.FixedTrial)."""
    tree = {k: copy.deepcopy(v) for k, v in identity.items() if k not in ("metric", "direction")}
    tree["study"] = {"metric": identity.get("metric", "val_acc"), "direction": identity.get("direction", "maximize")}
    space, problems = check(Document(source, tree), (), default_name="study")
    if problems:
        raise SpaceError(problems)
    return space
