"""Frozen-feature extraction: the encoder in eval mode, no augmentation, no gradient."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from contrastkit.data.augment import normalize
from contrastkit.train.device import autocast


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: Tensor | Iterable[Tensor],
    *,
    mean: list[float],
    std: list[float],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Tensor:
    """Backbone features of every image, before any head.

    The encoder is put in eval mode for the pass (BatchNorm uses its running statistics and
    changes nothing) and its previous mode is restored afterwards.

    Args:
        encoder: A registered encoder (``forward_features``).
        images: uint8 images (N, C, H, W), or an iterable of such batches (streamed from
            ``shards:DIR``: only one batch is in memory at a time); a tensor is cut into
            batches of ``batch_size``.
        mean: Normalisation mean per channel (0–1 scale).
        std: Normalisation standard deviation per channel.
        batch_size: Images per forward pass.
        device: Where to compute.
        amp_dtype: Autocast dtype of the forward pass (None = float32), as in training.
        channels_last: Feed the encoder channels-last batches (faster for a channels-last one).

    Returns:
        float32 features on ``device``. Shape: (N, F).
    """
    was_training = encoder.training
    encoder.eval()
    out = []
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = (
        images.split(batch_size) if isinstance(images, Tensor) else images
    )  # (B, C, H, W) each
    try:
        for batch in batches:
            x = normalize(batch.to(dev), mean, std)
            x = x.contiguous(memory_format=fmt)
            with autocast(dev.type, amp_dtype):
                out.append(encoder.forward_features(x).float())  # type: ignore[operator]
    finally:
        encoder.train(was_training)
    return torch.cat(out)  # (N, F)
