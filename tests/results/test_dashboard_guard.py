"""The dashboard answers only requests addressed to it, changes nothing unless allowed, and never for a foreign
page: real HTTP requests against `hpsearch dashboard`'s server (DNS rebinding is a foreign Host header)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from conftest import Searched
from optuna.trial import TrialState

from hpsearch.results import dashboard


def _serve(searched: Searched, allow_edits: bool) -> Iterator[tuple[int, int]]:
    server = dashboard.serve(searched.url, "tiny", "127.0.0.1", 0, allow_edits=allow_edits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    study_id = optuna.storages.RDBStorage(searched.url).get_study_id_from_name("tiny")
    yield server.server_port, study_id
    server.shutdown()
    server.server_close()


@pytest.fixture
def read_only(searched_copy: Searched) -> Iterator[tuple[int, int]]:
    yield from _serve(searched_copy, allow_edits=False)


@pytest.fixture
def editable(searched_copy: Searched) -> Iterator[tuple[int, int]]:
    yield from _serve(searched_copy, allow_edits=True)


def exchange(port: int, method: str, path: str, host: str | None = None, origin: str | None = None,
             body: bytes = b"", accept_encoding: str | None = "identity") -> tuple[int, http.client.HTTPMessage, bytes]:
    """(status, headers, body) of one request; accept_encoding=None sends no Accept-Encoding header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    if accept_encoding is not None:
        conn.putheader("Accept-Encoding", accept_encoding)
    if origin is not None:
        conn.putheader("Origin", origin)
    if body:
        conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.headers, body


def request(port: int, method: str, path: str, host: str | None = None, origin: str | None = None,
            body: bytes = b"") -> tuple[int, bytes]:
    status, _, body = exchange(port, method, path, host, origin, body)
    return status, body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "localhost", "127.0.0.1"])
def test_the_loopback_names_are_served(read_only: tuple[int, int], host: str) -> None:
    port, _ = read_only
    status, body = request(port, "GET", "/api/meta", host=host.format(port=port))
    assert status == 200 and json.loads(body)


@pytest.mark.parametrize("host", ["rebind.attacker.example:{port}", "rebind.attacker.example", "127.0.0.1:1",
                                  "127.0.0.1:{port}.evil", "", "localhost.evil:{port}"])
def test_a_foreign_host_is_refused_for_reads_too(read_only: tuple[int, int], host: str) -> None:
    port, study_id = read_only
    for method, path in (("GET", "/api/meta"), ("GET", f"/api/studies/{study_id}"),
                         ("DELETE", f"/api/studies/{study_id}")):
        status, body = request(port, method, path, host=host.format(port=port))
        assert status == 403 and "is not this dashboard's name" in json.loads(body)["reason"]


def test_the_delete_of_the_issue_is_refused_and_the_study_survives(read_only: tuple[int, int],
                                                                   searched_copy: Searched) -> None:
    port, study_id = read_only
    status, _ = request(port, "DELETE", f"/api/studies/{study_id}", host=f"rebind.attacker.example:{port}")
    assert status == 403
    status, body = request(port, "DELETE", f"/api/studies/{study_id}")  # the right Host, but read-only
    assert status == 403 and "--allow-edits" in json.loads(body)["reason"]
    assert len(searched_copy.study().trials) == 12
    assert any(searched_copy.artifacts.iterdir())


def test_with_edits_allowed_a_foreign_origin_still_changes_nothing(editable: tuple[int, int],
                                                                  searched_copy: Searched) -> None:
    port, study_id = editable
    status, body = request(port, "DELETE", f"/api/studies/{study_id}", origin="http://attacker.example")
    assert status == 403 and "may not change" in json.loads(body)["reason"]
    assert len(searched_copy.study().trials) == 12
    keep_files = json.dumps({"remove_associated_artifacts": False}).encode()
    status, _ = request(port, "DELETE", f"/api/studies/{study_id}", origin=f"http://127.0.0.1:{port}", body=keep_files)
    assert status == 204  # the dashboard's own page may, when edits are allowed
    with pytest.raises(KeyError):
        searched_copy.study()


def test_the_guard_parses_hosts_strictly() -> None:
    guard = dashboard.Guard(lambda e, s: [], "127.0.0.1", 8080)
    assert guard.allowed_host("LOCALHOST:8080") and guard.allowed_host("[::1]")
    assert not guard.allowed_host("[::1]:8081") and not guard.allowed_host("127.0.0.1:80x")
    assert not guard.allowed_host("127.0.0.1@evil:8080")
    assert dashboard.Guard(lambda e, s: [], "10.1.2.3", 8080).hosts == {"10.1.2.3"}


