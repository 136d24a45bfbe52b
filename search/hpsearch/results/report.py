"""Results of a study: its trials as a pandas DataFrame, a summary, parameter importances, and the report formats.

`best_trials(storage, study, k)` is the table that `hpsearch report` prints. No torch here; plots are in plots.py.
"""

from __future__ import annotations

import base64
import html
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .. import keys
from ..study.progress import planned_epochs
from ..study.storage import StudyError, artifact_dir, redact
from ..study.studies import load

FORMATS = ("table", "csv", "markdown", "html")
MIN_COMPLETE_FOR_IMPORTANCE = 5  # PED-ANOVA (Optuna's default, as in optuna-dashboard) on fewer is noise
STATS = ("epochs", "best_epoch", "seconds", "images_per_sec", "parameters", "checkpoint")


def best_trials(storage: str | optuna.storages.BaseStorage, study: str, k: int | None = 10) -> pd.DataFrame:
    """The best k trials of a study, best first (None: all): completed ones by value, then pruned ones by the best
    epoch they reached. Columns: rank, trial, state, the metric, every parameter by its dotted name, epochs,
    best_epoch, seconds, images_per_sec, parameters (count), checkpoint (its file is in the artifact store)."""
    url: str | None = None
    if isinstance(storage, str):
        found, url = load(storage, study), storage
    else:
        try:
            found = optuna.load_study(study_name=study, storage=storage)
        except KeyError:
            raise StudyError(f"no study named {study!r} in that storage") from None
        url = getattr(storage, "url", None)
    return trials_frame(found, k, artifact_dir(url, study) if url else None)


def metric_name(study: optuna.Study) -> str:
    """val_acc or val_loss: from the space stored on the study, else from a trial's config."""
    space = study.user_attrs.get(keys.SPACE)
    if isinstance(space, dict) and space.get("metric"):
        return str(space["metric"])
    for t in study.get_trials(deepcopy=False):
        metric = (t.user_attrs.get(keys.CONFIG) or {}).get("metric")
        if metric:
            return str(metric)
    return "value"


