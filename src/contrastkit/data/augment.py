"""Batched multi-view augmentation: V random views of every image, drawn on the training device.

Every random parameter is drawn per sample from one ``torch.Generator`` in a fixed order, so a
seed fixes the views. The geometry (random resized crop, flip, rotation, scale, shear,
translation) is one 2×3 affine matrix per view applied by a single ``affine_grid`` +
``grid_sample``; colour jitter, grayscale and blur are tensor arithmetic over the whole batch.
No per-sample Python runs (see ``benchmarks/train_step.py`` for the comparison with
torchvision's per-sample transforms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.errors import ContrastkitError


@dataclass(frozen=True)
class AugmentPreset:
    """Parameters of one augmentation recipe (ranges are sampled uniformly per view).

    Attributes:
        crop_scale: Area fraction range of the random resized crop; None = no crop.
        crop_ratio: Aspect-ratio range of the crop (sampled log-uniformly).
        flip: Horizontal flip with probability 0.5.
        rotate: Maximum absolute rotation in degrees.
        scale: Zoom range of the affine part (1 = none).
        translate: Maximum shift as a fraction of the image size.
        shear: Maximum absolute shear in degrees.
        jitter: Colour-jitter strengths (brightness, contrast, saturation, hue); None = off.
        jitter_p: Probability of applying the colour jitter.
        grayscale_p: Probability of converting to grey (RGB only).
        blur_p: Probability of a Gaussian blur (σ in [0.1, 2]) for images ≥ ``blur_min_size``.
        blur_min_size: Smallest image side that gets blurred.
    """

    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    rotate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    shear: float = 0.0
    jitter: tuple[float, float, float, float] | None = None
    jitter_p: float = 0.8
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_min_size: int = 96


PRESETS: dict[str, AugmentPreset] = {
    # a flipped or strongly rotated digit is another digit: small affine only
    "digits": AugmentPreset(rotate=15.0, scale=(0.85, 1.15), translate=0.12, shear=10.0),
    "fashion-mnist": AugmentPreset(crop_scale=(0.35, 1.0), flip=True),
    # the usual supervised recipe (pad-and-crop by 1/8 of the side, flip), no change of scale
    "shift-flip": AugmentPreset(translate=0.125, flip=True),
    "simclr": AugmentPreset(
        crop_scale=(0.2, 1.0),
        flip=True,
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=0.5,
    ),
    "none": AugmentPreset(),
}
"""Named presets; the data-set registry names the one each data set uses."""


def get_preset(name: str) -> AugmentPreset:
    """Return the preset called ``name``.

    Raises:
        ContrastkitError: for an unknown name.
    """
    if name not in PRESETS:
        raise ContrastkitError(
            f"unknown augmentation preset {name!r}; choose one of {', '.join(PRESETS)}"
        )
    return PRESETS[name]


STD_FLOOR = 1e-3
"""The smallest standard deviation normalisation divides by (a constant channel gets this)."""


def stats_from_sums(
    sums: list[int], squares: list[int], count: int
) -> tuple[list[float], list[float]]:
    """Per-channel mean and unbiased std on the 0–1 scale from exact integer pixel sums.

    With s1 = Σx and s2 = Σx² over the ``count`` pixels of a channel (x in 0..255): mean =
    s1 / (255·count), var = (count·s2 − s1²) / (255²·count·(count − 1)), both formed exactly
    in integers and rounded once to float64; std = √var, at least :data:`STD_FLOOR` (which
    one pixel gets).

    Raises:
        ContrastkitError: if ``count`` < 1 or the lists differ in length.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ContrastkitError(f"count must be an integer >= 1 (pixels per channel), got {count!r}")
    if len(sums) != len(squares):
        raise ContrastkitError(
            f"sums and squares must have one entry per channel, got {len(sums)} and {len(squares)}"
        )
    mean = [s1 / (255 * count) for s1 in sums]  # int / int: exact, rounded once
    den = 255**2 * count * max(count - 1, 1)  # one pixel: 0 / den
    var = [(count * s2 - s1 * s1) / den for s1, s2 in zip(sums, squares, strict=True)]
    return mean, [max(math.sqrt(v), STD_FLOOR) for v in var]


