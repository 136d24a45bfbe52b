"""From a command line to a space, a study, one of its trials, and that trial's checkpoint file: the shared helper of
every verb that takes SPACE or reads a study (SPACE, or --storage URL --study NAME). Failures raise errors that main
reports in one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import keys
from ..errors import HpsearchError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from ..space import Space


class UsageError(HpsearchError):
    """A command line that cannot work as given (no study named, unwritable --out, port taken); str() says why."""


def study_name(text: str) -> str:
    """argparse type of --study: the rule study.name follows (letters, digits, '_', '.', '-'; no path)."""
    from ..space.rules import study_name_problem

    problem = study_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def study_args(p: argparse.ArgumentParser) -> None:
    """SPACE, or --storage URL --study NAME: how every verb that reads a study names it."""
    p.add_argument("space", nargs="?", metavar="SPACE", help="search-space YAML file whose study: section names "
                                                             "the storage and study")
    p.add_argument("--storage", metavar="URL", help="RDB URL (default: the space's study.storage, else "
                                                    "sqlite:///studies/<name>.db)")
    p.add_argument("--study", metavar="NAME", type=study_name, help="study name (default: the space's study.name)")


def locate(args: argparse.Namespace) -> tuple[str, str]:
    """(storage URL, study name) from SPACE and/or --storage/--study; --storage alone picks its only study."""
    from ..study.samplers import load_space
    from ..study.storage import DEFAULT_DIR, open_storage, redact, storage_url

    if args.space:
        space = load_space(args.space)
        url, name = storage_url(space, args.storage), args.study or space.study.name
    elif args.study:
        url, name = args.storage or f"sqlite:///{DEFAULT_DIR / (args.study + '.db')}", args.study
    elif args.storage:
        url = args.storage
        _sqlite_exists(url)
        names = open_storage(url).get_all_studies()
        if len(names) != 1:
            listed = ", ".join(s.study_name for s in names) or "none"
            raise UsageError(f"{redact(url)} holds {len(names)} studies ({listed}); name one with --study NAME")
        name = names[0].study_name
    else:
        raise UsageError("name the study: give SPACE (its study: section names storage and study), or "
                         "--storage URL --study NAME")
    _sqlite_exists(url)
    return url, name


def _sqlite_exists(url: str) -> None:
    """A read must not create an empty database file where the user mistyped a path."""
    from ..study.storage import StudyError

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        if not path.is_file():
            raise StudyError(f"no study database at {path} (from {url}); run `hpsearch run SPACE` first, or pass "
                             "--storage with the URL the search used")


def open_study(args: argparse.Namespace) -> tuple[optuna.Study, str]:
    from ..study.studies import load

    url, name = locate(args)
    study = load(url, name)
    if len(study.directions) != 1:
        from ..study.storage import StudyError, redact

        raise StudyError(f"study {name!r} in {redact(url)} has {len(study.directions)} objectives; hpsearch reads "
                         "single-objective studies (for this one, optuna.load_study(...).best_trials)")
    return study, url


def chosen_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The best completed trial, or trial `number`, which must exist and be complete."""
    from optuna.trial import TrialState

    from ..study.storage import StudyError

    complete = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if number is None:
        try:
            return study.best_trial
        except ValueError:
            raise StudyError(f"study {study.study_name!r} has no completed trial yet "
                             f"({len(study.trials)} trials); run more with `hpsearch run SPACE`") from None
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    shown = ", ".join(map(str, complete[:30])) + (" ..." if len(complete) > 30 else "") or "none"
    if not found:
        raise StudyError(f"study {study.study_name!r} has no trial {number} (it has trials 0 to "
                         f"{len(study.trials) - 1}); completed trials: {shown}")
    trial = found[0]
    if trial.state != TrialState.COMPLETE:
        reason = trial.user_attrs.get(keys.FAIL_REASON)
        raise StudyError(f"trial {number} is {trial.state.name.lower()}{f' ({reason})' if reason else ''}, not "
                         f"complete, so it has no final model; completed trials: {shown}")
    return trial


def checkpoint_file(study: optuna.Study, url: str, trial: FrozenTrial) -> Path:
    """The trial's kept checkpoint in the artifact store; CheckpointError saying which trials have one if not."""
    from ..results.report import ranked
    from ..study.storage import artifact_dir
    from ..training.checkpoint import CheckpointError

    folder = artifact_dir(url, study.study_name)
    kept = [t.number for t, _ in ranked(study) if t.state.name == "COMPLETE"
            and (folder / str(t.user_attrs.get(keys.CHECKPOINT, "-"))).is_file()]
    have = f"trials with a checkpoint, best first: {', '.join(map(str, kept)) or 'none'}"
    fix = (f"fix: --trial {kept[0]}, or `hpsearch retrain` to train trial {trial.number}'s configuration again"
           if kept else f"fix: `hpsearch retrain` trains trial {trial.number}'s configuration again")
    artifact = trial.user_attrs.get(keys.CHECKPOINT)
    if not artifact and keys.CHECKPOINT_ERROR in trial.user_attrs:  # it ranked, but its file could not be stored
        raise CheckpointError(f"trial {trial.number} has no checkpoint: when it finished, storing it failed "
                              f"({trial.user_attrs[keys.CHECKPOINT_ERROR]}); {have}\n{fix}")
    if not artifact:
        raise CheckpointError(f"trial {trial.number} has no checkpoint: when it finished it was not among the best "
                              f"study.keep_checkpoints trials (or keep_checkpoints is 0); {have}\n{fix}")
    path = folder / str(artifact)
    if not path.is_file():
        raise CheckpointError(f"trial {trial.number}'s checkpoint {path} was removed: better trials pushed it out of "
                              f"the best study.keep_checkpoints (or the file was deleted); {have}\n{fix}")
    return path


def load_args(args: argparse.Namespace) -> Any:
    """The space of a verb that takes SPACE, with its --set, --data-root and --fuse applied (checked whole)."""
    from ..study.samplers import load_space

    overrides: list[Any] = list(args.overrides)
    if getattr(args, "data_root", None):
        overrides.append((f"data.root={json.dumps(args.data_root)}", f"--data-root {args.data_root}"))
    if getattr(args, "fuse", None):
        overrides.append((f"study.fuse={args.fuse}", f"--fuse {args.fuse}"))
    return load_space(args.space, overrides)


def precision_problem(space: Space) -> str | None:
    """A precision the space's trials cannot train in on this machine (fp16 on a CPU): validate and run refuse it.
    Only a space that asks for fp16 imports torch (to see the device): validate and a run's parent stay light."""
    if "fp16" not in space.precisions():
        return None
    from ..training.precision import space_problem

    return space_problem(space)
