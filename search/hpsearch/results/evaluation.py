"""The test set: a checkpoint's test accuracy, and the final fit of a configuration on train+validation.

The only module that reads the test split. The search never does: it selects on the validation split, and the test
set measures the model that was selected, once.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..space import TrialConfig
from ..space.config import DataConfig
from ..training.checkpoint import Checkpoint, from_payload, make_payload
from ..training.data import load_test, prepare
from ..training.device import channels_last as use_channels_last
from ..training.device import repeatable_cublas, resolve_device
from ..training.evaluate import evaluate
from ..training.precision import device_problem
from ..training.rawdata import DataError, no_test_split
from ..training.rawfiles import SOURCES
from ..training.train import train


@dataclass(frozen=True)
class Scores:
    top1: float  # fraction of test images whose top class is right
    top5: float  # ... whose right class is among the top 5
    loss: float  # mean cross-entropy
    images: int
    per_class: list[tuple[str, int, int]] | None  # (class name, images, correct), in label order
    device: str


def with_data(config: TrialConfig, root: str | None = None, device: str | None = None) -> TrialConfig:
    """The config with data.root (--data-root) and train.device (--device) replaced when given."""
    if root is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
    if device is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
    return config


def score_test_set(ckpt: Checkpoint, data_root: str | None = None, device: str = "auto",
                   per_class: bool = False, batch_size: int | None = None) -> Scores:
    """Top-1 and top-5 accuracy (and per class) of the checkpoint's model on its data set's test split.

    A checkpoint says which data set it was trained on, never where hpsearch may write: the test set is read from
    data_root (--data-root) or the checkpoint's data.root, and never downloaded (a crafted file would choose the
    folder a download creates).
    """
    config = with_data(ckpt.config, data_root)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, download=False))
    dev = resolve_device(device)
    try:
        x, y = load_test(config.data, dev)
    except DataError as exc:
        raise _evaluate_fix(exc, config.data) from None
    if len(y) == 0:
        raise DataError(f"the {config.data.dataset} test split under {config.data.root} has no images")
    if int(y.max()) >= len(ckpt.class_names):
        raise DataError(f"the {config.data.dataset} test labels go up to {int(y.max())} but the checkpoint knows "
                        f"{len(ckpt.class_names)} classes; is --data-root the data set it was trained on?")
    model = ckpt.model.to(dev)
    channels_last = use_channels_last(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    size = batch_size or config.train.eval_batch_size
    mean, std = ckpt.mean.to(dev), ckpt.std.to(dev)
    n = len(ckpt.class_names)
    precision = ckpt.payload.get("precision") or config.train.precision  # what it trained in
    metrics = evaluate(model, x, y, mean, std, size, dev, precision, channels_last,
                       num_classes=n if per_class else None)
    classes = None
    if per_class:
        total = torch.bincount(y, minlength=n).tolist()
        classes = list(zip(ckpt.class_names, total, metrics["per_class"], strict=True))
    return Scores(metrics["acc"], metrics["top5"], metrics["loss"], len(y), classes, str(dev))


def _evaluate_fix(exc: DataError, data: DataConfig) -> DataError:
    """A data set's not-found message with the fix that applies to evaluate. The data sets' readers say it for a
    search (its space's data.root, its data.download); evaluate takes --data-root and never downloads, so it keeps
    what was tried and says the fix for the data set at hand: where torchvision can download it, how to fetch it
    first; else (an image folder) the layout it must have. Any other DataError is returned as it is."""
    text = str(exc)
    if "data not found" not in text.split("\n", 1)[0]:
        return exc
    tried = re.split(r"\n(?:Download|Fix): ", text, maxsplit=1)[0]
    if data.dataset in SOURCES:  # torchvision's data sets, which a search may download
        fix = (f"Download: never by evaluate (a checkpoint does not choose where hpsearch writes).\nFix: pass "
               f"--data-root DIR where DIR holds the {data.dataset} data in one of the forms tried above; to fetch it "
               f"there first, on a machine with internet access: python -c \"import torchvision; "
               f"torchvision.datasets.{SOURCES[data.dataset][2]}('DIR', download=True)\"")
    else:  # an image folder (synthetic data is made, never missing): nothing to download
        fix = ("Fix: pass --data-root DIR for the image folder the model was trained on, with its test set: "
               "DIR/train/<class>/<image> and DIR/test/<class>/<image>")
    return DataError(f"{tried}\n{fix}.")


@dataclass(frozen=True)
class Retrained:
    payload: dict[str, Any]  # a checkpoint of the final weights; metric test_acc
    test: Scores
    train_images: int
    epochs: int
    seconds: float
    parameters: int
    history: list[dict[str, float]]  # each epoch's metrics (test_acc and test_loss with test_every_epoch)


def as_trained(config: TrialConfig, precision: object) -> str:
    """The precision a retrain of `config` trains in: with train.precision auto, the one its trial trained in
    (keys.PRECISION), so that the retrain repeats the search's arithmetic instead of measuring again; "" (resolve
    it as a trial would) where none was recorded, the space sets one, or it cannot train on the retrain's device
    (fp16 on a CPU)."""
    if config.train.precision != "auto" or precision not in ("bf16", "fp16", "fp32"):
        return ""
    if device_problem(str(precision), resolve_device(config.train.device)):
        return ""
    return str(precision)


def stretched(config: TrialConfig, epochs: int | None, all_images: bool) -> tuple[TrialConfig, list[str]]:
    """`config` for a retrain of `epochs` epochs (None: its own), on every training image with `all_images`, and
    what differs from the trial that was searched, in words."""
    changed = []
    if epochs is not None and epochs != config.train.epochs:
        changed.append(f"the trial trained {config.train.epochs}")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    if all_images and config.data.train_limit is not None:
        changed.append(f"on all training images: the search used data.train_limit={config.data.train_limit}")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, train_limit=None))
    return config, changed


def retrain(config: TrialConfig, trial: int | None, study: str | None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None,
            test_every_epoch: bool = False, precision: str = "") -> Retrained:
    """Train `config` on train+validation for all its epochs, keep the last epoch's weights, measure them on test.
    `precision`: what to train in (as_trained); "": train.precision resolved as for a trial.

    The validation images are part of the training set here, so no epoch is selected by them: the final weights
    are the model, as the full schedule intends. `test_every_epoch` also measures the test set after every epoch
    (test_acc and test_loss in each epoch's metrics and in `history`): the curve that course notes quote the
    maximum of. That maximum is picked by the test set itself, so it is an optimistic figure; the model kept is
    still the last epoch's.
    """
    missing = no_test_split(config.data)  # before the training, not after it
    if missing:
        raise DataError(missing)
    device = resolve_device(config.train.device)
    if config.train.deterministic:
        repeatable_cublas()
    data = prepare(config.data, device, include_val=True)
    also = {"test": load_test(config.data, device)} if test_every_epoch else None
    started = time.perf_counter()
    result = train(config, data, on_epoch, also_evaluate=also, precision=precision)
    seconds = time.perf_counter() - started
    mean, std = data.mean.flatten().tolist(), data.std.flatten().tolist()
    payload = make_payload(result.final_state, config, "test_acc", 0.0, trial, data.class_names, study,
                           result.epochs_run, mean=mean, std=std, precision=result.precision)
    payload["trained_on"] = "train+val"
    ckpt = from_payload(payload, "the retrained model")
    test = score_test_set(ckpt, config.data.root, device=str(device))
    payload["value"] = float(test.top1)
    return Retrained(payload, test, len(data.train_y), result.epochs_run, seconds, result.num_params,
                     result.history)


__all__ = ["Retrained", "Scores", "as_trained", "retrain", "score_test_set", "stretched", "with_data"]