def channel_stats(
    images: Tensor, *, chunk_values: int = 1 << 22
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), on the 0–1 scale.

    Each channel's histogram of the 256 pixel values is counted (int64, exact) over chunks of
    whole images of about ``chunk_values`` values, and the sums Σx and Σx² come from it
    exactly: any size of set costs one chunk's copy of memory (4 MiB by default, against 4
    bytes per pixel of a float copy), the chunking changes nothing, and the figures are those
    of :func:`stats_from_sums`, equal to a direct float64 formula to its rounding. The std is
    the unbiased one (``torch.std``).

    Args:
        images: uint8 images. Shape: (N, C, H, W), N >= 1.
        chunk_values: Pixel values (N·C·H·W) counted at a time, >= 1 (at least one image).

    Raises:
        ContrastkitError: naming the argument, on images that are not 4-D uint8 with at least
            one pixel, or a bad ``chunk_values``.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = (
            f"{images.dtype} {tuple(images.shape)}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        raise ContrastkitError(f"images must be a uint8 tensor (N, C, H, W), got {got}")
    if images.numel() == 0:
        raise ContrastkitError(
            f"images must hold at least one pixel, got shape {tuple(images.shape)}"
        )
    if isinstance(chunk_values, bool) or not isinstance(chunk_values, int) or chunk_values < 1:
        raise ContrastkitError(f"chunk_values must be an integer >= 1, got {chunk_values!r}")
    n, c, h, w = images.shape
    step = max(1, chunk_values // (c * h * w))  # images per chunk
    hist = torch.zeros(c, 256, dtype=torch.int64)  # (C, 256): pixels of each value
    for start in range(0, n, step):
        chunk = images[start : start + step].cpu()  # (B, C, H, W)
        for ch in range(c):
            hist[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256)
    value = torch.arange(256, dtype=torch.int64)  # (256,); Σ < 2**63 below 1.4e14 pixels
    sums = (hist * value).sum(dim=1).tolist()  # (C,) Σx
    squares = (hist * value * value).sum(dim=1).tolist()  # (C,) Σx²
    return stats_from_sums(sums, squares, n * h * w)


def normalize(images: Tensor, mean: list[float], std: list[float]) -> Tensor:
    """Turn uint8 (or 0–1 float) images (N, C, H, W) into float32 ``(x/255 - mean) / std``."""
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _crop_boxes(
    n: int, h: int, w: int, p: AugmentPreset, g: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random-resized-crop boxes as (scale_x, scale_y, centre_x, centre_y) in [-1, 1] coordinates.

    Like torchvision: area fraction and log aspect ratio are drawn up to 10 times; the first
    box that fits wins, the whole image otherwise.
    """
    assert p.crop_scale is not None
    tries = 10
    area = h * w
    s = torch.rand(n, tries, generator=g, device=device)
    s = s * (p.crop_scale[1] - p.crop_scale[0]) + p.crop_scale[0]
    lr = torch.rand(n, tries, generator=g, device=device)
    lo, hi = math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1])
    ratio = torch.exp(lr * (hi - lo) + lo)
    cw = torch.sqrt(s * area * ratio)  # (n, tries) crop width in pixels
    ch = torch.sqrt(s * area / ratio)
    ok = (cw <= w) & (ch <= h)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # first box that fits
    found = ok.any(dim=1)
    cw = torch.where(found, cw.gather(1, first).squeeze(1), torch.full_like(cw[:, 0], w))
    ch = torch.where(found, ch.gather(1, first).squeeze(1), torch.full_like(ch[:, 0], h))
    x0 = torch.rand(n, generator=g, device=device) * (w - cw)
    y0 = torch.rand(n, generator=g, device=device) * (h - ch)
    return cw / w, ch / h, (x0 + cw / 2) / w * 2 - 1, (y0 + ch / 2) / h * 2 - 1


def affine_matrices(
    n: int, h: int, w: int, p: AugmentPreset, g: torch.Generator, device: torch.device
) -> Tensor:
    """Draw the geometric part of every view as one sampling matrix per view.

    Maps output coordinates (x, y, 1) in [-1, 1] to input coordinates, as ``affine_grid`` wants.

    Returns:
        The matrices. Shape: (n, 2, 3).
    """
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    m = eye.clone()
    if p.flip:
        sign = torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)
        flip = eye.clone()
        flip[:, 0, 0] = sign
        m = flip
    if p.rotate or p.shear or p.scale != (1.0, 1.0) or p.translate:
        angle = torch.deg2rad(_uniform(n, -p.rotate, p.rotate, g, device))
        shear = torch.tan(torch.deg2rad(_uniform(n, -p.shear, p.shear, g, device)))
        zoom = _uniform(n, p.scale[0], p.scale[1], g, device)
        tx = _uniform(n, -p.translate, p.translate, g, device) * 2
        ty = _uniform(n, -p.translate, p.translate, g, device) * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        aff = eye.clone()
        aff[:, 0, 0], aff[:, 0, 1], aff[:, 0, 2] = cos, cos * shear - sin, tx
        aff[:, 1, 0], aff[:, 1, 1], aff[:, 1, 2] = sin, sin * shear + cos, ty
        m = aff @ m
    if p.crop_scale is not None:
        sx, sy, cx, cy = _crop_boxes(n, h, w, p, g, device)
        crop = eye.clone()
        crop[:, 0, 0], crop[:, 1, 1], crop[:, 0, 2], crop[:, 1, 2] = sx, sy, cx, cy
        m = crop @ m
    return m[:, :2, :]


def _grey(x: Tensor) -> Tensor:
    """ITU-R 601 luma of RGB (N, 3, H, W) → (N, 1, H, W)."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [  # (r, g, b) for each sector i of the hue circle
        (v, t, p),
        (q, v, p),
        (p, v, t),
        (p, q, v),
        (t, p, v),
        (v, p, q),
    ]
    out = torch.zeros_like(x)
    for k, (r, g, b) in enumerate(choices):
        sel = (i == k).unsqueeze(1)
        out = torch.where(sel, torch.stack((r, g, b), dim=1), out)
    return out


def colour_jitter(
    x: Tensor, strength: tuple[float, float, float, float], p: float, g: torch.Generator
) -> Tensor:
    """Brightness, contrast, saturation and hue, each with a per-sample factor, applied with prob. p.

    Factors follow torchvision's ``ColorJitter`` ranges ([1-s, 1+s], hue in [-h, h]); the order is
    fixed (torchvision permutes it per call). Saturation and hue are skipped for grey images.

    Args:
        x: Images in [0, 1]. Shape: (N, C, H, W), C = 1 or 3.
        strength: (brightness, contrast, saturation, hue).
        p: Probability per sample.
        g: Random generator on ``x``'s device.

    Returns:
        Jittered images in [0, 1]. Shape: (N, C, H, W).
    """
    n, c = x.shape[:2]
    dev = x.device
    b, con, sat, hue = strength
    fb = _uniform(n, max(0.0, 1 - b), 1 + b, g, dev).view(n, 1, 1, 1)
    fc = _uniform(n, max(0.0, 1 - con), 1 + con, g, dev).view(n, 1, 1, 1)
    fs = _uniform(n, max(0.0, 1 - sat), 1 + sat, g, dev).view(n, 1, 1, 1)
    fh = _uniform(n, -hue, hue, g, dev).view(n, 1, 1)
    apply = (torch.rand(n, generator=g, device=dev) < p).view(n, 1, 1, 1)
    y = (x * fb).clamp(0, 1)
    grey = _grey(y) if c == 3 else y
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - mean) * fc + mean).clamp(0, 1)
    if c == 3:
        grey = _grey(y)
        y = ((y - grey) * fs + grey).clamp(0, 1)
        if hue > 0:
            hsv = _rgb_to_hsv(y)
            hsv = torch.cat(((hsv[:, :1] + fh.unsqueeze(1)) % 1.0, hsv[:, 1:]), dim=1)
            y = _hsv_to_rgb(hsv).clamp(0, 1)
    return torch.where(apply, y, x)


