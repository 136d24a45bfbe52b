"""report.py, plots.py and `hpsearch report`: the best-trials DataFrame, summary, importances, formats and plots."""

from __future__ import annotations

import errno
import io
import math
import subprocess
import sys
from pathlib import Path

import matplotlib
import optuna
import pandas as pd
import pytest
from conftest import TINY, Searched
from fulldisk import fill
from optuna.trial import TrialState

import hpsearch
from hpsearch.cli import main
from hpsearch.cli import results as cli_results
from hpsearch.results import plots, report
from hpsearch.results.report import STATS, best_trials, importances, summarize, trials_frame
from hpsearch.study.studies import create_or_resume

matplotlib.use("Agg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # a PNG's last chunk: a file cut short lacks it


def test_best_trials_ranks_completed_then_pruned_with_every_column(searched: Searched) -> None:
    study = searched.study()
    frame = hpsearch.best_trials(searched.url, "tiny", k=None)
    params = ["model.width", "optimizer", "optimizer.sgd.lr"]
    assert list(frame.columns) == ["rank", "trial", "state", "val_acc", *params, *STATS]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(frame) == len(finished) and list(frame["rank"]) == list(range(1, len(frame) + 1))

    states = list(frame["state"])
    n_complete = states.count("COMPLETE")
    assert n_complete >= 3 and states.count("PRUNED") >= 3
    assert states == ["COMPLETE"] * n_complete + ["PRUNED"] * (len(states) - n_complete)  # completed rank first
    for block in (frame[:n_complete], frame[n_complete:]):
        assert list(block["val_acc"]) == sorted(block["val_acc"], reverse=True)  # best first within each

    by_number = {t.number: t for t in study.trials}
    for row in frame.itertuples(index=False):
        t = by_number[row.trial]
        values = t.intermediate_values
        if t.state == TrialState.COMPLETE:
            assert row.val_acc == t.value and row.best_epoch == t.user_attrs["best_epoch"]
            assert row.parameters == t.user_attrs["params"] and row.images_per_sec == t.user_attrs["images_per_sec"]
        else:  # a pruned trial ranks by the best epoch it reached; it never recorded a speed or size
            assert row.val_acc == max(values.values())
            assert values[row.best_epoch] == row.val_acc and pd.isna(row.parameters)
        assert row.epochs == len(values) == t.user_attrs["epochs_run"]
        assert row.seconds == pytest.approx(t.duration.total_seconds(), abs=0.06)
        assert frame.loc[frame["trial"] == t.number, "model.width"].item() == t.params["model.width"]
        lr = frame.loc[frame["trial"] == t.number, "optimizer.sgd.lr"].item()
        assert (lr == t.params["optimizer.sgd.lr"]) if t.params["optimizer"] == "sgd" else math.isnan(lr)
    kept = {t.number for t in study.trials
            if t.user_attrs.get("checkpoint") and (searched.artifacts / t.user_attrs["checkpoint"]).is_file()}
    assert len(kept) == 2 and set(frame.loc[frame["checkpoint"], "trial"]) == kept  # keep_checkpoints: 2


def test_best_trials_takes_k_and_an_optuna_storage(searched: Searched) -> None:
    top = best_trials(searched.url, "tiny", k=3)
    assert len(top) == 3 and top["trial"].tolist() == best_trials(searched.url, "tiny", None)["trial"][:3].tolist()
    storage = optuna.storages.RDBStorage(searched.url)
    assert best_trials(storage, "tiny", 3).equals(top)
    with pytest.raises(report.StudyError, match="no study named 'nope'.*studies there: tiny"):
        best_trials(searched.url, "nope")


def test_summary_counts_states_time_and_pruning_savings(searched: Searched) -> None:
    study = searched.study()
    summary = summarize(study, searched.url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert summary.states == {"COMPLETE": len(complete), "PRUNED": len(pruned)}
    assert summary.best == (study.best_trial.number, study.best_value, study.best_trial.user_attrs["best_epoch"])
    assert summary.epochs_full == 3 * (len(complete) + len(pruned))  # each would have run all 3 epochs
    assert summary.epochs_run == 3 * len(complete) + sum(len(t.intermediate_values) for t in pruned)
    assert summary.epochs_run < summary.epochs_full
    assert summary.trial_seconds == pytest.approx(sum(t.duration.total_seconds() for t in study.trials))
    assert summary.wall_seconds >= max(t.duration.total_seconds() for t in study.trials)
    saved = summary.epochs_full - summary.epochs_run
    text = "\n".join(summary.lines())
    assert f"study 'tiny' in {searched.url}: 12 trials ({len(complete)} complete, {len(pruned)} pruned)" in text
    assert f"best: trial {study.best_trial.number}, val_acc={study.best_value:.4f}" in text
    assert f"pruning: {summary.epochs_run} epochs run of the {summary.epochs_full} that these trials would have " \
           f"run unpruned; {saved} saved ({saved / summary.epochs_full:.0%})" in text


def test_importances_wait_for_enough_completed_trials(tmp_path: Path) -> None:
    # A seeded sampler: unseeded, an unlucky draw of the 26 trials gave x only 0.65 of the importance once in CI.
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.set_user_attr("space", {"metric": "val_acc"})
    for i in range(4):
        study.enqueue_trial({"x": i / 4, "y": (i * 7 % 4) / 4})
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0 * t.suggest_float("y", 0, 1), n_trials=4)
    assert importances(study) == ({}, "need 5 completed trials, have 4")
    figures, skipped = plots.make_plots(study)
    assert skipped == {"param_importances": "need 5 completed trials, have 4",
                       "learning_curves": "no trial has reported an epoch yet"}
    assert set(figures) == {"optimization_history", "slice"}
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.01 * t.suggest_float("y", 0, 1), n_trials=26)
    found, note = importances(study)
    assert note == "PED-ANOVA over 30 completed trials"
    assert list(found) == ["x", "y"] and found["x"] > 0.7 and sum(found.values()) == pytest.approx(1.0)


