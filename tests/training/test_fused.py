"""Fused groups (training/fused.py): each member's result against the same configuration trained alone, for the cnn,
a ResNet and the mlp; every way a member leaves the group; the fused modules against the members' own."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from hpsearch.space.config import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    SyntheticConfig,
    TrainConfig,
    TrialConfig,
)
from hpsearch.space.registry import ConfigError
from hpsearch.training.data import prepare
from hpsearch.training.fused import MODES, FusionError, default_mode, fuse, member_losses
from hpsearch.training.models import build_model
from hpsearch.training.train import Member, NonFiniteLoss, TrainResult, train, train_group

SMALL_CNN = ModelConfig(name="cnn", stages=2, blocks_per_stage=1, width=8)


def config(model: ModelConfig = SMALL_CNN, *, optimizer: str = "sgd", lr: float = 0.05, schedule: str = "cosine",
           smoothing: float = 0.0, clip: float | None = None, epochs: int = 3, size: int = 400,
           batch_size: int = 64, **model_fields: object) -> TrialConfig:
    data = DataConfig(dataset="synthetic", synthetic=SyntheticConfig(size=size, test_size=50, classes=4),
                      val_size=100)
    return TrialConfig(data=data, model=ModelConfig(**{**model.__dict__, **model_fields}),  # type: ignore[arg-type]
                       train=TrainConfig(epochs=epochs, batch_size=batch_size, device="cpu",
                                         label_smoothing=smoothing, grad_clip=clip),
                       optimizer=OptimizerConfig(name=optimizer, lr=lr), scheduler=SchedulerConfig(name=schedule))


def assert_like_alone(fused: TrainResult, alone: TrainResult, loss_tol: float, acc_tol: float) -> None:
    """A member's curve and best value within a small tolerance of its configuration trained alone."""
    assert fused.epochs_run == alone.epochs_run
    for f, a in zip(fused.history, alone.history, strict=True):
        assert f["train_loss"] == pytest.approx(a["train_loss"], rel=loss_tol)
        assert f["val_loss"] == pytest.approx(a["val_loss"], rel=loss_tol)
        assert abs(f["val_acc"] - a["val_acc"]) <= acc_tol
        assert f["lr"] == pytest.approx(a["lr"])
    assert abs(fused.best_metrics["val_acc"] - alone.best_metrics["val_acc"]) <= acc_tol
    assert fused.num_params == alone.num_params and fused.flops_per_image == alone.flops_per_image
    assert set(fused.best_state) == set(alone.best_state)


def run_group(configs: list[TrialConfig], **member_fields: object) -> list[Member]:
    members = [Member(c) for c in configs]
    train_group(members, prepare(configs[0].data, "cpu"))
    return members


@pytest.mark.parametrize("mode", MODES)
def test_cnn_members_match_the_same_configurations_trained_alone(mode: str) -> None:
    configs = [config(), config(optimizer="adam", lr=3e-3, schedule="none", smoothing=0.1, clip=1.0),
               config(optimizer="rmsprop", lr=1e-3, schedule="step", init="xavier_uniform")]
    data = prepare(configs[0].data, "cpu")
    alone = [train(c, data) for c in configs]
    members = [Member(c) for c in configs]
    train_group(members, data, mode=mode)
    for member, single in zip(members, alone, strict=True):
        assert member.error is None and member.result is not None
        assert_like_alone(member.result, single, loss_tol=1e-3, acc_tol=0.011)
        weights = max((member.result.best_state[k].float() - single.best_state[k].float()).abs().max().item()
                      for k in single.best_state)
        assert weights < 1e-2  # the same model, up to floating-point order


