import numpy as np
import pytest
import torch

from contrastkit.data import PRESETS, MultiViewAugment, channel_stats, normalize
from contrastkit.data.augment import affine_matrices, colour_jitter, gaussian_blur


def images(n=16, c=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("preset", "c", "size"),
    [
        ("digits", 1, 8),
        ("fashion-mnist", 1, 28),
        ("shift-flip", 1, 28),
        ("simclr", 3, 32),
        ("simclr", 3, 96),
    ],
)
def test_shapes_range_and_views_differ(preset, c, size):
    x = images(6, c, size)
    mean, std = channel_stats(x)
    aug = MultiViewAugment(preset, 3, mean, std)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, c, size, size) and out.dtype == torch.float32
    m = torch.tensor(mean).view(1, 1, -1, 1, 1)
    s = torch.tensor(std).view(1, 1, -1, 1, 1)
    pixels = out * s + m
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    for i in range(6):  # every view of every image drew its own parameters
        assert not torch.allclose(out[i, 0], out[i, 1])


def test_seeded_determinism():
    x = images(8, 3, 32)
    aug = MultiViewAugment("simclr", 2, [0.5] * 3, [0.25] * 3)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_digits_preset_never_flips_and_fashion_does():
    g = torch.Generator().manual_seed(0)
    theta = affine_matrices(4000, 8, 8, PRESETS["digits"], g, torch.device("cpu"))
    assert (torch.linalg.det(theta[:, :, :2]) > 0).all()  # no reflection
    theta = affine_matrices(4000, 28, 28, PRESETS["fashion-mnist"], g, torch.device("cpu"))
    flipped = (torch.linalg.det(theta[:, :, :2]) < 0).float().mean()
    assert 0.45 < flipped < 0.55


def test_shift_flip_only_shifts_by_up_to_an_eighth_and_flips():
    g = torch.Generator().manual_seed(0)
    theta = affine_matrices(4000, 28, 28, PRESETS["shift-flip"], g, torch.device("cpu"))
    linear = theta[:, :, :2]
    assert torch.allclose(linear.abs(), torch.eye(2).expand_as(linear))  # no zoom, rotation, shear
    flipped = (torch.linalg.det(linear) < 0).float().mean()
    assert 0.45 < flipped < 0.55
    shift = theta[:, :, 2] / 2  # as a fraction of the side ([-1, 1] spans 2)
    assert shift.abs().max() <= 0.125 and shift.abs().max() > 0.12
    # an image shifted right by 3.5 px: a one-pixel column lands 3–4 columns away (bilinear)
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    x[..., 10] = 255
    aug = MultiViewAugment("shift-flip", 64, [0.0], [1.0])
    cols = aug(x, torch.Generator().manual_seed(1))[0, :, 0].sum(dim=1).argmax(dim=-1)
    moved = torch.minimum((cols - 10).abs(), (cols - 17).abs())  # 17: column 10 flipped
    assert moved.max() <= 4 and moved.float().mean() > 1


def test_crop_boxes_stay_inside_the_image():
    g = torch.Generator().manual_seed(0)
    theta = affine_matrices(2000, 32, 32, PRESETS["simclr"], g, torch.device("cpu"))
    corners = torch.tensor([[-1.0, -1, 1], [1, 1, 1], [-1, 1, 1], [1, -1, 1]]).T  # (3, 4)
    mapped = theta @ corners  # (n, 2, 4) input coordinates of the output corners
    assert mapped.abs().max() <= 1 + 1e-5
    area = (theta[:, 0, 0].abs() * theta[:, 1, 1]).mean()
    assert 0.4 < area < 0.8  # uniform scale in [0.2, 1] has mean 0.6


def test_none_preset_is_normalisation_only():
    x = images(4, 3, 16)
    aug = MultiViewAugment("none", 2, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    out = aug(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 1], normalize(x, [0.1, 0.2, 0.3], [0.5] * 3))


