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
    with pytest.raises(ValueError, match="6 stages, each ending in a 2x2 pool, shrink a 32x32 image below 1x1; "
                                         "use 1 to 5 stages"):
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


# -- the course notes' nets (spaces/seeds/): their layers and parameter counts ----------------------------------
def _layers(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if not isinstance(m, nn.Sequential)]


def test_the_three_layer_convnet_of_the_notes() -> None:
    """conv 5x5 32 - ReLU - conv 3x3 16 - ReLU - fully connected, on 32x32 images with "same" padding."""
    cfg = ModelConfig(widths=(32, 16), kernel_sizes=(5, 3), blocks_per_stage=1, batchnorm=False, pool="none",
                      head="flatten")
    model = build_model(cfg, 10)
    assert _layers(model) == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Dropout", "Linear"]
    conv1, conv2 = (m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv1.kernel_size == (5, 5) and conv1.padding == (2, 2) and conv2.kernel_size == (3, 3)
    # (3*25 + 1) * 32 + (32*9 + 1) * 16 + (16*32*32 + 1) * 10
    assert count_parameters(model) == 2_432 + 4_624 + 163_850
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_convnet_with_spatial_dropout_and_a_hidden_layer() -> None:
    """conv 3x3 32 - ReLU - maxpool - conv 3x3 64 - ReLU - maxpool - Dropout2d(0.2) - FC 512 - ReLU - Dropout(0.5)
    - FC 10."""
    cfg = ModelConfig(widths=(32, 64), blocks_per_stage=1, batchnorm=False, pool="max", head="flatten",
                      spatial_dropout=0.2, hidden=(512,), dropout=0.5, init="default")
    model = build_model(cfg, 10)
    assert _layers(model) == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Dropout2d", "Flatten",
                              "Linear", "ReLU", "Dropout", "Linear"]
    assert next(m for m in model.modules() if isinstance(m, nn.Dropout2d)).p == 0.2
    assert next(m for m in model.modules() if isinstance(m, nn.Dropout)).p == 0.5
    assert count_parameters(model) == 896 + 18_496 + (64 * 8 * 8 + 1) * 512 + (512 + 1) * 10


def test_the_mlp_of_the_notes_on_28x28_grayscale() -> None:
    """784 - 512 - 128 - 10 with ReLU, for MNIST's 1x28x28 images (the data set gives the input size)."""
    from hpsearch.space.config import DataConfig, TrialConfig

    config = TrialConfig(data=DataConfig(dataset="mnist"), model=ModelConfig(name="mlp", hidden=(512, 128)))
    model = build_model(config.model, 10, config)
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [784, 512, 128]
    assert count_parameters(model) == (784 + 1) * 512 + (512 + 1) * 128 + (128 + 1) * 10
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_models_take_the_channels_and_size_from_the_data() -> None:
    from hpsearch.space.config import DataConfig, TrialConfig

    for name in ("cnn", "resnet18"):
        config = TrialConfig(data=DataConfig(dataset="fashion_mnist"),
                             model=ModelConfig(name=name, widths=(4, 8), head="flatten") if name == "cnn"
                             else ModelConfig(name=name))
        model = build_model(config.model, 10, config)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def _cnn_before_the_new_fields(widths: tuple[int, ...], blocks: int, num_classes: int) -> nn.Sequential:
    """The cnn builder as it was before kernel, pool, head, hidden, activation and init were fields."""
    layers: list[nn.Module] = []
    in_ch = 3
    for width in widths:
        for _ in range(blocks):
            layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_ch = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.0), nn.Linear(in_ch, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def test_default_cnn_keeps_its_layout_and_weights() -> None:
    """The new fields at their defaults build exactly the model they built before them: the same modules in the
    same places (a checkpoint's keys), and the same weights from the same seed (a study's trials repeat)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=(4, 8), blocks_per_stage=2), 10)
    torch.manual_seed(0)
    before = _cnn_before_the_new_fields((4, 8), 2, 10)
    assert list(model.state_dict()) == list(before.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("init", ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "default"])
def test_each_initialisation_draws_the_convs_and_hidden_layers_and_spares_the_classifier(init: str) -> None:
    cfg = ModelConfig(widths=(16,), blocks_per_stage=1, batchnorm=False, hidden=(32,), init=init)
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    torch.manual_seed(0)  # the same layers made by torch alone, in the model's order: torch's own default draw
    torch_conv, torch_hidden, torch_classifier = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 32), nn.Linear(32, 10)
    conv, hidden, classifier = (m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))

    def same(a: nn.Module, b: nn.Module) -> bool:
        return torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)

    assert same(classifier, torch_classifier)  # torch's default in every scheme
    if init == "default":  # torch's draw everywhere, biases included
        assert same(conv, torch_conv) and same(hidden, torch_hidden)
    else:
        assert not torch.equal(conv.weight, torch_conv.weight) and not torch.equal(hidden.weight, torch_hidden.weight)
        assert bool((conv.bias == 0).all()) and bool((hidden.bias == 0).all())
    if init == "kaiming_normal":  # fan_out of a 3x3 conv of 16 channels: std sqrt(2 / (16 * 9))
        assert abs(float(conv.weight.detach().std()) - (2 / (16 * 9)) ** 0.5) < 0.03


@pytest.mark.parametrize("pool, size", [("max", 8), ("avg", 8), ("none", 32)])
def test_pooling_per_stage(pool: str, size: int) -> None:
    model = build_model(ModelConfig(widths=(4, 4), blocks_per_stage=1, pool=pool, head="flatten"), 10)
    assert sum(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules()) == (0 if pool == "none" else 2)
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert linear.in_features == 4 * size * size


@pytest.mark.parametrize("cfg, message", [
    (ModelConfig(widths=(4, 4), kernel_sizes=(3,)), "1 kernel sizes for 2 stages"),
    (ModelConfig(widths=(4,), kernel_size=4), "kernel sides must be odd"),
])
def test_kernel_rules(cfg: ModelConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(cfg, 10)


def test_pool_none_allows_more_stages_than_the_image_halves() -> None:
    model = build_model(ModelConfig(stages=7, width=2, width_growth=1.0, blocks_per_stage=1, pool="none"), 10)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
