"""The seed spaces (spaces/seeds/) run as shipped, on small subsets of the real CIFAR-100, on the CPU.

The data sets are made from the real images: cifar100.npz is a class-balanced subset; cifar10.npz holds ten of its
classes relabelled 0..9 (there is no CIFAR-10 on these machines); mnist.npz and fashion_mnist.npz hold the same
images as 28x28 grayscale (the seeds' shapes, not their content). Every search is shrunk with --set alone (fewer
images, one epoch where a row does not fix its epochs), so the files themselves are what runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpsearch.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "spaces" / "seeds"
CIFAR100 = os.environ.get("HPSEARCH_CIFAR100")
pytestmark = pytest.mark.skipif(not CIFAR100, reason="set HPSEARCH_CIFAR100 to the path of cifar100.npz to run")


def _take(y: np.ndarray, classes: range, per_class: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in classes])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seed-data")
    with np.load(str(CIFAR100)) as real:
        x_train, y_train, x_test, y_test = (real[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    train, test = _take(y_train, range(100), 6), _take(y_test, range(100), 2)
    np.savez(folder / "cifar100.npz", x_train=x_train[train], y_train=y_train[train], x_test=x_test[test],
             y_test=y_test[test])
    train, test = _take(y_train, range(10), 40), _take(y_test, range(10), 10)
    np.savez(folder / "cifar10.npz", x_train=x_train[train], y_train=y_train[train], x_test=x_test[test],
             y_test=y_test[test])

    def gray(x: np.ndarray) -> np.ndarray:
        return np.rint(x[:, 2:30, 2:30] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)

    for name in ("mnist", "fashion_mnist"):
        np.savez(folder / f"{name}.npz", x_train=gray(x_train[train]), y_train=y_train[train],
                 x_test=gray(x_test[test]), y_test=y_test[test])
    return folder


def run(space: str, data: Path, *extra: str) -> int:
    return main(["run", str(SEEDS / space), "--data-root", str(data), *extra])


def trials(name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///studies/{name}.db").trials


def test_the_cifar100_table_runs_its_nine_rows_and_retrains_one_with_the_test_curve(
        workdir: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("cifar100_vgg.yaml", data, "--set", "data.val_size=100", "--set", "data.train_limit=400",
               "--set", "train.epochs=2") == 0
    done = trials("seed-cifar100-vgg")
    assert len(done) == 9 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    rows = {(t.params["cases.net"], t.params["cases.recipe"]) for t in done}
    assert rows == {(n, r) for n in ("cnn6", "cnn10", "cnn10_batch64") for r in ("adam", "sgd_step", "sgd_cosine")}
    capsys.readouterr()
    trial = next(t.number for t in done if t.params["cases.net"] == "cnn6")
    assert main(["retrain", str(SEEDS / "cifar100_vgg.yaml"), "--trial", str(trial), "--out", "row.pt",
                 "--data-root", str(data), "--test-every-epoch"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy after each epoch:" in out
    curve = out.split("test accuracy after each epoch:\n")[1].splitlines()[0].split()
    assert len(curve) == 2 and all(0.0 <= float(v) <= 1.0 for v in curve)
    assert f"maximum  {max(curve)}" in out and "the notes' optimistic protocol" in out
    assert f"final    {curve[-1]} at epoch 2" in out


def test_the_resnets_run_with_every_augmentation(workdir: Path, data: Path) -> None:
    assert run("cifar10_resnet.yaml", data, "--set", "data.val_size=100", "--set", "data.train_limit=100",
               "--set", "train.epochs=1", "--set", "train.batch_size=50") == 0
    done = trials("seed-cifar10-resnet")
    assert sorted(t.params["model.name"] for t in done) == ["resnet18", "resnet34"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and 0.0 <= t.value <= 1.0 for t in done)


def test_the_small_convnets_run_their_rows_for_their_own_epochs(workdir: Path, data: Path) -> None:
    assert run("cifar10_convnets.yaml", data, "--set", "data.val_size=100", "--set", "data.train_limit=100") == 0
    done = {t.params["cases.net"]: t for t in trials("seed-cifar10-convnets")}
    assert done["three_layer"].state == done["two_conv_dropout"].state == optuna.trial.TrialState.COMPLETE
    assert len(done["three_layer"].intermediate_values) == 1
    assert len(done["two_conv_dropout"].intermediate_values) == 10


@pytest.mark.parametrize("space", ["mnist_mlp.yaml", "fashion_mnist_mlp.yaml"])
def test_the_mlp_as_written_and_with_a_searched_lr(workdir: Path, data: Path, space: str) -> None:
    name = f"seed-{space[:-len('_mlp.yaml')].replace('_', '-')}-mlp"
    shrink = ["--set", "data.val_size=100", "--set", "data.train_limit=300", "--set", "train.epochs=1"]
    assert run(space, data, *shrink) == 0
    (notes,) = trials(name)
    assert notes.params == {}  # everything fixed, as written
    assert notes.state == optuna.trial.TrialState.COMPLETE or "optimizer.lr" in notes.user_attrs.get("fail_reason", "")
    assert run(space, data, *shrink, "--trials", "2", "--study", "lr-search",
               "--set", "optimizer.lr={type: float, low: 1.0e-3, high: 10.0, log: true}") == 0
    searched = optuna.load_study(study_name="lr-search", storage=f"sqlite:///studies/{name}.db").trials
    assert len(searched) == 2 and all("optimizer.lr" in t.params for t in searched)
