"""The heartbeats of every trial a worker has asked and not yet told, from one thread, so that a trial whose worker
dies is failed and retried by the next live worker (storage.open_storage: the stale-trial callback)."""

from __future__ import annotations

import sys
import threading

import optuna


class Heartbeats:
    """Records a heartbeat for each open trial every `interval` seconds (None: the study keeps none)."""

    def __init__(self, interval: int | None) -> None:
        self.interval = interval
        self.enabled = interval is not None
        self.ids: dict[int, tuple[optuna.storages.BaseStorage, int]] = {}  # trial number -> (storage, trial id)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.enabled:
            self.thread = threading.Thread(target=self._beat, name="hpsearch-heartbeats", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()

    def add(self, trial: optuna.Trial) -> None:
        """Start beating for `trial` at once: a trial asked is never without a heartbeat for long."""
        storage = trial.storage
        if not self.enabled or getattr(storage, "get_heartbeat_interval", lambda: None)() is None:
            return  # a storage that keeps no heartbeats (in memory, or opened without the space's settings)
        study_id = storage.get_study_id_from_name(trial.study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
        with self.lock:
            self.ids[trial.number] = (storage, trial_id)

    def remove(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.ids.pop(trial.number, None)

    def _beat(self) -> None:
        assert self.interval is not None
        while not self.stopped.wait(self.interval):
            with self.lock:
                beats = list(self.ids.values())
            for storage, trial_id in beats:
                try:
                    storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - a lost storage: the main thread meets it and says so
                    print(f"hpsearch: warning: cannot record a heartbeat: {type(exc).__name__}", file=sys.stderr)
                    break
