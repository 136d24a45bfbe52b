"""optuna-dashboard on a study's storage, with its artifact store so trial checkpoints are listed and downloadable.

The same app as the `optuna-dashboard` command, served from our own storage object: for SQLite that has the 60 s busy
timeout (study.storage.SQLITE_TIMEOUT_S), so the dashboard's reads wait for a running search's writes, and the search's
writes wait for the reads; neither fails.

The dashboard has no login, so the server guards what a web page in the user's browser could otherwise do to it
(DNS rebinding: a foreign page whose name resolves to 127.0.0.1): it answers only requests whose Host is a name it
was started for (the loopback names, or --host), refuses a state-changing request from a foreign Origin, and is
read-only unless started with --allow-edits (no study, trial or note can be changed or deleted through it).

It reads the storage through KeptArtifacts, a view that leaves out the records of checkpoints whose files a search
has since removed: the dashboard then lists only checkpoints that download, and can delete a study that had some.
"""

from __future__ import annotations

import copy
import json
import socket
import sys
from collections.abc import Container, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..study.compat import artifact_records
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


class KeptArtifacts(optuna.storages.BaseStorage):
    """The study's storage as the dashboard sees it: a trial lists only the checkpoints whose files are still in
    the artifact store.

    A trial's checkpoint falls out of the best keep_checkpoints after the trial has finished, and Optuna refuses to
    change a finished trial's attributes (optuna-dashboard's own delete fails the same way), so its record stays
    in the storage; shown, it would be a download that fails. optuna-dashboard lists a trial's artifacts from the
    system attrs of the trials its storage returns, and reads the artifact store only to download, upload or delete
    one, so the storage is the one place to hide them. The trials are read through here with those records left
    out (a copy with other system attrs; the stored trial is never changed); every other method of the storage
    interface is the backend's own, written out below.
    """

    def __init__(self, backend: optuna.storages.BaseStorage, folder: Path) -> None:
        self._backend, self._folder = backend, folder

    def _kept(self, attrs: dict[str, Any]) -> dict[str, Any]:
        gone = {key for key, artifact in artifact_records(attrs).items() if not (self._folder / artifact).is_file()}
        return {k: v for k, v in attrs.items() if k not in gone} if gone else attrs

    def _view(self, trial: FrozenTrial) -> FrozenTrial:
        kept = self._kept(trial.system_attrs)
        if kept is trial.system_attrs:
            return trial
        view = copy.copy(trial)  # the backend's trial (perhaps its cache's) keeps its own attributes
        view.system_attrs = kept
        return view

    # The trials, without the records of removed checkpoints.

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._view(self._backend.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [self._view(t) for t in self._backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)]

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._kept(self._backend.get_trial_system_attrs(trial_id))

    # Everything else: the backend's own. (BaseStorage's other methods, such as get_best_trial, are built on these.)

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[Any]:
        return self._backend.get_all_studies()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._backend.create_new_trial(study_id, template_trial)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._backend.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._backend.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_system_attr(trial_id, key, value)


def make_app(url: str, study_name: str) -> tuple[Any, int, str | None]:
    """(WSGI app, the study's id in the storage, artifact folder or None when the study has no checkpoints yet)."""
    from optuna_dashboard import wsgi

    load(url, study_name)  # a missing study is a StudyError naming the studies there
    storage = open_storage(url)
    folder = artifact_dir(url, study_name)
    store = FileSystemArtifactStore(str(folder)) if folder.is_dir() else None
    app = wsgi(KeptArtifacts(storage, folder), artifact_store=store)
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
