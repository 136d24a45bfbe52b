"""Bad input, fuzzed: arbitrary YAML documents and mutations of the shipped spaces thrown at the loader.

The only allowed outcomes: a Space that samples a TrialConfig, or a SpaceError listing clear problems. Anything
else (a traceback) is a bug. HPSEARCH_FUZZ_EXAMPLES sets the examples per test (default 300); on CI (CI=true)
the examples are the same every run, elsewhere hypothesis explores new ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hpsearch import Space, SpaceError, load_space, suggest
from hpsearch.cli import main
from hpsearch.space import config as C
from hpsearch.space import registry as R
from hpsearch.space.rules import PARAM_KEYS, STUDY_KEYS, TOP_KEYS
from hpsearch.study.samplers import make_sampler
from hpsearch.study.storage import StudyError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "spaces").glob("**/*.yaml")) + sorted((ROOT / "tests" / "spaces").glob("*.yaml"))
TEXTS = {p.name: p.read_text() for p in SHIPPED}
EXAMPLES = int(os.environ.get("HPSEARCH_FUZZ_EXAMPLES", "300"))

settings.register_profile("fuzz", max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("CI") == "true",
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("fuzz")

pytestmark = pytest.mark.filterwarnings("ignore")  # Optuna warns about odd but legal ranges; not our concern here
optuna.logging.set_verbosity(optuna.logging.WARNING)

# Words the schema knows, so that generated documents reach deep into the validation, not only its first check.
FIELDS = sorted({f.name for cls in (C.DataConfig, C.AugmentConfig, C.SyntheticConfig, C.TrainConfig,
                                    C.ModelConfig, C.OptimizerConfig, C.SchedulerConfig)
                 for f in dataclasses.fields(cls)})
NAMES = sorted({*R.MODELS, *R.OPTIMIZERS, *R.SCHEDULERS, *R.SAMPLERS, *R.PRUNERS, *R.DATASETS, *C.PRECISIONS,
                *C.METRICS, "maximize", "minimize", "float", "int", "categorical"})
KEYS = sorted({*TOP_KEYS, *STUDY_KEYS, *FIELDS, *NAMES, "type", "choose", "seed", "n_startup_trials",
               "min_resource", *(k for keys in PARAM_KEYS.values() for k in keys)})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES), st.sampled_from(["1e-4", "5E3", ".inf", "yes", "~", "", "0x1F", "1_000", "2.", "-"]),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
nodes = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(keys, inner, max_size=5),
    st.fixed_dictionaries({"type": st.sampled_from(sorted(PARAM_KEYS))},
                          optional={"low": inner, "high": inner, "log": inner, "step": inner, "choices": inner}),
), max_leaves=25)
documents = st.one_of(st.dictionaries(st.sampled_from(TOP_KEYS), st.dictionaries(keys, nodes, max_size=6),
                                      max_size=6), st.dictionaries(keys, nodes, max_size=4), nodes)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "space.yaml"


def outcome(path: Path, overrides: list[str] | None = None) -> str:
    """Load; a valid space must also sample; an error must be a SpaceError of clear problems."""
    try:
        space = load_space(path, overrides or [])
    except SpaceError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.message and "Traceback" not in str(problem)
            assert problem.source == str(path) or problem.source.startswith("--set ")
        event("a SpaceError")
        return "error"
    assert isinstance(space, Space)
    space.hash()
    space.fixed_data()
    try:
        make_sampler(space)
    except StudyError as exc:  # the grid sampler over a continuous range: a clear message too
        assert "grid sampler" in str(exc)
    study = optuna.create_study(direction=space.study.direction, sampler=optuna.samplers.RandomSampler(seed=0))
    config = suggest(study.ask(), space)
    assert isinstance(config, C.TrialConfig)
    event("a valid space")
    return "valid"


def validate_exit(path: Path) -> int:
    """`hpsearch validate` on it: exit 0 or 2, never a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])
    assert "Traceback" not in err.getvalue()
    return code


@FUZZ
@given(doc=documents)
def test_arbitrary_yaml_documents(scratch: Path, doc: Any) -> None:
    scratch.write_text(yaml.safe_dump(doc, allow_unicode=True))
    result = outcome(scratch)
    assert validate_exit(scratch) == (0 if result == "valid" else 2)


def mutate(text: str, data: st.DataObject) -> str:
    """One to three edits a person (or a bad merge) could make: lines deleted, doubled, moved, re-indented,
    values replaced, stray characters, a cut-off file."""
    for _ in range(data.draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True) or [""]
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["delete", "double", "move", "indent", "value", "insert", "truncate"]))
        if kind == "delete":
            del lines[i]
        elif kind == "double":
            lines.insert(i, lines[i])
        elif kind == "move":
            lines.insert(data.draw(st.integers(0, len(lines) - 1)), lines.pop(i))
        elif kind == "indent":
            lines[i] = data.draw(st.sampled_from(["", " ", "  ", "    ", "\t"])) + lines[i].lstrip(" ")
        elif kind == "value" and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            value = data.draw(st.one_of(scalars.map(lambda v: yaml.safe_dump(v).split("\n...")[0].strip()),
                                        st.sampled_from(["{", "[1, 2", "{type: float}", "*x", "&a b", "!!binary x",
                                                         "!!python/name:os.system", "|", ">-", "'unclosed"])))
            lines[i] = f"{head}: {value}\n"
        elif kind == "insert":
            pos = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + data.draw(st.text(max_size=4)) + lines[i][pos:]
        else:
            text = "".join(lines)
            return text[: data.draw(st.integers(0, len(text)))]
        text = "".join(lines)
    return text


@FUZZ
@given(name=st.sampled_from(sorted(TEXTS)), data=st.data())
def test_mutated_shipped_spaces(scratch: Path, name: str, data: st.DataObject) -> None:
    scratch.write_text(mutate(TEXTS[name], data))
    result = outcome(scratch)
    assert validate_exit(scratch) == (0 if result == "valid" else 2)


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.extend(paths(value, (*prefix, i)))
    return out


@FUZZ
@given(name=st.sampled_from(sorted(TEXTS)), data=st.data())
def test_shipped_spaces_with_a_value_replaced_removed_or_added(scratch: Path, name: str, data: st.DataObject) -> None:
    tree = yaml.safe_load(TEXTS[name])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(tree)[1:]))
        *parent_path, last = path
        parent = tree
        for key in parent_path:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[last] = data.draw(nodes)
        elif action == "remove":
            del parent[last]
        elif isinstance(parent, dict):
            parent[data.draw(keys)] = data.draw(nodes)
        else:
            parent.append(data.draw(nodes))
    scratch.write_text(yaml.safe_dump(tree, allow_unicode=True))
    outcome(scratch)


dotted = st.one_of(
    st.sampled_from(sorted({f"{s}.{f}" for s in TOP_KEYS for f in [*FIELDS, *STUDY_KEYS]})),
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=4).map(".".join),
    st.text(max_size=10),
)
overrides = st.lists(st.builds(lambda k, sep, v: f"{k}{sep}{v}", dotted, st.sampled_from(["=", "", "=="]),
                               st.one_of(st.text(max_size=10), scalars.map(str))), max_size=3)


@FUZZ
@given(name=st.sampled_from(sorted(TEXTS)), sets=overrides)
def test_shipped_spaces_with_fuzzed_overrides(name: str, sets: list[str]) -> None:
    outcome(next(p for p in SHIPPED if p.name == name), sets)
