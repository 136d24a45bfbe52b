"""The device check: every figure hpsearch claims for a GPU, from one prepared command.

`hpsearch bench --suite gpu --out DIR` runs the steps below in order, each under its own time budget (a slow step
is stopped and recorded as over budget; the next one still runs), and writes DIR/gpu-check.json after every step
(so a run cut short keeps what it measured) and DIR/gpu-check.md at the end. `--dry-run` runs every step's code
path with tiny sizes on whatever device there is, so that the one GPU run cannot fail on a typo: the test suite
runs it on the CPU.

1. env: the device, torch / CUDA / cuDNN versions, free memory.
2. loop: hpsearch's training loop against the plain torchvision loop (bench.compare): cnn6 and ResNet-18 at
   batch 512, train images/s of each, their ratio, achieved TFLOP/s.
3. resnet18_epoch: one ResNet-18 epoch on 45,000 CIFAR-shaped images at batch 512 (after a first, warm-up epoch).
4. trials_per_hour: the identical-trial search of spaces/bench/fixed-smoke.yaml with 1, 2 and 4 workers on the one
   device (bench.overhead).
5. search: a real search of spaces/cifar100.yaml for the time left in its budget, then the best trial exported and
   evaluated on the test set (needs --data-root; skipped with the reason without it). The dry run searches the same
   file, shrunk by --set (DRY_SETS), on --data-root, else $HPSEARCH_CIFAR100's file, else a tiny fake
   cifar100.npz.
6. fused: fused trials (bench.fusion): train images/s of the seed's 6-layer CNN at batch 256 fused K = 1, 2, 4, 8
   in both modes against the same K trials one after another, then spaces/bench/fuse-smoke.yaml's 8 identical-work
   trials alone and with --fuse 8. The 50-trial CIFAR-100 search against its unfused twin does not fit a
   device call; it is recorded as not measured here.
7. seeds: what the seed spaces cost on the device: the augmentations per epoch (bench.augment), train.deterministic
   against not (bench.determinism), and one epoch of each net of spaces/seeds/cifar100_vgg.yaml's table, from
   which the whole table's time (3 recipes x 30 epochs a net) is estimated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ..space.load import shipped_space

# Seconds per step of a full run: 475 in all, inside the eight minutes one device call may take with start-up.
BUDGETS: dict[str, float] = {"env": 10, "loop": 75, "resnet18_epoch": 60, "trials_per_hour": 115, "search": 120,
                             "fused": 70, "seeds": 25}
DRY_BUDGET = 120  # seconds per step of a dry run: generous on a loaded 2-core CI machine


class StepTimeout(Exception):
    """A step ran past its budget (raised in the step by SIGALRM)."""


@dataclasses.dataclass
class Context:
    out: Path
    dry_run: bool
    data_root: str | None
    device: str  # auto, cpu, cuda, cuda:N
    space: str  # the search step's space (the dry run's too): shipped_space("cifar100.yaml")
    budgets: dict[str, float]
    started: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # Absolute: the searches run in a temporary working directory.
        self.out = Path(self.out).expanduser().absolute()
        if self.data_root:
            self.data_root = str(Path(self.data_root).expanduser().absolute())


Step = Callable[[Context, float], dict[str, Any]]  # (context, its budget in seconds) -> figures


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in this (the main) thread once `seconds` have passed."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise StepTimeout(f"over its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_suite(ctx: Context, steps: list[tuple[str, Step]] | None = None,
              out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run each step under its budget; the whole record (also written to ctx.out/gpu-check.json and .md)."""
    from .bench import BenchError

    fix = "Fix: pass --out with a new folder (or one of an earlier check, whose gpu-check.json and .md are replaced)"
    if ctx.out.exists() and not ctx.out.is_dir():
        raise BenchError(f"--out {ctx.out} is a file, not a folder; it is left as it is. {fix}")
    try:
        ctx.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"--out {ctx.out}: cannot make the folder ({exc.strerror or exc}). {fix}") from None
    record: dict[str, Any] = {"date": datetime.now().isoformat(timespec="seconds"), "dry_run": ctx.dry_run,
                              "host": platform.node(), "steps": {}}
    for name, step in steps if steps is not None else STEPS:
        seconds = ctx.budgets.get(name, DRY_BUDGET if ctx.dry_run else 60)
        out(f"hpsearch bench: {name} (budget {seconds:.0f} s) ...")
        began = time.monotonic()
        entry: dict[str, Any]
        try:
            with budget(seconds):
                figures = step(ctx, seconds)
            entry = {"status": figures.pop("status", "ok"), **figures}
        except StepTimeout as exc:
            entry = {"status": "over budget", "reason": str(exc)}
        except Exception as exc:  # a failed step is recorded and the next one runs: one run, every figure it can
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc).strip()[:500]}"}
        entry["seconds"] = round(time.monotonic() - began, 1)
        record["steps"][name] = entry
        out(f"hpsearch bench: {name}: {entry['status']} in {entry['seconds']} s")
        (ctx.out / "gpu-check.json").write_text(json.dumps(record, indent=2) + "\n")
    (ctx.out / "gpu-check.md").write_text(markdown(record))
    return record


