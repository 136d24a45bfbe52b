"""Model builders, each attached to its registry entry (space/registry.py: its name, fields and rules): a
configurable plain CNN and torchvision ResNets with a CIFAR stem."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
import torchvision

from ..space.config import ModelConfig, TrialConfig
from ..space.registry import MODELS


def build_model(cfg: ModelConfig, num_classes: int, config: TrialConfig | None = None) -> nn.Module:
    """The model named by cfg.name, with a num_classes-way linear classifier; its entry's rules are checked first
    (registry.ConfigError) against `config`, the whole trial, when given."""
    return MODELS.build(cfg.name, config or TrialConfig(model=cfg), cfg, num_classes)  # type: ignore[no-any-return]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@MODELS.builder("cnn")
def _cnn(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Stages of blocks_per_stage x [3x3 conv, BN, ReLU], each ending in a 2x2 max-pool; then a classifier."""
    widths = cfg.stage_widths()
    layers: list[nn.Module] = []
    in_ch = 3
    for width in widths:
        for _ in range(cfg.blocks_per_stage):
            layers.append(nn.Conv2d(in_ch, width, 3, padding=1, bias=not cfg.batchnorm))
            if cfg.batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            in_ch = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(in_ch, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _resnet(factory: Callable[..., torchvision.models.ResNet]) -> Callable[[ModelConfig, int], nn.Module]:
    """A torchvision ResNet with the CIFAR stem: 3x3 stride-1 first conv, no max-pool, dropout before fc."""

    def build(cfg: ModelConfig, num_classes: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        model.fc = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(model.fc.in_features, num_classes))
        return model

    return build


MODELS.builder("resnet18")(_resnet(torchvision.models.resnet18))
MODELS.builder("resnet34")(_resnet(torchvision.models.resnet34))