def test_resnet_members_match_the_same_configurations_trained_alone() -> None:
    # A ResNet on a few noisy images amplifies floating-point order quickly (as a change of memory layout does):
    # a short run at a modest learning rate keeps the comparison sharp.
    resnet = ModelConfig(name="resnet18")
    configs = [config(resnet, lr=0.01, epochs=1, size=228, schedule="none"),
               config(resnet, optimizer="adam", lr=1e-3, epochs=1, size=228, smoothing=0.1)]
    data = prepare(configs[0].data, "cpu")
    alone = [train(c, data) for c in configs]
    members = [Member(c) for c in configs]
    train_group(members, data, mode="grouped")  # the fused modules (sequential: train()'s Step, as for the cnn)
    for member, single in zip(members, alone, strict=True):
        assert member.result is not None
        assert_like_alone(member.result, single, loss_tol=1e-2, acc_tol=0.02)


@pytest.mark.parametrize("mode", MODES)
def test_mlp_members_with_their_own_dropout_train_from_the_same_start(mode: str) -> None:
    mlp = ModelConfig(name="mlp", hidden=())  # its first layer is a dropout: every member gets its own copy
    configs = [config(mlp, lr=0.05, epochs=2), config(mlp, lr=0.05, epochs=2, dropout=0.3)]  # dropout alone differs
    data = prepare(configs[0].data, "cpu")
    alone = train(configs[0], data)
    members = [Member(c) for c in configs]
    train_group(members, data, mode=mode)
    assert members[0].result is not None and members[1].result is not None
    assert_like_alone(members[0].result, alone, loss_tol=1e-3, acc_tol=0.011)  # no dropout: no draw to differ
    assert members[1].result.history[0]["train_loss"] != members[0].result.history[0]["train_loss"]


@pytest.mark.parametrize("mode", MODES)
def test_a_diverging_member_leaves_and_the_others_train_on_unchanged(mode: str) -> None:
    configs = [config(), config(lr=1e6), config(optimizer="adam", lr=3e-3)]
    data = prepare(configs[0].data, "cpu")
    left: list[int] = []
    members = [Member(c, on_leave=lambda m: left.append(len(m.result.history) if m.result else -m.epochs))
               for c in configs]
    train_group(members, data, mode=mode)
    assert isinstance(members[1].error, NonFiniteLoss) and "diverged" in str(members[1].error)
    assert members[1].result is None and members[1].epochs <= 1
    assert left[0] <= 0 and left[1:] == [3, 3]  # the diverged one left first, at once
    for i in (0, 2):
        assert members[i].result is not None
        assert_like_alone(members[i].result, train(configs[i], data), loss_tol=1e-3, acc_tol=0.011)


def test_a_member_whose_hook_raises_leaves_after_that_epoch() -> None:
    class Stop(Exception):
        pass

    seen: list[tuple[int, int]] = []

    def hook(index: int, stop_at: int | None):
        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            seen.append((index, epoch))
            if epoch == stop_at:
                raise Stop(f"member {index} stops at {epoch}")
        return on_epoch

    configs = [config(), config(lr=0.02)]
    members = [Member(configs[0], hook(0, 1)), Member(configs[1], hook(1, None))]
    train_group(members, prepare(configs[0].data, "cpu"))
    assert isinstance(members[0].error, Stop) and members[0].epochs == 1 and members[0].result is None
    assert members[1].result is not None and members[1].result.epochs_run == 3
    assert seen == [(0, 1), (1, 1), (1, 2), (1, 3)]  # no epoch of member 0 after it left


def test_an_exception_named_in_propagate_stops_the_whole_group() -> None:
    class Lost(Exception):
        pass

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        raise Lost("the storage is gone")

    configs = [config(), config(lr=0.02)]
    members = [Member(configs[0], on_epoch), Member(configs[1])]
    with pytest.raises(Lost):
        train_group(members, prepare(configs[0].data, "cpu"), propagate=(Lost,))
    assert not members[1].done


def test_a_member_whose_optimizer_breaks_a_rule_fails_alone() -> None:
    broken = config()
    broken = TrialConfig(data=broken.data, train=broken.train, model=broken.model, scheduler=broken.scheduler,
                         optimizer=OptimizerConfig(name="sgd", nesterov=True, momentum=0.0))
    members = run_group([config(), broken])
    assert isinstance(members[1].error, ConfigError) and "nesterov" in str(members[1].error)
    assert members[0].result is not None and members[0].result.epochs_run == 3


