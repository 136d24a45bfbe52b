"""Reading a space file: YAML with lines (yamlfile.py), then every check at once (checker.py) -> a Space; where the
spaces shipped in the checkout's top-level spaces/ folder are (shipped_space)."""

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
SHIPPED = Path(__file__).resolve().parents[3] / "spaces"  # the checkout's spaces/ (<root>/search/hpsearch/space)


def shipped_space(name: str) -> Path:
    """The absolute path of a space shipped with hpsearch, by its name under the checkout's spaces/ folder
    (`cifar100.yaml`, `bench/fixed-smoke.yaml`), whatever the working directory. The one place the package finds
    its own spaces (the device check's steps); SpaceError naming the fix when they are not there, as in an install
    that is not editable (spaces/ is no package data: it stays at the top of the repository)."""
    path = SHIPPED / name
    if path.is_file():
        return path
    if not SHIPPED.is_dir():
        why = (f"hpsearch's own spaces are not here: this hpsearch ({Path(__file__).resolve().parents[1]}) runs "
               f"without its repository, whose top-level spaces/ folder would be {SHIPPED}. Fix: run it from a "
               "checkout of the repository (pip install -e CHECKOUT, or PYTHONPATH=CHECKOUT/search)")
    else:
        known = sorted(str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*.yaml"))
        why = f"no such space shipped with hpsearch; the shipped ones: {', '.join(known)}"
    raise SpaceError([Problem(str(path), None, "", why)])


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