def markdown(record: dict[str, Any]) -> str:
    """The record as a table: a row per step with its status, seconds and figures."""
    lines = [f"# Device check, {record['date']}{' (dry run)' if record['dry_run'] else ''}", "",
             "| step | status | s | figures |", "|:---|:---|---:|:---|"]
    for name, entry in record["steps"].items():
        figures = {k: v for k, v in entry.items() if k not in ("status", "seconds")}
        shown = "; ".join(f"{k}: {_short(v)}" for k, v in figures.items())
        lines.append(f"| {name} | {entry['status']} | {entry['seconds']} | {shown.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------------------------------------- steps
def step_env(ctx: Context, seconds: float) -> dict[str, Any]:
    import torch

    from ..training.device import resolve_device

    device = resolve_device(ctx.device)
    out: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                           "cpus": os.cpu_count(), "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        out.update(gpu=torch.cuda.get_device_name(device), free_gib=round(free / 2**30, 1),
                   total_gib=round(total / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    return out


def step_loop(ctx: Context, seconds: float) -> dict[str, Any]:
    from .bench import compare

    sizes = dict(batch_size=8, steps=1, warmup=0, repeats=1, loader_workers=0) if ctx.dry_run else \
        dict(batch_size=512, steps=20, warmup=5, repeats=2, loader_workers=min(8, os.cpu_count() or 1))
    rows = compare(["cnn6", "resnet18"], None, sizes["batch_size"], sizes["steps"], sizes["warmup"], ctx.device,
                   sizes["loader_workers"], sizes["repeats"], out=lambda line: None)
    by = {(r.loop, r.model): r for r in rows}
    return {model: {"hpsearch_img_s": round(by["hpsearch", model].images_per_sec, 1),
                    "plain_img_s": round(by["plain", model].images_per_sec, 1),
                    "ratio": round(by["hpsearch", model].images_per_sec / by["plain", model].images_per_sec, 2),
                    "tflops": round(by["hpsearch", model].tflops, 3)} for model in ("cnn6", "resnet18")}


def step_resnet18_epoch(ctx: Context, seconds: float) -> dict[str, Any]:
    from ..space.config import DataConfig, ModelConfig, OptimizerConfig, SyntheticConfig, TrainConfig, TrialConfig
    from ..training.data import prepare
    from ..training.device import resolve_device
    from ..training.train import train

    images, batch = (64, 32) if ctx.dry_run else (45_000, 512)
    device = resolve_device(ctx.device)
    data_cfg = DataConfig(dataset="synthetic", val_size=1000 if not ctx.dry_run else 16,
                          synthetic=SyntheticConfig(size=images + (1000 if not ctx.dry_run else 16), test_size=10,
                                                    classes=100 if not ctx.dry_run else 4))
    config = TrialConfig(data=data_cfg, model=ModelConfig(name="resnet18"),
                         optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True),
                         train=TrainConfig(epochs=2, batch_size=batch, device=str(device)))
    data = prepare(data_cfg, device)
    result = train(config, data)
    second = result.history[-1]
    return {"train_images": len(data.train_y), "batch": batch, "epoch2_s": round(second["seconds"], 3),
            "train_img_s": round(result.train_images_per_sec, 1),
            "train_s_per_epoch": round(len(data.train_y) / result.train_images_per_sec, 3),
            "target_s": 0.7}


_DRY_SPACE = """study: {name: dry, sampler: {name: random, seed: 0}, pruner: {name: none}}
data: {dataset: synthetic, synthetic: {size: 300, test_size: 50, classes: 4, seed: 0}, val_size: 100}
train: {epochs: 1, batch_size: 50}
model: {name: cnn, stages: 1, blocks_per_stage: 1, width: 4}
optimizer: {name: sgd, lr: 0.05}
"""


def _dry_space(ctx: Context) -> str:
    path = ctx.out / "dry-space.yaml"
    path.write_text(_DRY_SPACE)
    return str(path)


def step_trials_per_hour(ctx: Context, seconds: float) -> dict[str, Any]:
    from .bench import overhead

    space = _dry_space(ctx) if ctx.dry_run else str(shipped_space("bench/fixed-smoke.yaml"))
    trials, workers, repeats = (2, [1, 2], 1) if ctx.dry_run else (12, [1, 2, 4], 1)
    medians = overhead(space, trials, workers, repeats, out=lambda line: None)
    return {f"{w}_workers": {"trials_per_h": round(m.trials_per_hour, 1),
                             "trials_per_h_in_search": round(m.search_trials_per_hour, 1),
                             "startup_s": round(m.startup_s, 2), "overhead": round(m.overhead, 4)}
            for w, m in medians.items()}


# The dry run's search: the real space, shrunk by --set. 2 trials of 1 epoch on 400 training images (4 a class),
# 100 held out; a narrow net (the searched depth stays); no download.
DRY_TRIALS = 2
DRY_SETS = ["train.epochs=1", "train.batch_size=50", "data.val_size=100", "data.train_limit=400", "model.width=8",
            "data.download=false"]


def fake_cifar100(folder: Path, per_class: int = 6, test_per_class: int = 2) -> Path:
    """folder/cifar100.npz in the reader's format (training/rawfiles.py: uint8 NHWC images, integer labels 0..99) with
    random images, `per_class` training and `test_per_class` test images of each class: the dry run's stand-in."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, t = 100 * per_class, 100 * test_per_class
    path = folder / "cifar100.npz"
    np.savez(path, x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n) % 100,
             x_test=rng.integers(0, 256, (t, 32, 32, 3), dtype=np.uint8), y_test=np.arange(t) % 100)
    return path


def _dry_data(ctx: Context, folder: Path) -> tuple[str, str]:
    """(data root, what it holds) of the dry run's search: --data-root, else the file $HPSEARCH_CIFAR100 names (as
    the tests take it), else a fake cifar100.npz, each in the folder the real run's --data-root would be."""
    if ctx.data_root:
        return ctx.data_root, f"--data-root {ctx.data_root}"
    real = os.environ.get("HPSEARCH_CIFAR100")
    if real:
        (folder / "cifar100.npz").symlink_to(Path(real).expanduser().resolve())
        return str(folder), f"HPSEARCH_CIFAR100={real}"
    fake_cifar100(folder)
    return str(folder), "fake cifar100.npz (random images, 600 training and 200 test)"


