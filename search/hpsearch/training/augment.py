"""Training-time augmentation, batched on the training device: each image gets its own random draw.

`augment_batch` applies, in this order and each only when its AugmentConfig field turns it on:

1. random crop after zero padding, then random horizontal flip: uint8 in, uint8 out (a gather and a where);
2. one affine warp per image, rotation and translation together (affine_grid + grid_sample: bilinear, zero padding,
   align_corners=False);
3. colour jitter in the fixed order brightness, contrast, saturation, hue;
4. random erasing: with probability `erasing`, one rectangle of each image set to 0 (torchvision's RandomErasing
   draws: an area of 2% to 33% of the image, an aspect ratio log-uniform in [0.3, 3.3]; its side clamped to the
   image where torchvision would draw again).

A batch that steps 2 or 3 touch leaves as float32 in 0..1; one that only steps 1 touches stays uint8, and
data.normalize takes either. Every draw comes from the generator passed in (on the batch's device), in a fixed
order, so a seed repeats the batch exactly. Saturation and hue need colour: on 1-channel images they are skipped.

`affine`, `adjust_brightness`, `adjust_contrast`, `adjust_saturation` and `adjust_hue` apply given per-image
parameters to float images in 0..1; augment_batch draws those parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..space.config import AugmentConfig

# ITU-R 601 luma (contrast's mean, saturation's grey); torchvision's rgb_to_grayscale rounds red to 0.2989.
_GREY = (0.299, 0.587, 0.114)
_TINY = 1e-12  # divides for a zero chroma; below any 8-bit chroma, and a pixel of smaller chroma moves by less


def augment_batch(x: Tensor, augment: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Augment a uint8 NCHW batch per image (see the module docstring for the order).

    Crop and flip alone return uint8; any of rotation, translate, brightness, contrast, saturation or hue returns
    float32 in 0..1. The draws, in order: crop offsets (rows, then columns), flips, angles, shifts, then one factor
    per jitter that is on, each a tensor of one value per image.

    Rotation: angle uniform in [-rotation, rotation] degrees, counter-clockwise for a positive angle, about the
    image centre. Translate: shift uniform in [-translate, translate] x the image's width (columns) and height
    (rows), independently, rounded to whole pixels as torchvision's RandomAffine does. Brightness, contrast and
    saturation: factor uniform in [max(0, 1 - v), 1 + v]; hue: shift uniform in [-hue, hue] of the colour circle
    (torchvision's ColorJitter ranges). Unlike ColorJitter, which draws a new order of the four per call, the order
    here is always brightness, contrast, saturation, hue.
    """
    n, c, h, w = x.shape
    device = x.device
    if augment.crop_padding > 0:
        p = augment.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), device=device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), device=device, generator=generator)
        row = w + 2 * p  # each image's window, as offsets into its flattened padded planes: one gather
        window = (torch.arange(h, device=device)[:, None] * row + torch.arange(w, device=device)).view(1, h * w)
        index = (dy * row + dx + window)[:, None, :].expand(n, c, h * w)
        x = padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)
    if augment.flip:
        flip = torch.rand(n, device=device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    colour = c == 3  # saturation and hue need three channels
    jitter = (augment.brightness > 0 or augment.contrast > 0
              or (colour and (augment.saturation > 0 or augment.hue > 0)))
    if augment.rotation <= 0 and augment.translate <= 0 and not jitter:
        return erase(x, augment.erasing, generator) if augment.erasing > 0 else x

    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if augment.rotation > 0 or augment.translate > 0:
        degrees = torch.zeros(n, device=device)
        shift = torch.zeros(n, 2, device=device)
        if augment.rotation > 0:
            degrees = _uniform(n, -augment.rotation, augment.rotation, generator, device)
        if augment.translate > 0:
            fraction = _uniform((n, 2), -augment.translate, augment.translate, generator, device)
            shift = torch.stack([fraction[:, 0] * w, fraction[:, 1] * h], 1).round_()
        x = affine(x, degrees, shift).clamp_(0.0, 1.0)  # bilinear weights can round a hair past 0..1
    if augment.brightness > 0:
        b = augment.brightness
        x = adjust_brightness(x, _uniform(n, max(0.0, 1 - b), 1 + b, generator, device))
    if augment.contrast > 0:
        k = augment.contrast
        x = adjust_contrast(x, _uniform(n, max(0.0, 1 - k), 1 + k, generator, device))
    if colour and augment.saturation > 0:
        s = augment.saturation
        x = adjust_saturation(x, _uniform(n, max(0.0, 1 - s), 1 + s, generator, device))
    if colour and augment.hue > 0:
        x = adjust_hue(x, _uniform(n, -augment.hue, augment.hue, generator, device))
    return erase(x, augment.erasing, generator) if augment.erasing > 0 else x


def erase(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Random erasing of an NCHW batch (uint8 or float): each image, with probability p, gets one rectangle of all
    its channels set to 0. The draws, in order: whether (N), area fraction in [0.02, 0.33] (N), log aspect ratio
    (N), top (N), left (N)."""
    n, _, h, w = x.shape
    device = x.device
    apply = torch.rand(n, device=device, generator=generator) < p
    area = _uniform(n, 0.02, 0.33, generator, device) * (h * w)
    ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), generator, device))
    eh = torch.sqrt(area * ratio).round().clamp(1, h)
    ew = torch.sqrt(area / ratio).round().clamp(1, w)
    top = (torch.rand(n, device=device, generator=generator) * (h - eh + 1)).floor()
    left = (torch.rand(n, device=device, generator=generator) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (N, W)
    mask = inside_rows[:, :, None] & inside_cols[:, None, :] & apply[:, None, None]
    return x.masked_fill(mask[:, None], 0)


def _uniform(shape: int | tuple[int, ...], low: float, high: float, generator: torch.Generator,
             device: torch.device) -> Tensor:
    """float32 values uniform in [low, high), one draw from the generator."""
    size = (shape,) if isinstance(shape, int) else shape
    return torch.rand(size, device=device, generator=generator) * (high - low) + low


# ------------------------------------------------------------------------------------------------- geometry
def affine(x: Tensor, degrees: Tensor, shift: Tensor) -> Tensor:
    """Rotate each float NCHW image by degrees[i] (counter-clockwise as displayed) about its centre, then shift it
    by shift[i] = (columns right, rows down) pixels; one bilinear resampling, zeros outside the image.

    affine_grid's theta maps output to input positions in coordinates normalised to [-1, 1] on each axis
    (align_corners=False: -1 and 1 are the outer pixel edges), so the pixel-space inverse p_in = R(-a) (p_out - t)
    is rescaled by (W/2, H/2): a non-square image turns without shearing.
    """
    n, _, h, w = x.shape
    a = degrees.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    tx, ty = shift[:, 0].to(torch.float32), shift[:, 1].to(torch.float32)
    theta = torch.stack([
        torch.stack([cos, -sin * (h / w), (2.0 / w) * (sin * ty - cos * tx)], 1),
        torch.stack([sin * (w / h), cos, (2.0 / h) * (-sin * tx - cos * ty)], 1),
    ], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------------------- colour
def _per_image(v: Tensor) -> Tensor:
    return v.to(torch.float32)[:, None, None, None]


def _grey(x: Tensor) -> Tensor:
    """(N, 1, H, W) luma of RGB images (0.299 R + 0.587 G + 0.114 B); a 1-channel image is its own grey."""
    if x.shape[1] == 1:
        return x
    return _GREY[0] * x[:, 0:1] + _GREY[1] * x[:, 1:2] + _GREY[2] * x[:, 2:3]


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each float image by factor[i], clamped to 0..1 (torchvision's adjust_brightness)."""
    return (x * _per_image(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each float image with its mean grey by factor[i], clamped to 0..1 (torchvision's adjust_contrast): the
    mean is the image's luma mean for RGB, the channel's mean for 1 channel."""
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(mean, x, _per_image(factor)).clamp_(0.0, 1.0)  # mean + f (x - mean)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each float RGB image with its own per-pixel grey by factor[i], clamped to 0..1 (torchvision's
    adjust_saturation): 0 gives grey, 1 the image."""
    return torch.lerp(_grey(x), x, _per_image(factor)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Turn each float RGB image's hue by shift[i] of the colour circle (0.5: the opposite colour), keeping value
    and saturation: torchvision's adjust_hue, as an RGB -> HSV -> RGB round trip in elementwise tensor ops.

    Hue h in [0, 6) comes from whichever channel is the maximum (red first, then green, on ties); with V the
    maximum and C the chroma (maximum - minimum), the channel n of (R, G, B) = (5, 3, 1) comes back as
    V - C * clamp(min(k, 4 - k), 0, 1), k = (n + h) mod 6. A grey pixel (C = 0) has hue 0 and stays as it is.
    The branch on the maximum is a lerp by a 0/1 weight, sign(V - channel), which picks either end exactly; on a
    CPU that is several times faster than torch.where, and the temporaries are updated in place.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    value = x.amax(1, keepdim=True)
    chroma = x.amin(1, keepdim=True).neg_().add_(value)
    not_r = (value - r).sign_()  # 0 where red is the maximum, else 1
    not_g = (value - g).sign_()
    # 60-degree sectors: (g - b) / C if red is the maximum, else (b - r) / C + 2 if green, else (r - g) / C + 4
    sector = torch.lerp((b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0), not_g)
    sector = torch.lerp(g - b, sector, not_r)
    hue = sector.div_(chroma.clamp(min=_TINY)).add_(_per_image(shift), alpha=6.0)  # grey: 0 / tiny = 0
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device).view(1, 3, 1, 1)  # n = 5, 3, 1 for R, G, B
    k = torch.remainder(hue + offsets, 6.0)
    k = torch.minimum(k, k.neg().add_(4.0)).clamp_(0.0, 1.0)
    return torch.addcmul(value, chroma, k, value=-1.0)
