"""`hpsearch dashboard` and the plain `optuna-dashboard` command: the study, its checkpoints, and no harm to a run."""

from __future__ import annotations

import json
import mimetypes
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import TINY, Searched
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.results import dashboard
from hpsearch.study import compat
from hpsearch.study.storage import open_storage
from hpsearch.training import checkpoint


def get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        assert response.status == 200
        return bytes(response.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(base: str, proc: subprocess.Popen[str] | None = None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.communicate()}")
        try:
            get(f"{base}/api/meta", timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError(f"{base} did not come up in {seconds}s")


@pytest.fixture
def served(searched: Searched) -> Iterator[str]:
    """hpsearch's dashboard on the shared search, in a thread: its base URL."""
    server = dashboard.serve(searched.url, "tiny", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def check_study_and_checkpoints(base: str, searched: Searched) -> None:
    """The study is listed; each kept checkpoint is listed on its trial and downloads as the same file."""
    studies = json.loads(get(f"{base}/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"]
    study_id = studies[0]["study_id"]
    detail = json.loads(get(f"{base}/api/studies/{study_id}"))
    trials = {t["number"]: t for t in detail["trials"]}
    assert len(trials) == len(searched.study().trials)
    downloaded = 0
    for t in searched.study().trials:
        artifact = t.user_attrs.get("checkpoint")
        if not artifact or not (searched.artifacts / artifact).is_file():
            continue
        listed = {a["artifact_id"]: a for a in trials[t.number]["artifacts"]}
        assert listed[artifact]["filename"] == f"trial-{t.number}.pt"
        data = get(f"{base}/artifacts/{study_id}/{trials[t.number]['trial_id']}/{artifact}")
        assert data == (searched.artifacts / artifact).read_bytes()
        downloaded += 1
    assert downloaded == 2  # keep_checkpoints: 2


def test_the_storage_view_hides_only_the_records_of_removed_files(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """KeptArtifacts: every read of a trial leaves out the records of artifacts whose files are gone, without
    changing the stored trial; everything else, reads and writes, is the backend's. It defines the whole storage
    interface itself (no abstract method left to Optuna's base class). Without compat's record prefix (its
    fallback) it hides nothing."""
    assert optuna.storages.BaseStorage.__abstractmethods__ <= set(vars(dashboard.KeptArtifacts))
    storage = open_storage(f"sqlite:///{tmp_path / 'v.db'}")
    study = optuna.create_study(storage=storage, study_name="v", direction="maximize")
    folder = tmp_path / "artifacts"
    folder.mkdir()
    store = optuna.artifacts.FileSystemArtifactStore(folder)
    (tmp_path / "w.pt").write_bytes(b"weights")
    ids = []
    for value in (0.9, 0.5):
        trial = study.ask()
        ids.append(optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "w.pt"),
                                                    study_or_trial=trial))
        study.tell(trial, value)
    (folder / ids[0]).unlink()  # the best trial's checkpoint fell out of the best k
    best, kept = study.trials
    study_id = storage.get_study_id_from_name("v")
    view = dashboard.KeptArtifacts(storage, folder, study_id)
    best_id, kept_id = (storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in (0, 1))

    def listed(trial: optuna.trial.FrozenTrial) -> list[str]:
        return [m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(trial, storage=view)]

    assert listed(best) == [] and listed(kept) == [ids[1]]
    for seen in (view.get_trial(best_id), view.get_all_trials(study_id)[0], view.get_best_trial(study_id)):
        assert seen.number == 0 and seen.value == 0.9 and not any(ids[0] in k for k in seen.system_attrs)
    assert not any(ids[0] in k for k in view.get_trial_system_attrs(best_id))
    assert view.get_all_trials(study_id)[1].system_attrs == kept.system_attrs
    assert view.get_trial(kept_id) == kept
    assert any(ids[0] in k for k in storage.get_trial(best_id).system_attrs)  # the stored trial as it was
    assert optuna.artifacts.get_all_artifact_meta(best, storage=storage)  # and Optuna still lists it
    view.set_study_user_attr(study_id, "seen", 1)
    assert storage.get_study_user_attrs(study_id) == {"seen": 1} == view.get_study_user_attrs(study_id)
    assert view.get_study_id_from_name("v") == study_id and view.get_n_trials(study_id) == 2

    monkeypatch.setattr(compat, "PRIVATE_API", False)
    assert listed(best) == [ids[0]]  # the fallback: the record shown, as plain optuna-dashboard shows it


def test_the_storage_view_holds_the_served_study_alone(tmp_path: Path) -> None:
    """KeptArtifacts on one study of a storage that holds two: the other study, by id or name, and its trials are
    not found (KeyError, as for an id the storage lacks), for reads and writes alike, and no study is created; the
    served study reads and writes as before."""
    storage = open_storage(f"sqlite:///{tmp_path / 'two.db'}")
    served = optuna.create_study(storage=storage, study_name="served", direction="maximize")
    other = optuna.create_study(storage=storage, study_name="other", direction="minimize")
    other.set_user_attr("mine", 1)
    for study in (served, other):
        study.enqueue_trial({"x": 0.5})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        study.ask()  # a running trial, which may still change
    served_id, other_id = (storage.get_study_id_from_name(n) for n in ("served", "other"))
    other_trials = [t._trial_id for t in other.trials]
    view = dashboard.KeptArtifacts(storage, tmp_path / "artifacts", served_id)
    assert view.study_name == "served"
    assert [s.study_name for s in view.get_all_studies()] == ["served"]
    with pytest.raises(KeyError):
        view.get_study_id_from_name("other")
    with pytest.raises(KeyError):
        optuna.load_study(study_name="other", storage=view)
    with pytest.raises(KeyError):
        view.create_new_study([optuna.study.StudyDirection.MINIMIZE], "new")
    refused: list[tuple[str, tuple[object, ...]]] = [
        ("get_study_name_from_id", ()), ("get_study_directions", ()), ("get_study_user_attrs", ()),
        ("get_study_system_attrs", ()), ("get_all_trials", ()), ("get_n_trials", ()), ("get_best_trial", ()),
        ("set_study_user_attr", ("k", 1)), ("set_study_system_attr", ("k", 1)), ("create_new_trial", ()),
        ("get_trial_id_from_study_id_trial_number", (0,)), ("delete_study", ())]
    for method, args in refused:
        with pytest.raises(KeyError):
            getattr(view, method)(other_id, *args)
    refused = [("get_trial", ()), ("get_trial_system_attrs", ()), ("get_trial_user_attrs", ()),
               ("get_trial_params", ()), ("get_trial_number_from_id", ()), ("set_trial_user_attr", ("k", 1)),
               ("set_trial_system_attr", ("k", 1)), ("set_trial_intermediate_value", (0, 1.0)),
               ("set_trial_param", ("y", 0.5, optuna.distributions.FloatDistribution(0, 1))),
               ("set_trial_state_values", (optuna.trial.TrialState.FAIL,))]
    for trial_id in (*other_trials, 10_000):  # the other study's trials, and one that is nowhere
        assert not view.owns_trial(trial_id)
        for method, args in refused:
            with pytest.raises(KeyError):
                getattr(view, method)(trial_id, *args)
    assert [s.study_name for s in storage.get_all_studies()] == ["served", "other"]  # nothing changed
    assert [(t.state, t.params, t.user_attrs) for t in storage.get_all_trials(other_id)] == [
        (t.state, t.params, t.user_attrs) for t in other.trials]
    assert storage.get_study_user_attrs(other_id) == {"mine": 1}

    seen = optuna.load_study(study_name="served", storage=view)  # the served study: as the backend's
    assert seen.trials == served.trials and seen.best_value == served.best_value
    running = seen.trials[-1]._trial_id
    view.set_trial_user_attr(running, "note", "ok")
    assert storage.get_trial(running).user_attrs == {"note": "ok"}
    added = view.create_new_trial(served_id)
    assert view.owns_trial(added) and view.get_trial(added).number == 2
    view.delete_study(served_id)
    assert [s.study_name for s in storage.get_all_studies()] == ["other"] and view.get_all_studies() == []


def test_a_search_stores_its_checkpoints_as_octet_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint's record says application/octet-stream, whatever the system's type table guesses for .pt
    (Debian's says application/vnd.snesdev-page-table), which optuna-dashboard would serve it as."""
    guess = mimetypes.guess_type

    def snes(url: str, strict: bool = True) -> tuple[str | None, str | None]:
        return ("application/vnd.snesdev-page-table", None) if str(url).endswith(".pt") else guess(url, strict)

    monkeypatch.setattr(mimetypes, "guess_type", snes)
    url = f"sqlite:///{tmp_path / 'mime.db'}"
    assert main(["run", str(TINY), "--storage", url, "--trials", "1"]) == 0
    trial = optuna.load_study(study_name="tiny", storage=url).trials[0]
    metas = optuna.artifacts.get_all_artifact_meta(trial, storage=open_storage(url))
    assert [m.mimetype for m in metas] == ["application/octet-stream"]
    assert [m.filename for m in metas] == ["trial-0.pt"]


def test_hpsearch_dashboard_serves_the_study_and_its_checkpoints(served: str, searched: Searched,
                                                                 tmp_path: Path) -> None:
    check_study_and_checkpoints(served, searched)
    best = searched.study().best_trial
    (tmp_path / "dl.pt").write_bytes(get(f"{served}/artifacts/1/{best._trial_id}/{best.user_attrs['checkpoint']}"))
    assert checkpoint.load_payload(tmp_path / "dl.pt")["trial"] == best.number  # a usable checkpoint


def test_the_plain_optuna_dashboard_command_works_too(searched: Searched) -> None:
    """The README's `optuna-dashboard sqlite:///... --artifact-dir ...` line, run as written."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    port = free_port()
    proc = subprocess.Popen([str(exe), searched.url, "--artifact-dir", str(searched.artifacts), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        check_study_and_checkpoints(f"http://127.0.0.1:{port}", searched)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_open_while_a_run_writes_fails_no_trial(tmp_path: Path) -> None:
    """A reader polling the dashboard's heaviest view while `hpsearch run` (another process) adds trials."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    assert main(["run", str(TINY), "--storage", url, "--trials", "1"]) == 0
    server = dashboard.serve(url, "tiny", "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    reads: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                detail = json.loads(get(f"{base}/api/studies/1", timeout=120))
                reads.append(len(detail["trials"]))
                get(f"{base}/api/studies")
            except Exception as exc:  # any failed read is a finding
                errors.append(repr(exc))

    readers = [threading.Thread(target=poll) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        run = subprocess.run([sys.executable, "-m", "hpsearch.cli", "run", str(TINY), "--storage", url, "--trials",
                              "6"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    finally:
        stop.set()
        for r in readers:
            r.join(timeout=120)
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stdout + run.stderr
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) == 7 and all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert errors == []
    assert len(reads) > 20 and min(reads) <= 2 and max(reads) >= 6  # it read all along, while trials were added


def test_dashboard_verb_errors(searched: Searched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", *searched.where(), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"cannot serve on 127.0.0.1:{port}" in err and "pick another --port" in err
    assert main(["dashboard", *searched.where(), "--host", "192.0.2.1", "--port", "0"]) == 2  # TEST-NET: not ours
    err = capsys.readouterr().err
    assert "cannot serve on 192.0.2.1:0" in err and "give --host an address of this machine" in err
    assert main(["dashboard", "--storage", searched.url, "--study", "nope"]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
    assert main(["dashboard", "--study", "nope"]) == 2
    assert "no study database at studies/nope.db" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()
    with pytest.raises(SystemExit):
        main(["dashboard", *searched.where(), "--port", "70000"])


def test_dashboard_verb_runs_until_interrupted(searched: Searched, tmp_path: Path) -> None:
    """The real command: prints the study's URL, serves it, and stops cleanly on Ctrl-C (SIGINT)."""
    import signal

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "dashboard", *searched.where(), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        assert b"tiny" in get(f"http://127.0.0.1:{port}/api/studies")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"open http://127.0.0.1:{port}/dashboard/studies/1" in out
    assert f"checkpoints: {searched.artifacts}" in err and "dashboard stopped" in err