def test_an_origin_must_be_this_server_name_and_port() -> None:
    """An Origin without a port is port 80's page (http), another site than a dashboard on any other port."""
    guard = dashboard.Guard(lambda e, s: [], "127.0.0.1", 8080)
    for own in ("http://127.0.0.1:8080", "http://LOCALHOST:8080", "http://[::1]:8080", "http://localhost:8080/"):
        assert guard.allowed_origin(own), own
    for foreign in ("http://localhost", "http://127.0.0.1", "http://[::1]", "http://127.0.0.1:80",
                    "http://localhost:8081", "https://127.0.0.1:8080", "http://127.0.0.1:8080x", "null",
                    "http://evil.example:8080", "http://127.0.0.1@evil:8080"):
        assert not guard.allowed_origin(foreign), foreign
    on_80 = dashboard.Guard(lambda e, s: [], "localhost", 80)
    assert on_80.allowed_origin("http://localhost") and on_80.allowed_origin("http://127.0.0.1:80")
    assert not on_80.allowed_origin("http://localhost:8080")


@pytest.mark.parametrize("origin", ["http://localhost", "http://127.0.0.1", "http://127.0.0.1:80",
                                   "https://127.0.0.1:{port}", "http://localhost:{other}"])
def test_with_edits_allowed_a_page_on_another_port_changes_nothing(editable: tuple[int, int],
                                                                  searched_copy: Searched, origin: str) -> None:
    port, study_id = editable
    origin = origin.format(port=port, other=port + 1)
    status, body = request(port, "DELETE", f"/api/studies/{study_id}", origin=origin,
                           body=json.dumps({"remove_associated_artifacts": False}).encode())
    assert status == 403 and "may not change" in json.loads(body)["reason"]
    assert len(searched_copy.study().trials) == 12


def test_the_dashboard_lists_only_checkpoints_that_download(read_only: tuple[int, int],
                                                           searched_copy: Searched) -> None:
    """Checkpoints pushed out of the best keep_checkpoints keep their record in the storage (Optuna cannot change
    a finished trial); the dashboard lists only those still in the store, and every one listed downloads."""
    port, study_id = read_only
    status, body = request(port, "GET", f"/api/studies/{study_id}")
    assert status == 200
    listed = {t["number"]: [a["artifact_id"] for a in t["artifacts"]] for t in json.loads(body)["trials"]}
    kept = {t.number: t.user_attrs["checkpoint"] for t in searched_copy.study().trials
            if "checkpoint" in t.user_attrs and (searched_copy.artifacts / t.user_attrs["checkpoint"]).is_file()}
    removed = [t.number for t in searched_copy.study().trials if "checkpoint" in t.user_attrs
               and t.number not in kept]
    assert removed and len(kept) == 2  # the search left both kinds
    assert {n: ids for n, ids in listed.items() if ids} == {n: [a] for n, a in kept.items()}
    trial_ids = {t["number"]: t["trial_id"] for t in json.loads(body)["trials"]}
    for number, artifact in kept.items():
        status, data = request(port, "GET", f"/artifacts/{study_id}/{trial_ids[number]}/{artifact}")
        assert status == 200 and len(data) > 1000


def test_deleting_a_study_with_removed_checkpoints_works_when_edits_are_allowed(editable: tuple[int, int],
                                                                              searched_copy: Searched) -> None:
    port, study_id = editable
    status, _ = request(port, "DELETE", f"/api/studies/{study_id}", origin=f"http://127.0.0.1:{port}",
                        body=json.dumps({"remove_associated_artifacts": True}).encode())
    assert status == 204  # it was a 500: optuna-dashboard tried to remove the files that were gone
    assert not any(searched_copy.artifacts.iterdir())


def _no_cors(headers: http.client.HTTPMessage) -> bool:
    return not [k for k in headers if k.lower().startswith("access-control-")]


def test_artifacts_download_as_octet_stream_and_no_answer_allows_other_sites(read_only: tuple[int, int],
                                                                            searched_copy: Searched,
                                                                            tmp_path: Path) -> None:
    """optuna-dashboard answers a download with its record's type (a .pt uploaded without one: the system's guess,
    application/vnd.snesdev-page-table on Debian) and Access-Control-Allow-Origin: *, which lets any page read
    the study's checkpoints; the dashboard answers octet-stream, for records stored before too, and no CORS
    header."""
    port, study_id = read_only
    study = searched_copy.study()
    guessed = "application/vnd.snesdev-page-table"
    (tmp_path / "old.pt").write_bytes(b"weights" * 200)
    store = optuna.artifacts.FileSystemArtifactStore(searched_copy.artifacts)
    trial = study.ask()  # a checkpoint recorded as before, on a trial and on the study
    on_trial = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "old.pt"),
                                                study_or_trial=trial, mimetype=guessed)
    study.tell(trial, 0.0)
    on_study = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "old.pt"),
                                                study_or_trial=study, mimetype=guessed)
    kept = [(t._trial_id, t.user_attrs["checkpoint"]) for t in study.trials
            if "checkpoint" in t.user_attrs and (searched_copy.artifacts / t.user_attrs["checkpoint"]).is_file()]
    assert len(kept) == 2
    paths = [f"/artifacts/{study_id}/{t}/{a}" for t, a in [*kept, (trial._trial_id, on_trial)]]
    for path in [*paths, f"/artifacts/{study_id}/{on_study}"]:
        status, headers, data = exchange(port, "GET", path)
        assert status == 200 and len(data) > 1000, path
        assert headers["Content-Type"] == "application/octet-stream", (path, headers["Content-Type"])
        assert _no_cors(headers), (path, headers.items())
    for path in ("/api/meta", f"/api/studies/{study_id}", "/api/studies", "/dashboard"):
        status, headers, _ = exchange(port, "GET", path)
        assert status == 200 and _no_cors(headers), (path, headers.items())


