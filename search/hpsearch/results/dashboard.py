"""optuna-dashboard on a study's storage, with its artifact store so trial checkpoints are listed and downloadable.

The same app as the `optuna-dashboard` command, served from our own storage object: for SQLite that has the 60 s busy
timeout (study.storage.SQLITE_TIMEOUT_S), so the dashboard's reads wait for a running search's writes, and the search's
writes wait for the reads; neither fails.

The dashboard has no login, so the server guards what a web page in the user's browser could otherwise do to it
(DNS rebinding: a foreign page whose name resolves to 127.0.0.1): it answers only requests whose Host is a name it
was started for (the loopback names, or --host), refuses a state-changing request from a foreign Origin, and is
read-only unless started with --allow-edits (no study, trial or note can be changed or deleted through it).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Container
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from ..study.compat import with_system_attrs
from ..study.storage import artifact_dir, open_storage, redact
from ..study.studies import load

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CHANGES = ("POST", "PUT", "PATCH", "DELETE")  # the methods that change a study


class Guard:
    """WSGI middleware in front of the dashboard: a request must name this server in its Host header, and one that
    changes a study must come from no Origin or this server's own, and edits must be allowed at all."""

    def __init__(self, app: Any, host: str, port: int, allow_edits: bool = False) -> None:
        self.app, self.port, self.allow_edits = app, port, allow_edits
        names = {host}
        if host in (*LOOPBACK, "0.0.0.0", "::"):
            names |= set(LOOPBACK)
        if host in ("0.0.0.0", "::"):  # every address of this machine: its names too
            names |= {socket.gethostname(), socket.getfqdn()}
        self.hosts = {(f"[{n}]" if ":" in n else n).lower() for n in names}

    def allowed_host(self, header: str) -> bool:
        """Whether a Host header ("127.0.0.1:8080", "localhost", "[::1]:8080") names this server."""
        header = header.strip().lower()
        if header.startswith("["):
            end = header.find("]")
            name, port = header[: end + 1], header[end + 2:] if header[end + 1: end + 2] == ":" else ""
        else:
            name, _, port = header.partition(":")
        if port and not port.isdigit():
            return False
        return name in self.hosts and (not port or int(port) == self.port)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        host = environ.get("HTTP_HOST", "")
        if not self.allowed_host(host):
            return _refuse(start_response, f"Host {host!r} is not this dashboard's name; open it as "
                                           f"http://127.0.0.1:{self.port}/ (or the --host it was started with)")
        if environ.get("REQUEST_METHOD", "GET").upper() in CHANGES:
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and not self.allowed_origin(origin):
                return _refuse(start_response, f"a request from {origin!r} may not change this dashboard's study")
            if not self.allow_edits:
                return _refuse(start_response, "this dashboard is read-only; start it with --allow-edits to change "
                                               "or delete studies, trials and notes")
        return self.app(environ, start_response)

    def allowed_origin(self, origin: str) -> bool:
        scheme, _, rest = origin.partition("://")
        return scheme == "http" and self.allowed_host(rest.rstrip("/"))


def _refuse(start_response: Any, reason: str) -> list[bytes]:
    body = json.dumps({"reason": reason}).encode()
    start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open; they must not hold the process at Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # the dashboard polls every few seconds: no line per request


ARTIFACT_PREFIX = "artifacts:"  # how Optuna's upload_artifact records an artifact on its trial (a system attr)


class KeptArtifacts(optuna.storages.BaseStorage):
    """The study's storage as the dashboard sees it: a trial lists only the checkpoints whose files are still in
    the artifact store.

    A trial's checkpoint falls out of the best keep_checkpoints after the trial has finished, and Optuna refuses to
    change a finished trial's attributes (optuna-dashboard's own delete fails the same way), so its record stays
    in the storage; shown, it would be a download that fails. Everything else passes through unchanged.
    """

    def __init__(self, backend: optuna.storages.BaseStorage, folder: Path) -> None:
        self._backend, self._folder = backend, folder

    def _kept(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in attrs.items()
                if not k.startswith(ARTIFACT_PREFIX) or (self._folder / k[len(ARTIFACT_PREFIX):]).is_file()}

    def _view(self, trial: FrozenTrial) -> FrozenTrial:
        kept = self._kept(trial.system_attrs)
        return trial if len(kept) == len(trial.system_attrs) else with_system_attrs(trial, kept)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._view(self._backend.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [self._view(t) for t in self._backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)]

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._kept(self._backend.get_trial_system_attrs(trial_id))

    def __getattr__(self, name: str) -> Any:  # everything else: the backend's own
        return getattr(self._backend, name)


def _delegate(name: str) -> Any:
    def method(self: KeptArtifacts, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._backend, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in optuna.storages.BaseStorage.__abstractmethods__ - set(vars(KeptArtifacts)):
    setattr(KeptArtifacts, _name, _delegate(_name))
KeptArtifacts.__abstractmethods__ = frozenset()


def make_app(url: str, study_name: str) -> tuple[Any, int, str | None]:
    """(WSGI app, the study's id in the storage, artifact folder or None when the study has no checkpoints yet)."""
    from optuna_dashboard import wsgi

    load(url, study_name)  # a missing study is a StudyError naming the studies there
    storage = open_storage(url)
    folder = artifact_dir(url, study_name)
    store = FileSystemArtifactStore(str(folder)) if folder.is_dir() else None
    view = KeptArtifacts(storage, folder)  # type: ignore[abstract]  # its abstract methods are delegated above
    app = wsgi(view, artifact_store=store)
    return app, storage.get_study_id_from_name(study_name), str(folder) if store else None


def serve(url: str, study_name: str, host: str = "127.0.0.1", port: int = 8080,
          allow_edits: bool = False) -> WSGIServer:
    """A started-to-listen (not yet serving) threaded server behind the Guard; OSError when the address is taken or
    not ours."""
    app, study_id, folder = make_app(url, study_name)
    guard = Guard(app, host, port, allow_edits)
    server = make_server(host, port, guard, server_class=_Server, handler_class=_QuietHandler)
    guard.port = server.server_port  # --port 0 picks one
    shown = f"[{host}]" if ":" in host else host
    print(f"hpsearch: optuna-dashboard on study {study_name!r} in {redact(url)}", file=sys.stderr)
    print(f"  checkpoints: {folder or 'none yet (no artifact folder)'}", file=sys.stderr)
    if host not in LOOPBACK:
        print(f"  warning: {host} is not loopback; the dashboard has no login, and anyone who can reach it can "
              f"read the study{' and edit or delete it' if allow_edits else ''}", file=sys.stderr)
    if allow_edits:
        print("  edits allowed (--allow-edits): studies, trials and notes can be changed and deleted here",
              file=sys.stderr)
    print(f"open http://{shown}:{server.server_port}/dashboard/studies/{study_id}   (Ctrl-C to stop)", flush=True)
    return server
