"""``small_cnn``: a VGG-style encoder for small grey images (digits 8×8, Fashion-MNIST 28×28)."""

from __future__ import annotations

from torch import Tensor, nn

from contrastkit.models.registry import norm_layer, register_model


def _block(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        norm_layer(norm)(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Three stages of two 3×3 convolutions (width w, 2w, 4w), max-pool between, global average.

    Args:
        in_channels: Image channels.
        width: Channels of the first stage w; ``num_features`` = 4w.
        norm: ``"batch"`` or ``"group"``.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(in_channels, w, norm),
            *_block(w, w, norm),
            nn.MaxPool2d(2, ceil_mode=True),
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
def small_cnn(*, in_channels: int = 1, image_size: int = 28, norm: str = "batch") -> SmallCNN:
    """The default encoder for ≤ 32 px grey images (width 32, 128 features)."""
    return SmallCNN(in_channels, width=32, norm=norm)
