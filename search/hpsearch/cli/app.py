"""The `hpsearch` command: the parser, `main`, and the verbs run, validate, sample and bench; the results verbs
(report, export, ...) are in results.py.

Bad input of any kind is an HpsearchError, which `main` turns into one message on stderr and its exit status
(errors.report, the same place every worker uses), never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import signal
import sys
import textwrap
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .. import __version__, keys
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, HpsearchError, interruption, report
from . import results as cli_results
from .locate import UsageError, study_name
from .results import positive_int

if TYPE_CHECKING:
    import optuna

    from ..space import Space
    from ..study.worker import Worker


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpsearch", formatter_class=_Formatter,
        description="Hyperparameter search for image classifiers: a YAML search space, an Optuna study, "
                    "on-device training.",
        epilog="example:\n  hpsearch run spaces/smoke.yaml --trials 10\n\n"
               "Run `hpsearch VERB --help` for a verb's options and a worked example.")
    parser.add_argument("--version", action="version", version=f"hpsearch {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    run = verbs.add_parser(
        "run", formatter_class=_Formatter, help="search: sample, train and prune trials into a study",
        description="Sample configurations from SPACE, train each, prune poor ones early, and record everything "
                    "in the study's storage. Rerunning the same command resumes the study and adds trials.",
        epilog=textwrap.dedent("""\
            examples:
              hpsearch run spaces/smoke.yaml --trials 10
              hpsearch run spaces/cifar100.yaml --trials 50 --data-root ~/datasets
              hpsearch run spaces/cifar100.yaml --trials 1 --set train.epochs=1 --set data.train_limit=5000 \\
                  --study cifar100-quick
              hpsearch run spaces/cifar100.yaml --trials 40 --workers 4 --gpus 0,1
              hpsearch run spaces/cifar100.yaml --storage postgresql://user@db-host/hpsearch --trials 20"""))
    _space_args(run)
    run.add_argument("--trials", type=positive_int, default=None, metavar="N",
                     help="trials to add in this run (default: no limit; stop with --timeout or Ctrl-C)")
    run.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                     help="stop starting new trials after this many seconds")
    run.add_argument("--storage", metavar="URL", help="RDB URL (default: study.storage, else "
                                                      "sqlite:///studies/<name>.db)")
    run.add_argument("--study", metavar="NAME", type=study_name,
                     help="study name (default: study.name, else the file's name)")
    run.add_argument("--workers", type=positive_int, default=1, metavar="N",
                     help="worker processes on this study (default 1); --trials is the total across them")
    run.add_argument("--gpus", metavar="IDS", help="CUDA devices to deal the workers over, e.g. 0,1 "
                                                    "(several workers per GPU allowed)")
    run.add_argument("--fuse", type=positive_int, default=None, metavar="K",
                     help="train trials in groups of up to K that share their architecture, on shared batches (one "
                          "fused model on a GPU; default: study.fuse, else 1: each trial alone); see the README's "
                          "Fused trials")

    validate = verbs.add_parser(
        "validate", formatter_class=_Formatter, help="check space files and report every problem",
        description="Check each SPACE file; print every problem with file, line, key path, the bad value and "
                    "the valid options. Exit status 0 when all are valid, 2 otherwise.",
        epilog="example:\n  hpsearch validate spaces/*.yaml")
    validate.add_argument("spaces", nargs="+", metavar="SPACE")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a value before checking (repeatable)")

    sample = verbs.add_parser(
        "sample", formatter_class=_Formatter, help="print sampled configurations without training",
        description="Draw K configurations from SPACE with its sampler and print each one's searched values and "
                    "its model's parameter count. Nothing is trained or stored.",
        epilog="example:\n  hpsearch sample spaces/cifar100.yaml -n 3\n  hpsearch sample spaces/smoke.yaml "
               "-n 1 --full")
    _space_args(sample, data_root=False)
    sample.add_argument("-n", type=positive_int, default=5, metavar="K", help="how many (default 5)")
    sample.add_argument("--full", action="store_true", help="print every field of each configuration")

    bench = verbs.add_parser(
        "bench", formatter_class=_Formatter, help="benchmark the training loop and a run's overhead",
        description="Train the same model at the same batch size for a fixed number of steps with hpsearch's loop "
                    "and with the plain torchvision loop (PIL transforms, DataLoader workers, fp32), and print "
                    "train images/s of each and their ratio. With --overhead SPACE, run that search instead and "
                    "report start-up time, trials/hour and the share of time outside epochs for each --workers count.",
        epilog=textwrap.dedent("""\
            examples:
              hpsearch bench --data-root ~/datasets --batch-size 512
              hpsearch bench --models cnn6 --steps 2 --warmup 1 --batch-size 16      # seconds, synthetic data
              hpsearch bench --overhead spaces/smoke.yaml --trials 40 --workers 1,2,4
              hpsearch bench --suite gpu --out gpu-check --data-root DIR   # every GPU figure, under 8 minutes
              hpsearch bench --suite gpu --out /tmp/dry --dry-run           # the same steps, tiny, any device"""))
    bench.add_argument("--models", default="cnn6,resnet18", help="comma-separated: smoke, cnn6, resnet18")
    bench.add_argument("--batch-size", type=positive_int, default=512)
    bench.add_argument("--steps", type=positive_int, default=20, help="timed steps per loop (default 20)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    bench.add_argument("--repeats", type=positive_int, default=3,
                       help="alternate the two loops (or the --workers counts) this many times and take medians "
                            "(default 3)")
    bench.add_argument("--data-root", metavar="DIR", help="folder with cifar100.npz or cifar-100-python/ "
                                                          "(default: synthetic CIFAR-shaped data)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    bench.add_argument("--loader-workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="DataLoader workers of the plain loop (default: min(4, cores))")
    bench.add_argument("--overhead", metavar="SPACE", help="measure a search's start-up and overhead instead")
    bench.add_argument("--trials", type=positive_int, default=20, help="with --overhead: trials per run")
    bench.add_argument("--workers", default="1", help="with --overhead: worker counts to try, e.g. 1,2,4")
    bench.add_argument("--suite", choices=("gpu",), help="gpu: the device check, every GPU figure in one run "
                                                         "(docs/BENCHMARKS.md), written under --out")
    bench.add_argument("--out", metavar="DIR", help="with --suite: the folder for gpu-check.json and .md")
    bench.add_argument("--dry-run", action="store_true", help="with --suite: every step tiny, on any device")
    cli_results.add_parsers(verbs, _Formatter)
    return parser


