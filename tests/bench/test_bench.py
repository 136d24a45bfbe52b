"""bench.py in a reduced form (a few steps), so the benchmark in docs/BENCHMARKS.md cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpsearch.bench import bench
from hpsearch.cli import main

HERE = Path(__file__).resolve().parents[1]  # tests/


def test_both_loops_train_the_same_model_and_report_images_per_second() -> None:
    lines: list[str] = []
    rows = bench.compare(["cnn6"], None, batch_size=8, steps=2, warmup=1, device_name="cpu", loader_workers=0,
                         repeats=1, out=lines.append)
    assert [(r.loop, r.model) for r in rows] == [("hpsearch", "cnn6"), ("plain", "cnn6")]
    assert all(r.images_per_sec > 0 and r.tflops > 0 and r.precision == "fp32" for r in rows)
    assert "no native bf16" in lines[0]  # the processor, as conftest.py shows it to this process
    assert lines[-2].startswith("cnn6") and lines[-2].count("x") >= 1 and lines[-1].startswith("ratio: ")


def test_the_fashion_models_train_on_fashion_mnist_shaped_images(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The small nets of a CPU search, on 1x28x28 images: random stand-ins here (no data set needed); the
    benchmark reads the real files."""
    import numpy as np

    from hpsearch.space.config import DataConfig

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "fashion_mnist.npz", x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
             y_train=np.arange(64) % 10, x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
             y_test=np.arange(10))
    monkeypatch.setattr(bench, "data_config", lambda root, size, model="cnn6": DataConfig(
        dataset="fashion_mnist", root=str(tmp_path), download=False, val_size=10))
    lines: list[str] = []
    rows = bench.compare(["fashion_cnn", "mlp"], None, batch_size=8, steps=2, warmup=1, device_name="cpu",
                         loader_workers=0, repeats=1, out=lines.append)
    assert [(r.loop, r.model) for r in rows] == [("hpsearch", "fashion_cnn"), ("plain", "fashion_cnn"),
                                                 ("hpsearch", "mlp"), ("plain", "mlp")]
    assert all(r.images_per_sec > 0 for r in rows) and "fashion_mnist" in lines[2]


def test_flop_count_of_the_six_layer_cnn() -> None:
    # 6 convs at 32/16/8 px: 2*9*(3*64 + 64*64)*1024 + 2*9*(64*128 + 128*128)*256 + 2*9*(128*256 + 256*256)*64
    # multiply-adds per image, forward; training (forward + backward) is about 3x that.
    forward = 2 * 9 * ((3 * 64 + 64 * 64) * 1024 + (64 * 128 + 128 * 128) * 256 + (128 * 256 + 256 * 256) * 64)
    counted = bench.train_flops_per_image(bench.MODELS["cnn6"], 100)
    assert 2.5 * forward < counted < 3.5 * forward