def gaussian_blur(
    x: Tensor, p: float, g: torch.Generator, sigma: tuple[float, float] = (0.1, 2.0)
) -> Tensor:
    """Blur each sample with probability p, σ drawn per sample, kernel ≈ 10 % of the image side.

    Args:
        x: Images. Shape: (N, C, H, W).
        p: Probability per sample.
        g: Random generator on ``x``'s device.
        sigma: Range of σ in pixels.

    Returns:
        Blurred images. Shape: (N, C, H, W).
    """
    n, c, h, w = x.shape
    k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    s = _uniform(n, sigma[0], sigma[1], g, x.device)
    apply = torch.rand(n, generator=g, device=x.device) < p
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(r.view(1, k) ** 2) / (2 * s.view(n, 1) ** 2))  # (N, k)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (r == 0).to(x.dtype).expand(n, k)
    kernel = torch.where(apply.view(n, 1), kernel, delta)
    weight = kernel.repeat_interleave(c, dim=0)  # (N·C, k)
    y = x.reshape(1, n * c, h, w)  # one group per (sample, channel)
    y = F.conv2d(
        F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, k), groups=n * c
    )
    y = F.conv2d(
        F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), weight.view(n * c, 1, k, 1), groups=n * c
    )
    return y.view(n, c, h, w)


