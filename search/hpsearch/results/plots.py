"""Plots of a study, drawn by Optuna's matplotlib visualisations and only restyled here.

optimization_history (each completed trial's value and the best so far), learning_curves (every trial's validation
metric per epoch, pruned ones in grey ending in a cross), param_importances (PED-ANOVA, as in the report) and slice
(the metric against the most important parameters).
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .report import MIN_COMPLETE_FOR_IMPORTANCE, importances, metric_name

PLOTS = ("optimization_history", "learning_curves", "param_importances", "slice")
MAX_SLICE_PARAMS = 6  # one panel per parameter; more make the panels too narrow to read
DPI = 100
_COMPLETE, _PRUNED, _BEST = "#1f77b4", "#9a9a9a", "#d62728"


def make_plots(study: optuna.Study) -> tuple[dict[str, Any], dict[str, str]]:
    """({name: matplotlib Figure}, {name: why it was not drawn}) for each of PLOTS."""
    metric = metric_name(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reported = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    imps, note = importances(study)
    makers: dict[str, tuple[str | None, Callable[[], Any]]] = {
        "optimization_history": (None if complete else "no completed trial yet", lambda: _history(study, metric)),
        "learning_curves": (None if reported else "no trial has reported an epoch yet",
                            lambda: _learning_curves(study, metric)),
        "param_importances": (None if imps else note, lambda: _importances(study, metric)),
        "slice": (None if complete and study.best_trial.params else "no completed trial with searched parameters",
                  lambda: _slice(study, metric, imps)),
    }
    figures: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, (reason, draw) in makers.items():
        if reason is not None:
            skipped[name] = reason
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of optuna.visualization.matplotlib
            figures[name] = draw()
    return figures, skipped


def png(figure: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buf.getvalue()


def save(images: dict[str, bytes], folder: str | Path, written: Callable[[Path], object] = lambda path: None) -> None:
    """Write each PNG whole as folder/<name>.png, calling written(path) after each; OSError when the folder cannot
    be made, DiskFull (the disk is full) or CheckpointError (anything else) when a file cannot be written, which
    leaves no partial file (results/files.py)."""
    from .files import write_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        written(write_file(folder / f"{name}.png", data, "--plots"))


def _figure(axes: Any) -> Any:
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def _history(study: optuna.Study, metric: str) -> Any:
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization.matplotlib import plot_optimization_history

    from .report import best_epoch

    ax = plot_optimization_history(study, target_name=metric)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    pruned = [(t.number, found[1]) for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
              if (found := best_epoch(t, maximize)) is not None]
    if pruned:  # a pruned trial is part of the history too: its best epoch, where the pruner stopped it
        ax.scatter([n for n, _ in pruned], [v for _, v in pruned], marker="x", color=_PRUNED, zorder=2,
                   label=f"pruned ({len(pruned)}): best epoch")
        ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
    _plain_background(ax)
    ax.set_title(f"Optimization history: {metric} of each trial, best so far")
    return _figure(ax)


def _plain_background(ax: Any) -> None:
    """White axes with a light grid: Optuna's grey background hides the palest points of its colour scales."""
    ax.set_facecolor("white")
    ax.grid(True, color="#dddddd")
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")


def _learning_curves(study: optuna.Study, metric: str) -> Any:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization.matplotlib import plot_intermediate_values

    ax = plot_intermediate_values(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    try:
        best = study.best_trial.number
    except ValueError:
        best = None
    counts: Counter[str] = Counter()
    for line in ax.get_lines():  # one per trial, labelled "Trial<number>" by Optuna
        number = int(str(line.get_label()).removeprefix("Trial"))
        state = trials[number].state if number in trials else None
        counts[state.name if state else "?"] += 1
        line.set_label(f"_trial {number}")  # leading underscore: not in the legend
        if number == best:
            line.set(color=_BEST, alpha=1.0, linewidth=2.5, zorder=3)
        elif state == TrialState.PRUNED:
            line.set(color=_PRUNED, alpha=0.6, linewidth=1.0, linestyle="--")
            values = trials[number].intermediate_values
            ax.plot([max(values)], [values[max(values)]], marker="x", color=_PRUNED, markersize=7, linestyle="none")
        else:
            line.set(color=_COMPLETE, alpha=0.8, linewidth=1.3)
    legend = [Line2D([], [], color=_COMPLETE, label=f"complete ({counts['COMPLETE']})"),
              Line2D([], [], color=_PRUNED, linestyle="--", marker="x",
                     label=f"pruned ({counts['PRUNED']}), x = pruned here")]
    if best is not None:
        legend.append(Line2D([], [], color=_BEST, linewidth=2.5, label=f"best: trial {best}"))
    old = ax.get_legend()
    if old is not None:
        old.remove()
    ax.legend(handles=legend, loc="best", fontsize="small")
    ax.set(title=f"Learning curves: {metric} per epoch of every trial", xlabel="epoch", ylabel=metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure = _figure(ax)
    figure.set_size_inches(8, 5)
    return figure


def _importances(study: optuna.Study, metric: str) -> Any:
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_param_importances

    ax = plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target_name=metric)
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    ax.set_title(f"Parameter importances for {metric} (PED-ANOVA, {n} completed trials)", loc="left")
    return _figure(ax)


def _slice(study: optuna.Study, metric: str, imps: dict[str, float]) -> Any:
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter
    from optuna.visualization.matplotlib import plot_slice

    searched = list(dict.fromkeys(p for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                                  for p in t.params))
    ordered = sorted(searched, key=lambda p: -imps.get(p, 0.0)) if imps else searched
    params = ordered[:MAX_SLICE_PARAMS]
    axes = plot_slice(study, params=params, target_name=metric)
    panels = list(getattr(axes, "flat", [axes]))
    integers = {p for t in study.get_trials(deepcopy=False) for p, d in t.distributions.items()
                if p in params and isinstance(d, optuna.distributions.IntDistribution)}  # categorical: Optuna's labels
    for ax in panels:
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())  # Optuna labels minor log ticks too; they collide
        name = ax.get_xlabel()
        if name in integers:  # whole numbers: ticks at the values drawn, or at whole numbers when there are many
            values = sorted({t.params[name] for t in study.get_trials(deepcopy=False) if name in t.params})
            ax.xaxis.set_major_locator(FixedLocator(values) if len(values) <= 8 else MaxNLocator(integer=True))
        _plain_background(ax)
    # Optuna draws the panels in alphabetical order: move them into the order asked for (importance), the metric's
    # scale on the first.
    slots = [ax.get_position() for ax in panels]
    by_name = {ax.get_xlabel(): ax for ax in panels}
    for i, (slot, name) in enumerate(zip(slots, [p for p in params if p in by_name], strict=False)):
        by_name[name].set_position(slot)
        by_name[name].tick_params(axis="y", labelleft=i == 0)
        by_name[name].set_ylabel(metric if i == 0 else "")
    figure = _figure(axes)
    which = f"its {len(params)} most important" if imps and len(searched) > len(params) else \
        f"the first {len(params)} of its {len(searched)}" if len(searched) > len(params) else "its"
    figure.suptitle(f"Slice plot: {metric} of each completed trial against {which} parameters")
    return figure


__all__ = ["MAX_SLICE_PARAMS", "MIN_COMPLETE_FOR_IMPORTANCE", "PLOTS", "make_plots", "png", "save"]
