"""The `hpsearch` command: the parser, `main`, and the verbs validate, sample and bench; `run` is in run.py, the
results verbs (report, export, ...) in results.py.

Bad input of any kind is an HpsearchError, which `main` turns into one message on stderr and its exit status
(errors.report, the same place every worker uses), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, HpsearchError, interruption, report
from . import results as cli_results
from .args import positive_int
from .locate import UsageError, load_args, precision_problem, study_name
from .run import cmd_run

if TYPE_CHECKING:

    pass


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
    # SIGTERM and SIGHUP (a closed terminal) stop a command as Ctrl-C does, from the start
    previous = {s: signal.signal(s, _interrupt) for s in _TERMINATING if signal.getsignal(s) is not signal.SIG_IGN}
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
        for s, handler in previous.items():
            signal.signal(s, handler)


def entry() -> None:
    """The `hpsearch` console script: main, then exit with its status. An interrupted command has said so once;
    a signal that comes while the process exits is ignored, so no exit handler is cut short with a traceback."""
    code = main()
    if code == EXIT_INTERRUPTED:
        for s in (signal.SIGINT, *_TERMINATING):
            signal.signal(s, signal.SIG_IGN)
    sys.exit(code)


_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


# ----------------------------------------------------------------------------------------------------------------
# Verbs


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
        problem = precision_problem(space)
        if problem:
            bad += 1
            print(f"{path}: {problem}", file=sys.stderr)
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

    space = load_args(args)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failure reaches main as itself, not as Optuna's log too
    study = optuna.create_study(direction=space.study.direction, sampler=make_sampler(space))

    grid = isinstance(study.sampler, optuna.samplers.GridSampler)
    for _ in range(args.n):
        if grid and study.sampler.is_exhausted(study):  # type: ignore[union-attr]
            break  # every combination of the grid was drawn (fewer than -n)
        trial = study.ask()
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
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # keeps the sampler moving, adds nothing to learn
    return 0


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
