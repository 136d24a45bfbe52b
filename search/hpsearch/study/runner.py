"""Running a search: one worker in this process, or N worker processes on the same study.

Optuna's RDB storage is the only thing the workers share: each opens the study, draws with its own sampler seed,
loads the data set once onto its device and trains trial after trial. No scheduler of our own.

Workers are forked from a forkserver that has imported torch, Optuna and hpsearch once (started by `prestart` while
the caller checks the data), so N workers do not import torch N times; the server never touches CUDA or runs a
parallel region, so forking it is safe. Where there is no forkserver (Windows), workers are spawned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_INTERRUPTED, HpsearchError, interruption, report
from ..space import Space

if TYPE_CHECKING:
    from .worker import Worker

PARENT_POLL_S = 1.0  # how often a worker looks whether the command that started it is still there


@dataclass(frozen=True)
class Plan:
    """What one `hpsearch run` does; pickled to each worker process."""

    space: Space
    url: str
    study_name: str
    trials: int | None  # in total, across the workers; None: until timeout or Ctrl-C
    timeout: float | None
    workers: int = 1
    gpus: tuple[str, ...] = ()  # CUDA device ids, dealt to the workers in turn
    run: str = ""  # this command's id, stored on every trial it starts (keys.RUN)
    fuse: int = 1  # trials trained together in one fused group (--fuse, study.fuse); 1: each trial alone
    ignored: tuple[int, ...] = ()  # the stop signals the command was started to ignore (nohup): its workers too


# What every worker imports: torch, Optuna, SQLAlchemy; the first pauses garbage collection for the imports (see
# startup), which the workers turn back on.
PRELOAD = ["hpsearch.study.preload", "hpsearch.study.trials", "hpsearch.study.progress"]


def _context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")  # CUDA and a plain fork do not mix


def prestart(workers: int) -> None:
    """Start the forkserver now (for more than one worker), so that its imports overlap the caller's own work.

    It and multiprocessing's resource tracker start with the stop signals blocked, and keep them blocked: a signal to
    the whole process group (Ctrl-C in a terminal, a closed terminal, a scheduler's stop) must not kill the helpers
    through which the command learns its workers' exit statuses. A signal that comes meanwhile waits, and reaches
    this process once they have started; each worker, forked from the server, unblocks them (_worker).
    """
    if workers > 1 and _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver, resource_tracker

        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            resource_tracker.ensure_running()
            forkserver.ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def run(plan: Plan, worker: Worker | None = None) -> int:
    """Run the plan; returns the exit status (0, 130 when interrupted, else the worst worker status).

    One worker runs in this process, on `worker` when the caller has opened it already (the command line has: its
    summary reads the same study); more are processes, each opening its own.
    """
    if plan.workers == 1:
        return _optimize(plan, index=0, progress_bars=True, worker=worker)
    plan = dataclasses.replace(plan, ignored=tuple(s for s in STOP_SIGNALS if s not in _listened()))
    ctx = _context()
    threads = max(1, (os.cpu_count() or 1) // plan.workers)  # each CPU worker takes its share of the cores
    # A forked worker starts with the server's folder and environment: hand it this process's, as spawn would.
    setting = (os.getcwd(), dict(os.environ))
    # The trials of the run as one shared count: each worker claims its next trial from it, so when a worker dies
    # the others run its remaining share, and together they run exactly plan.trials.
    slots = ctx.Value("q", 0) if plan.trials is not None else None
    procs: list[multiprocessing.process.BaseProcess] = []
    for i in range(plan.workers):
        gpu = plan.gpus[i % len(plan.gpus)] if plan.gpus else None
        started = ctx.Process(target=_worker, args=(plan, i, gpu, threads, setting, os.getpid(), slots),
                              name=f"hpsearch-worker-{i}")
        started.start()
        procs.append(started)
    forward = _Forward(procs)
    previous = {s: signal.signal(s, forward) for s in _listened()}
    try:
        for proc in procs:
            while proc.is_alive():
                proc.join(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [proc.exitcode or 0 for proc in procs]
    if any(code == EXIT_INTERRUPTED for code in codes):  # one message for the run, not one per worker
        print(f"\nhpsearch: interrupted ({forward.name or 'a worker was stopped'}); {STOPPED}", file=sys.stderr,
              flush=True)
    for i, code in enumerate(codes):
        if code < 0:
            print(f"hpsearch: worker {i} was killed by {signal.Signals(-code).name}; the other workers ran its "
                  "remaining trials, and its running trial is retried by a live worker or the next run",
                  file=sys.stderr)
        elif code not in (0, EXIT_INTERRUPTED):
            print(f"hpsearch: worker {i} exited with status {code}", file=sys.stderr)
    if any(code == EXIT_INTERRUPTED for code in codes):
        return EXIT_INTERRUPTED
    return max((1 if code < 0 else code for code in codes), default=0)  # a worker killed by a signal is a failure


class _Forward:
    """The command's handler under --workers: pass SIGINT (as itself) or SIGTERM and SIGHUP (as SIGTERM) on to the
    workers once (a terminal's Ctrl-C reaches them directly too); `name` is what stopped the run."""

    def __init__(self, procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
        self.procs = procs
        self.name: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.name is not None:
            return
        self.name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        for p in self.procs:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _worker(plan: Plan, index: int, gpu: str | None, threads: int, setting: tuple[str, dict[str, str]],
            parent: int, slots: Any) -> None:
    cwd, environ = setting
    for s in STOP_SIGNALS:  # a worker stops on them, unless its command was started to ignore them (nohup)
        signal.signal(s, signal.SIG_IGN if s in plan.ignored else _interrupt)
    threading.Thread(target=_die_with, args=(parent,), name="hpsearch-parent-watch", daemon=True).start()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA is initialised in this process (torch does it lazily)
    import torch

    torch.set_num_threads(threads)
    try:
        if hasattr(signal, "pthread_sigmask"):  # blocked in the forkserver it was forked from (prestart): one that
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # came meanwhile stops it here
        sys.exit(_optimize(plan, index, progress_bars=False, slots=slots))
    except KeyboardInterrupt:  # stopped while it started: no trial of its own yet; the command says it once
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        code = report(exc)  # the same one place as the command line's
        if code is None:
            raise
        sys.exit(code)


def _die_with(parent: int) -> None:
    """A worker's watch on the command that started it: once that process is gone (killed, even by SIGKILL), stop
    this worker as SIGTERM does, so that its trial is recorded and retried and nothing goes on training unowned."""
    while True:
        time.sleep(PARENT_POLL_S)
        try:
            os.kill(parent, 0)
        except (ProcessLookupError, PermissionError):  # gone (or its pid reused by another user's process)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _claimer(slots: Any, total: int | None, local: bool = False) -> Callable[[], bool]:
    """claim(): take the run's next trial from the shared count; False once all `total` are taken. `local`: this
    process is the run's only worker, and counts its trials itself."""
    if local and total is not None:
        slots = _Count()

    def claim() -> bool:
        if slots is None or total is None:
            return True
        with slots.get_lock():
            if slots.value >= total:
                return False
            slots.value += 1
            return True

    return claim


class _Count:
    """The shared count's interface for a run of one worker."""

    def __init__(self) -> None:
        self.value = 0

    def get_lock(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def _optimize(plan: Plan, index: int, progress_bars: bool, worker: Worker | None = None, slots: Any = None) -> int:
    """One worker: its resources (opened here unless given), then its trials: all of them alone, or, one of
    several, each trial it claims from the run's shared count (`slots`)."""
    started = time.perf_counter()
    with startup():
        import optuna

        from .progress import Progress
        from .trials import Trials
        from .worker import Worker

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print our own line per trial
        if worker is None:
            worker = Worker.open(plan.space, plan.url, plan.study_name, process=index, run=plan.run)
        tag = f"[w{index}] " if plan.workers > 1 else ""
        if plan.workers > 1:
            print(f"hpsearch: {tag}study {worker.study.study_name!r} ready on {worker.device} in "
                  f"{time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        if index == 0 and "auto" in plan.space.precisions():  # once per run: what auto does on this device
            from ..training.precision import describe_auto

            deterministic = bool(plan.space.sections["train"].fields.get("deterministic", False))
            print(f"hpsearch: {tag}{describe_auto(worker.device, deterministic)}", file=sys.stderr, flush=True)
        progress = Progress(plan.space, bars=progress_bars, prefix=tag)
        deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
        stop = Stop()
        trials = Trials(worker, fuse=plan.fuse, claim=_claimer(slots, plan.trials, local=slots is None),
                        deadline=deadline, progress=progress.epoch, finished=progress.finished, run=plan.run,
                        check=stop.check)
    previous = {s: signal.signal(s, stop) for s in _listened()}
    try:
        trials.run()
        stop.check()  # a signal while the last trial was told: the run was stopped all the same
    except KeyboardInterrupt as exc:
        progress.close()
        if plan.workers == 1:  # under --workers the command says it once (run)
            print(f"\nhpsearch: interrupted ({interruption(exc)}); {STOPPED}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except HpsearchError:
        progress.close()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        gc.unfreeze()
    return 0


@contextlib.contextmanager
def startup() -> Iterator[None]:
    """Start-up (the command's, a worker's) without garbage collection; what it made is then frozen.

    Importing torch and Optuna makes ~400k objects that live as long as the process. Python's full collections,
    triggered by that many new objects, walked them all again and again while finding next to nothing (6 of them,
    0.6 s of a 3.4-s start-up here), and every later collection of the older generations would walk them again.
    Frozen (gc.freeze), they are skipped; what the trials allocate is collected as usual. The caller unfreezes
    them when the search is over (gc.unfreeze), so that the end of the process collects everything. Collection
    is on when start-up ends, even in a worker forked from the forkserver, which imports with it off.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()  # the search collects, whoever paused collection before (the forkserver's preload)


STOPPED = ("the running trials are recorded as failed, the study is intact. Rerun the same command to continue (a "
           "stopped trial is retried from its last saved epoch).")


def _listened() -> tuple[int, ...]:
    """The stop signals this process listens to: all but those it was started to ignore (nohup, a background job),
    which stay ignored."""
    return tuple(s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """A worker's handler while it starts (no trial yet): stop at once."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


# Ctrl-C, a scheduler's stop, a closed terminal (no SIGHUP on Windows)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stop:
    """The signal handler of a running search: the first SIGINT, SIGTERM or SIGHUP is kept, and raised as
    KeyboardInterrupt (with its name) only at the search's safe points, `check()`: before a trial is asked and
    after each training step. So a signal never lands inside asking a trial, starting its heartbeat or telling it,
    and every trial open at that point is recorded (study/trials.py). Later signals are ignored: the stop is under
    way."""

    def __init__(self) -> None:
        self.name: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.name is None:
            self.name = signal.Signals(signum).name

    def check(self) -> None:
        if self.name is not None:
            raise KeyboardInterrupt(self.name)
