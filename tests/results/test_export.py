"""`hpsearch export`, load_checkpoint, `evaluate` and `retrain`: the best trial's model, taken away and tested."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import TINY, Searched
from fulldisk import FILL, HERE
from optuna.trial import TrialState

import hpsearch
from hpsearch.cli import main
from hpsearch.results.evaluation import score_test_set
from hpsearch.results.export import export, load_any
from hpsearch.space.config import DataConfig, ModelConfig, SyntheticConfig, TrialConfig
from hpsearch.study.studies import trial_config
from hpsearch.training import checkpoint
from hpsearch.training.data import load_test, prepare
from hpsearch.training.evaluate import evaluate
from hpsearch.training.models import build_model
from hpsearch.training.train import train

CPU = torch.device("cpu")


def kept(searched: Searched) -> list[int]:
    """Trials whose checkpoint file is in the store, best first."""
    study = searched.study()
    have = [t for t in study.trials if t.user_attrs.get("checkpoint")
            and (searched.artifacts / t.user_attrs["checkpoint"]).is_file()]
    return [t.number for t in sorted(have, key=lambda t: -(t.value or 0))]


def test_export_writes_the_best_trials_self_describing_checkpoint(searched: Searched, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    best = searched.study().best_trial
    out = tmp_path / "best.pt"
    assert main(["export", str(TINY), "--storage", searched.url, "--out", str(out)]) == 0
    assert f"wrote {out}: trial {best.number} of study 'tiny', val_acc={best.value:.4f}" in capsys.readouterr().out
    payload = checkpoint.load_payload(out)
    assert {"state_dict", "config", "metric", "value", "trial", "class_names", "mean", "std"} <= set(payload)
    assert payload["trial"] == best.number and payload["value"] == pytest.approx(best.value)
    assert payload["epoch"] == best.user_attrs["best_epoch"] and payload["metric"] == "val_acc"
    assert payload["config"] == trial_config(searched.study(), best).to_dict()  # the trained config, rebuilt
    assert payload["class_names"] == [f"class_{i}" for i in range(4)]


def test_loaded_model_is_the_best_epochs_model(searched: Searched, tmp_path: Path) -> None:
    """Rebuilt from the file alone, the model scores on the validation split exactly the trial's recorded value."""
    best = searched.study().best_trial
    out = tmp_path / "best.pt"
    assert main(["export", *searched.where(), "--out", str(out)]) == 0
    ckpt = hpsearch.load_checkpoint(out)
    assert not ckpt.model.training and ckpt.trial == best.number
    data = prepare(ckpt.config.data, CPU)
    val = evaluate(ckpt.model, data.val_x, data.val_y, ckpt.mean, ckpt.std, 1024, CPU, "fp32", False)
    assert val["acc"] == pytest.approx(best.value, abs=1e-9)
    logits = ckpt.model(ckpt.preprocess(data.val_x[:8]))
    assert logits.shape == (8, 4)
    assert torch.allclose(ckpt.preprocess(data.val_x[:2]), ckpt.preprocess(data.val_x[:2].float() / 255))


def test_export_a_chosen_trial(searched: Searched, tmp_path: Path) -> None:
    second = kept(searched)[1]
    assert main(["export", *searched.where(), "--trial", str(second), "--out", str(tmp_path / "t.pt")]) == 0
    assert checkpoint.load_payload(tmp_path / "t.pt")["trial"] == second


