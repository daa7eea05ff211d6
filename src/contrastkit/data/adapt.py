"""Fit images to an encoder's input: its channels and its size, saying what was changed."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.data.shards import ShardSplit
from contrastkit.errors import ContrastkitError

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights of RGB → grey, as PIL's ``convert("L")``."""


def adapt_images(images: Tensor, channels: int, size: int) -> tuple[Tensor, list[str]]:
    """Convert uint8 images to ``channels`` channels and ``size`` × ``size`` pixels.

    Grey → colour repeats the channel; colour → grey takes the BT.601 luma; another size is
    resized bilinearly with antialiasing (a non-square image is stretched to the square).

    Args:
        images: uint8 images. Shape: (N, C, H, W).
        channels: The channels wanted: 1 or 3.
        size: The side wanted.

    Returns:
        The images, uint8 (N, channels, size, size), and one note per change made (empty
        when none was needed), e.g. ``"grey → 3 channels (repeated)"``.

    Raises:
        ContrastkitError: on images that are not uint8 (N, C, H, W) with 1 or 3 channels, or
            ``channels`` not 1 or 3.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ContrastkitError(
            f"images must be uint8 (N, C, H, W) with 1 or 3 channels, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if channels not in (1, 3) or size < 1:
        raise ContrastkitError(
            f"cannot adapt images to {channels} channels of {size} px: expected 1 or 3 "
            "channels and a size >= 1"
        )
    notes: list[str] = []
    x = images
    if x.shape[1] != channels:
        if channels == 3:
            x = x.repeat(1, 3, 1, 1)  # (N, 3, H, W)
            notes.append("grey → 3 channels (repeated)")
        else:
            w = torch.tensor(LUMA).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            notes.append("colour → grey (BT.601 luma)")
    h, w_ = x.shape[-2:]
    if (h, w_) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)  # (N, C, size, size)
        notes.append(f"resized {h}×{w_} → {size}×{size} (bilinear)")
    return x, notes


class AdaptedShardSplit(ShardSplit):
    """A prepared split (``shards:DIR``) whose images are adapted as they are read.

    Every batch that :meth:`read` returns (and so every batch a loader streams) goes through
    :func:`adapt_images` to ``channels`` × ``size`` × ``size``: another data set streamed to
    a run's encoder, one batch in memory at a time. ``image_shape`` stays the stored one.
    """

    channels: int
    size: int

    @classmethod
    def of(cls, split: ShardSplit, channels: int, size: int) -> tuple[AdaptedShardSplit, list[str]]:
        """``split`` adapted to ``channels`` and ``size``, and the notes of what changes.

        Raises:
            ContrastkitError: if ``channels`` is not 1 or 3 or ``size`` is below 1.
        """
        _, notes = adapt_images(
            torch.zeros((1, *split.image_shape), dtype=torch.uint8), channels, size
        )
        adapted = object.__new__(cls)
        adapted.__dict__.update(split.__dict__)
        adapted._files, adapted._pid = {}, os.getpid()  # its own descriptors, as subset's
        adapted.channels, adapted.size = channels, size
        adapted.name = f"{split.name} (adapted)"
        return adapted, notes

    def read(self, indices: Tensor | Sequence[int]) -> Tensor:
        """The adapted images at ``indices``: uint8 (B, channels, size, size)."""
        return adapt_images(super().read(indices), self.channels, self.size)[0]

    def subset(self, indices: Tensor) -> AdaptedShardSplit:
        """The samples at ``indices``, adapted alike."""
        adapted = object.__new__(type(self))
        adapted.__dict__.update(super().subset(indices).__dict__)
        adapted.channels, adapted.size, adapted.name = self.channels, self.size, self.name
        return adapted
