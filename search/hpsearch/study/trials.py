"""The life of every trial, in one place: asked, trained, told, on Optuna's ask and tell.

`Trials(worker, ...).run()` asks the run's trials one by one, trains them in groups of up to `fuse` that share
their structure (space/fusion.py; a trial alone is the group of one), and tells each the moment it leaves its group.
For a group of more than one, the first trial's structural parameters are enqueued for each further member when no
trial is waiting, so the sampler draws only the free ones; under a grid nothing is enqueued. A trial asked for a
group that does not fit it (a waiting retry, another worker's enqueued trial, another architecture from the grid)
waits, its heartbeat kept, and leads the next group. A retry trains alone and resumes from the running state of the
trials it reruns.

What Optuna's optimize would do is done here once, for every trial: stale trials are failed (and retried) before a
trial is asked, every open trial keeps a heartbeat, the run stops asking at its trial count, its deadline or when
every point of the grid has a trial, and a line is printed per finished trial. A trial that fails by its own fault
is told FAIL with its reason and the run goes on. Ctrl-C or SIGTERM fails every open trial with the reason and
queues its retry; a storage fault does the same where the storage still answers, then stops the worker
(StorageFault). A trial's running state goes only once the trial is told, so a finished trial whose result could not
be stored resumes at its last saved epoch.
"""

from __future__ import annotations

import gc
import math
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
from ..training.step import ResumeError
from ..training.train import Member, train_group
from . import resume
from .compat import frozen
from .faults import (
    STORAGE_FAULTS,
    StorageFault,
    computation_reason,
    first_line,
    member_reason,
    storage_said,
    storage_stopped,
)
from .heartbeats import Heartbeats
from .records import Progress, Records, TrialHooks
from .worker import Worker

Finished = Callable[[optuna.Study, FrozenTrial], None]


@dataclass
class _Open:
    """A trial asked and not yet told."""

    trial: optuna.Trial
    config: TrialConfig | None  # None: its parameters could not be turned into a config (it has failed)
    chain: list[int]  # the trials it retries (resume.history); [] for a fresh one
    hooks: TrialHooks | None = None  # set once it trains


