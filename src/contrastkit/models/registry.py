"""The encoder registry: ``@register_model("name")`` and ``create_model(name, ...)`` (timm's pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor, nn

from contrastkit.errors import ContrastkitError


class Encoder(Protocol):
    """What every registered encoder offers besides being an ``nn.Module``."""

    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Map images (N, C, H, W) to features (N, num_features)."""
        ...


Factory = Callable[..., nn.Module]
MODELS: dict[str, Factory] = {}
"""Registered encoder factories ``(in_channels, image_size, norm) -> nn.Module``."""

NORMS = ("batch", "group")


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Register an encoder factory under ``name`` (a decorator)."""

    def wrap(factory: Factory) -> Factory:
        MODELS[name] = factory
        return factory

    return wrap


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """Return a ``channels -> module`` factory: BatchNorm2d or GroupNorm (≤ 32 groups of ≥ 4).

    Raises:
        ContrastkitError: for an unknown ``norm``.
    """
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda c: nn.GroupNorm(max(1, min(32, c // 4)), c)
    raise ContrastkitError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def model_names() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS)


def create_model(
    name: str, *, in_channels: int = 3, image_size: int = 32, norm: str = "batch"
) -> nn.Module:
    """Build the encoder ``name`` for images (N, in_channels, image_size, image_size).

    Args:
        name: A registered name, see :func:`model_names`.
        in_channels: Image channels (1 for grey images).
        image_size: Image side; ResNets use the CIFAR stem (3×3 conv, no max-pool) for ≤ 64 px.
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, batch-independent).

    Returns:
        An ``nn.Module`` with ``num_features`` and ``forward_features(x) -> (N, num_features)``.

    Raises:
        ContrastkitError: for an unknown name or norm.
    """
    from contrastkit.models import resnet, small_cnn  # noqa: F401  (fills the registry)

    if name not in MODELS:
        raise ContrastkitError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    norm_layer(norm)  # validate early
    return MODELS[name](in_channels=in_channels, image_size=image_size, norm=norm)