def test_checkpoint_loads_in_a_fresh_python_without_the_space(searched: Searched, tmp_path: Path) -> None:
    out = tmp_path / "best.pt"
    assert main(["export", *searched.where(), "--out", str(out)]) == 0
    code = textwrap.dedent(f"""
        import json, sys, torch, hpsearch
        ckpt = hpsearch.load_checkpoint({str(out)!r})
        x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
        with torch.no_grad():
            y = ckpt.model(ckpt.preprocess(x))
        print(json.dumps({{"training": ckpt.model.training, "shape": list(y.shape), "trial": ckpt.trial,
                          "classes": list(ckpt.class_names), "spaces": [m for m in sys.modules if m == "yaml"]}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["training"] is False and got["shape"] == [5, 4] and got["trial"] == searched.study().best_trial.number


@pytest.mark.parametrize("fmt, name", [("torchscript", "best.ts"), ("exported", "best.pt2")])
def test_torchscript_and_exported_run_with_torch_alone(searched: Searched, tmp_path: Path, fmt: str,
                                                      name: str) -> None:
    source, out = tmp_path / "best.pt", tmp_path / name
    assert main(["export", *searched.where(), "--out", str(source)]) == 0
    assert main(["export", *searched.where(), "--format", fmt, "--out", str(out)]) == 0
    ckpt = hpsearch.load_checkpoint(source)
    x = torch.rand(7, 3, 32, 32)
    with torch.no_grad():
        torch.save({"x": x, "y": ckpt.model(ckpt.preprocess(x))}, tmp_path / "expected.pt")
    load = "torch.jit.load(path, _extra_files=extra)" if fmt == "torchscript" else \
        "torch.export.load(path, extra_files=extra).module()"
    code = textwrap.dedent(f"""
        import json, sys, warnings
        warnings.simplefilter("ignore")
        sys.modules["hpsearch"] = None  # importing hpsearch now fails: the file must not need it
        import torch
        path, extra = {str(out)!r}, {{"hpsearch.json": ""}}
        model = {load}
        expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
        with torch.no_grad():
            y = model(expected["x"])
            one = model(expected["x"][:1])
        meta = json.loads(extra["hpsearch.json"])
        print(json.dumps({{"diff": (y - expected["y"]).abs().max().item(), "one": list(one.shape),
                          "classes": meta["class_names"], "trial": meta["trial"]}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["diff"] < 1e-5 and got["one"] == [1, 4]  # any batch size
    assert got["classes"] == list(ckpt.class_names) and got["trial"] == ckpt.trial


def test_export_refuses_what_cannot_be_exported(searched_copy: Searched, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    study = searched_copy.study()
    where = searched_copy.where()
    out = str(tmp_path / "x.pt")
    pruned = next(t.number for t in study.trials if t.state == TrialState.PRUNED)
    have = kept(searched_copy)
    removed = next(t.number for t in study.trials if t.user_attrs.get("checkpoint") and t.number not in have)
    never = next(t.number for t in study.trials if t.state == TrialState.COMPLETE and t.number not in have
                 and t.number != removed)
    with sqlite3.connect(searched_copy.folder / "tiny.db") as db:  # as if it never ranked among the best k
        db.execute("DELETE FROM trial_user_attributes WHERE key = 'checkpoint' AND trial_id = "
                   "(SELECT trial_id FROM trials WHERE number = ?)", (never,))
    cases = [
        (["--trial", str(pruned)], f"trial {pruned} is pruned, not complete"),
        (["--trial", "99"], "study 'tiny' has no trial 99 (it has trials 0 to 11); completed trials: "),
        (["--trial", str(removed)], f"trial {removed}'s checkpoint {searched_copy.artifacts}"),
        (["--trial", str(removed)], f"trials with a checkpoint, best first: {have[0]}, {have[1]}\nfix: --trial "
                                    f"{have[0]}"),
        (["--format", "checkpoint", "--out", str(tmp_path / "afile" / "x.pt")], "cannot write"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(tmp_path / "pipe")], "is not a regular file (a device or a pipe)"),
        (["--trial", str(never)], f"trial {never} has no checkpoint: when it finished"),
    ]
    (tmp_path / "afile").write_text("x")
    os.mkfifo(tmp_path / "pipe")  # like /dev/null: a rename over it would destroy it
    for extra, message in cases:
        argv = ["export", *where, "--out", out, *extra] if "--out" not in extra else ["export", *where, *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    with sqlite3.connect(searched_copy.folder / "tiny.db") as db:  # it ranked, but the disk was full
        db.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) SELECT trial_id, "
                   "'checkpoint_error', ? FROM trials WHERE number = ?",
                   (json.dumps("cannot store the checkpoint: No space left on device"), never))
    assert main(["export", *where, "--trial", str(never), "--out", out]) == 2
    assert (f"trial {never} has no checkpoint: when it finished, storing it failed (cannot store the checkpoint: "
            "No space left on device)") in capsys.readouterr().err
    # the best trial's file deleted behind our back, then a corrupt one
    best = study.best_trial
    path = searched_copy.artifacts / best.user_attrs["checkpoint"]
    path.write_bytes(b"not a checkpoint")
    assert main(["export", *where, "--out", out]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    path.unlink()
    assert main(["export", *where, "--out", out]) == 2
    assert f"trial {best.number}'s checkpoint {path} was removed" in capsys.readouterr().err
    assert not Path(out).exists()


def test_export_of_a_study_without_completed_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=url).enqueue_trial({})
    assert main(["export", "--storage", url, "--study", "s", "--out", str(tmp_path / "x.pt")]) == 2
    assert "study 's' has no completed trial yet (1 trials)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_gives_test_accuracy_top5_and_per_class(searched: Searched, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "best.pt"
    assert main(["export", *searched.where(), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--per-class", "--device", "cpu"]) == 0
    text = capsys.readouterr().out

    ckpt = hpsearch.load_checkpoint(out)  # the same numbers, counted by hand
    x, y = load_test(ckpt.config.data, CPU)
    with torch.no_grad():
        logits = ckpt.model(ckpt.preprocess(x))
    top1 = (logits.argmax(1) == y).float().mean().item()
    top5 = (logits.topk(4, 1).indices == y[:, None]).any(1).float().mean().item()  # 4 classes: top-5 is all
    assert f"test set: synthetic, {len(y)} images, on cpu" in text
    assert f"top-1 accuracy  {top1:.4f}" in text and f"top-5 accuracy  {top5:.4f}" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.split("per class:")[1].splitlines()[2:]}
    for c in range(4):
        mask = y == c
        right = int((logits.argmax(1)[mask] == c).sum())
        assert rows[f"class_{c}"] == [str(int(mask.sum())), str(right), f"{right / int(mask.sum()):.4f}"]


@pytest.mark.parametrize("fmt, name", [("checkpoint", "best.pt"), ("torchscript", "best.ts"), ("exported", "best.pt2")])
def test_a_full_disk_fails_an_export_with_one_message_and_no_file(searched: Searched, tmp_path: Path, fmt: str,
                                                                  name: str) -> None:
    """The disk fills 1,000 bytes into the file: one message (what, where, the fix), exit 1 (the machine's fault),
    and no file, partial or temporary, whatever the format. torch.export's writer, handed the failing file, used to
    abort the process from a destructor (exit 134) after the message; it runs in a child process for that reason."""
    out = tmp_path / "out" / name
    done = subprocess.run([sys.executable, "-c", FILL.format(here=str(HERE), free=1000), "export", *searched.where(),
                           "--format", fmt, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"hpsearch: error: cannot write {out}: the disk is full (No space left on device); nothing was written "
        f"there. Fix: free disk space on the disk of {out.parent}/ (or point --out at another disk), then run the "
        "command again"]
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("dataset, fix, wrong", [
    ("cifar10", "to fetch it there first, on a machine with internet access: python -c \"import torchvision; "
                "torchvision.datasets.CIFAR10('DIR', download=True)\"", ("download: true", "in the space")),
    ("imagefolder", "Fix: pass --data-root DIR for the image folder the model was trained on, with its test set: "
                    "DIR/train/<class>/<image> and DIR/test/<class>/<image>.", ("download", "in the space")),
])
def test_evaluate_without_its_data_says_the_fix_of_that_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 dataset: str, fix: str,
                                                                 wrong: tuple[str, ...]) -> None:
    """evaluate takes --data-root and never downloads: its fix names no space and no `download: true`; a data set
    torchvision downloads is fetched first, an image folder is named by its layout."""
    config = TrialConfig(data=DataConfig(dataset=dataset, root=str(tmp_path / "nowhere"), download=True),
                         model=ModelConfig(stages=1, width=4, blocks_per_stage=1))
    names = [f"c{i}" for i in range(10)]
    payload = checkpoint.make_payload(build_model(config.model, 10, config).state_dict(), config, "val_acc", 0.5, 3,
                                      names, "s", 1, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    path = checkpoint.save(payload, tmp_path / "model.pt")
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{dataset} data not found" in err and str(tmp_path / "nowhere") in err and fix in err
    assert not any(words in err for words in wrong), err
    assert not (tmp_path / "nowhere").exists()  # looked for, never made


def test_evaluate_reads_data_from_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cifar10 checkpoint: its data set missing is one clear message; with --data-root holding it, it scores."""
    config = TrialConfig(data=DataConfig(dataset="cifar10", root=str(tmp_path / "nowhere"), download=False),
                         model=ModelConfig(stages=1, width=4, blocks_per_stage=1))
    model = build_model(config.model, 10)
    names = [f"c{i}" for i in range(10)]
    payload = checkpoint.make_payload(model.state_dict(), config, "val_acc", 0.5, 3, names, "s", 1,
                                      mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    path = checkpoint.save(payload, tmp_path / "c10.pt")
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere' / 'cifar10.npz'} (no such file)" in err and "--data-root" in err
    assert "Traceback" not in err

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    np.savez(root / "cifar10.npz", x_train=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(30) % 10)
    assert main(["evaluate", str(path), "--data-root", str(root)]) == 0
    assert "test set: cifar10, 30 images" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["checkpoint", "torchscript", "exported"])
def test_a_one_channel_model_exports_and_evaluates(tmp_path: Path, fmt: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An MNIST (1x28x28) checkpoint: exported in each format, traced on its own input shape, and `hpsearch
    evaluate` scores the file on the mnist test split."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    np.savez(root / "mnist.npz", x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             y_test=np.arange(30) % 10)
    config = TrialConfig(data=DataConfig(dataset="mnist", root=str(root), download=False, val_size=10),
                         model=ModelConfig(widths=(4,), blocks_per_stage=1))
    model = build_model(config.model, 10, config)
    payload = checkpoint.make_payload(model.state_dict(), config, "val_acc", 0.5, 3, [str(i) for i in range(10)],
                                      "s", 1, mean=[0.4], std=[0.3])
    source = checkpoint.save(payload, tmp_path / "mnist.pt")
    out = tmp_path / f"mnist.{fmt}"
    export(source, out, fmt)
    loaded = load_any(out)
    x = torch.rand(5, 1, 28, 28)
    ckpt = hpsearch.load_checkpoint(source)
    with torch.no_grad():
        expected = ckpt.model(ckpt.preprocess(x))
        got = loaded.model(loaded.preprocess(x))
    assert got.shape == (5, 10) and torch.allclose(got, expected, atol=1e-5)
    if fmt != "checkpoint":
        assert loaded.payload["input"] == "float32 NCHW images of 28x28 grayscale pixels in 0..1 (shape (N, 1, 28, 28))"
    capsys.readouterr()
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    assert "test set: mnist, 30 images" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"garbage"), "cannot read checkpoint"),
    (lambda p: torch.save({"weights": torch.zeros(2)}, p), "is not an hpsearch checkpoint"),
    (lambda p: p.mkdir(), "no checkpoint at"),
    (lambda p: None, "no checkpoint at"),
])
def test_evaluate_bad_files_are_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object,
                                            message: str) -> None:
    path = tmp_path / "x.pt"
    make(path)  # type: ignore[operator]
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "weights_only` set to `False`" not in err


def test_evaluate_explains_exported_files_and_mismatched_weights(searched: Searched, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for fmt, name, what in [("torchscript", "m.ts", "TorchScript model"), ("exported", "m.pt2", "torch.export")]:
        assert main(["export", *searched.where(), "--format", fmt, "--out", str(tmp_path / name)]) == 0
        with pytest.raises(checkpoint.CheckpointError, match=f"is a {what}"):  # evaluate reads them (test_cli's
            hpsearch.load_checkpoint(tmp_path / name)  # test_user_paths); load_checkpoint says what they are
    assert main(["export", *searched.where(), "--out", str(tmp_path / "best.pt")]) == 0
    payload = checkpoint.load_payload(tmp_path / "best.pt")
    payload["config"]["model"]["width"] = 64  # weights of one model under another's config
    checkpoint.save(payload, tmp_path / "bad.pt")
    assert main(["evaluate", str(tmp_path / "bad.pt")]) == 2
    assert "the weights do not fit the model its config describes" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# retrain


def test_retrain_fits_train_plus_val_and_reports_test_accuracy(searched: Searched, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    best = searched.study().best_trial
    out = tmp_path / "final.pt"
    assert main(["retrain", str(TINY), "--storage", searched.url, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"retrained trial {best.number}: 300 images (train+val), 3 epochs" in captured.out  # 200 + 100
    assert "epoch 3/3" in captured.err
    ckpt = hpsearch.load_checkpoint(out)
    assert ckpt.payload["trained_on"] == "train+val" and ckpt.metric == "test_acc" and ckpt.epoch == 3
    assert ckpt.config.to_dict() == trial_config(searched.study(), best).to_dict()
    scores = score_test_set(ckpt, device="cpu")
    assert ckpt.value == pytest.approx(scores.top1)
    assert f"top-1 accuracy  {scores.top1:.4f}" in captured.out
    assert main(["evaluate", str(out)]) == 0
    assert f"trained on train+val, test_acc={scores.top1:.4f}" in capsys.readouterr().out


def test_retrain_stretches_the_schedule_and_takes_every_image_when_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--epochs N trains N epochs (the schedule over them); --all-images drops the search's data.train_limit."""
    url = f"sqlite:///{tmp_path / 'short.db'}"
    assert main(["run", str(TINY), "--storage", url, "--trials", "1", "--set", "train.epochs=1",
                 "--set", "data.train_limit=100"]) == 0
    out = tmp_path / "long.pt"
    capsys.readouterr()
    assert main(["retrain", str(TINY), "--storage", url, "--out", str(out), "--epochs", "2", "--all-images"]) == 0
    captured = capsys.readouterr()
    assert ("for 2 epochs (the trial trained 1; on all training images: the search used data.train_limit=100)"
            in captured.err and "epoch 2/2" in captured.err)
    assert "300 images (train+val), 2 epochs" in captured.out  # 200 + 100, where the search trained on 100
    ckpt = hpsearch.load_checkpoint(out)
    assert ckpt.epoch == 2 and ckpt.config.train.epochs == 2 and ckpt.config.data.train_limit is None


def test_retrain_errors(searched: Searched, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pruned = next(t.number for t in searched.study().trials if t.state == TrialState.PRUNED)
    (tmp_path / "afile").write_text("x")
    assert main(["retrain", *searched.where(), "--trial", str(pruned), "--out", str(tmp_path / "f.pt")]) == 2
    assert f"trial {pruned} is pruned" in capsys.readouterr().err
    assert main(["retrain", *searched.where(), "--out", str(tmp_path / "afile" / "f.pt")]) == 2
    assert "cannot write" in capsys.readouterr().err  # before any training


def test_prepare_with_val_trains_on_both_and_train_keeps_the_final_weights() -> None:
    cfg = DataConfig(dataset="synthetic", val_size=50, synthetic=SyntheticConfig(size=200, test_size=10))
    split, full = prepare(cfg, CPU), prepare(cfg, CPU, include_val=True)
    assert len(full.train_y) == len(split.train_y) + len(split.val_y)
    assert torch.equal(full.val_x, split.val_x)
    rows = {bytes(img.flatten().tolist()) for img in full.train_x}
    assert all(bytes(img.flatten().tolist()) in rows for img in split.val_x)  # validation images are trained on
    config = TrialConfig(data=cfg, model=ModelConfig(stages=1, width=4, blocks_per_stage=1))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2, device="cpu"))
    result = train(config)
    first, last = result.history[0], result.history[-1]
    assert first["val_loss"] != pytest.approx(last["val_loss"], rel=1e-4)  # the two epochs' weights tell apart
    # final_state holds the last epoch's weights, whichever epoch was the best: rebuilt from it, the model scores on
    # the validation split what the last epoch recorded (retrain keeps these, not the best epoch's)
    model = build_model(config.model, split.num_classes, config)
    model.load_state_dict(result.final_state)
    val = evaluate(model, split.val_x, split.val_y, split.mean, split.std, 100, CPU, "fp32", False)
    assert val["loss"] == pytest.approx(last["val_loss"], rel=1e-4)
    assert val["acc"] == pytest.approx(last["val_acc"])
