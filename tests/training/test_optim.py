from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from hpsearch.space.config import OptimizerConfig, SchedulerConfig
from hpsearch.space.registry import OPTIMIZERS, SCHEDULERS
from hpsearch.training.optim import LRSchedule, build_optimizer, build_scheduler

CPU = torch.device("cpu")


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)


def _lrs_per_epoch(schedule: LRSchedule, epochs: int, spe: int, metric: float = 0.5) -> list[float]:
    """The lr at the start of every epoch (and after the last), stepping the schedule as train() does."""
    out = [schedule.lr]
    for _ in range(epochs):
        for _ in range(spe):
            schedule.optimizer.step()
            schedule.step_batch()
        schedule.step_epoch({"val_acc": metric, "val_loss": metric})
        out.append(schedule.lr)
    return out


def test_builders_cover_exactly_the_registries() -> None:
    assert all(OPTIMIZERS.has_builder(name) for name in OPTIMIZERS)
    assert all(SCHEDULERS.has_builder(name) for name in SCHEDULERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_builds_and_steps(name: str) -> None:
    model = nn.Linear(4, 3)
    # every field away from its default, which is torch's own for betas, eps and alpha: ignored, they would pass
    cfg = OptimizerConfig(name=name, lr=0.01, weight_decay=1e-4, momentum=0.7, betas=(0.8, 0.95), eps=1e-6, alpha=0.9)
    optimizer = build_optimizer(cfg, model.parameters(), CPU)
    before = model.weight.detach().clone()
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(before, model.weight)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-4
    assert bool(group.get("fused")) == (name in ("sgd", "adam", "adamw"))  # one kernel for the update on the CPU
    for field in set(OPTIMIZERS[name].reads) - {"nesterov"}:  # each field the optimizer reads reaches it
        assert group[field] == pytest.approx(getattr(cfg, field)), field


def test_sgd_nesterov_without_momentum_is_refused() -> None:
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        build_optimizer(OptimizerConfig(nesterov=True, momentum=0.0), nn.Linear(2, 2).parameters(), CPU)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: sgd, adam, adamw, rmsprop, adagrad"):
        build_optimizer(OptimizerConfig(name="lion"), nn.Linear(2, 2).parameters(), CPU)
    with pytest.raises(ValueError, match="unknown scheduler 'poly'; known: none, step"):
        build_scheduler(SchedulerConfig(name="poly"), _optimizer(), 3, 4, "val_acc")


def test_a_torch_without_fused_kernels_for_the_device_gets_its_default_optimizer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Older torch builds refuse fused=True on the CPU when the optimizer is made: the unfused one is used."""
    made: list[object] = []

    class NoFusedSGD(torch.optim.SGD):
        def __init__(self, params: object, fused: bool | None = None, **kwargs: object) -> None:
            made.append(fused)
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                                   "supported devices: ['cuda', 'xpu', 'privateuseone']")
            super().__init__(params, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("hpsearch.training.optim._FUSABLE", (NoFusedSGD,))
    monkeypatch.setattr(torch.optim, "SGD", NoFusedSGD)
    optimizer = build_optimizer(OptimizerConfig(name="sgd", lr=0.1), nn.Linear(2, 2).parameters(), CPU)
    assert made == [True, None] and isinstance(optimizer, NoFusedSGD)
    assert not optimizer.param_groups[0].get("fused")


def test_fused_and_unfused_sgd_take_the_same_steps() -> None:
    """The fused update is the same arithmetic as torch's default: the weights agree to rounding."""
    weights = []
    for fused in (True, None):
        torch.manual_seed(0)
        model = nn.Linear(8, 4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                    fused=fused)
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.randn(16, 8)).square().mean().backward()
            optimizer.step()
        weights.append(model.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_on_cuda() -> None:
    model = nn.Linear(4, 3).cuda()
    optimizer = build_optimizer(OptimizerConfig(name="adamw"), model.parameters(), torch.device("cuda"))
    assert optimizer.param_groups[0]["fused"]


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("optimizer_name", ["sgd", "adagrad"])
def test_every_scheduler_builds_and_steps(name: str, optimizer_name: str) -> None:
    optimizer = build_optimizer(OptimizerConfig(name=optimizer_name, lr=0.1), nn.Linear(2, 2).parameters(), CPU)
    cfg = SchedulerConfig(name=name, warmup_epochs=1.0, step_size=2, milestones=(2, 3), patience=0)
    schedule = build_scheduler(cfg, optimizer, epochs=5, steps_per_epoch=3, metric="val_acc")
    lrs = _lrs_per_epoch(schedule, 5, 3)
    assert all(math.isfinite(lr) and 0 <= lr <= 0.1 + 1e-12 for lr in lrs)
    schedule.step_batch()  # one step too many (a rounding slip) must not raise, even for onecycle


def test_step_matches_torch_per_epoch_step_lr() -> None:
    epochs, spe = 30, 7
    schedule = build_scheduler(SchedulerConfig(name="step", step_size=10, gamma=0.5), _optimizer(), epochs, spe,
                               "val_acc")
    reference = torch.optim.lr_scheduler.StepLR(optimizer := _optimizer(), step_size=10, gamma=0.5)
    expected = [optimizer.param_groups[0]["lr"]]
    for _ in range(epochs):
        optimizer.step()
        reference.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert _lrs_per_epoch(schedule, epochs, spe) == pytest.approx(expected, rel=1e-9)


def test_cosine_matches_torch_per_epoch_cosine() -> None:
    epochs, spe = 30, 7
    schedule = build_scheduler(SchedulerConfig(name="cosine"), _optimizer(), epochs, spe, "val_acc")
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer := _optimizer(), T_max=epochs)
    expected = [optimizer.param_groups[0]["lr"]]
    for _ in range(epochs):
        optimizer.step()
        reference.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert _lrs_per_epoch(schedule, epochs, spe) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert expected[-1] == pytest.approx(0.0, abs=1e-9)


