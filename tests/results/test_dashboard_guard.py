"""The dashboard answers only requests addressed to it, changes nothing unless allowed, and never for a foreign
page: real HTTP requests against `hpsearch dashboard`'s server (DNS rebinding is a foreign Host header)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import optuna
import pytest
from conftest import Searched

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


def request(port: int, method: str, path: str, host: str | None = None, origin: str | None = None,
            body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    if origin is not None:
        conn.putheader("Origin", origin)
    if body:
        conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


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
