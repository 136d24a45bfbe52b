"""optuna-dashboard on a study's storage, with its artifact store so trial checkpoints are listed and downloadable.

The same app as the `optuna-dashboard` command, served from our own storage object: for SQLite that has the 60 s busy
timeout (study.storage.SQLITE_TIMEOUT_S), so the dashboard's reads wait for a running search's writes, and the search's
writes wait for the reads; neither fails.

The dashboard has no login, so the server guards what a web page in the user's browser could otherwise do to it
(DNS rebinding: a foreign page whose name resolves to 127.0.0.1): it answers only requests whose Host is a name it
was started for (the loopback names, or --host), refuses a state-changing request from an Origin other than its own
(scheme, name and port), and is read-only unless started with --allow-edits (no study, trial or note can be changed
or deleted through it). Artifacts download as application/octet-stream, and no answer carries a CORS header (which
would let any page read it).

It serves the one study it was started on: it reads the storage through KeptArtifacts, a view that holds that study
alone (any other study or trial of the storage is not found, and no study is created) and leaves out the records of
checkpoints whose files a search has since removed: the dashboard then lists only checkpoints that download, and can
delete a study that had some.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import sys
from collections.abc import Callable, Container, Sequence
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
DOWNLOAD = "application/octet-stream"  # every artifact's type on download, whatever its record says
# The paths that name a study (its id, perhaps a trial's) or a trial alone, and those that create a study.
STUDY_PATH = re.compile(r"/(?:api/studies|api/artifacts|artifacts|csv)/(-?\d+)(?:/(-?\d+)(?=/|$))?")
TRIAL_PATH = re.compile(r"/api/trials/(-?\d+)(?=/|$)")
NEW_STUDY_PATH = re.compile(r"/api/studies(?:/\d+/rename)?/*")


class Guard:
    """WSGI middleware in front of the dashboard: a request must name this server in its Host header, and one that
    changes a study must come from no Origin or this server's own, and edits must be allowed at all. Given the
    storage view, it answers 404 for a path naming another study or its trial and 403 for creating or renaming a
    study, before the dashboard sees them. Artifacts download as octet-stream, and no answer carries a CORS header.
    A request without Accept-Encoding gets the header's default (identity): optuna-dashboard reads it unchecked."""

    def __init__(self, app: Any, host: str, port: int, allow_edits: bool = False,
                 view: KeptArtifacts | None = None) -> None:
        self.app, self.port, self.allow_edits, self.view = app, port, allow_edits, view
        names = {host}
        if host in (*LOOPBACK, "0.0.0.0", "::"):
            names |= set(LOOPBACK)
        if host in ("0.0.0.0", "::"):  # every address of this machine: its names too
            names |= {socket.gethostname(), socket.getfqdn()}
        self.hosts = {(f"[{n}]" if ":" in n else n).lower() for n in names}

    @staticmethod
    def _split(header: str) -> tuple[str, str]:
        """("127.0.0.1", "8080") from "127.0.0.1:8080", ("[::1]", "") from "[::1]": the name and the port as given."""
        header = header.strip().lower()
        if header.startswith("["):
            end = header.find("]")
            return header[: end + 1], header[end + 2:] if header[end + 1: end + 2] == ":" else ""
        name, _, port = header.partition(":")
        return name, port

    def allowed_host(self, header: str) -> bool:
        """Whether a Host header ("127.0.0.1:8080", "localhost", "[::1]:8080") names this server."""
        name, port = self._split(header)
        if port and not port.isdigit():
            return False
        return name in self.hosts and (not port or int(port) == self.port)

    def allowed_origin(self, origin: str) -> bool:
        """Whether an Origin ("http://127.0.0.1:8080") is this server's own: its name and its port exactly, where an
        Origin without a port is port 80 (a page on another port of the same machine is another site)."""
        scheme, _, rest = origin.partition("://")
        name, port = self._split(rest.rstrip("/"))
        if scheme != "http" or (port and not port.isdigit()):
            return False
        return name in self.hosts and (int(port) if port else 80) == self.port

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        host = environ.get("HTTP_HOST", "")
        if not self.allowed_host(host):
            return _refuse(start_response, f"Host {host!r} is not this dashboard's name; open it as "
                                           f"http://127.0.0.1:{self.port}/ (or the --host it was started with)")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method in CHANGES:
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and not self.allowed_origin(origin):
                return _refuse(start_response, f"a request from {origin!r} may not change this dashboard's study")
            if not self.allow_edits:
                return _refuse(start_response, "this dashboard is read-only; start it with --allow-edits to change "
                                               "or delete studies, trials and notes")
        path = environ.get("PATH_INFO", "")
        if self.view is not None:
            if method in CHANGES and NEW_STUDY_PATH.fullmatch(path):
                return _refuse(start_response, f"this dashboard serves study {self.view.study_name!r} alone: it "
                                               f"creates and renames no study")
            if not self._in_study(path):
                return _refuse(start_response, f"not found: this dashboard serves study {self.view.study_name!r} "
                                               f"(id {self.view.study_id}) alone", "404 Not Found")
        environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")  # the header's default; optuna-dashboard needs one
        download = method in ("GET", "HEAD") and path.startswith("/artifacts/")

        def answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            headers = [(k, v) for k, v in headers if not k.lower().startswith("access-control-allow-")]
            if download and status.startswith("200"):  # records stored before the type was given say .pt's guess
                headers = [(k, DOWNLOAD if k.lower() == "content-type" else v) for k, v in headers]
            return start_response(status, headers, exc_info)

        return self.app(environ, answer)

    def _in_study(self, path: str) -> bool:
        """Whether a path names only the served study and its trials (or none)."""
        assert self.view is not None
        if match := STUDY_PATH.match(path):
            study, trial = match.groups()
            return int(study) == self.view.study_id and (trial is None or self.view.owns_trial(int(trial)))
        if match := TRIAL_PATH.match(path):
            return self.view.owns_trial(int(match[1]))
        return True


