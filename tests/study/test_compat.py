"""study/compat.py: each use of Optuna's and torch's private API, on its private path and on its public fallback."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch

from hpsearch import load_space
from hpsearch.study import compat
from hpsearch.study.compat import frozen, set_user_attrs
from hpsearch.study.samplers import make_pruner
from hpsearch.study.storage import open_storage
from hpsearch.training.checkpoint import exported_kind


@pytest.fixture(params=[True, False], ids=["private", "fallback"])
def private(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run the test on the private path and on the public fallback (Optuna's and torch's alike)."""
    monkeypatch.setattr(compat, "PRIVATE_API", request.param)
    monkeypatch.setattr(compat, "TORCH_PRIVATE_API", request.param)
    return bool(request.param)


def test_the_tested_optuna_takes_the_private_path() -> None:
    """CI's Optuna is in compat.TESTED and has every private name; a version outside the range falls back."""
    assert compat.PRIVATE_API, f"Optuna {optuna.__version__}: outside compat.TESTED or its private names moved"
    assert not compat.private_api_usable("4.5.0") and not compat.private_api_usable("6.0.0")
    assert compat.private_api_usable(optuna.__version__)


def test_the_tested_torch_takes_the_private_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI's torch is in compat.TORCH_TESTED and its torch.jit.save and load take `_extra_files`; a version outside
    the range falls back. A new torch fails here until its TorchScript files are checked and the range extended."""
    assert compat.torch_private_api_usable(torch.__version__), \
        f"torch {torch.__version__}: outside compat.TORCH_TESTED {compat.TORCH_TESTED}, or _extra_files is gone"
    assert not compat.torch_private_api_usable("2.3.1") and not compat.torch_private_api_usable("3.0.0")
    monkeypatch.setattr(compat, "TORCH_PRIVATE_API", None)  # as in a fresh process: decided at the first use
    assert compat._torch_private() and compat.TORCH_PRIVATE_API is True


def test_user_attrs_are_written_in_one_transaction(tmp_path: Path, private: bool) -> None:
    """set_user_attrs: one commit for all keys on an RDB storage (one per key on the fallback), read back by a fresh
    load and seen by the live trial; any other storage gets them one by one."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="a")
    trial = study.ask()
    commits: list[int] = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    attrs = {"seconds": 1.5, "params": 1234, "config": {"train": {"epochs": 3}}, "note": "x"}
    set_user_attrs(trial, attrs)
    assert len(commits) == (1 if private else len(attrs))
    assert trial.user_attrs == attrs
    study.tell(trial, 0.5)
    assert optuna.load_study(study_name="a", storage=url).trials[0].user_attrs == attrs

    memory = optuna.create_study()
    live = memory.ask()
    set_user_attrs(live, attrs)
    assert live.user_attrs == attrs and memory.trials[0].user_attrs == attrs


