"""augment.py: per-image draws, repeatability, the unchanged crop+flip path, and each augmentation's geometry and
colour maths (against torchvision's functional ops where torchvision has the same one)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from hpsearch.bench import augment as bench_augment
from hpsearch.space.config import AugmentConfig
from hpsearch.training.augment import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    affine,
    augment_batch,
    erase,
)
from hpsearch.training.data import DeviceData, normalize

OFF = AugmentConfig(crop_padding=0, flip=False)  # every augmentation off
ALL = AugmentConfig(rotation=10, translate=0.1, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2)
NEW = {  # each new augmentation alone, crop and flip off
    "rotation": AugmentConfig(crop_padding=0, flip=False, rotation=30),
    "translate": AugmentConfig(crop_padding=0, flip=False, translate=0.25),
    "brightness": AugmentConfig(crop_padding=0, flip=False, brightness=0.5),
    "contrast": AugmentConfig(crop_padding=0, flip=False, contrast=0.5),
    "saturation": AugmentConfig(crop_padding=0, flip=False, saturation=0.5),
    "hue": AugmentConfig(crop_padding=0, flip=False, hue=0.3),
    "erasing": AugmentConfig(crop_padding=0, flip=False, erasing=1.0),
}


def _images(n: int = 8, c: int = 3, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- draws and dtypes
@pytest.mark.parametrize("name", sorted(NEW))
def test_each_image_gets_its_own_draw(name: str) -> None:
    x = _images(1).expand(8, -1, -1, -1).contiguous()  # eight copies of one image
    out = augment_batch(x, NEW[name], _gen(3))
    distinct = {hashlib.sha256(out[i].numpy().tobytes()).hexdigest() for i in range(len(out))}
    assert len(distinct) >= 6, f"{name}: {len(distinct)} distinct outputs of 8"


def test_the_same_seed_repeats_exactly_and_another_differs() -> None:
    x = _images()
    a, b = augment_batch(x, ALL, _gen(5)), augment_batch(x, ALL, _gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, ALL, _gen(6)))


def test_zero_settings_are_the_identity_and_stay_uint8() -> None:
    x = _images()
    out = augment_batch(x, OFF, _gen())
    assert out.dtype == torch.uint8 and torch.equal(out, x)
    # saturation and hue need colour: on one channel they are skipped, and nothing else is on
    grey = _images(c=1)
    out = augment_batch(grey, AugmentConfig(crop_padding=0, flip=False, saturation=0.5, hue=0.2), _gen())
    assert out.dtype == torch.uint8 and torch.equal(out, grey)


@pytest.mark.parametrize("cfg", [AugmentConfig(), ALL, *NEW.values()])
def test_shapes_and_dtypes(cfg: AugmentConfig) -> None:
    x = _images(5, h=10, w=14)  # not square
    out = augment_batch(x, cfg, _gen(1))
    assert out.shape == x.shape
    if cfg.rotation or cfg.translate or cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        assert out.dtype == torch.float32 and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    else:
        assert out.dtype == torch.uint8


@pytest.mark.parametrize("cfg", [NEW["rotation"], NEW["translate"], NEW["brightness"], NEW["contrast"],
                                 AugmentConfig(rotation=10, translate=0.1, brightness=0.2, contrast=0.2)])
def test_one_channel_images(cfg: AugmentConfig) -> None:
    x = _images(6, c=1)
    out = augment_batch(x, cfg, _gen(2))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert not torch.equal(out, x.float() / 255)


def test_contrast_of_one_channel_blends_with_its_own_mean() -> None:
    x = torch.rand(3, 1, 5, 5, generator=_gen())
    out = adjust_contrast(x, torch.zeros(3))  # factor 0: the mean grey
    assert torch.allclose(out, x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x))


def test_normalize_reads_the_float_batches_on_the_uint8_scale() -> None:
    x = _images()
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    barely = augment_batch(x, AugmentConfig(crop_padding=0, flip=False, brightness=1e-7), _gen())
    assert barely.dtype == torch.float32
    assert torch.allclose(normalize(barely, mean, std), normalize(x, mean, std), atol=1e-5)


def test_train_batches_with_every_augmentation() -> None:
    n = 40
    data = DeviceData(train_x=_images(n), train_y=torch.arange(n) % 4, val_x=_images(4), val_y=torch.arange(4),
                      mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), num_classes=4,
                      class_names=("a", "b", "c", "d"))
    batches = list(data.train_batches(16, ALL, _gen(), channels_last=False))
    assert len(batches) == 2
    for x, y in batches:
        assert x.shape == (16, 3, 12, 12) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
        assert y.shape == (16,)


# ---------------------------------------------------------------------------------------- crop and flip
def _old_crop_flip(x: torch.Tensor, p: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """The crop+flip formula as data.augment_batch had it before the new augmentations, kept as the reference."""
    n, _, h, w = x.shape
    if p > 0:
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        rows = (dy + torch.arange(h))[:, None, :, None]
        cols = (dx + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if flip:
        f = torch.rand(n, generator=generator) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(3), x)
    return x


# sha256 prefixes of the crop+flip outputs, computed with the code before augment.py existed
CHECKSUMS = [((4, True), "197671050ae861ad"), ((2, True), "20a26af37dd65404"), ((3, False), "5bc495ef29210f77"),
             ((0, True), "5ff1f31699a7315a")]


@pytest.mark.parametrize(("setting", "checksum"), CHECKSUMS)
def test_crop_and_flip_are_unchanged(setting: tuple[int, bool], checksum: str) -> None:
    p, flip = setting
    x = _images(16)
    g, reference = _gen(7), _gen(7)
    out = augment_batch(x, AugmentConfig(crop_padding=p, flip=flip), g)
    assert out.dtype == torch.uint8
    assert torch.equal(out, _old_crop_flip(x, p, flip, reference))
    assert hashlib.sha256(out.numpy().tobytes()).hexdigest()[:16] == checksum
    assert torch.equal(g.get_state(), reference.get_state())  # the same draws, no more


def test_the_new_augmentations_come_after_the_same_crop_and_flip() -> None:
    x = _images(16)
    cropped = _old_crop_flip(x, 4, True, _gen(7))
    out = augment_batch(x, AugmentConfig(brightness=1e-7), _gen(7))
    assert torch.allclose(out, cropped.float() / 255, atol=1e-6)


# ------------------------------------------------------------------------------------------------ geometry
def test_rotation_by_90_degrees_turns_counter_clockwise() -> None:
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 0, 5] = 1.0  # top-right
    out = affine(x, torch.tensor([90.0]), torch.zeros(1, 2))
    assert out[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)  # now top-left
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)
    image = torch.rand(2, 3, 6, 6, generator=_gen())
    turned = affine(image, torch.tensor([90.0, -90.0]), torch.zeros(2, 2))
    assert torch.allclose(turned[0], torch.rot90(image[0], 1, (1, 2)), atol=1e-5)
    assert torch.allclose(turned[1], torch.rot90(image[1], -1, (1, 2)), atol=1e-5)


def test_translation_moves_whole_pixels_and_pads_with_zeros() -> None:
    x = torch.rand(1, 3, 5, 7, generator=_gen()) + 0.1
    out = affine(x, torch.zeros(1), torch.tensor([[2.0, -1.0]]))  # 2 right, 1 up
    assert torch.allclose(out[..., :-1, 2:], x[..., 1:, :-2], atol=1e-6)
    assert float(out[..., :, :2].abs().max()) < 1e-6 and float(out[..., -1, :].abs().max()) < 1e-6  # zeros in


def test_drawn_translations_are_whole_pixels() -> None:
    x = _images(8, c=1, h=10, w=10)
    out = augment_batch(x, NEW["translate"], _gen(4))  # shifts in -2.5..2.5 pixels, rounded
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-3)  # no bilinear blend of two pixels


@pytest.mark.parametrize(("degrees", "shift"), [(10.0, (0.0, 0.0)), (-35.0, (2.0, -3.0)), (120.0, (1.0, 1.0))])
def test_affine_matches_torchvision(degrees: float, shift: tuple[float, float]) -> None:
    x = torch.rand(2, 3, 9, 13, generator=_gen())  # not square
    out = affine(x, torch.full((2,), degrees), torch.tensor([shift, shift]))
    # torchvision's affine turns clockwise for a positive angle, its rotate counter-clockwise
    ref = torch.stack([TF.affine(img, angle=-degrees, translate=[int(shift[0]), int(shift[1])], scale=1.0,
                                 shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR) for img in x])
    assert torch.allclose(out, ref, atol=1e-4)


# --------------------------------------------------------------------------------------------------- colour
def test_brightness_factors_stay_in_their_range() -> None:
    grey = torch.full((256, 1, 2, 2), 128, dtype=torch.uint8)
    out = augment_batch(grey, AugmentConfig(crop_padding=0, flip=False, brightness=0.5), _gen())
    factors = out[:, 0, 0, 0] / (128 / 255)
    assert float(factors.min()) >= 0.5 - 1e-6 and float(factors.max()) <= 1.5 + 1e-6
    assert float(factors.min()) < 0.6 and float(factors.max()) > 1.4  # the whole range is drawn
    assert bool((out == out[:, :, :1, :1]).all())  # one factor per image


def test_hue_shift_of_zero_is_the_identity() -> None:
    x = torch.rand(4, 3, 6, 6, generator=_gen())
    assert torch.allclose(adjust_hue(x, torch.zeros(4)), x, atol=1e-6)


def test_hue_turns_the_colour_circle() -> None:
    red = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None].expand(3, 3, 2, 2)
    out = adjust_hue(red, torch.tensor([0.5, -0.5, 1 / 3]))
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0, 1.0])[:, None, None].expand(3, 2, 2), atol=1e-6)  # cyan
    assert torch.allclose(out[1], out[0], atol=1e-6)
    assert torch.allclose(out[2], torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 2, 2), atol=1e-5)  # green


def test_colour_ops_match_torchvision() -> None:
    x = torch.rand(4, 3, 5, 6, generator=_gen())
    factor = torch.tensor([0.0, 0.5, 1.3, 2.0])
    shift = torch.tensor([-0.5, -0.1, 0.25, 0.45])

    def per_image(fn: Callable[[torch.Tensor, float], torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        return torch.stack([fn(img, float(v)) for img, v in zip(x, values, strict=True)])

    assert torch.allclose(adjust_brightness(x, factor), per_image(TF.adjust_brightness, factor), atol=1e-6)
    # torchvision's grey weighs red 0.2989 where ITU-R 601 (and augment.py) has 0.299
    assert torch.allclose(adjust_contrast(x, factor), per_image(TF.adjust_contrast, factor), atol=1e-3)
    assert torch.allclose(adjust_saturation(x, factor), per_image(TF.adjust_saturation, factor), atol=1e-3)
    assert torch.allclose(adjust_hue(x, shift), per_image(TF.adjust_hue, shift), atol=1e-5)


# ------------------------------------------------------------------------------------------------ benchmark
def test_the_augmentation_benchmark_runs_and_prints_its_table() -> None:
    """The reduced form of `python -m hpsearch.bench.augment` (docs/BENCHMARKS.md), so the command cannot rot."""
    lines: list[str] = []
    rows = bench_augment.main(["--images", "256", "--repeats", "1", "--device", "cpu"], out=lines.append)
    assert [r.setting for r in rows] == list(bench_augment.SETTINGS)
    assert next(r for r in rows if r.setting == bench_augment.BASELINE).ratio == 1.0
    table = lines[-1].splitlines()
    assert table[0].startswith("| augmentation |") and len(table) == 2 + len(rows)


# ------------------------------------------------------------------------------------------------- erasing
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_erasing_sets_one_rectangle_of_every_channel_to_zero(dtype: torch.dtype) -> None:
    """Each erased image differs from its input in one axis-aligned rectangle of 2% to 33% of its area (up to the
    rounding of its sides), the same in every channel, and only there; p=0.5 erases about half the images."""
    x = torch.randint(1, 256, (400, 3, 20, 24), dtype=torch.uint8, generator=_gen(1)).to(dtype)  # no zero pixel
    out = erase(x, 0.5, _gen(2))
    assert out.dtype == dtype and out.shape == x.shape
    erased = 0
    for before, after in zip(x, out, strict=True):
        zero = after == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[1], zero[2])
        if not zero.any():
            assert torch.equal(before, after)
            continue
        erased += 1
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        box = zero[0][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and int(zero[0].sum()) == box.numel()  # a full rectangle, nothing outside it
        assert 0.01 * 480 <= box.numel() <= 0.40 * 480
        assert torch.equal(after[:, ~zero[0]], before[:, ~zero[0]])
    assert 150 <= erased <= 250


def test_erasing_comes_last_and_off_changes_nothing() -> None:
    x = _images(16)
    assert torch.equal(augment_batch(x, AugmentConfig(erasing=0.0), _gen(7)),
                       augment_batch(x, AugmentConfig(), _gen(7)))
    cropped = augment_batch(x, AugmentConfig(), _gen(7))
    g = _gen(7)
    out = augment_batch(x, AugmentConfig(erasing=1.0), g)
    assert torch.equal(out[out != 0], cropped[out != 0])  # the same crop and flip, then the rectangles

