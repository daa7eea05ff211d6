"""torchvision ResNet-18/34/50 (random init) with the CIFAR stem for small images and any channels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from contrastkit.models.registry import norm_layer, register_model

CIFAR_STEM_MAX_SIZE = 64
"""Images up to this side get the 3×3 stride-1 stem without max-pool (LY#1419: +10 points)."""


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier: ``forward_features`` gives pooled features.

    Args:
        net: A torchvision ``ResNet`` (its ``fc`` is replaced by the identity).
        in_channels: Image channels; the stem is rebuilt when not 3 or for small images.
        cifar_stem: Use a 3×3 stride-1 first convolution and no max-pool.
    """

    def __init__(self, net: tvm.ResNet, in_channels: int, cifar_stem: bool) -> None:
        super().__init__()
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.num_features = int(net.fc.in_features)
        net.fc = nn.Identity()
        self.net = net

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W) → features (N, num_features)."""
        out: Tensor = self.net(x)
        return torch.flatten(out, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)


def _factory(build: Callable[..., tvm.ResNet]) -> Callable[..., ResNetEncoder]:
    def create(*, in_channels: int = 3, image_size: int = 32, norm: str = "batch") -> ResNetEncoder:
        net = build(weights=None, norm_layer=norm_layer(norm))
        return ResNetEncoder(net, in_channels, cifar_stem=image_size <= CIFAR_STEM_MAX_SIZE)

    create.__doc__ = f"torchvision {build.__name__} encoder (weights=None)."
    return create


register_model("resnet18")(_factory(tvm.resnet18))
register_model("resnet34")(_factory(tvm.resnet34))
register_model("resnet50")(_factory(tvm.resnet50))
