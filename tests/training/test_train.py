from __future__ import annotations

import dataclasses
import itertools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpsearch.space.config import (
    PRECISIONS,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    SyntheticConfig,
    TrainConfig,
    TrialConfig,
)
from hpsearch.space.registry import OPTIMIZERS, SCHEDULERS
from hpsearch.training import checkpoint
from hpsearch.training.data import prepare
from hpsearch.training.device import autocast_dtype, resolve_device
from hpsearch.training.evaluate import evaluate
from hpsearch.training.models import build_model, count_parameters
from hpsearch.training.precision import PrecisionError
from hpsearch.training.step import ResumeError
from hpsearch.training.train import NonFiniteLoss, train

CPU = torch.device("cpu")
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


def tiny(epochs: int = 2, size: int = 300, **sections: object) -> TrialConfig:
    """A tiny CPU trial on synthetic data: a width-8, 3-stage cnn."""
    config = TrialConfig(
        data=DataConfig(dataset="synthetic", val_size=size // 5,
                        synthetic=SyntheticConfig(size=size, test_size=10, classes=10)),
        train=TrainConfig(epochs=epochs, batch_size=64, device="cpu", eval_batch_size=256),
        model=ModelConfig(width=8, stages=3, blocks_per_stage=1),
        optimizer=OptimizerConfig(name="sgd", lr=0.05, nesterov=True),
    )
    return dataclasses.replace(config, **sections)  # type: ignore[arg-type]


def test_synthetic_data_is_learnable_not_trivial() -> None:
    result = train(tiny(epochs=4, size=1000))
    accs = [m["val_acc"] for m in result.history]
    assert accs[0] < 0.9  # not solved after one epoch: pruning has something to tell apart
    assert max(accs) > 0.3  # chance is 0.1
    assert accs[-1] > accs[0]


def test_result_and_on_epoch() -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    config = tiny(epochs=3, scheduler=SchedulerConfig(name="cosine"))
    result = train(config, on_epoch=lambda epoch, metrics: calls.append((epoch, dict(metrics))))
    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    assert [m for _, m in calls] == result.history
    for metrics in result.history:
        assert set(metrics) == METRIC_KEYS
        assert 0 <= metrics["val_acc"] <= 1 and 0 <= metrics["train_acc"] <= 1
        assert metrics["val_loss"] > 0 and metrics["seconds"] > 0
    assert result.history[0]["lr"] > result.history[-1]["lr"] > 0  # cosine, read at the end of each epoch
    assert result.epochs_run == 3
    accs = [m["val_acc"] for m in result.history]
    assert result.best_epoch == int(np.argmax(accs)) + 1
    assert result.best_metrics == result.history[result.best_epoch - 1]
    assert result.num_params == count_parameters(build_model(config.model, 10))
    assert result.train_images_per_sec > 0 and result.seconds > 0
    assert result.class_names == tuple(f"class_{i}" for i in range(10))

    # best_state holds the best epoch's weights, on the CPU: they reproduce its validation accuracy
    assert all(t.device.type == "cpu" for t in result.best_state.values())
    model = build_model(config.model, 10)
    model.load_state_dict(result.best_state)
    data = prepare(config.data, CPU)
    val = evaluate(model, data.val_x, data.val_y, data.mean, data.std, 100, CPU, "fp32", False)
    assert val["acc"] == pytest.approx(result.best_metrics["val_acc"])
    assert val["loss"] == pytest.approx(result.best_metrics["val_loss"], rel=1e-4)


def test_best_epoch_follows_val_loss_when_asked() -> None:
    result = train(dataclasses.replace(tiny(epochs=3), metric="val_loss"))
    assert result.best_epoch == int(np.argmin([m["val_loss"] for m in result.history])) + 1


def test_on_epoch_exceptions_propagate() -> None:
    class Prune(Exception):
        pass

    calls = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        calls.append(epoch)
        raise Prune

    with pytest.raises(Prune):
        train(tiny(epochs=3), on_epoch=on_epoch)
    assert calls == [1]


def test_divergence_raises_non_finite_loss() -> None:
    config = tiny(epochs=3, optimizer=OptimizerConfig(lr=1e30, weight_decay=0.0))
    with pytest.raises(NonFiniteLoss, match="in epoch 1: the run diverged; try a lower optimizer.lr"):
        train(config)


def test_training_is_deterministic_on_the_cpu() -> None:
    config = tiny(epochs=2, train=dataclasses.replace(tiny().train, epochs=2, seed=3))
    a, b = train(config), train(config)
    drop = {"seconds"}
    assert [{k: v for k, v in m.items() if k not in drop} for m in a.history] == [
        {k: v for k, v in m.items() if k not in drop} for m in b.history
    ]
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)
    c = train(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=4)))
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]


class Killed(Exception):
    """Stands in for a worker dying after an epoch."""