class Trials:
    """A worker's trials: `claim()` says whether the run may start one more (runner: the run's shared count),
    `deadline` (time.monotonic()) after which none is asked, `progress` the per-epoch hook of the trial shown,
    `finished(study, trial)` called for every trial told, `check()` at every safe point (before a trial is asked,
    after every training step): what it raises stops the run there (the runner's signals, study/runner.py)."""

    def __init__(self, worker: Worker, *, fuse: int = 1, claim: Callable[[], bool] = lambda: True,
                 deadline: float | None = None, progress: Progress | None = None, finished: Finished | None = None,
                 keep_running: bool = True, keep_checkpoints: bool = True, run: str = "",
                 check: Callable[[], None] = lambda: None) -> None:
        self.worker, self.study, self.space = worker, worker.study, worker.space
        self.records = Records(worker, keep_running=keep_running, keep_checkpoints=keep_checkpoints, run=run)
        self.k, self.claim, self.deadline = fuse, claim, deadline
        self.progress, self.finished, self.check = progress, finished, check
        self.grid = isinstance(self.study.sampler, optuna.samplers.GridSampler)
        self.pending: list[_Open] = []  # asked, waiting for a group that fits them
        self.open: dict[int, _Open] = {}  # every trial asked and not yet told, by number
        self.heartbeats = Heartbeats(self.space.study.heartbeat_interval)

    # ------------------------------------------------------------------------------------------------- the loop
    def run(self) -> None:
        """Ask, train and tell until the run may ask no more and no asked trial waits; whatever ends it early
        (KeyboardInterrupt, StorageFault, any other exception) leaves every open trial recorded, its rerun queued."""
        self.heartbeats.start()
        try:
            while True:
                self.check()
                leader = self.pending.pop(0) if self.pending else self._ask(None)
                if leader is None:
                    break
                if leader.config is None:
                    continue
                members = [leader]
                if not leader.chain and self.k > 1:
                    fixed = None if self.grid else structural_params(leader.trial.params, self.space.cases)
                    shape = structure(leader.config)
                    for waiting in list(self.pending):  # trials that waited for a group of their structure
                        fits = waiting.config is not None and structure(waiting.config) == shape
                        if len(members) < self.k and not waiting.chain and fits:
                            self.pending.remove(waiting)
                            members.append(waiting)
                    while len(members) < self.k and (asked := self._ask(fixed)) is not None:
                        if asked.config is None:
                            continue
                        if not asked.chain and structure(asked.config) == shape:
                            members.append(asked)
                        else:
                            self.pending.append(asked)
                self._train(members)
        except KeyboardInterrupt as exc:
            said = f"interrupted ({interruption(exc)})"
            for item in list(self.open.values()):
                when = f"during epoch {item.hooks.epochs_seen + 1}" if item.hooks else "before it trained"
                self._stop(item, f"{said} {when}")
            raise
        except STORAGE_FAULTS as exc:  # training, asking or telling: every open trial is cut short
            raise self._storage_fault(exc) from None
        except BaseException as exc:  # anything else that ends the run leaves no trial open
            for item in list(self.open.values()):
                self._stop(item, f"the worker stopped: {type(exc).__name__}: {first_line(exc)[:300]}")
            raise
        finally:
            self.heartbeats.stop()

    def _ask(self, fixed: dict[str, object] | None) -> _Open | None:
        """The run's next trial (fixed: the structural parameters to enqueue for it, when no trial is waiting to be
        asked), or None when the run has asked all it may."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return None
        if self.grid and self.grid_done():
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
        item = _Open(trial, None, resume.history(frozen(trial).system_attrs))
        self.open[trial.number] = item
        self.heartbeats.add(trial)
        try:
            item.config = suggest(trial, self.space)
        except Exception as exc:  # noqa: BLE001 - that trial fails, the run goes on
            self._tell(item, TrialState.FAIL, reason=f"the trial raised {type(exc).__name__} when its parameters "
                                                      f"were drawn: {first_line(exc)[:500]}")
        return item

    def grid_done(self) -> bool:
        """Whether every point of the grid has a trial that ran or runs: one more would repeat a point (Optuna's
        grid gives a running point again once none is left). Points are read from the trials' parameters; where a
        branch leaves some unsuggested, the grid's own word that every point has finished decides."""
        if self.study.sampler.is_exhausted(self.study):  # type: ignore[union-attr]
            return True
        params = self.space.params()
        names = list(params)
        points = math.prod(len(p.grid() or ()) for p in params.values())
        taken = {tuple(t.params[n] for n in names) for t in self.study.get_trials(deepcopy=False)
                 if t.state != TrialState.WAITING and all(n in t.params for n in names)}
        return len(taken) >= points

    # ------------------------------------------------------------------------------------------------- a group
    def _train(self, items: list[_Open], resuming: bool = True) -> None:
        """Train `items` (one structure) together, telling each as it leaves; a retry whose running state does not
        fit after all trains again from the start."""
        records, k = self.records, len(items)
        leader = items[0].trial.number
        shown = [leader]  # the trial whose epochs the progress bar shows: the first still training
        fused = self.k > 1 and not items[0].chain  # a run with --fuse; a retry trains alone
        group = {keys.FUSED: k, keys.FUSE_LEADER: leader} if fused else {}
        again: list[_Open] = []

        def progress(trial: optuna.Trial, epoch: int, metrics: dict[str, float]) -> None:
            if self.progress is not None and trial.number == shown[0]:
                self.progress(trial, epoch, metrics)

        def leave(member: Member) -> None:  # told at once: a pruned trial's record ends when it stopped training
            item = by_member[id(member)]
            shown[0] = min((by_member[id(m)].trial.number for m in members if not m.done), default=leader)
            assert item.hooks is not None and item.config is not None
            if isinstance(member.error, ResumeError):  # the state does not fit after all: from the start
                item.trial.set_user_attr(keys.RESUME_ERROR, str(member.error))
                again.append(item)
            elif member.result is not None:
                value = float(member.result.best_metrics[records.metric])
                records.result(item.trial, member.result, time.perf_counter() - item.hooks.started,
                               item.hooks.trained)
                records.keep_checkpoint(item.trial, member.result, item.config, value, self.worker.data)
                self._tell(item, TrialState.COMPLETE, value)
            elif isinstance(member.error, optuna.TrialPruned):
                self._tell(item, TrialState.PRUNED)
            else:
                assert member.error is not None
                self._tell(item, TrialState.FAIL, epochs=member.epochs,
                           reason=member_reason(member.error, member.epochs + 1, self.worker.device))

        by_member: dict[int, _Open] = {}
        members: list[Member] = []
        for item in items:
            assert item.config is not None
            records.start(item.trial, item.config, **group)
            try:
                state = records.resumed_state(item.trial, item.chain, item.config) if resuming and item.chain else None
            except optuna.TrialPruned:
                self._tell(item, TrialState.PRUNED)
                continue
            seen = len(state["history"]) if state else 0
            item.hooks = TrialHooks(records, item.trial, item.config, seen=seen, progress=progress)
            member = Member(item.config, item.hooks.on_epoch, item.hooks.on_state, leave, resume=state,
                            on_start=item.hooks.on_start)
            by_member[id(member)] = item
            members.append(member)
        failure: BaseException | None = None
        try:
            train_group(members, self.worker.data, propagate=STORAGE_FAULTS, check=self.check)
        except Exception as exc:  # noqa: BLE001 - the computation itself failed (out of memory): every trial in it
            if isinstance(exc, STORAGE_FAULTS):
                raise
            failure = exc
        if failure is not None:
            live = [m for m in members if not m.done]
            reason = computation_reason(failure, (live[0].epochs if live else 0) + 1, len(live),
                                        self.worker.device)
            failure = None  # drop the traceback (and the tensors it holds) before anything else
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            for member in live:
                self._tell(by_member[id(member)], TrialState.FAIL, reason=reason, epochs=member.epochs)
        for item in again:
            self._train([item], resuming=False)

    # ------------------------------------------------------------------------------------------------- telling
    def _tell(self, item: _Open, state: TrialState, value: float | None = None, *, reason: str | None = None,
              epochs: int = 0, stopped: bool = False) -> None:
        """Tell the trial; one that ended for good (not `stopped` by the worker) has its running states removed
        once told, and its line printed."""
        if reason is not None:
            self.records.fail(item.trial, reason, epochs)
        self.study.tell(item.trial, value if state == TrialState.COMPLETE else None,
                        state=None if state == TrialState.COMPLETE else state)
        self.heartbeats.remove(item.trial)  # once told: a trial the storage failed to take is still open
        self.open.pop(item.trial.number, None)
        if stopped:
            return
        self.records.discard([*item.chain, item.trial.number])
        if self.finished is not None:
            self.finished(self.study, frozen(item.trial))

    def _stop(self, item: _Open, reason: str) -> None:
        """A trial cut short by the worker (interrupted, storage lost): failed with the reason, its retry queued,
        its running state kept for that retry."""
        self.records.fail(item.trial, reason, item.hooks.epochs_seen if item.hooks else 0)
        resume.Retry(self.space.study.max_retry, reason, stopped=True)(self.study, frozen(item.trial))
        self._tell(item, TrialState.FAIL, stopped=True)

    def _storage_fault(self, exc: BaseException) -> StorageFault:
        """Every open trial failed with the reason and queued again, if the storage answers; their running states
        are kept for the retries."""
        numbers = sorted(self.open)
        if len(numbers) == 1:
            hooks = self.open[numbers[0]].hooks
            when = f"at epoch {hooks.epochs_seen}" if hooks and hooks.epochs_seen else "before its first epoch"
            under = f"{when} of trial {numbers[0]}"
        else:
            under = f"under the trials {numbers}" if numbers else "between trials"
        reason = f"the study's storage failed {under} {storage_said(exc)}"
        for item in list(self.open.values()):
            try:  # if the storage answers again, record why and queue the rerun now; if not, the next run will
                self._stop(item, reason)
            except STORAGE_FAULTS:
                pass
        return storage_stopped(reason, "each trial's last saved epoch is" if numbers else "every finished trial is")
