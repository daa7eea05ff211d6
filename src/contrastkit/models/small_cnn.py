"""``small_cnn``: a VGG-style encoder for small grey images (digits 8×8, Fashion-MNIST 28×28).

``small_cnn_s2`` is the same network with a cheaper first stage: one stride-2 convolution in
place of two full-resolution convolutions and a max-pool (fewer multiply-adds, no
full-resolution activations; its speed and accuracy are measured in ``benchmarks/encoders.py``
and docs/training.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastkit.models.registry import norm_layer, register_model

STEMS = ("pool", "stride2")


def _block(c_in: int, c_out: int, norm: str, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        norm_layer(norm)(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Three stages of 3×3 convolutions (width w, 2w, 4w), halving the resolution, global average.

    Stages 2 and 3 hold two convolutions each (max-pool between them). Stage 1 halves the
    resolution by ``stem``: ``"pool"`` is two 3×3 convolutions at full resolution then a 2×2
    max-pool (VGG style); ``"stride2"`` is a single 3×3 convolution of stride 2.

    Args:
        in_channels: Image channels.
        width: Channels of the first stage w; ``num_features`` = 4w.
        norm: ``"batch"`` or ``"group"``.
        stem: ``"pool"`` (default) or ``"stride2"``.

    Raises:
        ValueError: for another ``stem``.
    """

    def __init__(
        self, in_channels: int = 1, width: int = 32, norm: str = "batch", stem: str = "pool"
    ) -> None:
        super().__init__()
        w = width
        if stem == "pool":
            first = [
                *_block(in_channels, w, norm),
                *_block(w, w, norm),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        elif stem == "stride2":
            first = _block(in_channels, w, norm, stride=2)
        else:
            raise ValueError(f"unknown stem {stem!r}; expected one of {', '.join(STEMS)}")
        self.features = nn.Sequential(
            *first,
            *_block(w, 2 * w, norm),
            *_block(2 * w, 2 * w, norm),
            nn.MaxPool2d(2, ceil_mode=True),
            *_block(2 * w, 4 * w, norm),
            *_block(4 * w, 4 * w, norm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 4 * w

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W) → features (N, num_features)."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)


@register_model("small_cnn")
def small_cnn(*, in_channels: int = 1, norm: str = "batch") -> SmallCNN:
    """The default encoder for ≤ 32 px grey images (width 32, 128 features)."""
    return SmallCNN(in_channels, norm=norm)


@register_model("small_cnn_s2")
def small_cnn_s2(*, in_channels: int = 1, norm: str = "batch") -> SmallCNN:
    """``small_cnn`` with a stride-2 first convolution (width 32, 128 features)."""
    return SmallCNN(in_channels, norm=norm, stem="stride2")