class MultiViewAugment:
    """Turn a batch of uint8 images into V independently augmented, normalised views.

    Args:
        preset: An :class:`AugmentPreset` or the name of one in :data:`PRESETS`.
        views: Views per image V ≥ 1.
        mean: Per-channel mean on the 0–1 scale (see :func:`channel_stats`).
        std: Per-channel standard deviation on the 0–1 scale.
    """

    def __init__(
        self, preset: AugmentPreset | str, views: int, mean: list[float], std: list[float]
    ) -> None:
        if views < 1:
            raise ContrastkitError(f"views must be >= 1, got {views}")
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.views = views
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a batch.

        Args:
            images: uint8 (or 0–1 float) images on the generator's device. Shape: (N, C, H, W).
            generator: The source of every random parameter.

        Returns:
            Normalised float32 views. Shape: (N, V, C, H, W).
        """
        n, c, h, w = images.shape
        v = self.views
        p = self.preset
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        x = x.unsqueeze(1).expand(n, v, c, h, w).reshape(n * v, c, h, w)  # (N·V, C, H, W)
        theta = affine_matrices(n * v, h, w, p, generator, x.device)
        if not torch.equal(theta, torch.eye(2, 3, device=x.device).expand_as(theta)):
            grid = F.affine_grid(theta, [n * v, c, h, w], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.jitter is not None:
            x = colour_jitter(x, p.jitter, p.jitter_p, generator)
        if p.grayscale_p > 0 and c == 3:
            to_grey = torch.rand(n * v, generator=generator, device=x.device) < p.grayscale_p
            x = torch.where(to_grey.view(-1, 1, 1, 1), _grey(x).expand_as(x), x)
        if p.blur_p > 0 and min(h, w) >= p.blur_min_size:
            x = gaussian_blur(x, p.blur_p, generator)
        x = normalize(x, self.mean, self.std)
        return x.view(n, v, c, h, w)