def test_members_must_share_their_structure() -> None:
    with pytest.raises(ValueError, match="free fields"):
        run_group([config(), config(width=16)])


@pytest.mark.parametrize("mode", MODES)
def test_a_members_running_state_resumes_as_a_trial_alone(mode: str) -> None:
    cfg = config(optimizer="adam", lr=3e-3, schedule="cosine")
    data = prepare(cfg.data, "cpu")
    states: list[dict] = []
    # deep-copied as a save to disk would: the optimizer's state dict refers to its live tensors
    members = [Member(cfg, on_state=lambda get: states.append(copy.deepcopy(get())) if not states else None),
               Member(config(lr=0.02))]
    train_group(members, data, mode=mode)
    assert states and states[0]["epoch"] == 1
    resumed = train(cfg, data, resume=states[0])  # the format of train()'s own running state
    assert members[0].result is not None
    assert_like_alone(resumed, members[0].result, loss_tol=1e-3, acc_tol=0.011)


def test_fused_batchnorm_statistics_stay_each_members_own() -> None:
    torch.manual_seed(0)
    a = build_model(SMALL_CNN, 4)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ref_a, ref_b = copy.deepcopy(a).train(), copy.deepcopy(b).train()
    fused = fuse([a, b]).train()
    x = torch.randn(16, 3, 32, 32)
    out = fused(x)
    assert out.shape == (16, 2, 4)
    torch.testing.assert_close(out[:, 0], ref_a(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[:, 1], ref_b(x), rtol=1e-4, atol=1e-5)
    for mine, ref in ((a, ref_a), (b, ref_b)):  # the running statistics, seen through each member's own buffers
        for (name, got), want in zip(mine.state_dict().items(), ref.state_dict().values(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_fuse_refuses_what_it_does_not_know() -> None:
    with pytest.raises(FusionError, match="LSTM"):
        fuse([nn.LSTM(4, 4), nn.LSTM(4, 4)])
    with pytest.raises(FusionError, match="different shapes"):
        fuse([nn.Linear(4, 2), nn.Linear(4, 3)])


def test_member_losses_are_torchs_cross_entropy_with_each_members_smoothing() -> None:
    logits, y = torch.randn(8, 3, 5), torch.randint(0, 5, (8,))
    smoothing = torch.tensor([0.0, 0.1, 0.3])
    got = member_losses(logits, y, smoothing)
    for i, s in enumerate(smoothing.tolist()):
        want = nn.CrossEntropyLoss(label_smoothing=s)(logits[:, i], y)
        assert math.isclose(got[i].item(), want.item(), rel_tol=1e-5)


def test_a_gpu_fuses_and_the_cpu_trains_members_in_turn() -> None:
    assert default_mode(torch.device("cuda"), 2) == "grouped" and default_mode(torch.device("cpu"), 2) == "sequential"
    assert default_mode(torch.device("cuda"), 1) == "sequential"  # a trial alone takes its own step everywhere
    with pytest.raises(ValueError, match="mode 'vmap'"):
        train_group([Member(config())], prepare(config().data, "cpu"), mode="vmap")



def test_fused_dropout_draws_each_members_own_rate() -> None:
    torch.manual_seed(0)
    rates = (0.0, 0.5, 0.25)
    fused = fuse([nn.Dropout(p) for p in rates]).train()  # a dropout first: each member gets its own copy
    out = fused(torch.ones(64, 4000))  # (64, 3, 4000)
    for k, p in enumerate(rates):
        member = out[:, k]
        assert abs((member == 0).float().mean().item() - p) < 0.01
        kept = member[member != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))  # scaled as nn.Dropout scales
    assert torch.equal(fused.eval()(torch.ones(2, 4000)), torch.ones(2, 3, 4000))  # identity when evaluating
