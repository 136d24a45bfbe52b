"""The component registries: models, optimizers, schedulers, data sets, samplers and pruners, one registry a kind.

An entry holds what everything else reads about a component: its name, the fields of its section it reads, and its
preconditions (rules on a concrete TrialConfig). The checker refuses a field the entry does not read, a fixed
value that breaks a rule, and a searched range that reaches a breaking value of a rule that says so
(Rule.across_search); the JSON Schema lists the names and fields; the builder applies the same rules before it
builds, so a rule is written once. The builders themselves need torch, which this module must not import: the
training part attaches each one to its entry with the registry's decorator,

    @MODELS.builder("cnn")
    def cnn(cfg: ModelConfig, num_classes: int) -> nn.Module: ...

and a test checks that every entry has its builder. Adding a model is an entry here and a decorated builder there
(CONTRIBUTING.md). Samplers and pruners are Optuna's classes by name; the study part builds them (and checks their
options against Optuna's signatures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .config import DataConfig, ModelConfig, TrialConfig


@dataclass(frozen=True)
class Rule:
    """A precondition of a component: `check(config)` returns the problem in words, or None when it holds."""

    field: str  # the dotted field the problem is blamed on, e.g. "optimizer.momentum"
    needs: tuple[str, ...]  # the dotted fields the check reads: the checker applies it where all are fixed
    check: Callable[[TrialConfig], str | None]
    # The checker also applies it where some of `needs` are searched, to every value of theirs that matters (each
    # choice, each value of a short range, the ends of a long one), and refuses a search that reaches a breaking
    # value. A rule on the shape of the data (the same for every trial) wants it; without it, the trial that draws a
    # breaking value fails with the rule's words.
    across_search: bool = False


@dataclass(frozen=True)
class Component:
    name: str
    reads: tuple[str, ...]  # fields of its section it reads; any other field given for it is an error
    rules: tuple[Rule, ...] = ()
    summary: str = ""  # one line for help texts and the schema
    info: dict[str, Any] = field(default_factory=dict)  # kind-specific facts (a data set's classes)


class ConfigError(ValueError):
    """A concrete configuration that breaks a component's rule (a searched value can: the trial fails with it)."""