def test_cosine_ends_at_min_lr_factor() -> None:
    cfg = SchedulerConfig(name="cosine", min_lr_factor=0.1)
    assert _lrs_per_epoch(build_scheduler(cfg, _optimizer(), 4, 5, "val_acc"), 4, 5)[-1] == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["none", "cosine", "step", "linear", "exponential", "plateau"])
def test_warmup_starts_low_and_reaches_lr(name: str) -> None:
    spe = 4
    schedule = build_scheduler(SchedulerConfig(name=name, warmup_epochs=2), _optimizer(0.1), 10, spe, "val_acc")
    lrs = []
    for _ in range(2 * spe):
        lrs.append(schedule.lr)
        schedule.optimizer.step()
        schedule.step_batch()
    assert lrs[0] < 0.001
    assert all(a < b for a, b in zip(lrs, lrs[1:], strict=False))  # rising
    assert schedule.lr == pytest.approx(0.1)  # the peak, where the main schedule starts


def test_plateau_decays_after_patience() -> None:
    cfg = SchedulerConfig(name="plateau", factor=0.1, patience=2)
    schedule = build_scheduler(cfg, _optimizer(0.1), 10, 3, "val_acc")
    lrs = _lrs_per_epoch(schedule, 5, 3, metric=0.5)  # no improvement after the first epoch
    assert lrs[:4] == pytest.approx([0.1] * 4)
    assert lrs[4] == pytest.approx(0.01)


def test_plateau_follows_val_loss_downwards() -> None:
    schedule = build_scheduler(SchedulerConfig(name="plateau", patience=0), _optimizer(0.1), 10, 1, "val_loss")
    for loss in (1.0, 0.9, 0.8):  # improving: no decay
        schedule.step_epoch({"val_loss": loss, "val_acc": 0.0})
    assert schedule.lr == pytest.approx(0.1)
    schedule.step_epoch({"val_loss": 0.85, "val_acc": 0.0})
    assert schedule.lr == pytest.approx(0.01)


def test_onecycle_rises_to_lr_and_ends_low() -> None:
    cfg = SchedulerConfig(name="onecycle", pct_start=0.25, div_factor=10, final_div_factor=100)
    schedule = build_scheduler(cfg, _optimizer(0.1), 4, 10, "val_acc")
    lrs = []
    for _ in range(40):
        lrs.append(schedule.lr)
        schedule.optimizer.step()
        schedule.step_batch()
    assert lrs[0] == pytest.approx(0.01)
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert lrs[-1] == pytest.approx(0.1 / 10 / 100, rel=1e-3)  # the lr of the last step


def test_multistep_exponential_and_linear_at_epoch_boundaries() -> None:
    multistep = build_scheduler(SchedulerConfig(name="multistep", milestones=(2, 4), gamma=0.1), _optimizer(1.0),
                                5, 3, "val_acc")
    assert _lrs_per_epoch(multistep, 5, 3) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    exponential = build_scheduler(SchedulerConfig(name="exponential", gamma=0.5), _optimizer(1.0), 3, 4, "val_acc")
    assert _lrs_per_epoch(exponential, 3, 4) == pytest.approx([1, 0.5, 0.25, 0.125])
    linear = build_scheduler(SchedulerConfig(name="linear", end_factor=0.2), _optimizer(1.0), 4, 5, "val_acc")
    assert _lrs_per_epoch(linear, 4, 5) == pytest.approx([1, 0.8, 0.6, 0.4, 0.2])


def test_warmup_then_cosine_anneals_over_the_remaining_steps() -> None:
    schedule = build_scheduler(SchedulerConfig(name="cosine", warmup_epochs=1), _optimizer(0.1), 4, 4, "val_acc")
    lrs = _lrs_per_epoch(schedule, 4, 4)
    assert lrs[1] == pytest.approx(0.1)  # warm-up done after one epoch
    assert lrs[2] == pytest.approx(0.05 * (1 + math.cos(math.pi * 4 / 12)))  # cosine over 12 steps, at 4
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)
