from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from hpsearch.space.config import ModelConfig
from hpsearch.space.registry import MODELS
from hpsearch.training.models import build_model, count_parameters


def test_builders_cover_exactly_the_registry() -> None:
    assert all(MODELS.has_builder(name) for name in MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_builds_and_trains_one_step(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=8, dropout=0.1), num_classes=7)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 6])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert model(x).shape == (2, 7)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert count_parameters(model) > 0


def test_cnn_layout_of_the_six_layer_course_model() -> None:
    cfg = ModelConfig(stages=3, blocks_per_stage=2, widths=(64, 128, 256), dropout=0.2)
    model = build_model(cfg, num_classes=100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert all(c.bias is None for c in convs)  # BN follows every conv
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    dropout = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    assert dropout.p == 0.2
    expected = sum(cin * cout * 9 + 2 * cout for cin, cout in [(3, 64), (64, 64), (64, 128), (128, 128),
                                                                 (128, 256), (256, 256)]) + 256 * 100 + 100
    assert count_parameters(model) == expected
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_cnn_widths_grow_and_batchnorm_can_be_off() -> None:
    model = build_model(ModelConfig(stages=2, blocks_per_stage=1, width=8, width_growth=1.5, batchnorm=False), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 12]
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_cnn_with_too_many_stages_is_refused() -> None:
    assert build_model(ModelConfig(stages=5, width=2, blocks_per_stage=1), 10)(torch.randn(1, 3, 32, 32)).shape
    with pytest.raises(ValueError, match="6 stages shrink a 32x32 image below 1x1; use 1 to 5 stages"):
        build_model(ModelConfig(stages=6, width=2), 10)


def test_resnet_has_the_cifar_stem() -> None:
    model = build_model(ModelConfig(name="resnet18", dropout=0.3), 100)
    assert isinstance(model, torchvision.models.ResNet)
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.fc, nn.Sequential)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.3
    assert model.fc[1].out_features == 100


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'; known: cnn, resnet18, resnet34"):
        build_model(ModelConfig(name="vgg"), 10)


def test_count_parameters_skips_frozen_ones() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 2 + 2