class Registry:
    """The components of one kind, by name, in the order they were added (the order errors list them in)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Component] = {}
        self._builders: dict[str, Callable[..., Any]] = {}

    def add(self, name: str, reads: tuple[str, ...] = (), rules: tuple[Rule, ...] = (), summary: str = "",
            **info: Any) -> Component:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        entry = self._entries[name] = Component(name, reads, rules, summary, info)
        return entry

    def builder(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `fn` builds the component `name` (an entry must exist: its fields and rules come first)."""
        if name not in self._entries:
            raise KeyError(f"{self.kind} {name!r} has no registry entry; add it in hpsearch/space/registry.py")

        def attach(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._builders[name] = fn
            return fn

        return attach

    def build(self, name: str, config: TrialConfig | None, *args: Any, **kwargs: Any) -> Any:
        """Check `config` against the entry's rules (ConfigError), then call its builder with *args, **kwargs."""
        entry = self[name]
        if config is not None:
            problems = self.problems(config, entry)
            if problems:
                raise ConfigError("; ".join(problems))
        if name not in self._builders:
            raise LookupError(f"{self.kind} {name!r} has no builder (is its module imported?)")
        return self._builders[name](*args, **kwargs)

    def problems(self, config: TrialConfig, entry: Component | None = None) -> list[str]:
        """The broken rules of an entry (by default the config's own) as `field: message` lines."""
        out = []
        for rule in (entry or self[self.chosen(config)]).rules:
            message = rule.check(config)
            if message is not None:
                out.append(f"{rule.field}: {message}")
        return out

    def chosen(self, config: TrialConfig) -> str:
        """The name of this kind's component in a config."""
        section = {"model": config.model, "optimizer": config.optimizer, "scheduler": config.scheduler,
                   "dataset": config.data}[self.kind]
        return str(getattr(section, "dataset" if self.kind == "dataset" else "name"))

    def has_builder(self, name: str) -> bool:
        return name in self._builders

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def fields(self) -> dict[str, tuple[str, ...]]:
        """Each name with the fields it reads."""
        return {name: entry.reads for name, entry in self._entries.items()}

    def __getitem__(self, name: str) -> Component:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# ---------------------------------------------------------------------------------------------------- data sets
def num_classes(config: TrialConfig) -> int | None:
    """The classes of a config's data set: the registry's count, data.synthetic.classes, or None where only the
    data knows (imagefolder: its class folders)."""
    if config.data.dataset == "synthetic":
        return config.data.synthetic.classes
    classes = DATASETS[config.data.dataset].info.get("classes")
    return int(classes) if classes is not None else None


def train_images(config: TrialConfig) -> int | None:
    """The images of a config's training split before the validation images are held out (None: only the data
    knows)."""
    if config.data.dataset == "synthetic":
        return config.data.synthetic.size
    images = DATASETS[config.data.dataset].info.get("train_images")
    return int(images) if images is not None else None


def input_shape(config: TrialConfig) -> tuple[int, int, int]:
    """(channels, height, width) of a config's images, as the model sees them: the registry's, or data.image_size
    for an image folder (resized once when loaded)."""
    info = DATASETS[config.data.dataset].info
    size = info.get("image_size") or config.data.image_size
    return int(info["channels"]), int(size), int(size)


def _val_size_fits(config: TrialConfig) -> str | None:
    n, classes, val = train_images(config), num_classes(config), config.data.val_size
    if n is None or classes is None:
        return None  # an image folder: data.prepare checks the split against the images it finds
    if config.data.dataset == "synthetic" and n < classes:
        return f"data.synthetic.size={n} is fewer images than its {classes} classes; give at least one per class"
    if val > n - classes:
        return (f"{val} of the {n} training images held out for validation leave fewer than one per class "
                f"({classes} classes) to train on; use at most {n - classes}")
    return None


def _train_limit_fits(config: TrialConfig) -> str | None:
    limit = config.data.train_limit
    n, classes, val = train_images(config), num_classes(config), config.data.val_size
    if n is None or classes is None:
        return None
    if limit is not None and val <= n - classes and not classes <= limit <= n - val:
        return (f"must be between {classes} (one image per class) and {n - val} (the images left after "
                f"val_size={val}), got {limit}")
    return None


def _fixed_size(config: TrialConfig) -> str | None:
    if config.data.image_size != DataConfig.image_size:
        _, h, w = input_shape(config)
        return (f"only an image folder is resized; {config.data.dataset}'s images are {h}x{w} "
                f"(remove data.image_size)")
    return None


def _colour_needs_rgb(config: TrialConfig) -> str | None:
    a = config.data.augment
    if input_shape(config)[0] != 3 and (a.saturation or a.hue):
        return (f"saturation and hue need colour images; {config.data.dataset}'s are grayscale "
                "(set saturation and hue to 0; brightness and contrast apply)")
    return None


def _normalization_fits(config: TrialConfig) -> str | None:
    d = config.data
    if (d.mean is None) != (d.std is None):
        return "give data.mean and data.std together (or neither: the training split's own)"
    channels = input_shape(config)[0]
    for name, values in (("mean", d.mean), ("std", d.std)):
        if values is not None and len(values) != channels:
            return (f"data.{name} has {len(values)} values; {d.dataset}'s images have {channels} channel"
                    f"{'s' if channels != 1 else ''}")
    return None


_AUGMENT = Rule("data.augment", ("data.dataset", "data.augment"), _colour_needs_rgb, across_search=True)
_SPLIT = (Rule("data.val_size", ("data.dataset", "data.val_size", "data.synthetic"), _val_size_fits),
          Rule("data.train_limit", ("data.dataset", "data.val_size", "data.train_limit", "data.synthetic"),
               _train_limit_fits), _AUGMENT,
          Rule("data.mean", ("data.dataset", "data.mean", "data.std"), _normalization_fits))
_FIXED = (*_SPLIT, Rule("data.image_size", ("data.dataset", "data.image_size"), _fixed_size))
DATASETS = Registry("dataset")
DATASETS.add("cifar100", rules=_FIXED, summary="CIFAR-100: 50,000 + 10,000 32x32 colour images, 100 classes",
             classes=100, train_images=50_000, channels=3, image_size=32)
DATASETS.add("cifar10", rules=_FIXED, summary="CIFAR-10: 50,000 + 10,000 32x32 colour images, 10 classes",
             classes=10, train_images=50_000, channels=3, image_size=32)
DATASETS.add("mnist", rules=_FIXED, summary="MNIST: 60,000 + 10,000 28x28 grayscale digits, 10 classes",
             classes=10, train_images=60_000, channels=1, image_size=28)
DATASETS.add("fashion_mnist", rules=_FIXED, summary="Fashion-MNIST: 60,000 + 10,000 28x28 grayscale clothing "
             "images, 10 classes", classes=10, train_images=60_000, channels=1, image_size=28)
DATASETS.add("imagefolder", rules=_SPLIT, summary="your own images: data.root/<class>/*.png, or train/<class>/* "
             "(and test/), resized to data.image_size", classes=None, train_images=None, channels=3, image_size=None)
DATASETS.add("synthetic", rules=_FIXED, summary="a learnable CIFAR-shaped data set made on the spot "
             "(data.synthetic)", classes=None, train_images=None, channels=3, image_size=32)


# ------------------------------------------------------------------------------------------------------- models
def pooled_stages(m: ModelConfig) -> int:
    """The cnn stages that halve the feature map (all of them unless model.pool is none)."""
    return 0 if m.pool == "none" else len(m.stage_widths())


def _stages_fit(config: TrialConfig) -> str | None:
    m: ModelConfig = config.model
    widths = m.stage_widths()
    _, h, w = input_shape(config)
    most = min(h, w).bit_length() - 1  # 2x2 pools a map of this side survives (32: 5)
    if not widths:
        return "a cnn needs at least one stage (one width)"
    if pooled_stages(m) > most:
        return (f"{len(widths)} stages, each ending in a 2x2 pool, shrink a {h}x{w} image below 1x1; use 1 to "
                f"{most} stages (or that many widths), or model.pool: none")
    return None


def _kernels_fit(config: TrialConfig) -> str | None:
    m: ModelConfig = config.model
    kernels, stages = m.stage_kernels(), len(m.stage_widths())
    if len(kernels) != stages:
        return f"{len(kernels)} kernel sizes for {stages} stages; give one per stage"
    even = [k for k in kernels if k % 2 == 0]
    if even:
        return f"kernel sides must be odd, for the padding to keep the map's size; got {even[0]}"
    return None


MODELS = Registry("model")
MODELS.add("cnn", ("stages", "blocks_per_stage", "width", "width_growth", "widths", "kernel_size", "kernel_sizes",
                   "pool", "head", "hidden", "activation", "dropout", "spatial_dropout", "batchnorm", "init"),
           rules=(Rule("model.widths", ("model.stages", "model.widths", "model.pool", "data.dataset",
                                        "data.image_size"), _stages_fit, across_search=True),
                  Rule("model.kernel_sizes", ("model.stages", "model.widths", "model.kernel_size",
                                              "model.kernel_sizes"), _kernels_fit, across_search=True)),
           summary="a plain CNN: stages of conv (+BN) + activation blocks, each ending in a 2x2 pool; then a "
                   "classifier, optionally behind hidden fully connected layers")
MODELS.add("resnet18", ("dropout",), summary="torchvision's ResNet-18 with a CIFAR stem (3x3 conv, no max-pool)")
MODELS.add("resnet34", ("dropout",), summary="torchvision's ResNet-34 with a CIFAR stem (3x3 conv, no max-pool)")
MODELS.add("mlp", ("hidden", "activation", "dropout", "init"),
           summary="a multilayer perceptron on the flattened image: hidden fully connected layers, then a classifier")


# --------------------------------------------------------------------------------------------------- optimizers
def _nesterov_momentum(config: TrialConfig) -> str | None:
    o = config.optimizer
    if o.nesterov and o.momentum <= 0:
        return f"nesterov needs momentum > 0, got momentum={o.momentum:g} (set nesterov: false or a momentum)"
    return None


OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.add("sgd", ("lr", "momentum", "nesterov", "weight_decay"),
               rules=(Rule("optimizer.momentum", ("optimizer.nesterov", "optimizer.momentum"), _nesterov_momentum),),
               summary="torch.optim.SGD")
OPTIMIZERS.add("adam", ("lr", "betas", "eps", "weight_decay"), summary="torch.optim.Adam")
OPTIMIZERS.add("adamw", ("lr", "betas", "eps", "weight_decay"), summary="torch.optim.AdamW (decoupled weight decay)")
OPTIMIZERS.add("rmsprop", ("lr", "momentum", "alpha", "eps", "weight_decay"), summary="torch.optim.RMSprop")
OPTIMIZERS.add("adagrad", ("lr", "eps", "weight_decay"), summary="torch.optim.Adagrad")


# --------------------------------------------------------------------------------------------------- schedulers
SCHEDULERS = Registry("scheduler")
SCHEDULERS.add("none", ("warmup_epochs",), summary="a constant lr (after the warm-up)")
SCHEDULERS.add("step", ("warmup_epochs", "step_size", "gamma"), summary="StepLR: lr x gamma every step_size epochs")
SCHEDULERS.add("multistep", ("warmup_epochs", "milestones", "gamma"), summary="MultiStepLR at the milestones")
SCHEDULERS.add("exponential", ("warmup_epochs", "gamma"), summary="ExponentialLR: lr x gamma per epoch")
SCHEDULERS.add("cosine", ("warmup_epochs", "min_lr_factor"), summary="CosineAnnealingLR over the whole run")
SCHEDULERS.add("onecycle", ("pct_start", "div_factor", "final_div_factor"), summary="OneCycleLR")
SCHEDULERS.add("plateau", ("warmup_epochs", "factor", "patience", "min_lr_factor"),
               summary="ReduceLROnPlateau on the validation metric")
SCHEDULERS.add("linear", ("warmup_epochs", "end_factor"), summary="LinearLR from lr to lr x end_factor")


# ----------------------------------------------------------------------------------------- samplers and pruners
# The name of each Optuna class in optuna.samplers / optuna.pruners; the study part builds them and checks their
# options against the class's signature.
SAMPLERS = Registry("sampler")
for _name, _cls in (("tpe", "TPESampler"), ("random", "RandomSampler"), ("cmaes", "CmaEsSampler"),
                    ("gp", "GPSampler"), ("qmc", "QMCSampler"), ("grid", "GridSampler"), ("nsga2", "NSGAIISampler")):
    SAMPLERS.add(_name, summary=f"optuna.samplers.{_cls}", optuna_class=_cls)
PRUNERS = Registry("pruner")
for _name, _cls in (("median", "MedianPruner"), ("percentile", "PercentilePruner"),
                    ("hyperband", "HyperbandPruner"), ("sha", "SuccessiveHalvingPruner"),
                    ("threshold", "ThresholdPruner"), ("none", "NopPruner")):
    PRUNERS.add(_name, summary=f"optuna.pruners.{_cls}", optuna_class=_cls)

# The sections that pick a component by `name` (or by a `choose:` branch), with the registry of each.
NAMED_SECTIONS: dict[str, Registry] = {"model": MODELS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS}
