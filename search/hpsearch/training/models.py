"""Model builders, each attached to its registry entry (space/registry.py: its name, fields and rules): a
configurable plain CNN, torchvision ResNets with a CIFAR stem and a multilayer perceptron.

Every builder takes the input's (channels, height, width) from the data set (registry.input_shape), so the same
model section builds for CIFAR's 3x32x32, MNIST's 1x28x28 or an image folder's resized images.

Initialisation (model.init, cnn and mlp): the weights of every convolution and every hidden fully connected layer
are drawn by the scheme and their biases zeroed; the classifier (the last Linear) keeps torch's default in every
scheme. Kaiming draws for convolutions use fan_out, as torchvision's ResNets do, and fan_in for linear layers;
`default` leaves every layer as torch makes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch.nn as nn
import torchvision

from ..space.config import ModelConfig, TrialConfig
from ..space.registry import MODELS, input_shape

Shape = tuple[int, int, int]  # (channels, height, width) of one input image

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "silu": lambda: nn.SiLU(inplace=True),
    "tanh": nn.Tanh, "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
}
# The gain Kaiming's draw assumes for each activation (torch.nn.init.calculate_gain's names).
_NONLINEARITY: dict[str, Literal["relu", "tanh", "leaky_relu"]] = {
    "relu": "relu", "gelu": "relu", "silu": "relu", "tanh": "tanh", "leaky_relu": "leaky_relu"}


def build_model(cfg: ModelConfig, num_classes: int, config: TrialConfig | None = None) -> nn.Module:
    """The model named by cfg.name, with a num_classes-way linear classifier, for the images of `config`'s data set
    (CIFAR's when no config is given); its entry's rules are checked first (registry.ConfigError) against `config`,
    the whole trial."""
    config = config or TrialConfig(model=cfg)
    return MODELS.build(cfg.name, config, cfg, num_classes, input_shape(config))  # type: ignore[no-any-return]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@MODELS.builder("cnn")
def _cnn(cfg: ModelConfig, num_classes: int, shape: Shape) -> nn.Module:
    """Stages of blocks_per_stage x [conv, BN, activation], each ending in a 2x2 pool (or none); an optional
    Dropout2d; the average of each channel (or the flattened map); hidden layers; the classifier."""
    in_ch, h, w = shape
    act = _ACTIVATIONS[cfg.activation]
    layers: list[nn.Module] = []
    for width, k in zip(cfg.stage_widths(), cfg.stage_kernels(), strict=True):
        for _ in range(cfg.blocks_per_stage):
            layers.append(nn.Conv2d(in_ch, width, k, padding=k // 2, bias=not cfg.batchnorm))
            if cfg.batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(act())
            in_ch = width
        if cfg.pool != "none":
            layers.append(nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2))
            h, w = h // 2, w // 2
    if cfg.spatial_dropout > 0:
        layers.append(nn.Dropout2d(cfg.spatial_dropout))
    if cfg.head == "avgpool":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = in_ch
    else:
        layers.append(nn.Flatten())
        features = in_ch * h * w
    model = nn.Sequential(*layers, *_classifier(features, cfg, num_classes))
    _initialise(model, cfg)
    return model


@MODELS.builder("mlp")
def _mlp(cfg: ModelConfig, num_classes: int, shape: Shape) -> nn.Module:
    """The flattened image through hidden [Linear, activation, Dropout] layers, then the classifier."""
    channels, h, w = shape
    model = nn.Sequential(nn.Flatten(), *_classifier(channels * h * w, cfg, num_classes))
    _initialise(model, cfg)
    return model


def _classifier(features: int, cfg: ModelConfig, num_classes: int) -> list[nn.Module]:
    """[Linear, activation, Dropout] per hidden width (a bare Dropout when there is none), then the classifier."""
    layers: list[nn.Module] = []
    for width in cfg.hidden:
        layers += [nn.Linear(features, width), _ACTIVATIONS[cfg.activation](), nn.Dropout(cfg.dropout)]
        features = width
    if not cfg.hidden:
        layers.append(nn.Dropout(cfg.dropout))
    return [*layers, nn.Linear(features, num_classes)]


def _initialise(model: nn.Sequential, cfg: ModelConfig) -> None:
    """model.init on every conv and hidden Linear (biases zeroed), BatchNorm to 1 and 0; the classifier as torch
    makes it. Run after the whole model is built, so the layers draw in the same order whatever the scheme."""
    if cfg.init == "default":
        return
    classifier = model[-1]
    nonlinearity = _NONLINEARITY[cfg.activation]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not classifier:
            mode: Literal["fan_in", "fan_out"] = "fan_out" if isinstance(m, nn.Conv2d) else "fan_in"
            if cfg.init == "kaiming_normal":
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity=nonlinearity)
            elif cfg.init == "kaiming_uniform":
                nn.init.kaiming_uniform_(m.weight, mode=mode, nonlinearity=nonlinearity)
            elif cfg.init == "xavier_normal":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _resnet(factory: Callable[..., torchvision.models.ResNet]) -> Callable[[ModelConfig, int, Shape], nn.Module]:
    """A torchvision ResNet with the CIFAR stem: 3x3 stride-1 first conv, no max-pool, dropout before fc."""

    def build(cfg: ModelConfig, num_classes: int, shape: Shape) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        model.conv1 = nn.Conv2d(shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        model.fc = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(model.fc.in_features, num_classes))
        return model

    return build


MODELS.builder("resnet18")(_resnet(torchvision.models.resnet18))
MODELS.builder("resnet34")(_resnet(torchvision.models.resnet34))