def stopped_after(config: TrialConfig, epoch: int, path: Path) -> dict[str, Any]:
    """Train until `epoch`, saving the state each epoch as a trial does; the state read back weights-only."""

    def on_state(get: Any) -> None:
        state = get()
        checkpoint.save({"state": state}, path)
        if state["epoch"] == epoch:
            raise Killed

    with pytest.raises(Killed):
        train(config, on_state=on_state)
    return checkpoint.read(path)["state"]


def without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


@pytest.mark.parametrize("scheduler, optimizer", list(zip(SCHEDULERS, itertools.cycle(OPTIMIZERS))))
def test_resuming_a_saved_state_gives_the_uninterrupted_run(tmp_path: Path, scheduler: str, optimizer: str) -> None:
    """Weights, optimizer, schedule (warm-up included) and every random stream (augmentation, dropout) resume."""
    config = tiny(epochs=4, size=200, model=ModelConfig(width=8, stages=2, blocks_per_stage=1, dropout=0.3),
                  optimizer=OptimizerConfig(name=optimizer, lr=0.01, momentum=0.9),
                  scheduler=SchedulerConfig(name=scheduler, warmup_epochs=1, patience=0, step_size=1))
    full = train(config)
    state = stopped_after(config, 2, tmp_path / "running.pt")
    epochs: list[int] = []
    resumed = train(config, on_epoch=lambda epoch, metrics: epochs.append(epoch), resume=state)
    assert epochs == [3, 4]  # the finished epochs are not trained again
    assert without_seconds(resumed.history) == without_seconds(full.history)
    assert resumed.best_epoch == full.best_epoch and resumed.epochs_run == 4
    assert all(torch.equal(resumed.best_state[k], full.best_state[k]) for k in full.best_state)


def test_a_state_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    state = stopped_after(tiny(epochs=3), 1, tmp_path / "running.pt")
    with pytest.raises(ResumeError, match="does not fit"):
        train(tiny(epochs=3, model=ModelConfig(width=16, stages=3, blocks_per_stage=1)), resume=state)
    with pytest.raises(ResumeError, match="does not fit"):
        train(tiny(epochs=3), resume={**state, "epoch": 2})


def test_a_run_with_dropout_repeats_whether_or_not_its_flops_were_counted_before() -> None:
    """Counting FLOPs builds a throwaway model once per architecture; it must not move the trial's RNG."""
    from hpsearch.training.step import _count_flops

    config = tiny(epochs=1, size=200, model=ModelConfig(width=8, stages=2, blocks_per_stage=1, dropout=0.5))
    _count_flops.cache_clear()
    first, second = train(config), train(config)  # the first one counts, the second finds the count cached
    assert without_seconds(first.history) == without_seconds(second.history)


def test_flops_are_counted_once_per_architecture_whatever_the_dropout() -> None:
    """Dropout is searched as a float: keyed on it, every trial would count its model's FLOPs again."""
    from hpsearch.training.step import _count_flops, train_flops_per_image

    _count_flops.cache_clear()
    counts = {train_flops_per_image(ModelConfig(width=8, stages=2, blocks_per_stage=1, dropout=p), 10)
              for p in (0.0, 0.13, 0.5)}
    assert len(counts) == 1 and counts.pop() > 0
    assert _count_flops.cache_info().misses == 1
    wider = train_flops_per_image(ModelConfig(width=16, stages=2, blocks_per_stage=1), 10)
    assert _count_flops.cache_info().misses == 2 and wider > 0


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "fp16"])
def test_every_precision_trains(precision: str) -> None:
    """Each precision the CPU has trains, and its convolutions compute in that precision (auto: fp32 on a CPU
    without native bf16, as conftest.py makes this one look; test_precision.py has the others)."""
    train_cfg = dataclasses.replace(tiny().train, epochs=1, precision=precision, grad_clip=1.0)
    seen: set[torch.dtype] = set()

    def conv_output(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Conv2d) and module.training:
            seen.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(conv_output)
    try:
        result = train(tiny(train=train_cfg, size=200))
    finally:
        hook.remove()
    assert np.isfinite(result.history[0]["train_loss"])
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    assert seen == {expected} and result.precision == ("fp32" if precision == "auto" else precision)


def test_fp16_on_the_cpu_is_refused_with_the_fix() -> None:
    train_cfg = dataclasses.replace(tiny().train, epochs=1, precision="fp16")
    with pytest.raises(PrecisionError, match="fp16 needs a GPU.*\nfix: train.precision: auto"):
        train(tiny(train=train_cfg, size=200))


