"""The `hpsearch` verbs that read a finished (or running) search: report, export, evaluate, retrain, dashboard, schema.

Every verb that reads a study takes SPACE (its `study:` section names storage and study) or `--storage URL --study
NAME`: locate.py is the shared helper. Bad input raises an HpsearchError (UsageError, StudyError, CheckpointError,
DataError); main turns each into one message and its exit status.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import keys
from ..errors import EXIT_INTERRUPTED, interruption
from .args import port, positive_int, trial_number
from .locate import UsageError, checkpoint_file, chosen_trial, locate, open_study, study_args

# The same as report.FORMATS and export.EXPORT_FORMATS (tested), here so that `hpsearch --help` loads no torch.
REPORT_FORMATS = ("table", "csv", "markdown", "html")
CHECKPOINT_SUFFIXES = (".pt", ".pth")  # export takes such a file in place of SPACE: a checkpoint to convert
EXPORT_FORMATS = ("checkpoint", "torchscript", "exported")


def add_parsers(verbs: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add the results verbs to the `hpsearch` subparsers."""

    def verb(name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, formatter_class=formatter, help=help, description=description,  # type: ignore
                                epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "))

    report = verb("report", "the best trials as a table, with a summary, importances and plots",
                  "The best trials of a study as a pandas table (rank, trial, state, the metric, every parameter, "
                  "epochs, best epoch, seconds, images/s, parameter count, whether its checkpoint is kept), under a "
                  "summary: trials by state, the best value, total time, and the epochs pruning saved. Completed "
                  "trials rank first, then pruned ones by the best epoch they reached.", """
                  hpsearch report spaces/smoke.yaml
                  hpsearch report spaces/smoke.yaml --top 5 --format csv --out best.csv
                  hpsearch report spaces/smoke.yaml --format html --out report.html --plots plots/
                  hpsearch report --storage sqlite:///studies/smoke.db --study smoke --format markdown""")
    study_args(report)
    report.add_argument("--top", type=positive_int, default=10, metavar="K", help="trials to list (default 10)")
    report.add_argument("--format", choices=REPORT_FORMATS, default="table",
                        help="table (default), csv (the table alone, for pandas.read_csv), markdown, or html "
                             "(a standalone page with the plots embedded)")
    report.add_argument("--out", metavar="PATH", help="write the report here instead of to stdout")
    report.add_argument("--plots", metavar="DIR", help="also write the plots as PNG files into DIR")

    export = verb("export", "write the best (or a chosen) trial's checkpoint as a file",
                  "Copy a completed trial's best-epoch checkpoint out of the study's artifact store: a self-describing "
                  "file (state dict, TrialConfig, metric, trial number, class names) that hpsearch.load_checkpoint "
                  "rebuilds without the space file. --format exported (torch.export, recommended) or torchscript "
                  "(torch.jit, which newer torch deprecates) writes a model that runs with torch alone: float NCHW "
                  "images in 0..1 in, logits out.", """
                  hpsearch export spaces/smoke.yaml --out best.pt
                  hpsearch export spaces/smoke.yaml --trial 7 --out trial7.pt
                  hpsearch export spaces/smoke.yaml --format torchscript --out best.ts
                  hpsearch export spaces/smoke.yaml --format exported --out best.pt2
                  hpsearch export final.pt --format exported --out final.pt2   # a checkpoint file, e.g. retrain's""")
    study_args(export)
    export.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    export.add_argument("--trial", type=trial_number, metavar="N", help="this trial (default: the best one)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="checkpoint",
                        help="checkpoint (default; for load_checkpoint, evaluate), exported (torch.export; name the "
                             "file .pt2), or torchscript (torch.jit, deprecated by newer torch)")

    evaluate = verb("evaluate", "test-set accuracy of an exported checkpoint",
                    "Top-1 and top-5 accuracy (and per class with --per-class) of a checkpoint on its data set's test "
                    "split. The only verb that reads the test set; run it once, on the model you chose.", """
                    hpsearch evaluate best.pt
                    hpsearch evaluate best.pt2                # an exported model (or a .ts) reads the same way
                    hpsearch evaluate best.pt --data-root ~/datasets --per-class""")
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a file written by export (any --format) or "
                                                                   "retrain")
    evaluate.add_argument("--data-root", metavar="DIR", help="folder holding the data set (default: the data.root "
                                                             "the trial was trained with)")
    evaluate.add_argument("--per-class", action="store_true", help="also print each class's accuracy")
    evaluate.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda:N")
    evaluate.add_argument("--batch-size", type=positive_int, metavar="N", help="images per forward pass")

    retrain = verb("retrain", "train the best configuration on train+validation and test it",
                   "The usual last step after a search: train the best (or a chosen) completed trial's configuration "
                   "on the training and validation images together, for all its epochs, keep the final weights, "
                   "report test accuracy and write the model as a checkpoint. A search run short (a subset, few "
                   "epochs) is finished with --all-images and --epochs.",
                   """
                   hpsearch retrain spaces/smoke.yaml --out final.pt
                   hpsearch retrain spaces/cifar100.yaml --out final.pt --data-root ~/datasets --trial 12
                   hpsearch retrain spaces/fashion_mnist.yaml --out fashion.pt --all-images --epochs 30
                   hpsearch retrain spaces/seeds/cifar100_vgg.yaml --out row.pt --trial 4 --test-every-epoch""")
    study_args(retrain)
    retrain.add_argument("--out", required=True, metavar="PATH", help="the checkpoint to write")
    retrain.add_argument("--trial", type=trial_number, metavar="N", help="this trial (default: the best one)")
    retrain.add_argument("--data-root", metavar="DIR", help="folder holding the data set (default: as searched)")
    retrain.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: as searched)")
    retrain.add_argument("--epochs", type=positive_int, metavar="N",
                         help="train for N epochs (default: the trial's); schedules that span the training "
                              "(cosine, onecycle, linear) span the N, step milestones stay at their epochs")
    retrain.add_argument("--all-images", action="store_true",
                         help="train on every training image, not the search's data.train_limit subset")
    retrain.add_argument("--test-every-epoch", action="store_true",
                         help="also measure the test set after every epoch and print its curve, maximum and final "
                              "value (the maximum is course notes' optimistic protocol; the final value is ours)")

    dashboard = verb("dashboard", "serve optuna-dashboard on the study, with its checkpoints",
                     "Serve optuna-dashboard on the study alone (no other study of its storage is listed or "
                     "reachable) with its artifact store, so each kept trial checkpoint is listed and downloadable on "
                     "its trial's page. Safe to leave open while `hpsearch run` adds trials. Binds loopback unless "
                     "--host says otherwise, answers only requests addressed to that name, and is read-only unless "
                     "--allow-edits.", """
                     hpsearch dashboard spaces/smoke.yaml
                     hpsearch dashboard spaces/smoke.yaml --port 8081
                     ssh -L 8080:127.0.0.1:8080 gpu-box   # then, on gpu-box: hpsearch dashboard SPACE""")
    study_args(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dashboard.add_argument("--port", type=port, default=8080, help="port (default 8080; 0 picks a free one)")
    dashboard.add_argument("--allow-edits", action="store_true",
                           help="let the dashboard change and delete studies, trials and notes (default: read-only)")

    schema = verb("schema", "print the JSON Schema of the space format, for editors",
                  "Print a JSON Schema (draft-07) of the search-space YAML. Point your editor's YAML plugin at it "
                  "for completion, hover text and errors as you type (see the README).", """
                  hpsearch schema --out space.schema.json
                  hpsearch schema | python -m json.tool | head""")
    schema.add_argument("--out", metavar="PATH", help="write it here instead of to stdout")


# ----------------------------------------------------------------------------------------------------------------
# Verbs

# A file name that fits each verb's --out (with its --format), for the examples of its messages.
OUT_EXAMPLES = {("report", "table"): "report.txt", ("report", "csv"): "best.csv", ("report", "markdown"): "report.md",
                ("report", "html"): "report.html", ("export", "checkpoint"): "best.pt",
                ("export", "torchscript"): "best.ts", ("export", "exported"): "best.pt2", ("retrain", None): "final.pt",
                ("schema", None): "space.schema.json"}

Done = list[str]  # the files a verb has written so far, each whole, in words ("the export best.pt2")


def says_what_was_done(verb: Callable[[argparse.Namespace, Done], int]) -> Callable[[argparse.Namespace], int]:
    """The verb, made to say what it had finished when Ctrl-C (or SIGTERM) lands after its output was written: that
    output stands whole, and exit status 130 tells a script that the command was stopped. Ctrl-C before any output
    is main's to report."""

    @functools.wraps(verb)
    def run(args: argparse.Namespace) -> int:
        done: Done = []
        try:
            return verb(args, done)
        except KeyboardInterrupt as exc:
            if not done:
                raise
            print(f"\nhpsearch: interrupted ({interruption(exc)}) after writing {', '.join(done)}; nothing was "
                  "left half-written", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


@says_what_was_done
def cmd_report(args: argparse.Namespace, done: Done) -> int:
    from ..results import report
    from ..study.storage import artifact_dir

    study, url = open_study(args)
    if args.out:
        _check_writable(args.out, out_example(args))
    frame = report.trials_frame(study, args.top, artifact_dir(url, study.study_name))
    imps, note = report.importances(study)
    images: dict[str, bytes] = {}
    skipped: dict[str, str] = {}
    if args.plots or args.format == "html":
        import matplotlib

        matplotlib.use("Agg")  # files only; never a window
        from ..results import plots

        figures, skipped = plots.make_plots(study)
        images = {name: plots.png(figure) for name, figure in figures.items()}
        if args.plots:
            _save_plots(images, args.plots, done)
            for name, reason in skipped.items():
                print(f"hpsearch: no {name}.png: {reason}", file=sys.stderr)
    text = report.render(args.format, frame, report.summarize(study, url), imps, note, images, skipped)
    _emit(text, args.out, out_example(args))
    if args.out:
        done.append(f"the report {args.out}")
    return 0


def _save_plots(images: dict[str, bytes], folder: str, done: Done) -> None:
    """Each plot written whole into folder, said as it is; one message when the folder cannot take them."""
    from ..results import plots
    from ..results.files import FULL, disk_full

    def written(path: Path) -> None:
        print(f"hpsearch: wrote {path}", file=sys.stderr)
        done.append(str(path))

    try:
        plots.save(images, folder, written)
    except OSError as exc:  # the folder cannot be made
        if exc.errno in FULL:
            raise disk_full(folder, exc, "--plots") from None
        raise UsageError(f"cannot write plots into {folder}: {exc.strerror or exc}; choose a writable --plots "
                         "folder") from None


@says_what_was_done
def cmd_export(args: argparse.Namespace, done: Done) -> int:
    from ..results.export import export
    from ..results.report import metric_name
    from ..training.checkpoint import load_payload

    if args.space and Path(args.space).suffix.lower() in CHECKPOINT_SUFFIXES:  # a file, e.g. retrain's final.pt
        if args.trial is not None or args.storage or args.study:
            raise UsageError(f"{args.space} is a checkpoint file: give it alone, without --trial, --storage or "
                             "--study")
        source = Path(args.space)
        payload = load_payload(source)
        _check_writable(args.out, out_example(args))
        path = export(source, args.out, args.format)
        done.append(f"the export {path}")
        origin = f"trial {payload.get('trial')} of study {payload.get('study')!r}, " \
            if payload.get("trial") is not None else ""
        print(f"wrote {path}: {origin}{payload.get('metric')}={float(payload.get('value') or 0):.4f}, from "
              f"{source}, as {args.format}")
    else:
        study, url = open_study(args)
        trial = chosen_trial(study, args.trial)
        source = checkpoint_file(study, url, trial)
        _check_writable(args.out, out_example(args))
        path = export(source, args.out, args.format)
        done.append(f"the export {path}")
        metric = metric_name(study)
        print(f"wrote {path}: trial {trial.number} of study {study.study_name!r}, {metric}={trial.value:.4f} "
              f"(epoch {trial.user_attrs.get(keys.BEST_EPOCH, '?')}), as {args.format}")
    if args.format == "exported" and path.suffix != ".pt2":
        print("hpsearch: note: torch.export.load expects a .pt2 file name and warns on others", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..results.evaluation import score_test_set
    from ..results.export import load_any
    from ..training.models import count_parameters

    if Path(args.checkpoint).suffix.lower() in (".yaml", ".yml"):
        raise UsageError(f"{args.checkpoint} is a space file; evaluate takes a checkpoint. Fix: hpsearch export "
                         f"{args.checkpoint} --out best.pt (add --trial N for another trial), then hpsearch "
                         "evaluate best.pt")
    ckpt = load_any(args.checkpoint)
    scores = score_test_set(ckpt, args.data_root, args.device, args.per_class, args.batch_size)
    origin = f"trial {ckpt.trial} of study {ckpt.study!r}" if ckpt.trial is not None else "a model"
    trained = " trained on train+val" if ckpt.payload.get("trained_on") == "train+val" else ""
    epoch = f" at epoch {ckpt.epoch}" if ckpt.epoch else ""
    print(f"checkpoint {args.checkpoint}: {origin}{trained}, {ckpt.metric}={ckpt.value:.4f}{epoch}; "
          f"{ckpt.config.model.name}, {count_parameters(ckpt.model):,} parameters")
    print(f"test set: {ckpt.config.data.dataset}, {scores.images:,} images, on {scores.device}")
    print(f"  top-1 accuracy  {scores.top1:.4f}\n  top-5 accuracy  {scores.top5:.4f}\n  loss            "
          f"{scores.loss:.4f}")
    if scores.per_class is not None:
        table = pd.DataFrame(scores.per_class, columns=["class", "images", "correct"])
        table["accuracy"] = (table["correct"] / table["images"].clip(lower=1)).map("{:.4f}".format)
        print("\nper class:\n" + table.to_string(index=False))
    return 0


@says_what_was_done
def cmd_retrain(args: argparse.Namespace, done: Done) -> int:
    from ..results.evaluation import as_trained, retrain, stretched, with_data
    from ..results.files import write_torch
    from ..study.studies import trial_config

    study, url = open_study(args)
    trial = chosen_trial(study, args.trial)
    config = trial_config(study, trial)  # before any file is written: a plain Optuna study has none
    _check_writable(args.out, out_example(args))
    config = with_data(config, args.data_root, args.device)
    precision = as_trained(config, trial.user_attrs.get(keys.PRECISION))
    config, changed = stretched(config, args.epochs, args.all_images)
    epochs = config.train.epochs
    how = f" ({'; '.join(changed)})" if changed else ""
    how += f" in {precision}, as the trial trained" if precision else ""
    print(f"hpsearch: retraining trial {trial.number} of study {study.study_name!r} ({config.metric}="
          f"{trial.value:.4f}) on train+validation for {epochs} epoch{'s' if epochs != 1 else ''}{how}",
          file=sys.stderr)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        test = f"  test_acc {metrics['test_acc']:.4f}" if "test_acc" in metrics else ""
        print(f"  epoch {epoch}/{epochs}  train_loss {metrics['train_loss']:.4f}  train_acc "
              f"{metrics['train_acc']:.4f}{test}  {metrics['seconds']:.1f}s", file=sys.stderr, flush=True)

    result = retrain(config, trial.number, study.study_name, on_epoch, test_every_epoch=args.test_every_epoch,
                     precision=precision)
    path = write_torch(args.out, result.payload)
    done.append(f"the retrained model {path}")
    print(f"retrained trial {trial.number}: {result.train_images:,} images (train+val), {result.epochs} "
          f"epoch{'s' if result.epochs != 1 else ''}, "
          f"{result.seconds:.1f}s, {result.parameters:,} parameters")
    if args.test_every_epoch:
        print(test_curve(result.history))
    print(f"test set: {result.test.images:,} images\n  top-1 accuracy  {result.test.top1:.4f}\n  top-5 accuracy  "
          f"{result.test.top5:.4f}\n  (the search's {config.metric} of this configuration: {trial.value:.4f})")
    print(f"wrote {path}")
    return 0


def test_curve(history: list[dict[str, float]]) -> str:
    """The test accuracy of every epoch, its maximum and its final value, each labelled with the protocol it
    belongs to: the maximum is chosen by the test set (course notes' figure), the final value by nothing."""
    curve = [h["test_acc"] for h in history]
    best = max(range(len(curve)), key=curve.__getitem__)
    return (f"test accuracy after each epoch:\n  {' '.join(f'{v:.4f}' for v in curve)}\n"
            f"  maximum  {curve[best]:.4f} at epoch {best + 1}  (best test epoch: the notes' optimistic protocol, "
            f"the test set picks the epoch)\n"
            f"  final    {curve[-1]:.4f} at epoch {len(curve)}  (the last epoch's weights: the model written, "
            f"chosen by nothing)")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..results.dashboard import serve

    url, name = locate(args)
    try:
        server = serve(url, name, args.host, args.port, args.allow_edits)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fix = "pick another --port (or --port 0 for any free one)"
        elif exc.errno == errno.EACCES:
            fix = "ports below 1024 need root: pick another --port (or --port 0 for any free one)"
        else:  # an address not of this machine, a name that does not resolve
            fix = ("give --host an address of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                   "network it is on)")
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}; {fix}") from None
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nhpsearch: dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ..study.samplers import space_schema

    _emit(json.dumps(space_schema(), indent=2) + "\n", args.out, out_example(args))
    return 0


def out_example(args: argparse.Namespace) -> str:
    """A file name that fits the verb's --out (OUT_EXAMPLES): best.pt2 for an exported model, report.html for an
    html report."""
    return OUT_EXAMPLES[args.verb, getattr(args, "format", None)]


def _check_writable(path: str, example: str) -> None:
    """Fail before the work, not after it: the folder must exist (or be creatable) and take a file. `example` is a
    file name that fits the verb (out_example), for the message."""
    import tempfile

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file path such as {target / example}")
    if target.exists() and not target.is_file():
        raise UsageError(f"--out {path} is not a regular file (a device or a pipe), which writing would replace; "
                         f"give a file path such as {example}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}; choose a writable --out path") from None


def _emit(text: str, out: str | None, example: str) -> None:
    if not out:
        sys.stdout.write(text)
        return
    from ..results.files import write_file

    _check_writable(out, example)
    write_file(out, text.encode("utf-8"))  # a full disk leaves no half-written report
    print(f"hpsearch: wrote {out}", file=sys.stderr)


VERBS = {"report": cmd_report, "export": cmd_export, "evaluate": cmd_evaluate, "retrain": cmd_retrain,
         "dashboard": cmd_dashboard, "schema": cmd_schema}

__all__ = ["UsageError", "add_parsers", "chosen_trial", "checkpoint_file", "locate", "open_study", "study_args"]