def test_requests_without_accept_encoding_are_answered(read_only: tuple[int, int],
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """optuna-dashboard reads Accept-Encoding unchecked for its static files: without it, a 500 and a traceback on
    the dashboard's stderr. The header's default is identity: the plain files."""
    port, _ = read_only
    favicon = (Path(optuna_dashboard.__file__).parent / "img" / "favicon.ico").read_bytes()
    status, headers, data = exchange(port, "GET", "/favicon.ico", accept_encoding=None)
    assert status == 200 and data == favicon
    status, headers, data = exchange(port, "GET", "/static/bundle.js", accept_encoding=None)
    assert status == 200 and "Content-Encoding" not in headers and data.lstrip()[:1] not in (b"\x1f", b"")
    status, headers, data = exchange(port, "GET", "/static/bundle.js", accept_encoding="gzip")
    assert status == 200 and headers["Content-Encoding"] == "gzip" and data[:2] == b"\x1f\x8b"  # as asked
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err


def test_another_study_of_the_storage_is_not_served(editable: tuple[int, int], searched_copy: Searched) -> None:
    """The dashboard started on one study serves that study alone, even with edits allowed: another study of the
    same storage is not listed, not found by id (nor its trials, under the served study's id too), and cannot be
    deleted or changed; no study can be created or renamed. The served study's own changes still work."""
    port, study_id = editable
    other = optuna.create_study(storage=searched_copy.url, study_name="other", direction="minimize")
    other.set_user_attr("mine", 1)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    running = other.ask()
    other_id = optuna.storages.RDBStorage(searched_copy.url).get_study_id_from_name("other")
    own = f"http://127.0.0.1:{port}"
    status, body = request(port, "GET", "/api/studies")
    assert status == 200 and [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["tiny"]
    artifact = "0123abcd-0000-4000-8000-000000000000"
    note = json.dumps({"version": 1, "body": "mine"}).encode()
    for method, path, body in [
            ("GET", f"/api/studies/{other_id}", b""), ("GET", f"/api/studies/{other_id}/param_importances", b""),
            ("GET", f"/api/studies/{other_id}/plot/slice", b""), ("GET", f"/csv/{other_id}", b""),
            ("GET", f"/artifacts/{other_id}/{artifact}", b""),
            ("GET", f"/artifacts/{study_id}/{running._trial_id}/{artifact}", b""),
            ("DELETE", f"/api/studies/{other_id}", json.dumps({"remove_associated_artifacts": False}).encode()),
            ("PUT", f"/api/studies/{other_id}/note", note),
            ("PUT", f"/api/studies/{study_id}/{running._trial_id}/note", note),
            ("POST", f"/api/trials/{running._trial_id}/user-attrs", json.dumps({"user_attrs": {"a": 1}}).encode()),
            ("POST", f"/api/trials/{running._trial_id}/tell", json.dumps({"state": "Fail"}).encode()),
            ("DELETE", f"/api/artifacts/{other_id}/{artifact}", b"")]:
        status, answer = request(port, method, path, origin=own if method != "GET" else None, body=body)
        assert status == 404 and "serves study 'tiny'" in json.loads(answer)["reason"], (method, path, answer)
    for path, body in [("/api/studies", json.dumps({"study_name": "new", "directions": ["minimize"]}).encode()),
                       (f"/api/studies/{study_id}/rename", json.dumps({"study_name": "renamed"}).encode())]:
        status, answer = request(port, "POST", path, origin=own, body=body)
        assert status == 403 and "creates and renames no study" in json.loads(answer)["reason"], (path, answer)
    storage = optuna.storages.RDBStorage(searched_copy.url)
    assert [s.study_name for s in storage.get_all_studies()] == ["tiny", "other"]
    again = optuna.load_study(study_name="other", storage=searched_copy.url)
    assert again.user_attrs == {"mine": 1} and storage.get_study_system_attrs(other_id) == {}  # no note
    assert [(t.state, t.user_attrs) for t in again.trials] == [(TrialState.COMPLETE, {}), (TrialState.RUNNING, {})]

    tiny = searched_copy.study()  # the served study's own notes still change
    status, _ = request(port, "PUT", f"/api/studies/{study_id}/note", origin=own, body=note)
    assert status == 204
    status, _ = request(port, "PUT", f"/api/studies/{study_id}/{tiny.trials[0]._trial_id}/note", origin=own,
                        body=note)
    assert status == 204
    status, body = request(port, "GET", f"/api/studies/{study_id}")
    assert status == 200 and len(json.loads(body)["trials"]) == 12