def test_precision_and_device_resolution() -> None:
    assert autocast_dtype("auto", CPU) is None and autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype("bf16", CPU) == torch.bfloat16 and autocast_dtype("fp16", CPU) == torch.float16
    with pytest.raises(ValueError, match="unknown precision 'fp8'; known: auto, bf16, fp16, fp32"):
        autocast_dtype("fp8", CPU)
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_evaluate_counts_top1_top5_and_is_batch_size_independent() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=4, stages=2, blocks_per_stage=1), 10)
    x = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (50,))
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    a = evaluate(model, x, y, mean, std, 7, CPU, "fp32", False)
    b = evaluate(model, x, y, mean, std, 1000, CPU, "fp32", False)
    assert a == pytest.approx(b)
    assert 0 <= a["acc"] <= a["top5"] <= 1 and a["loss"] > 0
    with torch.no_grad():
        logits = model((x.float() / 255 - 0.5) / 0.25)
    assert a["acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert a["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)


CIFAR100 = os.environ.get("HPSEARCH_CIFAR100")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR100, reason="set HPSEARCH_CIFAR100 to the path of cifar100.npz to run")
def test_real_cifar100_small_cnn_learns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cifar100.npz").symlink_to(Path(str(CIFAR100)).resolve())
    config = TrialConfig(
        data=DataConfig(dataset="cifar100", root=str(tmp_path), download=False, val_size=5000, train_limit=10000),
        train=TrainConfig(epochs=2, batch_size=64, device="cpu"),
        model=ModelConfig(stages=3, blocks_per_stage=1, width=32),
        optimizer=OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True),
        scheduler=SchedulerConfig(name="onecycle", pct_start=0.25),
    )
    start = time.perf_counter()
    result = train(config)
    with capsys.disabled():
        print(f"\nreal CIFAR-100, 10k images, 2 epochs on the CPU: val_acc "
              f"{[round(m['val_acc'], 4) for m in result.history]} in {time.perf_counter() - start:.1f}s "
              f"({result.train_images_per_sec:.0f} train images/s)")
    assert result.history[-1]["val_acc"] > 0.05  # chance is 0.01


def test_the_channels_last_step_of_the_gpu_runs_on_the_cpu_and_agrees() -> None:
    """Trials use channels_last on CUDA only; the same Step with the model and batches in channels_last runs here,
    and its loss and update agree with the contiguous layout's (the layout changes no arithmetic that matters)."""
    from hpsearch.training.optim import build_optimizer, build_scheduler
    from hpsearch.training.step import Step

    config = tiny()
    losses, weights = [], []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build_model(config.model, 4)
        x = torch.randn(8, 3, 32, 32)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer = build_optimizer(config.optimizer, model.parameters(), CPU)
        step = Step(model, optimizer, build_scheduler(config.scheduler, optimizer, 1, 1, config.metric), config, CPU)
        loss, _ = step(x, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
        losses.append(float(loss))
        weights.append(next(model.parameters()).detach().clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_deterministic_sets_the_kernels_and_every_seed_and_a_later_trial_resets_them() -> None:
    import random

    config = tiny(epochs=1)
    det = dataclasses.replace(config, train=dataclasses.replace(config.train, deterministic=True, seed=3))
    try:
        first = train(det)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        draws = (random.random(), float(np.random.rand()))
        again = train(det)
        assert (random.random(), float(np.random.rand())) == draws  # Python's and NumPy's seeds were set again
        assert [{k: v for k, v in m.items() if k != "seconds"} for m in again.history] == \
            [{k: v for k, v in m.items() if k != "seconds"} for m in first.history]
        train(config)  # not deterministic: the process-wide settings go back
        assert not torch.backends.cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_also_evaluate_adds_each_sets_metrics_to_every_epoch_and_never_picks_the_best() -> None:
    config = tiny(epochs=3)
    data = prepare(config.data, CPU)
    plain = train(config, data)
    more = train(config, data, also_evaluate={"test": (data.val_x[:20], data.val_y[:20])})
    for with_test, without in zip(more.history, plain.history, strict=True):
        assert set(with_test) == METRIC_KEYS | {"test_loss", "test_acc"}
        assert 0.0 <= with_test["test_acc"] <= 1.0
        assert with_test["val_acc"] == without["val_acc"]  # measuring more changes nothing of the training
    assert more.best_epoch == plain.best_epoch


def test_a_fixed_normalisation_replaces_the_splits_own() -> None:
    config = tiny()
    fixed = dataclasses.replace(config.data, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    data = prepare(fixed, CPU)
    assert data.mean.tolist() == [0.5] * 3 and data.std.tolist() == [0.25] * 3
    own = prepare(config.data, CPU)
    assert own.mean.tolist() != [0.5] * 3


def test_a_normalisation_of_the_wrong_length_is_refused() -> None:
    from hpsearch.training.rawdata import DataError

    with pytest.raises(DataError, match="data.mean has 1 values; synthetic's images have 3 channels"):
        prepare(dataclasses.replace(tiny().data, mean=(0.5,), std=(0.5,)), CPU)
    with pytest.raises(DataError, match="give data.mean and data.std together"):
        prepare(dataclasses.replace(tiny().data, mean=(0.5, 0.5, 0.5)), CPU)