def step_search(ctx: Context, seconds: float) -> dict[str, Any]:
    """A real search for the budget's time, then its best trial exported and measured on the test set."""
    if not ctx.dry_run and not ctx.data_root:
        return {"status": "skipped", "reason": "needs the real CIFAR-100: pass --data-root DIR "
                                               "(shared/device/README.md says how to bring it)"}
    # The search runs in a fresh working directory, as on the device machine: the space and every path absolute.
    with tempfile.TemporaryDirectory() as cwd:
        if ctx.dry_run:
            data_root, data = _dry_data(ctx, Path(cwd))
            extra = ["--trials", str(DRY_TRIALS), *(arg for item in DRY_SETS for arg in ("--set", item))]
        else:
            data_root, data = str(ctx.data_root), f"--data-root {ctx.data_root}"
            extra = ["--timeout", str(max(10, int(seconds - 60)))]  # start-up, export and the test set in the rest
        return {"data": data, **_search(ctx, seconds, cwd, data_root, extra)}


def _search(ctx: Context, seconds: float, cwd: str, data_root: str, extra: list[str]) -> dict[str, Any]:
    import optuna

    from .. import keys
    from ..results.evaluation import score_test_set
    from ..results.export import export
    from ..study.storage import artifact_dir
    from ..training.checkpoint import load_checkpoint

    url, name = f"sqlite:///{ctx.out / 'search.db'}", "device-check"
    command = [sys.executable, "-m", "hpsearch.cli", "run", ctx.space, "--storage", url, "--study", name,
               "--data-root", data_root, *extra]
    began = time.monotonic()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=seconds,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.monotonic() - began
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        return {"status": "failed", "reason": f"hpsearch run exited {done.returncode}: {tail}"}
    study = optuna.load_study(study_name=name, storage=url)
    best = study.best_trial
    source = artifact_dir(url, name) / str(best.user_attrs[keys.CHECKPOINT])
    exported = export(source, ctx.out / "best.pt2", "exported")
    scores = score_test_set(load_checkpoint(source), data_root, ctx.device)
    states = {s.name.lower(): n for s in optuna.trial.TrialState
              if (n := sum(1 for t in study.trials if t.state == s))}
    return {"space": ctx.space, **({"set": " ".join(DRY_SETS)} if ctx.dry_run else {}), "trials": states,
            "wall_s": round(wall, 1), "best_trial": best.number, "best_val_acc": round(float(best.value or 0.0), 4),
            "test_top1": round(scores.top1, 4), "test_top5": round(scores.top5, 4), "test_images": scores.images,
            "exported": exported.name}