def _refuse(start_response: Any, reason: str, status: str = "403 Forbidden") -> list[bytes]:
    body = json.dumps({"reason": reason}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open; they must not hold the process at Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # the dashboard polls every few seconds: no line per request


class KeptArtifacts(optuna.storages.BaseStorage):
    """The study's storage as the dashboard sees it: the one study it serves, and on its trials only the checkpoints
    whose files are still in the artifact store.

    The storage may hold other studies (a shared PostgreSQL database, a SQLite file with several): the dashboard
    started on one study lists that one alone, and any other study's id or name, or a trial of another study, is not
    found (KeyError, as the backend answers for an id it lacks), for reads and changes alike; no study is created.

    A trial's checkpoint falls out of the best keep_checkpoints after the trial has finished, and Optuna refuses to
    change a finished trial's attributes (optuna-dashboard's own delete fails the same way), so its record stays
    in the storage; shown, it would be a download that fails. optuna-dashboard lists a trial's artifacts from the
    system attrs of the trials its storage returns, and reads the artifact store only to download, upload or delete
    one, so the storage is the one place to hide them. The trials are read through here with those records left
    out (a copy with other system attrs; the stored trial is never changed); every other method of the storage
    interface is the backend's own for the served study, written out below.
    """

    def __init__(self, backend: optuna.storages.BaseStorage, folder: Path, study_id: int) -> None:
        self._backend, self._folder = backend, folder
        self.study_id, self.study_name = study_id, backend.get_study_name_from_id(study_id)
        self._trials: set[int] = set()  # trial ids found to be the study's (a trial never changes study)

    def _study(self, study_id: int) -> int:
        if study_id != self.study_id:
            raise KeyError(f"No study with study_id {study_id} exists here: this dashboard serves study "
                           f"{self.study_name!r} alone.")
        return study_id

    def owns_trial(self, trial_id: int) -> bool:
        """Whether a trial id is one of the served study's trials."""
        if trial_id not in self._trials:
            try:
                number = self._backend.get_trial_number_from_id(trial_id)
                if self._backend.get_trial_id_from_study_id_trial_number(self.study_id, number) != trial_id:
                    return False
            except KeyError:
                return False
            self._trials.add(trial_id)
        return True

    def _trial(self, trial_id: int) -> int:
        if not self.owns_trial(trial_id):
            raise KeyError(f"No trial with trial_id {trial_id} exists here: this dashboard serves study "
                           f"{self.study_name!r} alone.")
        return trial_id

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

    # The study alone.

    def get_all_studies(self) -> list[Any]:
        return [s for s in self._backend.get_all_studies() if s.study_name == self.study_name]  # names are unique

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name != self.study_name:
            raise KeyError(f"No study named {study_name!r} here: this dashboard serves study {self.study_name!r} "
                           f"alone.")
        return self._study(self._backend.get_study_id_from_name(study_name))

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        raise KeyError(f"this dashboard serves study {self.study_name!r} alone: it creates no study")

    # The trials, without the records of removed checkpoints.

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._view(self._backend.get_trial(self._trial(trial_id)))

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [self._view(t) for t in self._backend.get_all_trials(self._study(study_id), deepcopy=deepcopy,
                                                                     states=states)]

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._kept(self._backend.get_trial_system_attrs(self._trial(trial_id)))

    # Everything else: the backend's own, for the study and its trials. (BaseStorage's other methods, such as
    # get_best_trial, are built on these.)

    def delete_study(self, study_id: int) -> None:
        self._backend.delete_study(self._study(study_id))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(self._study(study_id), key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_system_attr(self._study(study_id), key, value)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(self._study(study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._backend.get_study_directions(self._study(study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(self._study(study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_system_attrs(self._study(study_id))

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self._backend.create_new_trial(self._study(study_id), template_trial)
        self._trials.add(trial_id)
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._backend.set_trial_param(self._trial(trial_id), param_name, param_value_internal, distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._backend.set_trial_state_values(self._trial(trial_id), state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._backend.set_trial_intermediate_value(self._trial(trial_id), step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_user_attr(self._trial(trial_id), key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_system_attr(self._trial(trial_id), key, value)


def make_app(url: str, study_name: str) -> tuple[Any, KeptArtifacts, str | None]:
    """(WSGI app, the storage view it reads (the study alone), artifact folder or None when the study has no
    checkpoints yet)."""
    from optuna_dashboard import wsgi

    load(url, study_name)  # a missing study is a StudyError naming the studies there
    storage = open_storage(url)
    folder = artifact_dir(url, study_name)
    store = FileSystemArtifactStore(str(folder)) if folder.is_dir() else None
    view = KeptArtifacts(storage, folder, storage.get_study_id_from_name(study_name))
    return wsgi(view, artifact_store=store), view, str(folder) if store else None


def serve(url: str, study_name: str, host: str = "127.0.0.1", port: int = 8080,
          allow_edits: bool = False) -> WSGIServer:
    """A started-to-listen (not yet serving) threaded server behind the Guard; OSError when the address is taken or
    not ours."""
    app, view, folder = make_app(url, study_name)
    guard = Guard(app, host, port, allow_edits, view)
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
    print(f"open http://{shown}:{server.server_port}/dashboard/studies/{view.study_id}   (Ctrl-C to stop)", flush=True)
    return server