def test_user_attrs_cannot_be_written_to_a_finished_trial(tmp_path: Path, private: bool) -> None:
    """The batched path keeps Optuna's checks: a finished trial refuses new attributes, and nothing is written."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="a")
    trial = study.ask()
    study.tell(trial, 0.5)
    with pytest.raises(RuntimeError):
        set_user_attrs(trial, {"late": 1, "later": 2})
    assert optuna.load_study(study_name="a", storage=url).trials[0].user_attrs == {}


def _hyperband_search(storage: optuna.storages.BaseStorage, pruner: optuna.pruners.BasePruner,
                      trials: int = 24) -> list[tuple[object, ...]]:
    """A TPE + Hyperband search with a made-up learning curve per configuration; what each trial ended as."""
    study = optuna.create_study(storage=storage, study_name="hb", direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=4, constant_liar=True))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -2, 2)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        value = 0.0
        for step in range(1, 10):
            value = (1 - x * x / 4) * step / 9 + (0.1 if kind == "a" else 0.0)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study.optimize(objective, n_trials=trials)
    return [(t.number, t.state, t.params, t.value, dict(t.intermediate_values)) for t in study.trials]


def test_hyperband_builds_each_bracket_once_and_decides_as_optunas(tmp_path: Path, private: bool) -> None:
    """Optuna's Hyperband builds a Study for the trial's bracket at every suggest and every should_prune: a lookup
    of the study's id each time, and TPE reading the trials again per parameter. Ours builds each bracket's once;
    the trials, their values and the pruning decisions stay Optuna's own. The fallback is Optuna's, lookups and all."""
    spec = {"min_resource": 1, "max_resource": 9, "reduction_factor": 3}
    path = tmp_path / "s.yaml"
    path.write_text("study: {name: hb, pruner: {name: hyperband, min_resource: 1, max_resource: 9, "
                    "reduction_factor: 3}}\n")
    ours = make_pruner(load_space(path))
    assert isinstance(ours, optuna.pruners.HyperbandPruner)
    runs, statements, lookups = [], [], []
    for name, pruner in (("stock", optuna.pruners.HyperbandPruner(**spec)), ("ours", ours)):
        storage = open_storage(f"sqlite:///{tmp_path / (name + '.db')}")
        sql: list[str] = []
        sqlalchemy.event.listen(storage.engine, "before_cursor_execute",  # type: ignore[attr-defined]
                                lambda conn, cursor, statement, *rest, log=sql: log.append(statement))
        runs.append(_hyperband_search(storage, pruner))
        statements.append(len(sql))
        lookups.append(sum(1 for q in sql if "FROM studies" in q and "study_name =" in q))
    assert runs[0] == runs[1]
    assert sum(1 for t in runs[1] if t[1] == optuna.trial.TrialState.PRUNED) > 0  # the pruner did act
    if private:
        assert lookups[0] > 24 * 3 and lookups[1] <= 8, lookups  # stock: at every suggest and pruning decision
        assert statements[1] < 0.9 * statements[0], statements
    else:
        assert lookups[1] == lookups[0] and statements[1] == statements[0]


def test_frozen_reads_the_running_trial_back(tmp_path: Path, private: bool) -> None:
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'f.db'}"))
    study.enqueue_trial({"x": 0.5})
    first = study.ask()
    first.suggest_float("x", 0, 1)
    study.tell(first, 1.0)
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.WAITING, params={"x": 0.25},
                                        distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                        system_attrs={"retry_history": [0]}))
    trial = study.ask()
    found = frozen(trial)
    assert found.number == trial.number == 1 and found.system_attrs["retry_history"] == [0]
    assert found.state == optuna.trial.TrialState.RUNNING and found.params == {"x": 0.25}


def test_artifact_records_are_the_artifacts_optuna_lists(tmp_path: Path, private: bool) -> None:
    """The records artifact_records finds are the artifacts Optuna's public get_all_artifact_meta lists, each
    under its id (two on one trial, none on another); the fallback finds none."""
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage, study_name="a")
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"weights")
    trial, plain = study.ask(), study.ask()
    ids = {optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "w.pt"),
                                            study_or_trial=trial) for _ in range(2)}
    trial.set_user_attr("note", "x")
    study.tell(trial, 1.0)
    study.tell(plain, 0.5)
    done, other = study.trials
    listed = {m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(done, storage=storage)}
    assert listed == ids and len(ids) == 2
    found = compat.artifact_records(done.system_attrs)
    assert found == ({key: key.rsplit(":", 1)[1] for key in done.system_attrs if key.rsplit(":", 1)[1] in ids}
                     if private else {})
    assert set(found.values()) == (ids if private else set())
    assert compat.artifact_records(other.system_attrs) == {}


class _Doubled(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _traced() -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        return torch.jit.trace(_Doubled(), torch.ones(2))


def test_torchscript_extra_files_are_written_and_read_on_both_paths(tmp_path: Path, private: bool) -> None:
    """A TorchScript file written on either path carries its extra files where torch.jit.load's `_extra_files`
    finds them (as a user of an exported model reads hpsearch.json), and where exported_kind tells the format by;
    either path reads what the other wrote."""
    meta = '{"class_names": ["ä", "b"], "trial": 3}'
    out = tmp_path / "m.ts"
    with out.open("wb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save's deprecation notice
        compat.save_torchscript(_traced(), f, {"hpsearch.json": meta, "other.txt": "x"})
    extra = {"hpsearch.json": "", "other.txt": "", "absent.txt": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.load(str(out), _extra_files=extra)
    assert extra == {"hpsearch.json": meta.encode(), "other.txt": b"x", "absent.txt": b""}
    assert torch.equal(model(torch.ones(3)), torch.full((3,), 2.0))
    assert exported_kind(out) == "torchscript"
    for read_privately in (True, False):
        compat.TORCH_PRIVATE_API = read_privately  # restored by the fixture's monkeypatch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded, texts = compat.load_torchscript(out, ["hpsearch.json", "absent.txt"])
        assert texts == {"hpsearch.json": meta, "absent.txt": ""}
        assert torch.equal(loaded(torch.ones(1)), torch.full((1,), 2.0))


def test_torchscript_is_written_to_a_plain_stream(private: bool) -> None:
    """save_torchscript writes to a file object it may not seek back in or read (write_atomic's temporary file)."""
    class WriteOnly(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.data += b
            return len(b)

    sink = WriteOnly()
    extra = {"hpsearch.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compat.save_torchscript(_traced(), sink, {"hpsearch.json": "{}"})  # type: ignore[arg-type]
        torch.jit.load(io.BytesIO(bytes(sink.data)), _extra_files=extra)
    assert extra["hpsearch.json"] == b"{}"
