"""One place that builds the networks of a run: encoder plus projection head or classifier."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from contrastkit.models import create_model
from contrastkit.models.split_bn import convert_split_bn


@dataclass(frozen=True)
class DataShape:
    """What the networks need to know about the data (stored in every checkpoint).

    Attributes:
        channels: Image channels C.
        size: Image side (the larger of H and W).
        num_classes: Number of classes (0 when unlabelled).
        mean: Per-channel normalisation mean on the 0–1 scale.
        std: Per-channel normalisation standard deviation.
        classes: Class names.
    """

    channels: int
    size: int
    num_classes: int
    mean: list[float]
    std: list[float]
    classes: list[str]


def default_model(shape: DataShape) -> str:
    """``small_cnn`` for ≤ 32 px grey images, ``resnet18`` otherwise."""
    return "small_cnn" if shape.channels == 1 and shape.size <= 32 else "resnet18"


def build_networks(
    *,
    model: str,
    norm: str,
    method: str,
    shape: DataShape,
    proj_dim: int,
    bn_splits: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Return ``(encoder, head)``: the encoder and the head the method trains on it.

    ``norm="split"`` builds them with batch norm, then makes every batch norm a
    :class:`~contrastkit.models.split_bn.SplitBatchNorm` of ``bn_splits`` sub-batches (its
    state dict is batch norm's).
    """
    from contrastkit.train.methods import get_method

    base = "batch" if norm == "split" else norm
    encoder = create_model(model, in_channels=shape.channels, image_size=shape.size, norm=base)
    features = int(encoder.num_features)  # type: ignore[arg-type]
    head = get_method(method).head(features, shape.num_classes, proj_dim, base)
    if norm == "split":
        assert bn_splits is not None  # resolved (recipes.resolve)
        encoder, head = convert_split_bn(encoder, bn_splits), convert_split_bn(head, bn_splits)
    return encoder, head