def _space_args(p: argparse.ArgumentParser, data_root: bool = True) -> None:
    p.add_argument("space", metavar="SPACE", help="search-space YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any value of the space, e.g. --set train.epochs=5 (repeatable)")
    if data_root:
        p.add_argument("--data-root", metavar="DIR", help="folder holding cifar100.npz or cifar-100-python/ "
                                                          "(overrides data.root)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops a command as Ctrl-C does, from the start
    try:
        return int(_VERBS[args.verb](args))
    except HpsearchError as exc:  # anything else is a bug, and keeps its traceback
        return report(exc) or EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # before a search runs (it handles its own) or in any other verb
        print(f"\nhpsearch: interrupted ({interruption(exc)}); nothing was left half-written (a study keeps every "
              "finished trial)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hpsearch sample ... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush does not fail again
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


# ----------------------------------------------------------------------------------------------------------------
# Verbs


def _load(args: argparse.Namespace) -> Any:
    from ..study.samplers import load_space

    overrides: list[Any] = list(args.overrides)
    if getattr(args, "data_root", None):
        overrides.append((f"data.root={json.dumps(args.data_root)}", f"--data-root {args.data_root}"))
    if getattr(args, "fuse", None):
        overrides.append((f"study.fuse={args.fuse}", f"--fuse {args.fuse}"))
    return load_space(args.space, overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..space import SpaceError
    from ..study.samplers import load_space

    bad = 0
    for path in args.spaces:
        try:
            space = load_space(path, args.overrides)
        except SpaceError as exc:
            bad += 1
            print(exc, file=sys.stderr)
            continue
        params = space.params()
        print(f"{path}: valid; study {space.study.name!r}, {len(params)} searched: {', '.join(params) or 'none'}")
    if bad:
        print(f"hpsearch: {bad} of {len(args.spaces)} space files have problems", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import optuna
    import yaml

    from ..space import suggest
    from ..space.registry import ConfigError, num_classes
    from ..study.samplers import make_sampler
    from ..training.models import build_model, count_parameters
    from ..training.rawdata import class_names

    space = _load(args)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failure reaches main as itself, not as Optuna's log too
    study = optuna.create_study(direction=space.study.direction, sampler=make_sampler(space))

    def show(trial: optuna.Trial) -> float:
        config = suggest(trial, space)
        classes = num_classes(config)  # None for an image folder: its train/ class folders say
        classes = classes if classes is not None else len(class_names(config.data))
        try:
            model = build_model(config.model, classes, config)
        except ConfigError as exc:  # a rule validate leaves to the trial that draws the breaking value
            drawn = ", ".join(f"{key}={value}" for key, value in trial.params.items())
            raise UsageError(f"{space.source}: sample {trial.number + 1}: {exc} (drawn: {drawn}); a trial that "
                             "draws this fails with these words and the search goes on; narrow the searched values "
                             "to those that work") from None
        n_params = count_parameters(model)
        print(f"# sample {trial.number + 1}: {n_params:,} parameters")
        shown = config.to_dict() if args.full else trial.params
        print(yaml.safe_dump(shown, sort_keys=False, default_flow_style=False).rstrip() or "{}  # nothing searched")
        raise optuna.TrialPruned  # told as pruned: keeps the sampler's state moving, and adds nothing to learn from

    # Inside optimize, a grid sampler may stop the study once every combination is drawn (fewer than --n).
    study.optimize(show, n_trials=args.n)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..study.runner import Plan, run, startup
    from ..study.storage import artifact_dir

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
        _summary(study, space, args, url, run_id, artifact_dir(url, name))  # study.trials reads the storage anew
    finally:
        gc.unfreeze()  # what start-up froze: collected again once the command ends
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

    space = _load(args)
    prestart(args.workers)  # the workers' imports go on beside the data check below
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print our own line per trial
    url = storage_url(space, args.storage)
    gpus = _check_gpus(args.gpus)
    storage = open_if_exists(url, space.study)  # a bad URL or an unreachable server is said before anything loads,
    if storage is not None:
        check_resumable(space, url, args.study, storage)  # and so is a changed space
    print(f"hpsearch: loading {space.fixed_data().dataset} ...", file=sys.stderr)
    worker = None
    if args.workers == 1:
        from ..study.worker import Worker

        worker = Worker.open(space, url, args.study, storage=storage, run=run_id)
        study = worker.study
    else:
        from ..training.rawdata import check

        check(space.fixed_data())  # each worker loads its own copy; check here (without torch) that there is one
        study = create_or_resume(space, url, args.study, storage=storage or open_storage(url, space.study),
                                 run=run_id)
    before = len(study.trials)
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


def _summary(study: Any, space: Any, args: argparse.Namespace, url: str, run_id: str, artifacts: Any) -> None:
    import optuna

    from ..study.storage import redact

    everything = study.trials
    trials = [t for t in everything if t.user_attrs.get(keys.RUN) == run_id]  # what this command started
    states = {s.name: sum(1 for t in trials if t.state == s) for s in optuna.trial.TrialState}
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n)
    print(f"\n{len(trials)} new trial{'s' if len(trials) != 1 else ''} ({counts or 'none'}); {len(everything)} in "
          "the study")
    try:
        best = study.best_trial
    except ValueError:
        print("no completed trial yet")
        return
    print(f"best: trial {best.number}, {space.study.metric}={best.value:.4f} "
          f"(epoch {best.user_attrs.get(keys.BEST_EPOCH, '?')})")
    for key, value in best.params.items():
        print(f"  {key}: {value}")
    for line in next_steps(args, redact(url), study.study_name, str(artifacts)):
        print(line)


def next_steps(args: argparse.Namespace, url: str, study_name: str, artifacts: str) -> list[str]:
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
            f"  optuna-dashboard {q(url)} --artifact-dir {q(artifacts)}",
            f"  hpsearch run {' '.join(again)} --trials 20   # add trials"]


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import bench
    from ..study.samplers import load_space

    if args.suite:
        from ..bench import suite

        if not args.out:
            raise UsageError("--suite gpu needs --out DIR, the folder for gpu-check.json and gpu-check.md")
        budgets = {k: float(suite.DRY_BUDGET if args.dry_run else v) for k, v in suite.BUDGETS.items()}
        ctx = suite.Context(Path(args.out), args.dry_run, args.data_root, args.device,
                            str(suite.shipped_space("cifar100.yaml")), budgets)
        record = suite.run_suite(ctx, out=lambda line: print(line, file=sys.stderr, flush=True))
        print(suite.markdown(record), end="")
        return 0 if all(e["status"] in ("ok", "skipped") for e in record["steps"].values()) else 1

    if args.overhead:
        try:
            counts = [int(w) for w in args.workers.split(",")]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            raise UsageError(f"--workers {args.workers}: expected counts of at least 1, like 1,2,4")
        load_space(args.overhead)  # a bad space is reported here, once, not by every run below
        bench.overhead(args.overhead, args.trials, counts, max(1, args.repeats))
        return 0
    models = [m.strip() for m in args.models.split(",")]
    unknown = [m for m in models if m not in bench.MODELS]
    if unknown:
        raise UsageError(f"--models: unknown {', '.join(unknown)}; known: {', '.join(bench.MODELS)}")
    bench.compare(models, args.data_root, args.batch_size, args.steps, max(0, args.warmup), args.device,
                  max(0, args.loader_workers), args.repeats)
    return 0


_VERBS = {"run": cmd_run, "validate": cmd_validate, "sample": cmd_sample, "bench": cmd_bench,
          **cli_results.VERBS}


if __name__ == "__main__":
    sys.exit(main())
