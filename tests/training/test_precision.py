"""`train.precision: auto` on the CPU (training/precision.py): the processor's native bf16 decides whether bf16 is
tried, a measurement per architecture whether it is kept; each trial records what it trained in, and a retrain,
an evaluation and a resumed trial use that. Speed itself is measured by `hpsearch bench`, never here."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
import torch

from hpsearch.cli import main
from hpsearch.results.evaluation import as_trained
from hpsearch.space.config import DataConfig, ModelConfig, OptimizerConfig, SyntheticConfig, TrainConfig, TrialConfig
from hpsearch.training import precision
from hpsearch.training.data import prepare
from hpsearch.training.precision import Choice, describe_auto, resolve
from hpsearch.training.step import train_flops_per_image
from hpsearch.training.train import Member, train, train_group

CPU = torch.device("cpu")
TINY = Path(__file__).resolve().parents[1] / "spaces" / "tiny.yaml"


def config(precision_name: str = "auto", deterministic: bool = False, width: int = 8) -> TrialConfig:
    return TrialConfig(
        data=DataConfig(dataset="synthetic", val_size=40, synthetic=SyntheticConfig(size=200, test_size=10, classes=4)),
        train=TrainConfig(epochs=1, batch_size=32, device="cpu", precision=precision_name,
                          deterministic=deterministic),
        model=ModelConfig(width=width, stages=2, blocks_per_stage=1), optimizer=OptimizerConfig(lr=0.05))


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> list[TrialConfig]:
    """A CPU with AMX-BF16, a fresh cache of choices, and measure() answering bf16; returns the configs measured."""
    measured: list[TrialConfig] = []

    def measure(cfg: TrialConfig, data: Any, device: torch.device, native_name: str) -> Choice:
        measured.append(cfg)
        return Choice("bf16", f"auto: bf16, 2.00x fp32's speed on this CPU ({native_name})", 0.1)

    monkeypatch.setattr(precision, "cpu_info", lambda: ("Test CPU", "AMX-BF16"))
    monkeypatch.setattr(precision, "_CHOICES", {})
    monkeypatch.setattr(precision, "measure", measure)
    return measured


def conv_dtypes(run: Any) -> tuple[Any, set[torch.dtype]]:
    """What `run()` returns, and the dtypes the convolutions computed in while training."""
    train_flops_per_image(config().model, 4)  # counted once per architecture, in fp32: before the hook
    seen: set[torch.dtype] = set()

    def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Conv2d) and module.training:
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        return run(), seen
    finally:
        handle.remove()


def test_auto_trains_in_bf16_where_the_cpu_has_it_and_it_measures_faster(native: list[TrialConfig]) -> None:
    result, seen = conv_dtypes(lambda: train(config()))
    assert result.precision == "bf16" and seen == {torch.bfloat16} and len(native) == 1


def test_auto_keeps_fp32_where_bf16_measures_no_faster(native: list[TrialConfig],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "measure", lambda *a: Choice("fp32", "auto: fp32, bf16 measured 0.90x", 0.1))
    result, seen = conv_dtypes(lambda: train(config()))
    assert result.precision == "fp32" and seen == {torch.float32}


def test_auto_is_fp32_without_native_bf16_and_measures_nothing(native: list[TrialConfig],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_info", lambda: ("Old CPU", None))
    data = prepare(config().data, CPU)
    choice = resolve(config(), data, CPU)
    assert choice.precision == "fp32" and "Old CPU has no native bf16" in choice.why and not native
    assert "fp32 (Old CPU has no native bf16" in describe_auto(CPU)


def test_each_architecture_is_measured_once_per_process(native: list[TrialConfig]) -> None:
    data = prepare(config().data, CPU)
    for cfg in (config(), config(), config(width=12), config(precision_name="auto", width=12)):
        assert resolve(cfg, data, CPU).precision == "bf16"
    other_init = dataclasses.replace(config(), model=dataclasses.replace(config().model, init="xavier_uniform"))
    assert resolve(other_init, data, CPU).precision == "bf16"  # the same computation: a fused group shares it
    assert [c.model.width for c in native] == [8, 12]
    assert "AMX-BF16" in describe_auto(CPU) and "measured once per architecture" in describe_auto(CPU)


def test_deterministic_runs_and_resumed_trials_do_not_measure(native: list[TrialConfig]) -> None:
    data = prepare(config().data, CPU)
    assert resolve(config(deterministic=True), data, CPU).precision == "fp32"
    assert "fp32 under train.deterministic, though Test CPU has AMX-BF16" in describe_auto(CPU, deterministic=True)
    assert resolve(config(), data, CPU, given="fp32").precision == "fp32"  # it started in fp32: it goes on so
    assert resolve(config("bf16"), data, CPU).precision == "bf16"  # set: as set
    assert not native


def test_the_measurement_returns_a_choice_and_leaves_the_random_streams_alone() -> None:
    cfg, data = config(), prepare(config().data, CPU)
    before = torch.get_rng_state()
    choice = precision.measure(cfg, data, CPU, "AMX-BF16")
    assert choice.precision in ("bf16", "fp32") and "AMX-BF16" in choice.why and choice.seconds > 0
    assert torch.equal(before, torch.get_rng_state())  # a trial draws the same weights and masks either way


def test_a_resumed_member_trains_in_the_precision_its_state_was_saved_in(native: list[TrialConfig]) -> None:
    saved: list[dict[str, Any]] = []
    first = Member(dataclasses.replace(config(), train=dataclasses.replace(config().train, epochs=2)),
                   on_state=lambda get: saved.append(get()))
    data = prepare(first.config.data, CPU)
    train_group([first], data)
    state = saved[0]
    assert state["precision"] == "bf16" and first.result is not None and first.result.precision == "bf16"
    state["precision"] = "fp32"  # as if it had started on a CPU where bf16 did not pay
    again = Member(first.config, resume=state)
    _, seen = conv_dtypes(lambda: train_group([again], data))
    assert again.precision == "fp32" and seen == {torch.float32}


def test_bf16_on_a_cpu_without_it_warns_and_says_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_info", lambda: ("Old CPU", None))
    precision._warn_once.cache_clear()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = train(config("bf16"))
        train(config("bf16"))
    assert result.precision == "bf16"
    assert err.getvalue().count("warning") == 1  # once per process
    assert "Old CPU, which has no native bf16: torch emulates it" in err.getvalue()
    assert "precision: auto" in err.getvalue()


def test_validate_and_run_refuse_fp16_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "half.yaml"
    space.write_text(TINY.read_text() + "\n# a CPU trial in fp16\n")
    sets = ["--set", "train.device=cpu", "--set", "train.precision=fp16"]
    assert main(["validate", str(space), *sets]) == 2
    assert "train.precision: fp16 needs a GPU" in capsys.readouterr().err
    searched = ["--set", "train.precision={type: categorical, choices: [fp32, fp16]}"]
    assert main(["validate", str(space), "--set", "train.device=cpu", *searched]) == 2
    assert main(["run", str(space), "--trials", "1", *sets]) == 2
    assert "fix: train.precision: auto" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()  # refused before a study is made


def test_a_trial_records_its_precision_and_retrain_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           native: list[TrialConfig]) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        assert main(["run", str(TINY), "--trials", "2", "--storage", url, "--set", "train.epochs=1"]) == 0
    assert "precision auto: bf16 autocast for each architecture" in shown.getvalue()
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.user_attrs["precision"] for t in trials] == ["bf16", "bf16"]
    assert as_trained(config(), "bf16") == "bf16"
    assert as_trained(config("fp32"), "bf16") == ""  # set in the space: as set
    assert as_trained(config(), None) == ""  # a trial of an older study: resolved as for a trial
    assert as_trained(config(), "fp16") == ""  # not on this CPU
    measured = len(native)
    result, seen = conv_dtypes(lambda: train(config(), precision="bf16"))  # as retrain passes it: not measured
    assert result.precision == "bf16" and seen == {torch.bfloat16} and len(native) == measured
