"""`hpsearch run`: open the study once, run its trials (study/runner.py), then say what the run did and what to do
next."""

from __future__ import annotations

import argparse
import gc
import math
import os
import shlex
import sys
import uuid
from typing import TYPE_CHECKING, Any

from .. import keys
from ..errors import EXIT_FAULT
from .locate import UsageError, load_args, precision_problem

if TYPE_CHECKING:
    import optuna

    from ..space import Space
    from ..study.worker import Worker


def cmd_run(args: argparse.Namespace) -> int:
    from ..study.runner import Plan, run, startup

    run_id = uuid.uuid4().hex  # on every trial this command starts (keys.RUN): the summary counts those
    args.workers = _worker_count(args)
    try:
        with startup():  # no garbage collection while torch, the data and the study load (see runner.startup)
            space, url, gpus, study, worker = _open_run(args, run_id)
        name = study.study_name
        trials = args.trials
        if trials is None and not space.params():  # every trial would be the same one
            trials = 1
            print("hpsearch: the space searches nothing: running 1 trial (--trials N repeats it)", file=sys.stderr)
        code = run(Plan(space, url, name, trials, args.timeout, args.workers, gpus, run_id, space.study.fuse), worker)
        outcome = _summary(study, space, args, url, run_id)
        if not sum(outcome.values()):  # started no trial: its mark must not move the next run's seed
            from ..study.seeds import forget
            from ..study.storage import open_storage

            storage = open_storage(url)
            forget(storage, storage.get_study_id_from_name(name), run_id)
    finally:
        gc.unfreeze()  # what start-up froze: collected again once the command ends
    if code == 0 and outcome.get("FAIL") and not outcome.get("COMPLETE") and not outcome.get("PRUNED"):
        print(f"hpsearch: every trial of this run failed ({outcome['FAIL']}); see the reasons above",
              file=sys.stderr)
        return EXIT_FAULT  # nothing learnt: a script or a scheduler must see that the run failed
    return code


def _open_run(args: argparse.Namespace,
              run_id: str) -> tuple[Space, str, tuple[str, ...], optuna.Study, Worker | None]:
    """The space, storage URL, GPUs and study of `hpsearch run`, with the data checked; for one worker, that
    worker's resources (its data loaded, its study: the one the summary reads). A changed space is refused before
    the data loads, and missing data before a study is created."""
    import optuna

    from ..study.runner import prestart
    from ..study.storage import open_if_exists, open_storage, redact, storage_url
    from ..study.studies import check_resumable, create_or_resume

    space = load_args(args)
    problem = precision_problem(space)
    if problem:
        raise UsageError(problem)
    prestart(args.workers)  # the workers' imports go on beside the data check below
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print our own line per trial
    url = storage_url(space, args.storage)
    gpus = _check_gpus(args.gpus)
    storage = open_if_exists(url, space.study)  # a bad URL or an unreachable server is said before anything loads,
    existing = check_resumable(space, url, args.study, storage) if storage is not None else None  # a changed space
    print(f"hpsearch: loading {space.fixed_data().dataset} ...", file=sys.stderr)
    worker = None
    if args.workers == 1:
        from ..study.worker import Worker

        worker = Worker.open(space, url, args.study, storage=storage, run=run_id, existing=existing)
        study = worker.study
    else:
        from ..training.rawdata import check

        check(space.fixed_data())  # each worker loads its own copy; check here (without torch) that there is one
        study = create_or_resume(space, url, args.study, storage=storage or open_storage(url, space.study),
                                 run=run_id, existing=existing)
    before = len(study.get_trials(deepcopy=False))
    workers = f"; {args.workers} workers" if args.workers > 1 else ""
    print(f"hpsearch: study {study.study_name!r} in {redact(url)} ({before} trials so far){workers}",
          file=sys.stderr)
    return space, url, gpus, study, worker


MAX_WORKERS_PER_CORE = 4  # more worker processes than this per core (or per GPU) only contend for it


