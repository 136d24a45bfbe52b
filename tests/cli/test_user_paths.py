"""What validate accepts, run runs: each way a user's input or a study's state used to end in a traceback, a
stale hint or an untrue count, now one message and exit 2 (or a command that works when pasted)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY, Searched

from hpsearch import keys
from hpsearch.cli import main
from hpsearch.training import checkpoint

EXE = Path(sys.executable).with_name("hpsearch")
FAST = ["--set", "train.epochs=1"]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["run", str(TINY), "--set", "train.device=cuda"],
    ["run", str(TINY), "--set", "train.device=cuda:99"],
])
def test_a_cuda_device_on_a_machine_without_one_is_one_message(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                                argv: list[str]) -> None:
    err = _error(capsys, argv)
    assert "this machine has no CUDA device" in err and "fix: train.device: auto (or cpu)" in err
    assert not (workdir / "studies" / "tiny").exists()  # nothing was run or stored


@pytest.mark.parametrize("device, message", [("cuda:abc", "is not one torch knows"), ("tpu", "is not one torch knows")])
def test_evaluate_with_an_unknown_device_is_one_message(searched: Searched, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], device: str,
                                                        message: str) -> None:
    assert main(["export", *searched.where(), "--out", str(tmp_path / "best.pt")]) == 0
    assert message in _error(capsys, ["evaluate", str(tmp_path / "best.pt"), "--device", device])


@pytest.mark.parametrize("name", ["../../etc/x", "", "a b", "x" * 129])
def test_study_names_on_the_command_line_follow_the_files_rule(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                              name: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(TINY), "--study", name])
    assert info.value.code == 2 and "argument --study" in capsys.readouterr().err
    assert not (workdir / "studies").exists() and not (workdir.parent / "etc").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_in_memory_storage_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str], url: str) -> None:
    err = _error(capsys, ["run", str(TINY), "--trials", "1", "--storage", url])
    assert "is an in-memory SQLite database" in err and "fix: give a file" in err


def test_a_multi_objective_study_is_one_message_for_every_verb(workdir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{workdir / 'm.db'}"
    study = optuna.create_study(storage=url, study_name="multi", directions=["minimize", "maximize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    where = ["--storage", url, "--study", "multi"]
    for argv in (["report", *where], ["export", *where, "--out", "b.pt"], ["retrain", *where, "--out", "f.pt"],
                 ["run", str(TINY), *where]):
        assert "has 2 objectives" in _error(capsys, argv)


def test_retrain_on_a_plain_optuna_study_is_one_message(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{workdir / 'p.db'}"
    optuna.create_study(storage=url, study_name="plain").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert "has no stored space: it was not made by hpsearch" in _error(
        capsys, ["retrain", "--storage", url, "--study", "plain", "--out", "f"])


def test_an_npz_whose_members_are_not_arrays_is_one_message(workdir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(workdir / "cifar100.npz", "w") as archive:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            archive.writestr(name, b"not an array")  # no .npy: np.load hands these back as bytes
    err = _error(capsys, ["run", str(TINY), "--set", "data.dataset=cifar100", "--set", "data.download=false",
                          "--set", "data.val_size=5000", "--data-root", str(workdir)])
    assert "are not numpy arrays" in err


@pytest.mark.parametrize("tamper, message", [
    (lambda p: p.update(version=99), "of version 99; this hpsearch reads version 1"),
    (lambda p: p.update(mean=[0.5]), "its input mean must be three finite numbers"),
    (lambda p: p.update(std=[0.2, 0.0, 0.2]), "its input std must be three finite numbers above 0"),
    (lambda p: next(v for v in p["state_dict"].values() if v.is_floating_point()).fill_(float("nan")),
     "its weights hold NaN or infinite values"),
])
def test_a_tampered_checkpoint_is_refused_before_it_is_used(searched: Searched, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str], tamper: object,
                                                            message: str) -> None:
    path = tmp_path / "best.pt"
    assert main(["export", *searched.where(), "--out", str(path)]) == 0
    payload = checkpoint.read(path)
    tamper(payload)  # type: ignore[operator]
    checkpoint.save(payload, path)
    assert message in _error(capsys, ["evaluate", str(path)])


def test_sigterm_during_start_up_exits_130_without_a_traceback(workdir: Path) -> None:
    proc = subprocess.Popen([str(EXE), "run", str(TINY), "--trials", "50"], cwd=workdir, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "hpsearch: loading synthetic ...": torch, the data and the study come next
    assert first.startswith("hpsearch: loading"), first
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err


def test_ctrl_c_in_any_verb_says_so_and_exits_130(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Python's own KeyboardInterrupt (Ctrl-C outside a search) carries no text: the message says Ctrl-C."""
    import hpsearch.cli.app as app

    def pressed(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(app._VERBS, "validate", pressed)
    assert main(["validate", str(TINY)]) == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C);" in err and "()" not in err