def test_plain_dataset_applies_pil_transforms() -> None:
    cfg = bench.data_config(None, synthetic_size=200)
    dataset = bench.plain_dataset(cfg, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x, y = dataset[0]
    assert tuple(x.shape) == (3, 32, 32) and isinstance(y, int)


def test_overhead_mode_runs_real_searches(capsys: pytest.CaptureFixture[str]) -> None:
    """One and two workers, once each: every trial found, figures in range, a line per worker count."""
    results = bench.overhead(str(HERE / "spaces" / "tiny.yaml"), trials=4, workers=[1, 2], repeats=1)
    for workers, r in results.items():
        assert (r.workers, r.trials) == (workers, 4)
        assert 0 < r.startup_s < r.wall_s and 0 < r.search_s < r.wall_s
        assert 0 < r.overhead < 1  # tiny trials: storage and sampling are a real share, never all of it
        assert r.search_trials_per_hour > r.trials_per_hour > 0
        assert r.epochs == 4 * 2 and r.search_epochs_per_hour == 2 * r.search_trials_per_hour  # tiny: 2 epochs
        assert r.outside_ms > 0 and r.optuna_ms > 0
    lines = capsys.readouterr().out.splitlines()
    assert "trials/h in search" in lines[1] and [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    assert lines[4].startswith("overhead: ")


def test_optuna_alone_replays_the_recorded_curves_through_the_pruner(tmp_path: Path) -> None:
    """Each recorded trial's epoch values are reported in order until the space's pruner stops the trial."""
    import optuna

    space = tmp_path / "hb.yaml"
    space.write_text((HERE / "spaces" / "tiny.yaml").read_text().replace(
        "pruner: {name: none}", "pruner: {name: sha, min_resource: 1, reduction_factor: 2}"))
    curves = [{1: 0.9, 2: 0.95, 3: 0.97}, {1: 0.1, 2: 0.2, 3: 0.3}, {1: 0.95, 2: 0.99}, {}]
    recorded = [optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=max(c.values(), default=0),
                                          intermediate_values=c) for c in curves]
    url = f"sqlite:///{tmp_path / 'alone.db'}"
    assert bench.optuna_alone(str(space), url, recorded) > 0
    replayed = optuna.load_study(study_name="bench", storage=url).trials
    assert len(replayed) == 3  # a trial that reported nothing is not replayed
    assert [t.intermediate_values for t in replayed] == [curves[0], {1: 0.1}, curves[2]]
    assert [t.state.name for t in replayed] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert all({"model.width", "optimizer"} <= set(t.params) for t in replayed)  # the space's suggest calls


def test_a_failing_replay_is_one_message(tmp_path: Path) -> None:
    with pytest.raises(bench.BenchError, match="the replay of the benchmarked trials failed") as caught:
        bench.optuna_alone(str(tmp_path / "missing.yaml"), f"sqlite:///{tmp_path / 'a.db'}", [])
    assert "missing.yaml" in str(caught.value)


def test_bench_verb_and_its_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--models", "cnn6", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--repeats", "1",
                 "--loader-workers", "0", "--device", "cpu"]) == 0
    assert "hpsearch img/s" in capsys.readouterr().out
    assert main(["bench", "--models", "vgg"]) == 2
    assert "--models: unknown vgg; known: smoke, cnn6, resnet18" in capsys.readouterr().err
    tiny = str(HERE / "spaces" / "tiny.yaml")
    for workers in ("0", "1,x", ""):
        assert main(["bench", "--overhead", tiny, "--workers", workers]) == 2
        assert f"--workers {workers}: expected counts of at least 1, like 1,2,4" in capsys.readouterr().err
    assert main(["bench", "--overhead", str(HERE / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_a_failing_benchmarked_run_ends_the_benchmark_with_its_message(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A run that exits with an error (here: data that is not there) is reported once, with exit status 2."""
    space = tmp_path / "nodata.yaml"
    space.write_text((HERE / "spaces" / "tiny.yaml").read_text().replace(
        "dataset: synthetic", f"dataset: cifar10\n  root: {tmp_path / 'nowhere'}\n  download: false"))
    assert main(["bench", "--overhead", str(space), "--trials", "1", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert "the benchmarked run failed (exit status 2)" in err and "cifar10 data not found" in err
    assert "Traceback" not in err


def test_overhead_alternates_worker_counts_and_pairs_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def fake(space: str, trials: int, workers: int, draw: int = 0) -> bench.RunResult:
        calls.append((workers, draw))
        return bench.RunResult(workers, trials, 10.0 + draw, 1.0, 8.0, 0.05, 2 * trials)

    monkeypatch.setattr(bench, "run_search", fake)
    medians = bench.overhead("space.yaml", trials=4, workers=[1, 2], repeats=3, out=lambda line: None)
    assert calls == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2), (2, 2)]  # alternating; each draw for every count
    assert medians[1].wall_s == medians[2].wall_s == 11.0 and medians[2].workers == 2


def test_the_determinism_benchmark_times_both_settings_and_leaves_the_flags_off(
        capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.bench import determinism

    runs = determinism.measure("cnn6", images=200, epochs=1, repeats=1, device=torch.device("cpu"))
    assert set(runs) == {False, True} and all(len(v) == 1 and v[0] > 0 for v in runs.values())
    assert not torch.are_deterministic_algorithms_enabled()
    assert determinism.main(["--images", "200", "--epochs", "1", "--repeats", "1", "--device", "cpu"]) == 0
    assert "| true |" in capsys.readouterr().out