def step_seeds(ctx: Context, seconds: float) -> dict[str, Any]:
    """The seed spaces' costs on this device; the nets are the table's rows, timed on synthetic CIFAR-100-shaped
    images (the real data's values change nothing of the time)."""
    from ..space import load_space
    from ..space.config import DataConfig, SyntheticConfig, TrainConfig, TrialConfig
    from ..training.data import prepare
    from ..training.device import resolve_device
    from ..training.train import train
    from . import augment, determinism

    device = resolve_device(ctx.device)
    images = 256 if ctx.dry_run else 12_800
    rows = augment.measure(images, 256 if not ctx.dry_run else 64, 1 if ctx.dry_run else 3, device)
    out: dict[str, Any] = {"augment_vs_crop_flip": {r.setting: round(r.ratio, 2) for r in rows},
                           "augment_epoch_s": {r.setting: round(r.epoch_seconds, 4) for r in rows}}
    runs = determinism.measure("cnn6", 200 if ctx.dry_run else 10_000, 1, 1 if ctx.dry_run else 2, device)
    off, on = (statistics.median(runs[flag]) for flag in (False, True))
    out["deterministic_img_s"] = {"false": round(off, 1), "true": round(on, 1), "ratio": round(on / off, 3)}
    table = load_space(shipped_space("seeds/cifar100_vgg.yaml"))
    n = 200 if ctx.dry_run else 10_000  # training images of the timed epoch; the estimate scales to 45,000
    data_cfg = DataConfig(dataset="synthetic", val_size=50 if ctx.dry_run else 1000,
                          synthetic=SyntheticConfig(size=n + (50 if ctx.dry_run else 1000), test_size=10,
                                                    classes=100))
    data = prepare(data_cfg, device)
    nets: dict[str, Any] = {}
    for net, values in table.cases["net"].items():
        widths = tuple(values["model.widths"])
        batch = int(values.get("train.batch_size", table.sections["train"].fields["batch_size"]))
        base = TrialConfig(data=data_cfg, train=TrainConfig(epochs=2, batch_size=batch, device=str(device)))
        config = TrialConfig.from_dict({**base.to_dict(), "model": {"widths": list(widths), "blocks_per_stage": 2}})
        result = train(config, data)  # the second epoch is timed: the first pays for cuDNN's kernel search
        epoch_s = result.history[-1]["seconds"] * 45_000 / len(data.train_y)
        nets[net] = {"batch": batch, "epoch2_s": round(result.history[-1]["seconds"], 3),
                     "epoch_s_45k": round(epoch_s, 2), "table_rows_s": round(3 * 30 * epoch_s, 1)}
    out["table_nets"] = nets
    out["table_estimate_min"] = round(sum(v["table_rows_s"] for v in nets.values()) / 60, 1)
    return out


def step_fused(ctx: Context, seconds: float) -> dict[str, Any]:
    """Fused K trials against K separate ones (bench.fusion): the images/s first, then whole searches; a search
    part cut short by the budget keeps the images/s figures."""
    from ..training.device import resolve_device
    from . import fusion

    device = resolve_device(ctx.device)
    net, ks, images, batch = ("smoke", [1, 2], 256, 64) if ctx.dry_run else ("cnn6", [1, 2, 4, 8], 5_120, 256)
    rows = fusion.images_per_sec(net, ks, images, 1, batch, 1, device)
    one = rows[ks[0]]["separate"]  # one trial alone
    out: dict[str, Any] = {"net": net, "batch": batch, "train_img_s": {
        f"K={k}": {**{mode: round(v, 1) for mode, v in r.items()},
                   "grouped_vs_one_trial": round(r["grouped"] / one, 2)} for k, r in rows.items()}}
    out["cifar100_50_trials"] = ("not measured: a 50-trial CIFAR-100 search fused and unfused takes longer than "
                                 "one device call")
    try:
        if ctx.dry_run:
            found = fusion.searches([2], 1, workers=[], space=_dry_space(ctx), trials=2)
        else:
            found = fusion.searches([8], 1, workers=[])
        out["searches_trials_per_h"] = {name: round(r["trials_per_h"], 1) for name, r in found.items()}
    except StepTimeout:
        out["searches_trials_per_h"] = "over budget: python -m hpsearch.bench.fusion --nets '' --searches"
    return out


STEPS: list[tuple[str, Step]] = [
    ("env", step_env),
    ("loop", step_loop),
    ("resnet18_epoch", step_resnet18_epoch),
    ("trials_per_hour", step_trials_per_hour),
    ("search", step_search),
    ("fused", step_fused),
    ("seeds", step_seeds),
]