def test_report_prints_summary_table_and_importances(searched: Searched, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(TINY), "--storage", searched.url, "--top", "4"]) == 0
    out = capsys.readouterr().out
    study = searched.study()
    lines = out.splitlines()
    assert lines[0].startswith("study 'tiny' in sqlite:///") and lines[1].startswith("best: trial ")
    assert lines[2].startswith("time: ") and lines[3].startswith("pruning: ")
    header = lines[lines.index("best 4 trials:") + 1].split()
    assert header[:4] == ["rank", "trial", "state", "val_acc"] and header[-6:] == list(STATS)
    first = lines[lines.index("best 4 trials:") + 2].split()
    assert first[:4] == ["1", str(study.best_trial.number), "COMPLETE", f"{study.best_value:.4f}"]
    assert "parameter importances (PED-ANOVA over 5 completed trials):" in out
    assert "  model.width" in out


@pytest.mark.parametrize("how", ["space", "storage+study", "storage alone"])
def test_report_csv_parses_into_the_same_rows(searched: Searched, tmp_path: Path, how: str) -> None:
    where = {"space": [str(TINY), "--storage", searched.url], "storage+study": searched.where(),
             "storage alone": ["--storage", searched.url]}[how]
    out = tmp_path / "best.csv"
    assert main(["report", *where, "--format", "csv", "--out", str(out)]) == 0
    back = pd.read_csv(out)
    expected = best_trials(searched.url, "tiny", 10)
    assert len(back) == 10
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_report_markdown_and_html_with_embedded_plots(searched: Searched, tmp_path: Path) -> None:
    assert main(["report", *searched.where(), "--format", "markdown", "--out", str(tmp_path / "r.md")]) == 0
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# Study tiny\n\n- study 'tiny' in ") and "|   rank |" in md and "| parameter" in md
    assert "|-------:|" in md  # numbers right-aligned
    assert main(["report", *searched.where(), "--format", "html", "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<table") == 2
    assert page.count("src='data:image/png;base64,") == len(plots.PLOTS)


def test_plots_are_pngs_that_show_what_they_say(searched: Searched, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", *searched.where(), "--plots", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err
    for name in plots.PLOTS:
        path = tmp_path / "plots" / f"{name}.png"
        assert f"wrote {path}" in err
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 300 and pixels.std() > 0.05  # drawn, not blank

    study = searched.study()
    figures, skipped = plots.make_plots(study)
    assert skipped == {} and set(figures) == set(plots.PLOTS)
    curves = figures["learning_curves"].axes[0]
    assert curves.get_xlabel() == "epoch" and curves.get_ylabel() == "val_acc"
    trial_lines = [line for line in curves.get_lines() if str(line.get_label()).startswith("_trial")]
    assert len(trial_lines) == len(study.trials)  # every trial, pruned ones too
    dashed = [line for line in trial_lines if line.get_linestyle() == "--"]
    assert len(dashed) == sum(t.state == TrialState.PRUNED for t in study.trials)
    legend = [text.get_text() for text in curves.get_legend().get_texts()]
    assert legend[-1] == f"best: trial {study.best_trial.number}"
    history = figures["optimization_history"].axes[0]
    assert history.get_ylabel() == "val_acc"
    importance = figures["param_importances"].axes[0]
    assert {t.get_text() for t in importance.get_yticklabels()} >= {"model.width", "optimizer"}
    assert "val_acc" in figures["slice"].get_suptitle()


def test_report_on_a_study_without_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    create_or_resume(hpsearch.load_space(TINY), url)
    assert main(["report", "--storage", url, "--study", "tiny", "--plots", str(tmp_path / "p")]) == 0
    captured = capsys.readouterr()
    assert "0 trials (none)" in captured.out and "best: no completed trial yet" in captured.out
    assert "best trials: none yet" in captured.out
    assert "no optimization_history.png: no completed trial yet" in captured.err
    assert not list((tmp_path / "p").glob("*.png"))


def test_frame_of_an_empty_study_has_the_columns() -> None:
    study = optuna.create_study()
    assert list(trials_frame(study).columns) == ["rank", "trial", "state", "value", *STATS]


@pytest.mark.parametrize("argv, message", [
    (["report"], "name the study: give SPACE"),
    (["report", "--study", "nope"], "no study database at studies/nope.db"),
    (["report", "--storage", "{url}", "--study", "nope"], "no study named 'nope' in sqlite:///"),
    (["report", "--storage", "{two}"], "holds 2 studies (tiny, other); name one with --study NAME"),
    (["report", "--storage", "{url}", "--out", "{file}/r.txt"], "cannot write {file}/r.txt"),
    (["report", "--storage", "{url}", "--out", "{dir}"], "is a folder"),
    (["report", "--storage", "{url}", "--plots", "{file}"], "cannot write plots into {file}"),
    (["report", "nope.yaml"], "cannot read the space file"),
    (["report", "--storage", "postgresql://u:s3cret@127.0.0.1:1/db", "--study", "x"], "u:***@127.0.0.1"),
])
def test_report_bad_input_is_one_message_and_exit_2(searched_copy: Searched, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    two = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("tiny", "other"):
        optuna.create_study(study_name=name, storage=two)
    (tmp_path / "afile").write_text("x")
    fill = {"url": searched_copy.url, "two": two, "file": str(tmp_path / "afile"), "dir": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and "Traceback" not in err and "s3cret" not in err
    assert not (tmp_path / "studies").exists()  # reading never creates a database


def test_a_report_the_disk_cannot_take_whole_leaves_no_file(searched: Searched, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A file system that finds out at fsync that the disk is full: one message, exit 1 (the machine's fault)."""
    import hpsearch.training.checkpoint as checkpoint

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    out = tmp_path / "r.html"
    assert main(["report", *searched.where(), "--format", "html", "--out", str(out)]) == 1
    assert (f"cannot write {out}: the disk is full (No space left on device); nothing was written there. Fix: free "
            f"disk space on the disk of {tmp_path}/ (or point --out at another disk)") in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither a truncated report nor a temporary


def test_plots_the_disk_cannot_take_are_one_message_and_no_partial_png(searched: Searched, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The disk fills during the second plot: the first stays whole and is said, the second leaves no file, and the
    command ends with one message and exit 1."""
    fill(30_000, monkeypatch.setattr)  # each plot is about 20 kB
    folder = tmp_path / "plots"
    assert main(["report", *searched.where(), "--plots", str(folder)]) == 1
    err = capsys.readouterr().err
    written = sorted(folder.iterdir())
    assert len(written) == 1 and written[0].read_bytes().endswith(PNG_END), written
    assert f"hpsearch: wrote {written[0]}\n" in err and "Traceback" not in err
    assert err.endswith(f"the disk is full (No space left on device); nothing was written there. Fix: free disk "
                        f"space on the disk of {folder}/ (or point --plots at another disk), then run the command "
                        "again\n"), err


@pytest.mark.parametrize("argv", [["report", "x.yaml", "--format", "pdf"], ["report", "x.yaml", "--top", "0"]])
def test_report_argument_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_cli_choices_match_the_modules_and_import_stays_light() -> None:
    from hpsearch.results import export

    assert cli_results.REPORT_FORMATS == report.FORMATS
    assert cli_results.EXPORT_FORMATS == export.EXPORT_FORMATS
    code = ("import sys, hpsearch, hpsearch.cli.app; hpsearch.cli.app._parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_render_csv_is_exactly_the_frame(searched: Searched) -> None:
    study = searched.study()
    frame = trials_frame(study, 5)
    text = report.render("csv", frame, summarize(study), {}, "")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(text)), frame, check_dtype=False)


def test_plots_show_pruned_trials_whole_numbers_and_panels_by_importance() -> None:
    """The history marks pruned trials at their best epoch and counts trials in whole numbers; the slice plot's
    panels stand in importance order with whole-number ticks for integer parameters, on a white background."""
    import matplotlib

    matplotlib.use("Agg")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        depth = trial.suggest_int("depth", 1, 4)
        rate = trial.suggest_float("rate", 0.0, 1.0)
        value = 0.2 * depth + 0.01 * rate
        for step in (1, 2):
            trial.report(value * step / 2, step)
        if trial.number % 3 == 2:
            raise optuna.TrialPruned()
        return value

    study.optimize(objective, n_trials=12)
    figures, skipped = plots.make_plots(study)
    history = figures["optimization_history"].axes[0]
    labels = [h.get_label() for h in history.get_legend().legend_handles]
    assert "pruned (4): best epoch" in labels
    assert all(float(t).is_integer() for t in history.get_xticks())
    imps, _ = report.importances(study)
    assert sorted(imps) == ["depth", "rate"]
    panels = [ax for ax in figures["slice"].axes if ax.get_xlabel() in ("depth", "rate")]
    left_to_right = [ax.get_xlabel() for ax in sorted(panels, key=lambda ax: ax.get_position().x0)]
    assert left_to_right == list(imps)  # Optuna alone draws them in alphabetical order
    depth = next(ax for ax in panels if ax.get_xlabel() == "depth")
    assert [float(t) for t in depth.get_xticks()] == [1.0, 2.0, 3.0, 4.0]
    assert all(matplotlib.colors.to_hex(ax.get_facecolor()) == "#ffffff" for ax in panels)
    for figure in figures.values():
        plots.png(figure)
