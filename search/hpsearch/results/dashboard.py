"""optuna-dashboard on a study's storage, with its artifact store so trial checkpoints are listed and downloadable.

The same app as the `optuna-dashboard` command, served from our own storage object: for SQLite that has the 60 s busy
timeout (study.storage.SQLITE_TIMEOUT_S), so the dashboard's reads wait for a running search's writes, and the search's
writes wait for the reads; neither fails.
"""

from __future__ import annotations

import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.artifacts import FileSystemArtifactStore

from ..study.storage import artifact_dir, open_storage, redact
from ..study.studies import load

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open; they must not hold the process at Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # the dashboard polls every few seconds: no line per request


def make_app(url: str, study_name: str) -> tuple[Any, int, str | None]:
    """(WSGI app, the study's id in the storage, artifact folder or None when the study has no checkpoints yet)."""
    from optuna_dashboard import wsgi

    load(url, study_name)  # a missing study is a StudyError naming the studies there
    storage = open_storage(url)
    folder = artifact_dir(url, study_name)
    store = FileSystemArtifactStore(str(folder)) if folder.is_dir() else None
    app = wsgi(storage, artifact_store=store)
    return app, storage.get_study_id_from_name(study_name), str(folder) if store else None


def serve(url: str, study_name: str, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """A started-to-listen (not yet serving) threaded server; OSError when the address is taken or not ours."""
    app, study_id, folder = make_app(url, study_name)
    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    shown = f"[{host}]" if ":" in host else host
    print(f"hpsearch: optuna-dashboard on study {study_name!r} in {redact(url)}", file=sys.stderr)
    print(f"  checkpoints: {folder or 'none yet (no artifact folder)'}", file=sys.stderr)
    if host not in LOOPBACK:
        print(f"  warning: {host} is not loopback; the dashboard has no login, and anyone who can reach it can "
              "read, edit and delete studies", file=sys.stderr)
    print(f"open http://{shown}:{server.server_port}/dashboard/studies/{study_id}   (Ctrl-C to stop)", flush=True)
    return server
