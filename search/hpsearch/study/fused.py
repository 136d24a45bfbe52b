"""Fused trials on the study side (`--fuse K`): groups of K Optuna trials that share their structure, trained at once.

A group starts from one trial asked as usual. Its structural parameters (space/fusion.py: all but the optimizer,
schedule, dropout, init, label smoothing and clipping) are enqueued for each further member when no trial is waiting
to be asked, so the sampler draws only the free ones, from the same history as any trial. Under a grid sampler
nothing is enqueued (it would take points off the grid): the next trials are asked as the grid gives them, and no
more once every point has a trial. A trial asked for a group that does not fit it (a waiting trial came first,
another worker took the enqueued one, the grid gave another architecture) is not lost: it waits, its heartbeat
kept, and leads the next group.

Every member is an ordinary Optuna trial, asked and told here: its own reports, pruning, user attributes (those of
a trial alone, plus keys.FUSED and keys.FUSE_LEADER), checkpoint and failure reason; `study.optimize` is not used, so
this module does what it would (stale trials failed before a group is asked, heartbeats for every open trial, a line
per finished trial). A retried trial runs alone through the Objective and resumes from its running state, which a
fused member writes in the same format. Ctrl-C or SIGTERM fails every open trial with the reason and queues its
retry; a storage fault stops the worker as it does for a trial alone.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from .. import keys
from ..errors import interruption
from ..space import TrialConfig, suggest
from ..space.fusion import structural_params, structure
from ..space.registry import ConfigError
from ..training.fused import Member, train_group
from ..training.train import NonFiniteLoss
from . import resume
from .compat import frozen
from .objective import (
    CPU_OUT_OF_MEMORY,
    STORAGE_FAULTS,
    Objective,
    StorageFault,
    TrialFailed,
    TrialHooks,
    first_line,
    raised,
    storage_said,
    storage_stopped,
)


@dataclass
class _Open:
    """A trial asked and not yet told."""

    trial: optuna.Trial
    config: TrialConfig | None  # None: its parameters could not be turned into a config (it has failed)
    chain: list[int]  # the trials it retries (resume.history); [] for a fresh one


class Groups:
    """Runs a worker's trials in fused groups of up to `k`; `claim()` says whether the run may start one more trial
    (runner: the run's shared count), `finished(study, trial)` is called for every trial told."""

    def __init__(self, objective: Objective, k: int, claim: Callable[[], bool],
                 finished: Callable[[optuna.Study, FrozenTrial], None] | None = None,
                 deadline: float | None = None) -> None:
        self.objective, self.k, self.claim, self.finished = objective, k, claim, finished
        self.worker = objective.worker
        self.study = self.worker.study
        self.space = self.worker.space
        self.deadline = deadline  # time.monotonic() after which no trial is asked
        self.grid = isinstance(self.study.sampler, optuna.samplers.GridSampler)
        self.pending: list[_Open] = []  # asked, waiting for a group that fits them
        self.open: dict[int, _Open] = {}  # every trial asked and not yet told, by number
        self.heartbeats = _Heartbeats(self.space.study.heartbeat_interval)

    # ------------------------------------------------------------------------------------------------- the loop
    def run(self) -> None:
        """Ask, train and tell groups until the run's trials are claimed (or its deadline passes, or the grid is
        done) and no asked trial waits; KeyboardInterrupt and StorageFault leave every open trial recorded."""
        self.heartbeats.start()
        try:
            while True:
                leader = self.pending.pop(0) if self.pending else self._ask_new(None)
                if leader is None:
                    break
                if leader.config is None:
                    continue
                if leader.chain:  # a retry: alone, resuming from its running state
                    self._alone(leader)
                    continue
                members = [leader]
                fixed = None if self.grid else structural_params(leader.trial.params, self.space.cases)
                shape = structure(leader.config)
                while len(members) < self.k:
                    asked = self._ask_new(fixed)
                    if asked is None:
                        break
                    if asked.config is None:
                        continue
                    if not asked.chain and structure(asked.config) == shape:
                        members.append(asked)
                    else:
                        self.pending.append(asked)
                self._train(members)
        except KeyboardInterrupt as exc:
            reason = f"interrupted ({interruption(exc)}) before it trained"  # asked, waiting for its group
            for item in list(self.open.values()):
                self._stop(item, reason)
            raise
        except STORAGE_FAULTS as exc:  # training, asking or telling: every open trial is cut short
            raise self._storage_fault(exc) from None
        finally:
            self.heartbeats.stop()

    def _ask_new(self, fixed: dict[str, object] | None) -> _Open | None:
        """The run's next trial (fixed: the structural parameters to enqueue for it, when no trial is waiting to be
        asked), or None when the run has asked all it may."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return None
        if self.grid and self._grid_taken():
            return None
        if not self.claim():
            return None
        if self.heartbeats.enabled:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
        if fixed is not None and not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.study.enqueue_trial(fixed)  # (a waiting trial is asked first: it may fit, or it waits its turn)
        with warnings.catch_warnings():  # Optuna warns that heartbeats go with optimize: here they are kept
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = self.study.ask()
        chain = resume.history(frozen(trial).system_attrs)
        item = _Open(trial, None, chain)
        self.open[trial.number] = item
        self.heartbeats.add(trial)
        try:
            item.config = suggest(trial, self.space)
        except Exception as exc:  # noqa: BLE001 - as optimize would: that trial fails, the run goes on
            self._tell(item, TrialState.FAIL, reason=f"the trial raised {type(exc).__name__} when its parameters "
                                                      f"were drawn: {first_line(exc)[:500]}")
        return item

    def _grid_taken(self) -> bool:
        """Whether every point of the grid has a trial that ran or runs: one more would repeat a point (Optuna's
        grid gives a running point again once none is left)."""
        points = math.prod(len(p.grid() or ()) for p in self.space.params().values())
        taken = {t.system_attrs["grid_id"] for t in self.study.get_trials(deepcopy=False)
                 if "grid_id" in t.system_attrs and t.state != TrialState.WAITING}
        return len(taken) >= points

    # ------------------------------------------------------------------------------------------------- alone
    def _alone(self, item: _Open) -> None:
        """A retried trial, through the Objective as study.optimize would run it."""
        try:
            value = self.objective(item.trial)
        except optuna.TrialPruned:
            self._tell(item, TrialState.PRUNED)
            self.objective.told()
        except TrialFailed:
            self._tell(item, TrialState.FAIL)
            self.objective.told()
        except KeyboardInterrupt:  # the objective recorded it and queued its retry
            self._tell(item, TrialState.FAIL, quiet=True)
            raise
        except StorageFault:
            self._tell_if_possible(item)
            raise
        else:
            self._tell(item, TrialState.COMPLETE, value)
            self.objective.told()

    # ------------------------------------------------------------------------------------------------- a group
    def _train(self, items: list[_Open]) -> None:
        objective, k = self.objective, len(items)
        leader = items[0].trial.number
        shown = [leader]  # the member whose epochs the progress bar shows: the first still training

        def progress(trial: optuna.Trial, epoch: int, metrics: dict[str, float]) -> None:
            if objective.on_epoch_hook is not None and trial.number == shown[0]:
                objective.on_epoch_hook(trial, epoch, metrics)

        by_member: dict[int, tuple[_Open, TrialHooks]] = {}

        def leave(member: Member) -> None:  # told at once: a pruned trial's record ends when it stopped training
            item, h = by_member[id(member)]
            live = [m for m in members if not m.done]
            shown[0] = min((by_member[id(m)][0].trial.number for m in live), default=leader)
            if member.result is not None:
                value = float(member.result.best_metrics[objective.metric])
                objective.record(item.trial, member.result, member.seconds, h.trained)
                objective.keep_checkpoint(item.trial, member.result, member.config, value, self.worker.data)
                self._tell(item, TrialState.COMPLETE, value)
            elif isinstance(member.error, optuna.TrialPruned):
                self._tell(item, TrialState.PRUNED)
            else:
                self._tell(item, TrialState.FAIL, reason=_member_reason(member), epochs=member.epochs)
            objective.discard([item.trial.number])

        members = []
        for item in items:
            assert item.config is not None
            objective.start(item.trial, item.config, **{keys.FUSED: k, keys.FUSE_LEADER: leader})
            h = TrialHooks(objective, item.trial, item.config, progress=progress)
            member = Member(item.config, h.on_epoch, h.on_state, leave)
            by_member[id(member)] = (item, h)
            members.append(member)
        group_error: BaseException | None = None
        try:
            train_group(members, self.worker.data, propagate=STORAGE_FAULTS)
        except STORAGE_FAULTS:  # the worker's fault, not the group's: run() cuts every open trial short
            raise
        except KeyboardInterrupt as exc:
            reason = f"interrupted ({interruption(exc)})"
            for item, member in zip(items, members, strict=True):
                if not member.done:
                    self._stop(item, f"{reason} during epoch {member.epochs + 1}", member.epochs)
            raise
        except Exception as exc:  # noqa: BLE001 - the fused computation itself failed: every member still in it
            group_error = exc
        if group_error is None:
            return
        reason = self._group_reason(group_error, members)
        group_error = None  # drop the traceback (and the tensors it holds) before anything else
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for item, member in zip(items, members, strict=True):
            if item.trial.number in self.open:
                self._tell(item, TrialState.FAIL, reason=reason, epochs=member.epochs)
                objective.discard([item.trial.number])

    @staticmethod
    def _group_reason(exc: BaseException, members: list[Member]) -> str:
        live = [m for m in members if not m.done]
        epoch = (live[0].epochs if live else 0) + 1
        oom = isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and any(words in str(exc) for words in CPU_OUT_OF_MEMORY))
        if oom:
            return (f"out of memory in epoch {epoch} with {len(live)} trials fused; try a smaller --fuse, "
                    "batch_size or model")
        return (f"the fused group of {len(live)} trials raised {type(exc).__name__} in epoch {epoch}: "
                f"{first_line(exc)[:500]}")

    def _storage_fault(self, exc: BaseException) -> StorageFault:
        """Every open trial (training, asked, or being told) failed with the reason and queued again, if the
        storage answers; their running states are kept for the retries."""
        numbers = sorted(self.open)
        under = f"under the trials {numbers}" if numbers else "between trials"
        reason = f"the study's storage failed {under} {storage_said(exc)}"
        for item in list(self.open.values()):
            try:  # if the storage answers again, record why and queue the rerun now; if not, the next run will
                self._stop(item, reason)
            except STORAGE_FAULTS:
                pass
        return storage_stopped(reason, "each trial's last saved epoch is" if numbers else "every finished trial is")

    # ------------------------------------------------------------------------------------------------- telling
    def _stop(self, item: _Open, reason: str, epochs: int = 0) -> None:
        """A trial cut short by the worker (interrupted, storage lost): failed with the reason, its retry queued,
        its running state kept for that retry."""
        self.objective.fail(item.trial, reason, epochs)
        resume.Retry(self.space.study.max_retry, reason)(self.study, frozen(item.trial))
        self._tell(item, TrialState.FAIL, quiet=True)

    def _tell(self, item: _Open, state: TrialState, value: float | None = None, *, reason: str | None = None,
              epochs: int = 0, quiet: bool = False) -> None:
        if reason is not None:
            self.objective.fail(item.trial, reason, epochs)
        try:
            told = self.study.tell(item.trial, value if state == TrialState.COMPLETE else None,
                                   state=None if state == TrialState.COMPLETE else state)
        except RuntimeError:  # the grid's last point: its sampler calls study.stop, which works only in optimize,
            told = frozen(item.trial)  # after the result was stored (Optuna stores it whatever the sampler raises)
            if not self.grid or told.state == TrialState.RUNNING:
                raise
        self.heartbeats.remove(item.trial)  # once told: a trial the storage failed to take is still open
        self.open.pop(item.trial.number, None)
        if self.finished is not None and not quiet:
            self.finished(self.study, told)

    def _tell_if_possible(self, item: _Open) -> None:
        try:
            self._tell(item, TrialState.FAIL, quiet=True)
        except STORAGE_FAULTS:
            pass


def _member_reason(member: Member) -> str:
    """Why a member failed, as a trial alone would say it."""
    exc = member.error
    assert exc is not None
    if isinstance(exc, (NonFiniteLoss, ConfigError)):
        return str(exc)
    return raised(exc, member.epochs + 1)


class _Heartbeats:
    """The heartbeats of every open trial (study.optimize's heartbeat thread does this for its one trial), so a
    trial whose worker dies is failed and retried by the next live worker, as any other."""

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
        if not self.enabled:
            return
        storage = trial.storage
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
