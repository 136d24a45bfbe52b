"""Benchmarks: hpsearch's training loop against the plain torchvision loop, and a run's start-up and overhead.

`hpsearch bench` trains the same model at the same batch size for a fixed number of steps, (a) with the Step and
DeviceData that every trial uses, in the precision `train.precision: auto` resolves to (training/precision.py; its
measurement, once per architecture, is timed apart), and in fp32; (b) the way a user writes it today: a
torchvision dataset with PIL transforms, a DataLoader with workers, fp32, `loss.item()` every step. Warm-up steps
are not timed. The CIFAR models train on CIFAR-100 (or synthetic images of its shape), the Fashion-MNIST ones on
the real Fashion-MNIST files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import HpsearchError
from ..space.config import DataConfig, ModelConfig, OptimizerConfig, SyntheticConfig, TrainConfig, TrialConfig
from ..training import precision as auto_precision
from ..training.data import prepare
from ..training.device import channels_last as use_channels_last
from ..training.device import resolve_device
from ..training.models import build_model
from ..training.optim import build_optimizer, build_scheduler
from ..training.precision import resolve as resolve_precision
from ..training.rawdata import RawData, load_arrays
from ..training.step import Step, train_flops_per_image

# The models of the speed issues: the 6-layer CNN of the course experiments, ResNet-18, and the small nets a CPU
# search on Fashion-MNIST trains: a 4-conv CNN (65 k parameters) and the course notes' MLP (784-512-128-10).
MODELS = {
    "smoke": ModelConfig(name="cnn", stages=3, blocks_per_stage=1, width=16),  # spaces/smoke.yaml's larger model
    "cnn6": ModelConfig(name="cnn", stages=3, blocks_per_stage=2, widths=(64, 128, 256)),
    "resnet18": ModelConfig(name="resnet18"),
    "fashion_cnn": ModelConfig(name="cnn", stages=2, blocks_per_stage=2, widths=(32, 64)),
    "mlp": ModelConfig(name="mlp", hidden=(512, 128)),
}
FASHION = ("fashion_cnn", "mlp")  # trained on Fashion-MNIST's 28x28 grayscale images
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
OPTIMIZER = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


class BenchError(HpsearchError):
    """A benchmarked run (or its replay) that failed; str() has the command and the tail of its stderr."""


@dataclasses.dataclass
class LoopResult:
    loop: str  # "hpsearch" or "plain"
    model: str
    images_per_sec: float
    tflops: float  # achieved, from torch's FLOP count of one training image
    precision: str = "fp32"  # what it trained in
    calibration_s: float = 0.0  # auto's measurement of this architecture (once per process; not in images_per_sec)


def data_config(data_root: str | None, synthetic_size: int, model_name: str = "cnn6") -> DataConfig:
    """The Fashion-MNIST files for its models (data_root is CIFAR's); real CIFAR-100 under data_root, else a
    synthetic CIFAR-shaped set of 100 classes."""
    if model_name in FASHION:
        return DataConfig(dataset="fashion_mnist", root=FASHION_ROOT, download=False, val_size=5000)
    if data_root:
        return DataConfig(dataset="cifar100", root=data_root, download=False, val_size=5000)
    return DataConfig(dataset="synthetic", val_size=1000,
                      synthetic=SyntheticConfig(size=synthetic_size, test_size=100, classes=100))


# --------------------------------------------------------------------------------------------- (a) hpsearch
def hpsearch_loop(model_name: str, data_cfg: DataConfig, batch_size: int, steps: int, warmup: int,
                  device: torch.device, precision: str = "auto", channels_last: bool | None = None) -> LoopResult:
    """train()'s Step and batches in `precision` as a trial resolves it; `channels_last`: the layout (default:
    train()'s, device.channels_last)."""
    config = TrialConfig(data=data_cfg, model=MODELS[model_name], optimizer=OPTIMIZER,
                         train=TrainConfig(batch_size=batch_size, precision=precision, device=str(device)))
    data = prepare(data_cfg, device)
    choice = resolve_precision(config, data, device)
    channels_last = use_channels_last(device) if channels_last is None else channels_last
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = build_model(config.model, data.num_classes, config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config.optimizer, model.parameters(), device)
    schedule = build_scheduler(config.scheduler, optimizer, 1_000_000, 1, config.metric)
    step = Step(model, optimizer, schedule, config, device, choice.precision)
    generator = torch.Generator(device=device).manual_seed(0)
    model.train()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from data.train_batches(batch_size, config.data.augment, generator, channels_last)

    seconds = _timed(batches(), lambda x, y: step(x, y), steps, warmup, device)
    shape = tuple(data.train_x.shape[1:])
    return dataclasses.replace(_result("hpsearch", model_name, data.num_classes, batch_size * steps / seconds, shape),
                               precision=choice.precision, calibration_s=choice.seconds)


# ------------------------------------------------------------------------------------------------ (b) plain
class PlainCIFAR(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """torchvision's CIFAR100.__getitem__ (FashionMNIST's for one channel) over in-memory HWC arrays: PIL image,
    then the transforms."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Callable[[Any], torch.Tensor]) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = self.x[i]
        return self.transform(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)), int(self.y[i])


def plain_dataset(data_cfg: DataConfig, mean: list[float], std: list[float]) -> torch.utils.data.Dataset:  # type: ignore[type-arg]
    """torchvision.datasets.CIFAR100 when its folder is under root, else the same arrays through PlainCIFAR."""
    import torchvision.transforms as T

    side = 28 if data_cfg.dataset in ("mnist", "fashion_mnist") else 32
    transform = T.Compose([T.RandomCrop(side, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    folder = Path(data_cfg.root) / "cifar-100-python"
    if data_cfg.dataset == "cifar100" and folder.is_dir():
        import torchvision

        return torchvision.datasets.CIFAR100(data_cfg.root, train=True, transform=transform, download=False)
    raw: RawData = load_arrays(data_cfg)
    return PlainCIFAR(raw.x_train, raw.y_train, transform)


def plain_loop(model_name: str, data_cfg: DataConfig, batch_size: int, steps: int, warmup: int,
               device: torch.device, loader_workers: int) -> LoopResult:
    data = prepare(data_cfg, device)  # only for the normalisation constants and the class count
    dataset = plain_dataset(data_cfg, data.mean.tolist(), data.std.tolist())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=loader_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=loader_workers > 0)
    model = build_model(MODELS[model_name], data.num_classes, TrialConfig(data=data_cfg)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=OPTIMIZER.lr, momentum=OPTIMIZER.momentum,
                                nesterov=OPTIMIZER.nesterov, weight_decay=OPTIMIZER.weight_decay)
    criterion = nn.CrossEntropyLoss()
    model.train()
    running = [0.0]

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running[0] += loss.item()  # what tutorials do: a host sync every step

    seconds = _timed(batches(), step, steps, warmup, device)
    return _result("plain", model_name, data.num_classes, batch_size * steps / seconds,
                   tuple(data.train_x.shape[1:]))


# ---------------------------------------------------------------------------------------------------- shared
def _timed(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], step: Callable[..., Any], steps: int, warmup: int,
           device: torch.device) -> float:
    """Seconds for `steps` steps after `warmup` untimed ones (data loading included, as in training)."""
    for _ in range(warmup):
        step(*next(batches))
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _result(loop: str, model_name: str, num_classes: int, images_per_sec: float,
            shape: tuple[int, ...] = (3, 32, 32)) -> LoopResult:
    flops = train_flops_per_image(MODELS[model_name], num_classes, shape)
    return LoopResult(loop, model_name, images_per_sec, flops * images_per_sec / 1e12)


def compare(models: list[str], data_root: str | None, batch_size: int, steps: int, warmup: int, device_name: str,
            loader_workers: int, repeats: int = 3, out: Callable[[str], None] = print) -> list[LoopResult]:
    """The loops for each model, alternating (hpsearch, hpsearch in fp32, plain, ...) `repeats` times in this
    process, so that a noisy machine slows each alike; prints the median images/s of each, the ratio of hpsearch
    to the plain loop, the precision auto chose and what choosing it cost, and returns the median rows (hpsearch,
    plain, and hpsearch in fp32 where auto chose another precision)."""
    device = resolve_device(device_name)
    synthetic = max(2 * batch_size * (steps + warmup), 2000)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpu, native = auto_precision.cpu_info()
        name = f"{cpu} ({native or 'no native bf16'}), {torch.get_num_threads()} threads"
    out(f"# {datetime.now():%Y-%m-%d %H:%M}  torch {torch.__version__}  {name}  batch {batch_size}  {steps} steps "
        f"after {warmup} warm-up, median of {repeats}  plain loop: fp32, {loader_workers} loader workers")
    out(f"{'model':<12} {'data':<14} {'hpsearch img/s':>15} {'in':>4} {'fp32 img/s':>11} {'plain img/s':>12} "
        f"{'ratio':>7} {'TFLOP/s':>8} {'auto chose in':>14}")
    rows = []
    for model_name in models:
        data_cfg = data_config(data_root, synthetic, model_name)
        runs: dict[str, list[LoopResult]] = {"hpsearch": [], "fp32": [], "plain": []}
        for _ in range(repeats):
            runs["hpsearch"].append(hpsearch_loop(model_name, data_cfg, batch_size, steps, warmup, device))
            if runs["hpsearch"][0].precision != "fp32":
                runs["fp32"].append(hpsearch_loop(model_name, data_cfg, batch_size, steps, warmup, device, "fp32"))
            runs["plain"].append(plain_loop(model_name, data_cfg, batch_size, steps, warmup, device, loader_workers))
        a, b = _median(runs["hpsearch"]), _median(runs["plain"])
        fp32 = _median(runs["fp32"]) if runs["fp32"] else a
        chose = f"{runs['hpsearch'][0].calibration_s:.2f}s" if runs["hpsearch"][0].calibration_s else "-"
        out(f"{model_name:<12} {data_cfg.dataset:<14} {a.images_per_sec:>15,.0f} {a.precision:>4} "
            f"{fp32.images_per_sec:>11,.0f} {b.images_per_sec:>12,.0f} {a.images_per_sec / b.images_per_sec:>6.2f}x "
            f"{a.tflops:>8.3f} {chose:>14}")
        rows += [a, b] + ([fp32] if fp32 is not a else [])
    out("ratio: hpsearch (in the precision auto chose) over the plain fp32 loop; auto chose in: the measurement "
        "of fp32 against bf16, once per architecture and process, not counted in the images/s")
    return rows


def _median(results: list[LoopResult]) -> LoopResult:
    return sorted(results, key=lambda r: r.images_per_sec)[len(results) // 2]


# --------------------------------------------------------------------------------------------------- overhead
@dataclasses.dataclass
class RunResult:
    """One `hpsearch run` as the overhead benchmark sees it."""

    workers: int
    trials: int
    wall_s: float  # launch to exit
    startup_s: float  # launch to the first trial's start: imports, data on the device, the study opened
    search_s: float  # the first trial's start to the last one's end
    overhead: float  # share of the workers' search time outside epochs: sampling, storage, model build, gaps
    epochs: int  # epochs trained in all: pruning stops trials at different epochs, so trials differ in length
    outside_ms: float = float("nan")  # that time outside epochs, per trial
    optuna_ms: float = float("nan")  # per trial, the same trials replayed by Optuna alone (optuna_alone)

    @property
    def trials_per_hour(self) -> float:
        return self.trials / self.wall_s * 3600

    @property
    def search_trials_per_hour(self) -> float:
        """The rate of a long search, where start-up and shutdown no longer count."""
        return self.trials / self.search_s * 3600 if self.search_s > 0 else float("nan")

    @property
    def search_epochs_per_hour(self) -> float:
        return self.epochs / self.search_s * 3600 if self.search_s > 0 else float("nan")


def run_search(space: str, trials: int, workers: int, draw: int = 0, fuse: int = 1, replay: bool = True) -> RunResult:
    """Run `hpsearch run SPACE --trials N --workers W [--fuse K]` in a fresh folder with its own SQLite study; read
    it back.

    draw: moves the sampler seeds on (as HPSEARCH_WORKER does), so that repeats draw other trials. replay: also
    time Optuna alone on the same trials (optuna_alone). Under --fuse the members of a group share their epochs, so
    the overhead figures below count each group's epochs once per member: only the times and trials/h hold.

    overhead: for each worker, the time from its first trial's start to its last trial's end, less the time of its
    epochs (training and validation); summed over the workers, as a share of their search time. It counts what a
    trial costs besides training (sampling, storage writes, pruning decisions, model build, checkpoints) and the
    gaps between trials.
    """
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        cmd = [sys.executable, "-m", "hpsearch.cli", "run", str(Path(space).resolve()), "--trials", str(trials),
               "--storage", url, "--study", "bench", "--workers", str(workers), "--fuse", str(fuse)]
        launched = datetime.now()
        started = time.perf_counter()
        done_run = subprocess.run(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1", HPSEARCH_WORKER=str(draw)))
        wall = time.perf_counter() - started
        if done_run.returncode != 0:
            tail = "\n".join(done_run.stderr.strip().splitlines()[-5:])
            raise BenchError(f"the benchmarked run failed (exit status {done_run.returncode}): "
                             f"{' '.join(cmd[3:])}\n{tail}")
        recorded = optuna.load_study(study_name="bench", storage=url).trials
        done = [(t.user_attrs.get("worker", "?"), t.datetime_start, t.datetime_complete,
                 float(t.user_attrs.get("epoch_seconds", 0.0)), int(t.user_attrs.get("epochs_trained", 0)))
                for t in recorded if t.datetime_start is not None and t.datetime_complete is not None]
        optuna_s = optuna_alone(space, f"sqlite:///{Path(tmp) / 'alone.db'}", recorded) if replay else float("nan")
    spans = busy = 0.0
    for worker in {d[0] for d in done}:
        mine = [d for d in done if d[0] == worker]
        spans += (max(d[2] for d in mine) - min(d[1] for d in mine)).total_seconds()
        busy += sum(d[3] for d in mine)
    first, last = min(d[1] for d in done), max(d[2] for d in done)
    return RunResult(workers, len(done), wall, (first - launched).total_seconds(), (last - first).total_seconds(),
                     1 - busy / spans if spans > 0 else float("nan"), sum(d[4] for d in done),
                     1000 * (spans - busy) / len(done), 1000 * optuna_s)


def optuna_alone(space: str, url: str, recorded: list[Any]) -> float:
    """Seconds per trial that Optuna alone spends on these trials: what any search built on it pays.

    A bare `study.optimize` loop on a new study in `url`, opened as hpsearch opens one (the same sampler, pruner,
    heartbeats and SQLite set-up), replays the recorded trials in order, training nothing: each trial asks, makes
    the space's suggest calls, then reports the recorded trial's epoch values one by one, asking the pruner after
    each, and ends pruned or complete as the pruner decides. The study has the same name, so Hyperband puts each
    trial number in the same bracket. It runs in a fresh process, as `hpsearch run` does, so that both pay the
    same first-use costs (lazy imports, SQLAlchemy's statement cache).
    """
    curves = [sorted(t.intermediate_values.items()) for t in recorded if t.intermediate_values]
    done = subprocess.run([sys.executable, "-m", "hpsearch.bench.replay", space, url], input=json.dumps(curves),
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise BenchError(f"the replay of the benchmarked trials failed (exit status {done.returncode}):\n{tail}")
    return float(done.stdout.split()[-1])


def replay(space: str, url: str, curves: list[list[tuple[int, float]]]) -> float:
    """optuna_alone's loop, in this process (bench/replay.py runs it): seconds per trial."""
    import optuna

    from ..space import suggest
    from ..study.samplers import load_space, make_pruner, make_sampler
    from ..study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_space(space)
    study = optuna.create_study(storage=open_storage(url, loaded.study), study_name="bench",
                                direction=optuna.study.StudyDirection[loaded.study.direction.upper()],
                                sampler=make_sampler(loaded), pruner=make_pruner(loaded))

    started = time.perf_counter()
    for curve in curves:  # the ask-and-tell loop of Optuna's own examples
        trial = study.ask()
        suggest(trial, loaded)
        value, state = float("nan"), optuna.trial.TrialState.COMPLETE
        for step, value in curve:
            trial.report(value, step)
            if trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return (time.perf_counter() - started) / len(curves) if curves else float("nan")


def overhead(space: str, trials: int, workers: list[int], repeats: int = 3,
             out: Callable[[str], None] = print) -> dict[int, RunResult]:
    """Run the search with each worker count, alternating (1, 2, 4, 1, 2, 4, ...) `repeats` times so that a noisy
    machine slows every count alike; print and return the median of each figure per worker count.

    Each repeat draws other trials (its own sampler seeds), the same for every worker count: a searched space's
    trials differ in cost, and one seed's draw would decide the comparison.
    """
    out(f"# {datetime.now():%Y-%m-%d %H:%M}  torch {torch.__version__}  {os.cpu_count()} CPUs  {space}: {trials} "
        f"trials per run, median of {repeats}")
    out(f"{'workers':>7} {'wall s':>7} {'start-up s':>10} {'trials/h':>9} {'trials/h in search':>18} "
        f"{'epochs/h in search':>18} {'overhead':>9} {'ms/trial':>9} {'Optuna alone':>13}")
    runs: dict[int, list[RunResult]] = {w: [] for w in workers}
    for draw in range(repeats):
        for w in workers:
            runs[w].append(run_search(space, trials, w, draw))
    medians = {}
    for w, results in runs.items():
        m = medians[w] = RunResult(w, *(statistics.median(getattr(r, f.name) for r in results)
                                        for f in dataclasses.fields(RunResult)[1:]))
        out(f"{w:>7} {m.wall_s:>7.1f} {m.startup_s:>10.2f} {m.trials_per_hour:>9.0f} "
            f"{m.search_trials_per_hour:>18.0f} {m.search_epochs_per_hour:>18.0f} {100 * m.overhead:>8.2f}% "
            f"{m.outside_ms:>9.1f} {m.optuna_ms:>13.1f}")
    out("overhead: the workers' search time outside epochs; ms/trial: the same per trial; Optuna alone: ms per "
        "trial of a bare Optuna loop replaying the same trials without training (sampling, reports, pruning, "
        "storage), the part no Optuna-based search avoids")
    return medians
