"""TrialConfig: every knob of one concrete trial, as frozen dataclasses.

A search space (space.py) samples one of these per trial; training reads nothing else. The defaults are the values a
field takes when the YAML file leaves it out. This module imports neither torch nor Optuna, so the space can be
validated and sampled without them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Closed vocabularies. The component names (models, optimizers, schedulers, data sets, samplers, pruners) are
# the registries' (registry.py).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
POOLS = ("max", "avg", "none")
HEADS = ("avgpool", "flatten")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "leaky_relu")
INITS = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "default")
# Each metric with the direction that makes it better: the one place a direction is taken from a metric.
METRICS: dict[str, str] = {"val_acc": "maximize", "val_loss": "minimize"}


def maximize(metric: str) -> bool:
    """Whether a higher value of the metric is better (val_acc) or a lower one (val_loss)."""
    return METRICS[metric] == "maximize"


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = 4  # pixels of zero padding before a random crop of the image's size; 0 turns cropping off
    flip: bool = True  # random horizontal flip with probability 1/2
    rotation: float = 0.0  # degrees: each image turns by an angle drawn from [-rotation, rotation]; 0: off
    translate: float = 0.0  # fraction of the size: each image shifts by up to this on each axis; 0: off
    brightness: float = 0.0  # each image's brightness is scaled by a factor drawn from [1 - b, 1 + b]; 0: off
    contrast: float = 0.0  # each image's contrast is scaled by a factor drawn from [1 - c, 1 + c]; 0: off
    saturation: float = 0.0  # each image's saturation is scaled by a factor drawn from [1 - s, 1 + s]; 0: off
    hue: float = 0.0  # each image's hue turns by a fraction of the circle drawn from [-hue, hue] (at most 0.5)
    erasing: float = 0.0  # probability that one random rectangle of an image is set to 0 (RandomErasing); 0: off


@dataclass(frozen=True)
class SyntheticConfig:
    size: int = 5000  # training images (the validation split is taken from these)
    test_size: int = 1000  # held-out test images
    classes: int = 10  # number of classes; images of a class share a smooth prototype pattern
    noise: float = 0.6  # smooth and per-pixel noise relative to the prototype contrast; higher is harder
    seed: int = 0  # the data set is a pure function of (size, test_size, classes, noise, seed)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar100"  # cifar100 | cifar10 | mnist | fashion_mnist | imagefolder | synthetic
    root: str = "data"  # folder of the .npz, torchvision's folder or the idx files; imagefolder: the image tree
    image_size: int = 32  # imagefolder: every image is resized to image_size x image_size once, when it is loaded
    download: bool = True  # let torchvision download the data set when root holds it in no form and can be written
    val_size: int = 5000  # training images held out for validation (stratified); the test set is never searched
    train_limit: int | None = None  # use a stratified subset of this many training images (quick runs)
    split_seed: int = 0  # fixes the validation split and train_limit subset: the same for every trial of a study
    mean: tuple[float, ...] | None = None  # per-channel input mean on the 0..1 scale; None: the training split's own
    std: tuple[float, ...] | None = None  # per-channel input std on the 0..1 scale; None: the training split's own
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # full passes over the training split
    batch_size: int = 256  # images per optimizer step
    label_smoothing: float = 0.0  # cross-entropy label smoothing, 0 to 1
    grad_clip: float | None = None  # clip the gradient's global L2 norm to this; None: no clipping
    precision: str = "auto"  # auto (bf16 on GPU; CPU: bf16 where native and faster) | bf16 | fp16 | fp32
    seed: int = 0  # weights, shuffling and augmentation
    eval_batch_size: int = 1024  # images per evaluation forward pass; no gradients, so it can be large
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model (once per architecture and process); pays off on long GPU runs
    deterministic: bool = False  # cuDNN deterministic, its benchmark off, torch's deterministic algorithms on


@dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn"  # cnn | resnet18 | resnet34 (torchvision, CIFAR stem: 3x3 conv, no max-pool) | mlp
    stages: int = 3  # cnn: stages of conv blocks, each ending in a 2x2 pool (model.pool)
    blocks_per_stage: int = 2  # cnn: conv (+BN) + activation blocks per stage
    width: int = 64  # cnn: channels of the first stage
    width_growth: float = 2.0  # cnn: channels multiply by this from one stage to the next
    widths: tuple[int, ...] | None = None  # cnn: explicit channels per stage; overrides width and width_growth
    kernel_size: int = 3  # cnn: odd side of every conv kernel ("same" padding keeps the map's size)
    kernel_sizes: tuple[int, ...] | None = None  # cnn: the kernel side of each stage; overrides kernel_size
    pool: str = "max"  # cnn: what ends each stage: max | avg (a 2x2 pool, halving the map) | none
    head: str = "avgpool"  # cnn: the classifier reads the global average of each channel, or the flattened map
    hidden: tuple[int, ...] = ()  # cnn: hidden fully connected layers before the classifier; mlp: its layers
    activation: str = "relu"  # cnn, mlp: relu | gelu | silu | tanh | leaky_relu
    dropout: float = 0.0  # dropout before the classifier, and after every hidden layer (cnn, mlp)
    spatial_dropout: float = 0.0  # cnn: Dropout2d (whole channels) at the end of the conv body
    batchnorm: bool = True  # cnn: BatchNorm after every conv
    init: str = "kaiming_normal"  # cnn, mlp: weights of every conv and hidden layer (see models.py)

    def stage_widths(self) -> tuple[int, ...]:
        """Channels of each cnn stage."""
        if self.widths is not None:
            return tuple(self.widths)
        return tuple(max(1, round(self.width * self.width_growth**i)) for i in range(self.stages))

    def stage_kernels(self) -> tuple[int, ...]:
        """Kernel side of each cnn stage."""
        if self.kernel_sizes is not None:
            return tuple(self.kernel_sizes)
        return (self.kernel_size,) * len(self.stage_widths())


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw | rmsprop | adagrad
    lr: float = 0.05  # peak learning rate (after warm-up)
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    weight_decay: float = 5e-4  # L2 penalty (decoupled for adamw)
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = 1e-8  # adam, adamw, rmsprop, adagrad
    alpha: float = 0.99  # rmsprop smoothing constant


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "none"  # none | step | multistep | exponential | cosine | onecycle | plateau | linear
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr over this many epochs (all but onecycle)
    step_size: int = 10  # step: epochs between decays
    milestones: tuple[int, ...] = (15, 25)  # multistep: epochs at which lr decays
    gamma: float = 0.5  # step, multistep: decay factor; exponential: factor per epoch
    min_lr_factor: float = 0.0  # cosine: final lr as a fraction of lr; plateau: floor as a fraction of lr
    pct_start: float = 0.3  # onecycle: fraction of training spent rising to lr
    div_factor: float = 25.0  # onecycle: lr starts at lr / div_factor
    final_div_factor: float = 1e4  # onecycle: lr ends at lr / div_factor / final_div_factor
    factor: float = 0.1  # plateau: decay factor when the validation metric stops improving
    patience: int = 3  # plateau: epochs without improvement before decaying
    end_factor: float = 0.0  # linear: final lr as a fraction of lr


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    metric: str = "val_acc"  # val_acc (maximize) | val_loss (minimize): what the best epoch and plateau follow

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): JSON- and YAML-friendly, the inverse of from_dict."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Rebuild from to_dict()'s output (as stored in a checkpoint). Unknown keys raise ValueError."""
        return _build(cls, values)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# The dataclass behind each section and nested section, by dotted path.
SECTION_TYPES: dict[str, type] = {
    "data": DataConfig,
    "data.augment": AugmentConfig,
    "data.synthetic": SyntheticConfig,
    "train": TrainConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
}


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        sub = _nested_type(cls, name)
        if sub is not None and isinstance(value, dict):
            kwargs[name] = _build(sub, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _nested_type(cls: type, name: str) -> type | None:
    if cls is TrialConfig:
        return SECTION_TYPES.get(name)
    for path, sub in SECTION_TYPES.items():
        parent, _, leaf = path.rpartition(".")
        if leaf == name and parent and SECTION_TYPES.get(parent) is cls:
            return sub
    return None