def _worker_count(args: argparse.Namespace) -> int:
    """--workers as it will run: never more processes than trials, and not so many that they only contend."""
    limit = MAX_WORKERS_PER_CORE * max(os.cpu_count() or 1, len((args.gpus or "").split(",")))
    if args.workers > limit:
        raise UsageError(f"--workers {args.workers}: more than {limit} worker processes on this machine "
                         f"({os.cpu_count()} cores) would only wait for each other and for the study's storage; "
                         f"use at most {limit} here, or start workers on more machines (README: Scaling out)")
    if args.trials is not None and args.workers > args.trials:
        print(f"hpsearch: --workers {args.workers} for --trials {args.trials}: starting {args.trials} "
              f"worker{'s' if args.trials != 1 else ''}", file=sys.stderr)
        return int(args.trials)
    return int(args.workers)


def _check_gpus(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    import torch

    ids = tuple(t.strip() for t in text.split(","))
    available = torch.cuda.device_count()
    bad = [i for i in ids if not i.isdigit() or int(i) >= available]
    if bad and not available:
        raise UsageError(f"--gpus {text}: no CUDA device {', '.join(bad)} here (devices: none: torch sees no GPU "
                         "on this machine); drop --gpus to train on the CPU")
    if bad:
        raise UsageError(f"--gpus {text}: no CUDA device {', '.join(bad)} here (devices: "
                         f"{', '.join(map(str, range(available)))}); give ids among them, like 0,1")
    return ids


def _summary(study: Any, space: Any, args: argparse.Namespace, url: str, run_id: str) -> dict[str, int]:
    """Print what the run did, its best trial and the next commands; return this run's trials by state name."""
    import optuna

    from ..study.storage import redact

    everything = study.get_trials(deepcopy=False)
    trials = [t for t in everything if t.user_attrs.get(keys.RUN) == run_id]  # what this command started
    states = {s.name: sum(1 for t in trials if t.state == s) for s in optuna.trial.TrialState}
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n)
    print(f"\n{len(trials)} new trial{'s' if len(trials) != 1 else ''} ({counts or 'none'}); {len(everything)} in "
          "the study")
    if not trials and isinstance(study.sampler, optuna.samplers.GridSampler):
        points = math.prod(len(p.grid() or ()) for p in space.params().values())
        print(f"the grid's {points} points are all done: nothing more to run (a new --study runs the grid again)")
    try:
        best = study.best_trial
    except ValueError:
        print("no completed trial yet")
        return states
    print(f"best: trial {best.number}, {space.study.metric}={best.value:.4f} "
          f"(epoch {best.user_attrs.get(keys.BEST_EPOCH, '?')})")
    for key, value in best.params.items():
        print(f"  {key}: {value}")
    for line in next_steps(args, redact(url), study.study_name):
        print(line)
    return states


def next_steps(args: argparse.Namespace, url: str, study_name: str) -> list[str]:
    """The `next:` lines after a run, each a command that works when pasted: shell-quoted, and carrying what the
    user typed (--set, --data-root, --study, --storage, --workers, --gpus). The results verbs name the study by
    --storage and --study unless the space file alone names the same one."""
    q = shlex.quote
    by_file = not args.storage and not args.study and not any(o.startswith("study.") for o in args.overrides)
    where = q(args.space) if by_file else f"--storage {q(url)} --study {q(study_name)}"
    again = [q(args.space), *(f"--set {q(o)}" for o in args.overrides)]
    if args.data_root:
        again.append(f"--data-root {q(args.data_root)}")
    if args.study:
        again.append(f"--study {q(args.study)}")
    if args.storage:
        again.append(f"--storage {q(url)}")
    if args.workers > 1:
        again.append(f"--workers {args.workers}")
    if args.gpus:
        again.append(f"--gpus {q(args.gpus)}")
    if getattr(args, "fuse", None):
        again.append(f"--fuse {args.fuse}")
    return ["", "next:",
            f"  hpsearch report {where} --plots plots   # the best trials, a summary, plots",
            f"  hpsearch export {where} --out best.pt   # the best trial's checkpoint, for evaluate",
            f"  hpsearch dashboard {where}   # optuna-dashboard on the study, serving its checkpoints",
            f"  hpsearch run {' '.join(again)} --trials 20   # add trials"]
