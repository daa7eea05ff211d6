"""The projection head of SimCLR/SupCon: a 2-layer MLP to 128-d, L2-normalised output."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """``Linear → BatchNorm1d → ReLU → Linear``, then L2 normalisation.

    Args:
        in_features: Encoder feature size F.
        hidden: Hidden width (defaults to F).
        out_features: Embedding size D. Default 128.
        norm: ``"batch"`` (BatchNorm1d in the hidden layer) or ``"group"`` (none: batch-free).
    """

    def __init__(
        self,
        in_features: int,
        hidden: int | None = None,
        out_features: int = 128,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        hidden = hidden or in_features
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden, bias=norm != "batch"),
            nn.BatchNorm1d(hidden) if norm == "batch" else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_features),
        )
        self.out_features = out_features

    def forward(self, h: Tensor) -> Tensor:
        """Features (N, F) → unit-norm embeddings (N, D)."""
        return F.normalize(self.net(h), dim=-1)