@pytest.mark.parametrize("argv, example", [
    (["export", "{where}", "--out", "{out}"], "best.pt"),
    (["export", "{where}", "--format", "exported", "--out", "{out}"], "best.pt2"),
    (["export", "{where}", "--format", "torchscript", "--out", "{out}"], "best.ts"),
    (["report", "{where}", "--out", "{out}"], "report.txt"),
    (["report", "{where}", "--format", "html", "--out", "{out}"], "report.html"),
    (["report", "{where}", "--format", "csv", "--out", "{out}"], "best.csv"),
    (["retrain", "{where}", "--out", "{out}"], "final.pt"),
    (["schema", "--out", "{out}"], "space.schema.json"),
])
def test_an_unusable_out_is_refused_with_an_example_that_fits_the_verb(searched: Searched, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      argv: list[str], example: str) -> None:
    """--out a folder, or a pipe: the message's example is a file the verb writes (an exported model is a .pt2, a
    report is no checkpoint)."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for out, said in ((tmp_path, f"is a folder; give a file path such as {tmp_path / example}\n"),
                      (pipe, f"is not a regular file (a device or a pipe), which writing would replace; give a file "
                             f"path such as {example}\n")):
        filled = [x for a in argv for x in (searched.where() if a == "{where}" else [a.format(out=out)])]
        assert said in _error(capsys, filled)


@pytest.mark.parametrize("verb, after, said", [
    (["export", "{where}", "--format", "exported", "--out", "{out}/best.pt2"], "metric_name",
     "after writing the export {out}/best.pt2; nothing was left half-written"),
    (["report", "{where}", "--plots", "{out}/plots"], "render",
     "after writing {out}/plots/optimization_history.png, {out}/plots/learning_curves.png, "),
])
def test_ctrl_c_after_a_verb_wrote_its_output_says_what_was_written(searched: Searched, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    verb: list[str], after: str, said: str) -> None:
    """Ctrl-C that lands once the export (or the plots) is written: exit 130 still, and the message says what was
    written, whole, rather than only that nothing was left half-written."""
    from hpsearch.results import report

    def pressed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, after, pressed)  # the next step of the verb, once its output is written
    argv = [x for a in verb for x in (searched.where() if a == "{where}" else [a.format(out=tmp_path)])]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"\nhpsearch: interrupted (Ctrl-C) {said.format(out=tmp_path)}" in err, err
    assert err.count("interrupted") == 1 and "Traceback" not in err
    if verb[0] == "export":
        assert torch.export.load(str(tmp_path / "best.pt2")).module()(torch.rand(1, 3, 32, 32)).shape == (1, 4)


def test_the_space_guard_refuses_before_the_data_is_looked_for(workdir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--trials", "1", *FAST]) == 0
    capsys.readouterr()
    err = _error(capsys, ["run", str(TINY), "--trials", "1", "--set", "data.dataset=cifar100",
                          "--set", "data.download=false", "--data-root", str(workdir / "nowhere")])
    assert "was created from a different space" in err and "not found" not in err


def test_the_summary_counts_what_this_command_started(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--trials", "2", *FAST]) == 0
    assert "\n2 new trials (2 complete); 2 in the study" in capsys.readouterr().out
    assert main(["run", str(TINY), "--trials", "1", *FAST]) == 0
    assert "\n1 new trial (1 complete); 3 in the study" in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'studies' / 'tiny.db'}")
    assert len({t.user_attrs[keys.RUN] for t in study.trials}) == 2
    assert study.metric_names == ["val_acc"]  # the dashboard's and trials_dataframe()'s name for the value


def test_every_next_line_works_when_pasted(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a run with --set, --data-root and --study (a name that needs no quoting, a space path that does),
    each printed command runs as it is."""
    odd = workdir / "my spaces" / "tiny.yaml"
    odd.parent.mkdir()
    odd.write_text(TINY.read_text())
    assert main(["run", str(odd), "--trials", "1", *FAST, "--data-root", str(workdir / "data dir"),
                 "--study", "quick"]) == 0
    lines = capsys.readouterr().out.split("\nnext:\n", 1)[1].splitlines()
    commands = [line.split("   # ", 1)[0].strip() for line in lines if line.strip().startswith("hpsearch ")]
    assert len(commands) == 4
    for command in commands:
        argv = shlex.split(command)
        argv = [a if a != "20" else "1" for a in argv]  # the run line adds 20 trials: one is enough here
        if argv[1] == "dashboard":  # it serves until stopped: started on a free port, its address read, stopped
            server = subprocess.Popen([str(EXE), *argv[1:], "--port", "0"], cwd=workdir, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                opened = server.stdout.readline() if server.stdout else ""
            finally:
                server.terminate()
                _, err = server.communicate(timeout=60)
            assert opened.startswith("open http://127.0.0.1:"), (command, err[-2000:])
            continue
        done = subprocess.run([str(EXE), *argv[1:]], cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert re.search(r"--data-root '.*data dir'", commands[3]) and "--set train.epochs=1" in commands[3]


def test_a_retrained_checkpoint_can_be_exported(searched_copy: Searched, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    final = tmp_path / "final.pt"
    assert main(["retrain", *searched_copy.where(), "--out", str(final)]) == 0
    for fmt, name in (("torchscript", "final.ts"), ("exported", "final.pt2"), ("checkpoint", "copy.pt")):
        assert main(["export", str(final), "--format", fmt, "--out", str(tmp_path / name)]) == 0
        assert f"from {final}, as {fmt}" in capsys.readouterr().out
    program = torch.export.load(str(tmp_path / "final.pt2")).module()
    assert program(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    assert "is a checkpoint file" in _error(capsys, ["export", str(final), "--trial", "1", "--out", "x.pt"])


def test_a_checkpoint_does_not_choose_where_hpsearch_writes(searched: Searched, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A crafted checkpoint naming CIFAR-100 under some folder, with download on: evaluate looks there, creates
    nothing and downloads nothing."""
    path = tmp_path / "crafted.pt"
    assert main(["export", *searched.where(), "--out", str(path)]) == 0
    payload = checkpoint.read(path)
    target = tmp_path / "chosen" / "by" / "the file"
    payload["config"]["data"].update(dataset="cifar100", root=str(target), download=True)
    checkpoint.save(payload, path)
    err = _error(capsys, ["evaluate", str(path)])
    assert "cifar100 data not found" in err and "Download: never by evaluate" in err
    assert not (tmp_path / "chosen").exists()


def test_a_server_that_never_answers_is_given_up_with_a_message(tmp_path: Path) -> None:
    """A port that accepts connections and says nothing: the command says what it waits for, then gives up
    after the connect timeout with one message (exit 2), not minutes of silence."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"postgresql://u:secret@127.0.0.1:{server.getsockname()[1]}/db"
    try:
        done = subprocess.run([str(EXE), "report", "--storage", url, "--study", "x"], capture_output=True,
                              text=True, timeout=120)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "connecting to postgresql://u:***@127.0.0.1" in done.stderr and "(up to 10 s)" in done.stderr
    assert "timeout" in done.stderr and "secret" not in done.stderr


def test_evaluate_reads_exported_models_as_it_reads_checkpoints(searched: Searched, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A .pt2 (torch.export) and a .ts (TorchScript) carry hpsearch.json: evaluate finds the data set from it and
    measures the same accuracy as on the checkpoint they came from."""
    scores = {}
    for fmt, name in (("checkpoint", "best.pt"), ("exported", "best.pt2"), ("torchscript", "best.ts")):
        assert main(["export", *searched.where(), "--format", fmt, "--out", str(tmp_path / name)]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        scores[fmt] = re.search(r"top-1 accuracy\s+([0-9.]+)", out).group(1)  # type: ignore[union-attr]
        assert "test set: synthetic, 100 images" in out
    assert scores["exported"] == scores["torchscript"] == scores["checkpoint"], scores