def test_colour_jitter_identity_at_zero_strength_and_grey_input():
    x = torch.rand(5, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(colour_jitter(x, (0, 0, 0, 0), 1.0, g), x, atol=1e-5)
    grey = torch.rand(5, 1, 8, 8)
    out = colour_jitter(grey, (0.4, 0.4, 0.4, 0.1), 1.0, g)
    assert out.shape == grey.shape and out.min() >= 0 and out.max() <= 1


def test_blur_keeps_constant_images_and_smooths_noise():
    g = torch.Generator().manual_seed(0)
    const = torch.full((3, 3, 96, 96), 0.7)
    assert torch.allclose(gaussian_blur(const, 1.0, g), const, atol=1e-5)
    noise = torch.rand(3, 3, 96, 96)
    assert gaussian_blur(noise, 1.0, g).std() < noise.std()
    assert torch.equal(gaussian_blur(noise, 0.0, g), noise)


# channel_stats: exact, chunked; oracles: a histogram in exact fractions, torch in float64


def _exact_stats(images):
    """Mean and unbiased std per channel from each channel's histogram, in Fractions (two-pass)."""
    import math
    from fractions import Fraction

    mean, std = [], []
    for ch in images.transpose(0, 1).reshape(images.shape[1], -1):
        values, counts = (a.tolist() for a in np.unique(ch.numpy(), return_counts=True))
        n = sum(counts)
        m = Fraction(sum(v * k for v, k in zip(values, counts, strict=True)), 255 * n)
        var = sum(k * (Fraction(v, 255) - m) ** 2 for v, k in zip(values, counts, strict=True)) / (
            n - 1
        )
        mean.append(float(m))
        std.append(max(math.sqrt(float(var)), 1e-3))
    return mean, std


def _float64_stats(images):
    x = images.double().div(255).transpose(0, 1).reshape(images.shape[1], -1)  # (C, N·H·W)
    return x.mean(dim=1), x.std(dim=1).clamp_min(1e-3)


@pytest.mark.parametrize(
    ("n", "c", "size", "chunk"),
    [
        (5, 3, 7, 1 << 22),  # one chunk
        (5, 3, 7, 150),  # one image per chunk
        (9, 1, 8, 200),  # three images per chunk, the last chunk short
        (300, 3, 96, 1 << 22),  # 8.3 M values: three default chunks
    ],
)
def test_channel_stats_is_exact_and_equals_the_float64_formula(n, c, size, chunk):
    x = images(n, c, size, seed=n)
    mean, std = channel_stats(x, chunk_values=chunk)
    assert (mean, std) == _exact_stats(x)  # to the last bit
    m64, s64 = _float64_stats(x)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), m64, rtol=1e-13, atol=0)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), s64, rtol=1e-13, atol=0)
    assert channel_stats(x) == (mean, std)  # the chunking changes nothing


def test_channel_stats_of_constant_and_extreme_images():
    assert channel_stats(torch.full((4, 2, 3, 3), 7, dtype=torch.uint8)) == (
        [7 / 255] * 2,
        [1e-3] * 2,
    )
    x = torch.zeros(2, 1, 1, 1, dtype=torch.uint8)
    x[1] = 255  # pixels 0 and 255: mean 1/2, unbiased std sqrt(1/2)
    assert channel_stats(x) == ([0.5], [0.5**0.5])
    assert channel_stats(x[:1]) == ([0.0], [1e-3])  # one pixel: no spread


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            (torch.zeros(2, 1, 4, 4),),
            {},
            "images must be a uint8 tensor (N, C, H, W), got torch.float32 (2, 1, 4, 4)",
        ),
        (
            (torch.zeros(1, 4, 4, dtype=torch.uint8),),
            {},
            "images must be a uint8 tensor (N, C, H, W), got torch.uint8 (1, 4, 4)",
        ),
        (([1, 2],), {}, "images must be a uint8 tensor (N, C, H, W), got list"),
        (
            (torch.zeros(0, 1, 4, 4, dtype=torch.uint8),),
            {},
            "images must hold at least one pixel, got shape (0, 1, 4, 4)",
        ),
        (
            (torch.zeros(1, 1, 4, 4, dtype=torch.uint8),),
            {"chunk_values": 0},
            "chunk_values must be an integer >= 1, got 0",
        ),
    ],
)
def test_channel_stats_refuses_bad_input_in_one_line(args, kwargs, message):
    from contrastkit.errors import ContrastkitError

    with pytest.raises(ContrastkitError) as info:
        channel_stats(*args, **kwargs)
    assert str(info.value) == message


def test_stats_from_sums_refuses_bad_input_in_one_line():
    from contrastkit.data.augment import stats_from_sums
    from contrastkit.errors import ContrastkitError

    with pytest.raises(
        ContrastkitError, match=r"^count must be an integer >= 1 \(pixels per channel\), got 0$"
    ):
        stats_from_sums([0], [0], 0)
    with pytest.raises(
        ContrastkitError, match=r"^sums and squares must have one entry per channel, got 2 and 1$"
    ):
        stats_from_sums([0, 1], [0], 4)