def _maximize(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def best_epoch(trial: FrozenTrial, maximize: bool) -> tuple[int, float] | None:
    """(epoch, value) of the trial's best reported epoch, the first of equals (as training picks it)."""
    best: tuple[int, float] | None = None
    for epoch, value in sorted(trial.intermediate_values.items()):
        if best is None or (value > best[1] if maximize else value < best[1]):
            best = (epoch, value)
    return best


def ranked(study: optuna.Study) -> list[tuple[FrozenTrial, float]]:
    """(trial, value) best first: completed trials by their value, then pruned ones by their best epoch's value."""
    maximize = _maximize(study)
    sign = -1.0 if maximize else 1.0
    complete, pruned = [], []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.value is not None:
            complete.append((t, float(t.value)))
        elif t.state == TrialState.PRUNED and (best := best_epoch(t, maximize)) is not None:
            pruned.append((t, best[1]))
    key = lambda pair: (sign * pair[1], pair[0].number)  # noqa: E731
    return sorted(complete, key=key) + sorted(pruned, key=key)


def trials_frame(study: optuna.Study, k: int | None = None, artifacts: Path | None = None) -> pd.DataFrame:
    """The DataFrame of best_trials for an open study; `artifacts` is its artifact folder, to check checkpoints."""
    metric, maximize = metric_name(study), _maximize(study)
    rows = ranked(study)[:k] if k else ranked(study)
    order = dict.fromkeys(p for t in study.get_trials(deepcopy=False) for p in t.params)  # first-seen order
    params = [p for p in order if any(p in t.params for t, _ in rows)]
    records = []
    for rank, (t, value) in enumerate(rows, 1):
        best = best_epoch(t, maximize)
        artifact = t.user_attrs.get(keys.CHECKPOINT)
        records.append({
            "rank": rank, "trial": t.number, "state": t.state.name, metric: value,
            **{p: t.params.get(p) for p in params},
            "epochs": t.user_attrs.get(keys.EPOCHS_RUN, len(t.intermediate_values)),
            "best_epoch": t.user_attrs.get(keys.BEST_EPOCH, best[0] if best else None),
            "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            "images_per_sec": t.user_attrs.get("images_per_sec"),
            "parameters": t.user_attrs.get("params"),
            "checkpoint": bool(artifact and artifacts is not None and (artifacts / str(artifact)).is_file()),
        })
    frame = pd.DataFrame(records, columns=["rank", "trial", "state", metric, *params, *STATS])
    for column in ("best_epoch", "parameters"):
        frame[column] = frame[column].astype("Int64")  # whole numbers, missing for pruned trials
    return frame


@dataclass(frozen=True)
class Summary:
    study: str
    where: str  # storage URL, password hidden
    metric: str
    states: dict[str, int]  # trials by state, those with any
    best: tuple[int, float, int | None] | None  # trial, value, epoch
    trial_seconds: float  # summed durations of finished trials
    wall_seconds: float  # first start to last finish
    epochs_run: int  # by completed and pruned trials
    epochs_full: int  # what the same trials would have run without pruning

    def lines(self) -> list[str]:
        total = sum(self.states.values())
        counts = ", ".join(f"{n} {s.lower()}" for s, n in self.states.items()) or "none"
        out = [f"study {self.study!r} in {self.where}: {total} trials ({counts})"]
        if self.best is None:
            out.append("best: no completed trial yet")
        else:
            trial, value, epoch = self.best
            out.append(f"best: trial {trial}, {self.metric}={value:.4f}" + (f" at epoch {epoch}" if epoch else ""))
        out.append(f"time: {_duration(self.trial_seconds)} in trials, {_duration(self.wall_seconds)} from the first "
                   "start to the last finish")
        if self.epochs_full:
            saved = self.epochs_full - self.epochs_run
            out.append(f"pruning: {self.epochs_run} epochs run of the {self.epochs_full} that these trials would "
                       f"have run unpruned; {saved} saved ({saved / self.epochs_full:.0%})")
        return out


def summarize(study: optuna.Study, url: str = "") -> Summary:
    trials = study.get_trials(deepcopy=False)
    states = {s.name: n for s in TrialState if (n := sum(1 for t in trials if t.state == s))}
    done = [t for t in trials if t.duration is not None]
    best: tuple[int, float, int | None] | None = None
    try:
        b = study.best_trial
        best = (b.number, float(b.value or 0.0), b.user_attrs.get(keys.BEST_EPOCH))
    except ValueError:
        pass
    run = full = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            ran = int(t.user_attrs.get(keys.EPOCHS_RUN, len(t.intermediate_values)))
            run += ran
            full += planned_epochs(t.user_attrs) or ran
    starts = [t.datetime_start for t in done if t.datetime_start]
    ends = [t.datetime_complete for t in done if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return Summary(study.study_name, redact(url) if url else "its storage", metric_name(study), states, best,
                   sum(t.duration.total_seconds() for t in done if t.duration), wall, run, full)


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """(PED-ANOVA importances, normalised to sum 1, most important first; a note on what they rest on or why
    there are none)."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_COMPLETE_FOR_IMPORTANCE:
        return {}, f"need {MIN_COMPLETE_FOR_IMPORTANCE} completed trials, have {n}"
    from optuna.importance import PedAnovaImportanceEvaluator

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as exc:
            return {}, f"not computable: {exc}"
    if not found:
        return {}, "nothing is searched"
    if any("will be equal" in str(w.message) for w in caught):
        return {}, f"the {n} completed trials are too few or too alike to tell parameters apart"
    return found, f"PED-ANOVA over {n} completed trials"


# ----------------------------------------------------------------------------------------------------------------
# Formats


def render(fmt: str, frame: pd.DataFrame, summary: Summary, imps: dict[str, float], imp_note: str,
           images: dict[str, bytes] | None = None, skipped: dict[str, str] | None = None) -> str:
    """The report as text in one of FORMATS; csv is the DataFrame alone, so that pandas reads it back."""
    if fmt == "csv":
        return str(frame.to_csv(index=False))
    shown = _display(frame, summary.metric)
    imp_frame = pd.DataFrame({"parameter": list(imps), "importance": [f"{v:.3f}" for v in imps.values()]})
    if fmt == "table":
        if len(frame):
            best = [f"best {len(frame)} trials:", shown.to_string(index=False)]
        else:
            best = ["best trials: none yet (no trial has completed or reported an epoch)"]
        parts = [*summary.lines(), "", *best, ""]
        if imps:
            parts += [f"parameter importances ({imp_note}):",
                      *(f"  {p:<{max(map(len, imps))}}  {v:.3f}" for p, v in imps.items())]
        else:
            parts.append(f"parameter importances: {imp_note}")
        return "\n".join(parts) + "\n"
    if fmt == "markdown":
        parts = [f"# Study {summary.study}", "", *(f"- {line}" for line in summary.lines()), "",
                 f"## Best {len(frame)} trials", "", _markdown(shown, frame) if len(frame)
                 else "None yet.", "", "## Parameter importances",
                 "", f"{imp_note}.", ""]
        if imps:
            parts += [imp_frame.to_markdown(index=False, colalign=("left", "right")), ""]
        return "\n".join(parts)
    if fmt == "html":
        return _html(shown, summary, imp_frame, imp_note, images or {}, skipped or {})
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _markdown(shown: pd.DataFrame, frame: pd.DataFrame) -> str:
    """The display table as markdown, numeric columns right-aligned (as a reader compares them)."""
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
             else "left" for c in frame.columns]
    return str(shown.to_markdown(index=False, disable_numparse=True, colalign=align))


def _display(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A copy with every value as the text a person reads: 4 decimals for the metric, '-' for missing."""
    digits = {metric: ".4f", "seconds": ".1f", "images_per_sec": ".0f"}
    out = frame.copy().astype(object)
    for column in out.columns:
        out[column] = [_text(v, digits.get(column)) for v in frame[column]]
    return out


def _text(value: Any, spec: str | None) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, spec or ".4g")
    return str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        "img{max-width:100%;margin:1em 0;display:block}")


def _html(shown: pd.DataFrame, summary: Summary, imp_frame: pd.DataFrame, imp_note: str,
          images: dict[str, bytes], skipped: dict[str, str]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>hpsearch report: {esc(summary.study)}"
             f"</title><style>{_CSS}</style></head><body>", f"<h1>Study {esc(summary.study)}</h1><ul>",
             *(f"<li>{esc(line)}</li>" for line in summary.lines()), "</ul>",
             f"<h2>Best {len(shown)} trials</h2>", shown.to_html(index=False, escape=True),
             f"<h2>Parameter importances</h2><p>{esc(imp_note)}.</p>"]
    if len(imp_frame):
        parts.append(imp_frame.to_html(index=False, escape=True))
    parts.append("<h2>Plots</h2>")
    for name, data in images.items():
        title = name.replace("_", " ")
        parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' "
                     f"src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}'>")
    parts += [f"<p>{esc(name.replace('_', ' '))}: not drawn, {esc(reason)}.</p>" for name, reason in skipped.items()]
    parts.append("</body></html>\n")
    return "\n".join(parts)


__all__: Sequence[str] = ["FORMATS", "Summary", "best_trials", "importances", "metric_name", "ranked", "render",
                          "summarize", "trials_frame"]
